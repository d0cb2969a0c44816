#!/usr/bin/env bash
# Issue 9's GPU benchmark, random Llama-3-8B-shaped weights (bench/llama3-8b-shape.json),
# bf16, prompt 128, 256 new tokens, greedy: t2's decode through CUDA graphs against its
# eager forward and HF transformers (static cache, compiled) at batch 1, 16 and 64; batch
# 16 at 2,048 tokens of prompt (both engines); and `t2 bench --svf` at batch 64 with
# 8 experts (SVD build, expert switch, K = 1 dense / factored / 8 experts + a mixture).
# Writes under "${OUT:-.}": graphs/, eager/, long/ (gpu_llama3_8b.jsonl each), svf.json.
#
# Run on the GPU machine, from the repo root:
#   source .gpu/build.sh && bench/gpu_decode.sh
# Env: T2_BIN (default build-gpu/t2), PEER=0 skips HF, OUT.
set -uo pipefail
out=${OUT:-.}
t2=${T2_BIN:-build-gpu/t2}
[[ -x $t2 ]] || { echo "error: $t2 not found (source .gpu/build.sh first, or set T2_BIN)" >&2; exit 1; }
peer=${PEER:-1}
DECODE=graphs BATCHES="1 16 64" PEER=$peer OUT=$out/graphs T2_BIN=$t2 bench/gpu_llama3_8b.sh
DECODE=eager BATCHES="1 16 64" PEER=0 OUT=$out/eager T2_BIN=$t2 bench/gpu_llama3_8b.sh
DECODE=graphs PROMPT=2048 BATCHES=16 PEER=$peer OUT=$out/long T2_BIN=$t2 bench/gpu_llama3_8b.sh
"$t2" bench --random-config bench/llama3-8b-shape.json --device cuda --dtype bfloat16 --batch 64 --prompt-tokens 128 \
  --gen-tokens 128 --repeat 2 --svf --svf-batches 64 --experts 8 2>/dev/null | grep '^{' | tail -1 >"$out/svf.json"
python3 - "$out/svf.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["svf"]
print(f"SVD build {r['svd_build_s']:.1f} s for {r['matrices']} matrices; expert switch {1e3 * r['expert_switch_compose_s']:.0f} ms "
      f"(into fresh memory {1e3 * r['expert_switch_fresh_memory_s']:.0f} ms)")
b = r["batch_64"]
for name in ("k1_dense", "k1_factored", "k8_plus_mixture"):
    x = b[name]
    print(f"batch 64 {name}: {x['decode_ms_per_step']:.2f} ms/step, {x['decode_tokens_per_s']:.0f} tok/s, vs K=1 dense {x.get('vs_k1_dense', 1.0):.2f}")
PY
