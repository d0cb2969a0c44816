#!/usr/bin/env bash
# The engine issue's GPU benchmark on the random-weight Llama-3-8B-shaped model
# (bench/llama3-8b-shape.json), bf16: decode tok/s at batch 16 and 64 with
# K = 1 (composed W', and the factored path), 2, 8 and 64 distinct experts plus
# one mixture, against K = 1 in the same run; the first-token cost of a
# never-used expert against a hot one; and (through bench/gpu_llama3_8b.sh)
# prefill and decode at batch 1 and 16 beside HF transformers.
# Writes JSON lines to "${OUT:-.}/gpu_expert_mix.jsonl".
#
# Run on the GPU machine, from the repo root:
#   source .gpu/build.sh && bench/gpu_expert_mix.sh
# Env: T2_BIN (default build-gpu/t2), GEN (generated tokens, default 128), OUT.
set -euo pipefail
cfg=bench/llama3-8b-shape.json
t2=${T2_BIN:-build-gpu/t2}
out=${OUT:-.}/gpu_expert_mix.jsonl
[[ -x $t2 ]] || { echo "error: $t2 not found (source .gpu/build.sh first, or set T2_BIN)" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
"$t2" bench --random-config "$cfg" --device cuda --dtype bfloat16 --batch 16 --prompt-tokens 128 \
  --gen-tokens "${GEN:-128}" --repeat 2 --svf --svf-batches 16,64 --experts 2,8,64 | grep '^{' | tail -1 | tee "$out"
python3 - "$out" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read())["svf"]
print("| batch | run | decode ms/step | decode tok/s | vs K=1 dense |")
print("|---|---|---|---|---|")
for b in ("batch_16", "batch_64"):
    for name in ("k1_dense", "k1_factored", "k2_plus_mixture", "k8_plus_mixture", "k64_plus_mixture"):
        x = r[b][name]
        print(f"| {b[6:]} | {name} | {x['decode_ms_per_step']:.2f} | {x['decode_tokens_per_s']:.0f} | {x.get('vs_k1_dense', 1.0):.2f} |")
    f = r[b]["first_token"]
    print(f"| {b[6:]} | first token: hot {f['hot_expert_first_token_ms']:.1f} ms, cold {f['cold_expert_first_token_ms']:.1f} ms, "
          f"difference {f['cold_minus_hot_in_decode_steps']:.2f} decode steps | | | |")
print(f"SVD build {r['svd_build_s']:.1f} s, expert switch (dense composition) {1e3 * r['expert_switch_compose_s']:.0f} ms")
PY
