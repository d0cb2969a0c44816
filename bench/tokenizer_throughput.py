#!/usr/bin/env python3
"""Encode throughput, one thread, t2 against HF tokenizers and tiktoken on the same corpus.

Run from the repository root after building (needs the tokenizer_reference
fixture's files, e.g. after `ctest --test-dir build -R tokenizer_reference`):
  OMP_NUM_THREADS=1 RAYON_NUM_THREADS=1 python3 bench/tokenizer_throughput.py \
      --tokenizers build/tests/reference/tokenizers --bench build/bench/t2_tokenizer_bench
The corpus is the reference corpus' valid UTF-8 strings, one per line
(newlines inside a string become spaces), repeated to about 4 MB. Each
implementation encodes line by line; the best of 3 passes counts.
"""
import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import tiktoken  # noqa: E402
from tiktoken.load import load_tiktoken_bpe  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "reference"))
import tokenizer_reference as ref  # noqa: E402


def best_of(passes, fn):
    best = float("inf")
    for _ in range(passes):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokenizers", required=True)
    parser.add_argument("--bench", required=True, help="the t2_tokenizer_bench binary")
    parser.add_argument("--megabytes", type=float, default=4.0)
    args = parser.parse_args()

    lines = []
    for raw in ref.corpus(5000, seed=10):
        try:
            lines.append(raw.decode("utf-8").replace("\n", " ").replace("\r", " "))
        except UnicodeDecodeError:
            continue
    corpus = []
    size = 0
    while size < args.megabytes * 1e6:
        for line in lines:
            corpus.append(line)
            size += len(line.encode())
    path = os.path.join(args.tokenizers, "bench_corpus.txt")
    with open(path, "w") as f:
        f.write("\n".join(corpus) + "\n")
    nbytes = sum(len(line.encode()) for line in corpus)

    results = []
    for case in ("cl100k", "llama3", "qwen2"):
        tokenizer_json = os.path.join(args.tokenizers, case, "tokenizer.json")
        hf = Tokenizer.from_file(tokenizer_json)
        hf.encode_special_tokens = True
        seconds = best_of(3, lambda: hf.encode_batch(corpus, add_special_tokens=False))
        results.append({"case": case, "impl": "hf_tokenizers", "mb_per_s": nbytes / seconds / 1e6})
        t2 = json.loads(subprocess.run([args.bench, tokenizer_json, path, "3"], check=True, capture_output=True,
                                       text=True).stdout)
        results.append({"case": case, "impl": "t2", "mb_per_s": t2["mb_per_s"]})
        if case == "cl100k":
            enc = tiktoken.Encoding("cl100k", pat_str=ref.CL100K_PATTERN,
                                    mergeable_ranks=load_tiktoken_bpe(ref.cl100k_ranks()), special_tokens={})
            seconds = best_of(3, lambda: enc.encode_ordinary_batch(corpus, num_threads=1))
            results.append({"case": case, "impl": "tiktoken", "mb_per_s": nbytes / seconds / 1e6})
    print(f"corpus: {len(corpus)} lines, {nbytes / 1e6:.2f} MB")
    for r in results:
        print(f"{r['case']:8} {r['impl']:14} {r['mb_per_s']:7.2f} MB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
