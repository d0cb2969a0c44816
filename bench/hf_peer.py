#!/usr/bin/env python3
"""HF transformers peer for `t2 bench --random-config`: greedy decode speed of a
random-weight LlamaForCausalLM built from a config.json.

For each batch size: one warm-up, then best of --repeat rounds of
  generate(max_new_tokens=1)   -> prefill time (prompt forward + first token)
  generate(max_new_tokens=G)   -> total; decode per step = (total - prefill) / (G - 1)
with cache_implementation="static" (on CUDA, transformers then auto-compiles the
decode forward with CUDA graphs; --no-compile turns that off), do_sample=False and
min_new_tokens=max_new_tokens so EOS never stops early. Prints one JSON line per
batch size, like t2 bench, plus floor_ms_per_step: the bytes of all weights except
the embedding table (a gather) read once per step / --bandwidth (H200: 4.3e12 B/s).

Run (GPU machine):  python3 bench/hf_peer.py --config bench/llama3-8b-shape.json --batch 1 16
Smoke test (CPU):   python3 bench/hf_peer.py --config tiny.json --device cpu --dtype float32 --batch 1 --gen-tokens 8
"""
import argparse
import contextlib
import json
import time

import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

try:
    from transformers.initialization import no_init_weights
except ImportError:
    try:
        from transformers.modeling_utils import no_init_weights
    except ImportError:
        no_init_weights = contextlib.nullcontext


def build_model(config_path, device, dtype):
    cfg = LlamaConfig.from_json_file(config_path)
    torch.manual_seed(0)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device), no_init_weights():  # skip HF's per-module init
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(prev)
    model.to(dtype).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.02)  # matrices and embeddings
            else:
                p.fill_(1.0)  # RMSNorm weights
    return model


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--gen-tokens", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=2, help="timed rounds after one warm-up; best kept")
    ap.add_argument("--bandwidth", type=float, default=4.3e12, help="memory bandwidth, bytes/s, for the floor")
    ap.add_argument("--no-compile", action="store_true", help="disable transformers' auto torch.compile")
    a = ap.parse_args()
    dtype = getattr(torch, a.dtype)
    assert a.gen_tokens >= 2, "--gen-tokens must be at least 2 to separate decode from prefill"

    t0 = time.perf_counter()
    model = build_model(a.config, a.device, dtype)
    sync(a.device)
    load_s = time.perf_counter() - t0

    emb = model.get_input_embeddings().weight
    step_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p is not emb)
    floor_ms = step_bytes / a.bandwidth * 1e3

    gen_kw = dict(do_sample=False, cache_implementation="static", pad_token_id=model.config.eos_token_id)
    if hasattr(GenerationConfig(), "max_cache_len"):  # same cache shape for the prefill-only call
        gen_kw["max_cache_len"] = a.prompt_tokens + a.gen_tokens
    if a.no_compile:
        gen_kw["disable_compile"] = True

    def timed(ids, n):
        sync(a.device)
        t = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                                 min_new_tokens=n, **gen_kw)
        sync(a.device)
        assert out.shape[1] == ids.shape[1] + n, out.shape
        return time.perf_counter() - t

    for b in a.batch:
        g = torch.Generator().manual_seed(b)
        ids = torch.randint(0, model.config.vocab_size, (b, a.prompt_tokens), generator=g).to(a.device)
        timed(ids, 1)  # warm-up (compiles / records graphs for this shape)
        timed(ids, a.gen_tokens)
        prefill = min(timed(ids, 1) for _ in range(a.repeat))
        total = min(timed(ids, a.gen_tokens) for _ in range(a.repeat))
        step_ms = max(total - prefill, 0.0) / (a.gen_tokens - 1) * 1e3
        print(json.dumps({
            "engine": "hf-transformers", "config": a.config, "device": a.device, "dtype": a.dtype,
            "batch": b, "prompt_tokens": a.prompt_tokens, "gen_tokens": a.gen_tokens,
            "compiled": not a.no_compile and a.device.startswith("cuda"), "load_s": round(load_s, 3),
            "prefill_s": prefill, "prefill_tokens_per_s": b * a.prompt_tokens / prefill,
            "decode_ms_per_step": step_ms, "decode_tokens_per_s": b * 1e3 / step_ms if step_ms else None,
            "floor_ms_per_step": floor_ms, "weight_bytes_per_step": step_bytes,
        }), flush=True)


if __name__ == "__main__":
    main()
