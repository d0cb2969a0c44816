#!/usr/bin/env bash
# GPU benchmark on a random-weight Llama-3-8B-shaped model (bench/llama3-8b-shape.json):
# t2 bench vs the HF transformers peer (bench/hf_peer.py, static cache, auto-compiled),
# bf16, prompt 128 tokens, 256 generated, batch 1 and 16; greedy, EOS ignored.
# Writes every JSON line to "${OUT:-.}/gpu_llama3_8b.jsonl" and a markdown table to stdout.
# floor = bytes of all weights but the embedding table / 4.3e12 B/s (H200), per decode step.
#
# Run on the GPU machine, from the repo root:
#   source .gpu/build.sh && bench/gpu_llama3_8b.sh
# Env: T2_BIN (default build-gpu/t2), BATCHES (default "1 16"), PROMPT (prompt tokens, default 128),
#      DECODE (t2 bench --decode: auto, eager, fixed-shape, graphs), PEER=0 (skip HF), OUT (output folder);
#      CPU smoke test: CONFIG=tiny.json DEVICE=cpu DTYPE=float32 T2_BIN=build/t2 bench/gpu_llama3_8b.sh
set -euo pipefail

cfg=${CONFIG:-bench/llama3-8b-shape.json}
dev=${DEVICE:-cuda}
dtype=${DTYPE:-bfloat16}
t2=${T2_BIN:-build-gpu/t2}
batches=${BATCHES:-1 16}
prompt=${PROMPT:-128}
decode=${DECODE:-auto}
out=${OUT:-.}/gpu_llama3_8b.jsonl
[[ -f bench/hf_peer.py ]] || { echo "error: run from the repo root" >&2; exit 1; }
[[ -f $cfg ]] || { echo "error: config $cfg not found" >&2; exit 1; }
[[ -x $t2 ]] || { echo "error: $t2 not found (source .gpu/build.sh first, or set T2_BIN)" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
: >"$out"

# A failed run is reported and skipped, so one crash does not cost the other results.
for b in $batches; do
  if line=$("$t2" bench --random-config "$cfg" --device "$dev" --dtype "$dtype" --batch "$b" \
      --prompt-tokens "$prompt" --gen-tokens 256 --repeat 2 --decode "$decode" | grep '^{' | tail -1); then
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(json.dumps({"engine": "t2 " + d.get("decode_path", ""), **d}))' \
      "$line" | tee -a "$out" >&2
  else
    echo "warning: t2 bench --batch $b failed" >&2
  fi
done
# shellcheck disable=SC2086  # $batches is a list
[[ ${PEER:-1} == 0 ]] || python3 bench/hf_peer.py --config "$cfg" --device "$dev" --dtype "$dtype" --batch $batches \
  --prompt-tokens "$prompt" --gen-tokens 256 --repeat 2 | tee -a "$out" >&2 ||
  echo "warning: hf_peer.py failed" >&2

python3 - "$out" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
floor = next((r["floor_ms_per_step"] for r in rows if "floor_ms_per_step" in r), None)
print("| engine | batch | prefill tok/s | decode ms/step | decode tok/s | floor ms/step | floor / measured |")
print("|---|---|---|---|---|---|---|")
for r in sorted(rows, key=lambda r: (r["batch"], r["engine"])):
    ms = r["decode_ms_per_step"]
    f, pct = (f"{floor:.3f}", f"{100 * floor / ms:.0f}%") if floor and ms else ("-", "-")
    print(f"| {r['engine']} | {r['batch']} | {r['prefill_tokens_per_s']:.0f} | {ms:.3f} | "
          f"{r['decode_tokens_per_s']:.0f} | {f} | {pct} |")
EOF
