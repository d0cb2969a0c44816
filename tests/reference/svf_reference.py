#!/usr/bin/env python3
"""Reference data for t2's SVF tests, computed in Python torch.

<out>/compose.safetensors: U, S, V of a random matrix's SVD, a z vector, and W'
  by the reference implementation's formula (SakanaAI/self-adaptive-llms,
  utils.py compose_new_params):  U @ diag(S * z) @ V.T * (S.sum() / (S * z).sum())
<out>/reference_policy.pt: a torch.save'd dict of nn.Parameters p for
  stories260K's MLP matrices, as the reference's trainer saves them, and
<out>/reference_policy_z.safetensors: z = sigmoid(p) * max_mult (max_mult 2).
"""
import argparse
import os
import sys

import torch
from safetensors.torch import save_file

MAX_MULT = 2.0


def reference_compose(U, S, V, z):
    return (U @ torch.diag_embed(S * z) @ V.T) * (S.sum() / (S * z).sum())


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
    print(f"svf_reference: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
