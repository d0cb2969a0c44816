#!/usr/bin/env bash
# A freshly started `t2 serve` on the Llama-3-8B-shaped LLaVA-NeXT of
# bench/vision_bench.py, bf16: rounds of 16 text streams (bench/server_warmup.py),
# at two KV cache sizes, to tell a first-batch cost from a size-dependent one.
# Run on the GPU machine, from the repo root:
#   source .gpu/build.sh && bench/gpu_server_warmup.sh
set -euo pipefail
t2=${T2_BIN:-build-gpu/t2}
dir=${MODEL_DIR:-/tmp/llava-next-8b-random}
[[ -f $dir/config.json ]] || python3 bench/vision_bench.py make-model "$dir" > /dev/null
mkdir -p /tmp/t2-warmup-experts
for args in "--max-batch 16 --context 1024" "--max-batch 24 --context 8192"; do
  # shellcheck disable=SC2086
  "$t2" serve --model "$dir" --targets none --experts-dir /tmp/t2-warmup-experts --device cuda --dtype bfloat16 $args \
    --port 8092 > /tmp/t2-warmup.log 2>&1 &
  pid=$!
  for _ in $(seq 600); do grep -q "t2 ready" /tmp/t2-warmup.log && break; sleep 0.25; done
  echo "$args: $(python3 bench/server_warmup.py http://127.0.0.1:8092 --rounds 2 --gen 48 --stream)"
  kill $pid
  wait $pid 2>/dev/null || true
done
