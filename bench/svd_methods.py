#!/usr/bin/env python3
"""SVD of Llama-3-8B-shaped MLP matrices on the GPU, by method: torch.linalg.svd
(the peer: what `t2 svd` used before) against an eigendecomposition of the Gram
matrix (W Wᵀ or Wᵀ W, the smaller side) in float64 or float32. For each: seconds
per matrix and the reconstruction error max|U diag(s) Vh - W| / max|W|, plus the
orthonormality error of U and Vh. Random N(0, 0.02) weights in bf16, as
`t2 bench --random-config`.

Run (GPU machine): python3 bench/svd_methods.py --matrices 3
"""
import argparse
import json
import time

import torch


def gram_svd(w, dtype):
    a = w.to(dtype)
    tall = a.shape[0] > a.shape[1]
    g = a.T @ a if tall else a @ a.T
    evals, evecs = torch.linalg.eigh(g)
    evals, evecs = evals.flip(0), evecs.flip(1)
    s = evals.clamp_min(0).sqrt()
    if tall:  # W = U s Vh with V = evecs
        vh = evecs.T
        u = (a @ evecs) / s
    else:
        u = evecs
        vh = (evecs.T @ a) / s.unsqueeze(1)
    return u.float(), s.float(), vh.float()


def errors(w, u, s, vh):
    w = w.float()
    rec = ((u * s) @ vh - w).abs().max().item() / w.abs().max().item()
    eye = torch.eye(s.numel(), device=w.device)
    return rec, (u.T @ u - eye).abs().max().item(), (vh @ vh.T - eye).abs().max().item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--matrices", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    shapes = [(14336, 4096), (14336, 4096), (4096, 14336)]
    ws = [torch.randn(shapes[i % 3], device="cuda").mul_(0.02).bfloat16() for i in range(args.matrices)]
    methods = {
        "linalg_svd_float32": lambda w: torch.linalg.svd(w.float(), full_matrices=False),
        "gram_eigh_float64": lambda w: gram_svd(w, torch.float64),
        "gram_eigh_float32": lambda w: gram_svd(w, torch.float32),
    }
    for name, f in methods.items():
        f(ws[0])  # warm-up (library handles)
        torch.cuda.synchronize()
        start = time.perf_counter()
        outs = [f(w) for w in ws]
        torch.cuda.synchronize()
        per = (time.perf_counter() - start) / len(ws)
        rec, ou, ov = max(errors(w, *o) for w, o in zip(ws, outs))
        print(json.dumps({"method": name, "s_per_matrix": per, "s_for_96": 96 * per, "reconstruction": rec,
                          "u_orthonormality": ou, "vh_orthonormality": ov}))


if __name__ == "__main__":
    main()
