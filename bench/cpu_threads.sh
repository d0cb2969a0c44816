#!/usr/bin/env bash
# Intra-op thread defaults on the CPU, idle and with every core busy (one
# `yes > /dev/null` per core): t2 generate on stories260K with t2's default,
# OMP_NUM_THREADS=1 and =2, and OMP_WAIT_POLICY=PASSIVE; then ms per decode
# step of random 8-layer models of hidden size 256, 512 and 1024 (t2 bench).
#   bench/cpu_threads.sh      (from the repo root, after scripts/setup.sh)
set -euo pipefail
t2=${T2_BIN:-build/t2}
cfgs=$(mktemp -d)
for h in 256 512 1024; do
  python3 - "$h" "$cfgs" <<'PY'
import json, sys
h, out = int(sys.argv[1]), sys.argv[2]
cfg = json.load(open("bench/llama3-8b-shape.json"))
cfg.update(hidden_size=h, intermediate_size=int(h * 2.75), num_hidden_layers=8, num_attention_heads=h // 64,
           num_key_value_heads=max(1, h // 256), head_dim=64, vocab_size=32000, max_position_embeddings=1024,
           torch_dtype="float32")
json.dump(cfg, open(f"{out}/h{h}.json", "w"))
PY
done
hogs=()
stop_hogs() { for p in "${hogs[@]}"; do kill "$p" 2>/dev/null || true; done; hogs=(); }
trap stop_hogs EXIT
for load in idle busy; do
  if [[ $load == busy ]]; then
    for _ in $(seq "$(nproc)"); do yes > /dev/null & hogs+=($!); done
  fi
  for env in "" "OMP_NUM_THREADS=1" "OMP_NUM_THREADS=2" "OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE"; do
    # shellcheck disable=SC2086
    rate=$(env $env "$t2" generate --model models/stories260K --prompt 'Once upon a time' --max-tokens 200 --temperature 0 2>&1 |
           sed -n 's/.*(\([0-9.]* tok\/s\)).*/\1/p')
    echo "$load stories260K env='${env:-t2 default}': $rate"
  done
  for h in 256 512 1024; do
    for env in "OMP_NUM_THREADS=1" "OMP_NUM_THREADS=2" "OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE"; do
      # shellcheck disable=SC2086
      ms=$(env $env "$t2" bench --random-config "$cfgs/h$h.json" --device cpu --dtype float32 --batch 1 --prompt-tokens 32 \
             --gen-tokens 32 --repeat 2 2>/dev/null | grep '^{' | tail -1 |
           python3 -c "import json,sys; print(round(json.load(sys.stdin)['decode_ms_per_step'], 2))")
      echo "$load hidden $h env='$env': $ms ms/step"
    done
  done
  stop_hogs
done
