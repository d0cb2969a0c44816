#!/usr/bin/env python3
"""Engine step time through a running `t2 serve`, batch after batch: rounds of
16 concurrent chat completions (text only, greedy, ignore_eos), each reporting
the engine's ms per step over the round (wall time / the change in
t2_decode_steps_total on /metrics). A freshly started server's first round
shows what its first batch pays before steady state.

  python3 bench/server_warmup.py http://127.0.0.1:8080 --rounds 3 --gen 128 [--stream]
"""
import argparse
import http.client
import json
import threading
import time
import urllib.parse

from vision_bench import engine_steps, text_prompt


def request(url, i, gen, stream):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    body = {"messages": [{"role": "user", "content": text_prompt(i)}], "max_tokens": gen, "temperature": 0,
            "ignore_eos": True, "stream": stream}
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    if response.status != 200:
        raise SystemExit(f"HTTP {response.status}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--stream", action="store_true")
    args = ap.parse_args()
    rounds = []
    for _ in range(args.rounds):
        steps_before, began = engine_steps(args.url), time.perf_counter()
        threads = [threading.Thread(target=request, args=(args.url, i, args.gen, args.stream)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        steps = engine_steps(args.url) - steps_before
        rounds.append({"engine_steps": steps, "ms_per_engine_step": 1e3 * (time.perf_counter() - began) / steps})
    print(json.dumps({"rounds": rounds}))


if __name__ == "__main__":
    main()
