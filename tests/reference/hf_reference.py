#!/usr/bin/env python3
"""Reference logits from Hugging Face transformers for t2's equivalence tests.

For stories260K and for a tiny random model of each architecture feature, writes
<out>/<case>/<precision>/: the model folder (save_pretrained, safetensors) and
reference.safetensors with the prompt, the 30 greedily decoded tokens, the
prefill logits and the logits of each decode step (HF's KV-cache generate).
float32 runs on the CPU; where CUDA is present, bfloat16 runs there as well.
"""
import argparse
import json
import os
import shutil
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config

DECODE_STEPS = 30
PROMPT_TOKENS = 12


def tiny(config_class, **overrides):
    fields = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=96, max_position_embeddings=128, rms_norm_eps=1e-5,
                  initializer_range=0.15, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
                  pad_token_id=0)
    fields.update(overrides)
    return config_class(**fields)


def random_cases():
    return {
        "llama_mha": tiny(LlamaConfig, num_key_value_heads=4),
        "llama_gqa_tied": tiny(LlamaConfig, tie_word_embeddings=True),
        "llama3_rope": tiny(LlamaConfig, rope_theta=500000.0,
                            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                          "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
        "llama_linear_rope": tiny(LlamaConfig, rope_scaling={"rope_type": "linear", "factor": 2.0}),
        "mistral_sliding": tiny(MistralConfig, sliding_window=16),
        "qwen2_bias": tiny(Qwen2Config, num_key_value_heads=1),
    }


def write_reference(model, folder, device, dtype):
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(1234)
    prompt = torch.randint(3, vocab, (1, PROMPT_TOKENS), generator=g)
    prompt[0, 0] = 1  # BOS
    model = model.to(device=device, dtype=dtype).eval()
    with torch.no_grad():
        prefill = model(prompt.to(device)).logits[0].float().cpu()
        out = model.generate(prompt.to(device), max_new_tokens=DECODE_STEPS, min_new_tokens=DECODE_STEPS,
                             do_sample=False, output_logits=True, return_dict_in_generate=True,
                             pad_token_id=0)
    decode = torch.stack([step[0].float().cpu() for step in out.logits])  # [30, vocab]
    generated = out.sequences[0, PROMPT_TOKENS:].cpu()
    model.save_pretrained(os.path.join(folder, "model"), safe_serialization=True)
    save_file({"prompt": prompt[0].contiguous(), "generated": generated.contiguous(),
               "prefill_logits": prefill.contiguous(), "decode_logits": decode.contiguous()},
              os.path.join(folder, "reference.safetensors"))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--stories", required=True, help="the stories260K model folder")
    args = parser.parse_args()

    precisions = [("float32", "cpu", torch.float32)]
    if torch.cuda.is_available():
        precisions.append(("bfloat16", "cuda", torch.bfloat16))
    stories = args.stories
    if not os.path.isdir(stories):
        print(f"hf_reference: {stories} is missing", file=sys.stderr)
        return 1

    shutil.rmtree(args.out, ignore_errors=True)
    cases = {}
    for name, config in random_cases().items():
        torch.manual_seed(0)
        cases[name] = lambda config=config: AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    cases["stories260K"] = lambda: AutoModelForCausalLM.from_pretrained(stories, dtype=torch.float32)

    for name, build in cases.items():
        for precision, device, dtype in precisions:
            folder = os.path.join(args.out, name, precision)
            os.makedirs(folder)
            torch.manual_seed(0)
            write_reference(build(), folder, device, dtype)
            with open(os.path.join(folder, "meta.json"), "w") as f:
                json.dump({"case": name, "device": device, "dtype": precision}, f)
            print(f"hf_reference: {name} {precision} on {device}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
