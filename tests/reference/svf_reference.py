#!/usr/bin/env python3
"""Reference data for t2's SVF tests, computed in Python torch.

<out>/compose.safetensors: U, S, V of a random matrix's SVD, a z vector, and W'
  by the reference implementation's formula (SakanaAI/self-adaptive-llms,
  utils.py compose_new_params):  U @ diag(S * z) @ V.T * (S.sum() / (S * z).sum())
<out>/reference_policy.pt: a torch.save'd dict of nn.Parameters p for
  stories260K's MLP matrices, as the reference's trainer saves them, and
<out>/reference_policy_z.safetensors: z = sigmoid(p) * max_mult (max_mult 2).
<out>/llama3/: a tiny random Llama-3-style checkpoint (HF naming and layer order,
  GQA) in model/, and policies for it built as the reference's Policy builds
  them: an nn.ParameterList over the base model's state_dict() entries it
  adapts, in that order, bfloat16. policy_params.pt is torch.save of the
  module's state_dict() (an OrderedDict with _metadata, keyed
  learnable_params_module_list.N), learnable_params.pt the same parameters by HF
  name; order.json lists the HF name of each N; z.safetensors holds
  sigmoid(p) * max_mult. policy_all_params.pt adapts attention and MLP matrices
  ("all"), with order_all.json and z_all.safetensors. bad_count.pt lacks the
  last entry; bad_length.pt has one vector one element short.
"""
import argparse
import json
import os
from collections import OrderedDict
import sys

import torch
from safetensors.torch import save_file

MAX_MULT = 2.0


def reference_compose(U, S, V, z):
    return (U @ torch.diag_embed(S * z) @ V.T) * (S.sum() / (S * z).sum())


class Policy(torch.nn.Module):
    """The reference's policy layout: one learnable vector per adapted matrix, min(shape) long."""

    def __init__(self, base_params, adapts, generator):
        super().__init__()
        self.learnable_params = {k: torch.nn.Parameter((torch.randn(min(v.shape), generator=generator) * 2)
                                                       .to(torch.bfloat16))
                                 for k, v in base_params.items() if adapts(k)}
        self.learnable_params_module_list = torch.nn.ParameterList(list(self.learnable_params.values()))


def save_policy(folder, policy, suffix):
    state = policy.state_dict()
    assert type(state) is OrderedDict and hasattr(state, "_metadata")  # what torch.save(policy.state_dict()) writes
    torch.save(state, os.path.join(folder, f"policy{suffix}_params.pt"))
    names = list(policy.learnable_params)
    with open(os.path.join(folder, f"order{suffix}.json"), "w") as f:
        json.dump(names, f)
    save_file({k: (torch.sigmoid(p.detach().float()) * MAX_MULT).contiguous()
               for k, p in policy.learnable_params.items()}, os.path.join(folder, f"z{suffix}.safetensors"))
    return state, names


def write_llama3_policies(folder, g):
    from transformers import AutoModelForCausalLM, LlamaConfig
    os.makedirs(folder, exist_ok=True)
    # Llama-3-8B-Instruct's family in miniature: GQA (4 query heads, 2 KV heads), untied, llama3 RoPE.
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=96, max_position_embeddings=128, rms_norm_eps=1e-5,
                         tie_word_embeddings=False, rope_theta=500000.0,
                         rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    model.save_pretrained(os.path.join(folder, "model"), safe_serialization=True)
    base_params = model.state_dict()

    # The reference's default: the MLP matrices ("mlp" in the state_dict key).
    policy = Policy(base_params, lambda k: "mlp" in k, g)
    state, names = save_policy(folder, policy, "")
    torch.save(dict(policy.learnable_params), os.path.join(folder, "learnable_params.pt"))

    wrong_count = OrderedDict(list(state.items())[:-1])
    wrong_count._metadata = state._metadata
    torch.save(wrong_count, os.path.join(folder, "bad_count.pt"))
    wrong_length = OrderedDict(state)
    wrong_length._metadata = state._metadata
    wrong_length["learnable_params_module_list.4"] = state["learnable_params_module_list.4"][:-1].clone()
    torch.save(wrong_length, os.path.join(folder, "bad_length.pt"))

    # Attention and MLP weight matrices.
    save_policy(folder, Policy(base_params, lambda k: ("mlp" in k or "self_attn" in k) and k.endswith(".weight"), g),
                "_all")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    g = torch.Generator().manual_seed(7)
    W = torch.randn(12, 7, generator=g)
    U, S, V = torch.svd(W)  # V, not V^T, as the reference stores it
    z = torch.rand(7, generator=g) * 2
    save_file({"U": U.contiguous(), "S": S.contiguous(), "V": V.contiguous(), "z": z.contiguous(),
               "W": W.contiguous(), "expected": reference_compose(U, S, V, z).contiguous()},
              os.path.join(args.out, "compose.safetensors"))

    # stories260K: hidden 64, intermediate 172, 5 layers -> every MLP matrix has r = 64.
    params, zs = {}, {}
    for layer in range(5):
        for proj in ("gate_proj", "up_proj", "down_proj"):
            name = f"model.layers.{layer}.mlp.{proj}.weight"
            p = torch.nn.Parameter(torch.randn(64, generator=g))
            params[name] = p
            zs[name] = (torch.sigmoid(p) * MAX_MULT).detach().contiguous()
    torch.save(params, os.path.join(args.out, "reference_policy.pt"))
    save_file(zs, os.path.join(args.out, "reference_policy_z.safetensors"))
    write_llama3_policies(os.path.join(args.out, "llama3"), g)
    print(f"svf_reference: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
