#!/usr/bin/env bash
# The vision issue's GPU benchmark: a random-weight Llama-3-8B-shaped LLaVA-NeXT
# (bench/vision_bench.py make-model), bf16 on one GPU. t2 serves it (no SVF:
# --targets none, so no SVD at start) and bench/vision_bench.py measures time to
# first token for one 672x672 image plus a 64-token question, and decode tok/s
# of 16 text streams alone and with 4 image requests arriving mid-decode; then
# HF transformers runs the same measurements on the same checkpoint.
# Writes JSON lines to "${OUT:-.}/gpu_vision.jsonl".
#
# Run on the GPU machine, from the repo root:
#   source .gpu/build.sh && bench/gpu_vision.sh
# Env: T2_BIN (default build-gpu/t2), MODEL_DIR (default /tmp/llava-next-8b-random), OUT.
set -euo pipefail
t2=${T2_BIN:-build-gpu/t2}
dir=${MODEL_DIR:-/tmp/llava-next-8b-random}
out=${OUT:-.}/gpu_vision.jsonl
[[ -x $t2 ]] || { echo "error: $t2 not found (source .gpu/build.sh first, or set T2_BIN)" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
[[ -f $dir/config.json ]] || python3 bench/vision_bench.py make-model "$dir" | tee "$out"
# The language model alone through the engine (no HTTP), for scale: batch 16, prompt 128.
"$t2" bench --random-config bench/llama3-8b-shape.json --device cuda --dtype bfloat16 --batch 16 --prompt-tokens 128 \
  --gen-tokens 64 --repeat 1 | grep '^{' | tail -1 | tee -a "$out"
mkdir -p /tmp/t2-vision-experts
"$t2" serve --model "$dir" --targets none --experts-dir /tmp/t2-vision-experts --device cuda --dtype bfloat16 \
  --max-batch 24 --context 8192 --port 8091 --max-body-bytes 16777216 > /tmp/t2-vision-serve.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 600); do
  grep -q "t2 ready" /tmp/t2-vision-serve.log && break
  kill -0 $server 2>/dev/null || { cat /tmp/t2-vision-serve.log; exit 1; }
  sleep 0.5
done
python3 bench/vision_bench.py t2 http://127.0.0.1:8091 --machine "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" | tee -a "$out"
kill $server
wait $server 2>/dev/null || true
trap - EXIT
python3 bench/vision_bench.py hf "$dir" | tee -a "$out"
