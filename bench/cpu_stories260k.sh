#!/usr/bin/env bash
# CPU peer comparison on stories260K: llama2.c's run.c vs `t2 bench`.
#
# Measures decode throughput (tokens/s) of
#   - llama2.c run.c (gcc -O3 -march=native, plain and -fopenmp), 256 tokens
#     greedy from BOS, its "achieved tok/s" line (best of LLAMA2C_REPEAT runs),
#     with 1 and 2 OpenMP threads;
#   - t2 bench --device cpu, prompt 1 token, 256 generated, batch 1/8/32,
#     with 1 and 2 torch threads (OMP_NUM_THREADS); t2 reports its best round.
# Prints a markdown table on stdout.
#
# Run from anywhere:  bench/cpu_stories260k.sh
# Env: LLAMA2C_DIR   llama2.c checkout holding run.c   (default bench/peers/llama2.c, git-ignored)
#      T2_MODELS_DIR test models folder               (default <repo>/../shared/models)
#      T2_BIN        t2 binary                        (default <repo>/build/t2)
#      LLAMA2C_REPEAT runs of run.c per row, best kept  (default 5)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
llama2c=${LLAMA2C_DIR:-$repo/bench/peers/llama2.c}
models=${T2_MODELS_DIR:-$repo/../shared/models}
t2=${T2_BIN:-$repo/build/t2}
reps=${LLAMA2C_REPEAT:-5}
case $t2 in /*) ;; *) t2=$repo/$t2 ;; esac

die() { echo "error: $*" >&2; exit 1; }
[[ -f $llama2c/run.c ]] || die "no run.c in $llama2c. Clone https://github.com/karpathy/llama2.c there (or set LLAMA2C_DIR)."
[[ -f $models/stories260K-llama2c/stories260K.bin ]] || die "missing $models/stories260K-llama2c (set T2_MODELS_DIR)"
[[ -f $models/stories260K/config.json ]] || die "missing $models/stories260K (set T2_MODELS_DIR)"
[[ -x $t2 ]] || die "t2 binary $t2 not found (build it or set T2_BIN)"

build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
gcc -O3 -march=native -o "$build/run" "$llama2c/run.c" -lm
gcc -O3 -march=native -fopenmp -o "$build/runomp" "$llama2c/run.c" -lm

# llama2c_run BIN THREADS -> best tok/s of $reps runs
llama2c_run() {
  for _ in $(seq "$reps"); do
    (cd "$models/stories260K-llama2c" &&
      OMP_NUM_THREADS=$2 "$build/$1" stories260K.bin -z tok512.bin -t 0.0 -n 256 2>&1 >/dev/null) |
      sed -n 's/^achieved tok\/s: //p'
  done | sort -g | tail -1
}

# t2_run BATCH THREADS -> JSON line
t2_run() {
  OMP_NUM_THREADS=$2 "$t2" bench --model "$models/stories260K" --device cpu \
    --batch "$1" --prompt-tokens 1 --gen-tokens 256
}
field() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(f"{d[sys.argv[2]]:.{sys.argv[3]}f}")' "$@"; }

echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC'), nproc: $(nproc), CPU: $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), load average at start: $(cut -d" " -f1-3 /proc/loadavg)"
echo
echo "| engine | build / batch | threads | decode tok/s (all sequences) | ms per step |"
echo "|---|---|---|---|---|"
for bin in run runomp; do
  for th in 1 2; do
    [[ $bin == run && $th == 2 ]] && continue   # plain build ignores threads
    tps=$(llama2c_run "$bin" "$th")
    [[ -n $tps ]] || die "llama2.c $bin printed no 'achieved tok/s' line"
    ms=$(python3 -c "print(f'{1000/$tps:.3f}')")
    echo "| llama2.c | $bin, batch 1 | $th | $(printf %.0f "$tps") | $ms |"
  done
done
for th in 1 2; do
  for b in 1 8 32; do
    j=$(t2_run "$b" "$th")
    echo "| t2 bench | batch $b | $th | $(field "$j" decode_tokens_per_s 0) | $(field "$j" decode_ms_per_step 3) |"
  done
done
