#!/usr/bin/env python3
"""Soak: C mixed clients for D seconds against a running `t2 serve`, every
request with its own mixture of the shipped experts (cat, dog, bird) or none,
completions and chat, plain and streamed. Samples the server's RSS every 10 s
and passes when the last sample is within 10% of the one after the first minute.
  OMP_NUM_THREADS=1 t2 serve --model models/stories260K --experts-dir experts --port 8091 &
  python3 bench/soak.py --port 8091 --pid $! --clients 64 --seconds 300
"""
import argparse, json, random, threading, time, http.client

from process_stats import rss_mb


def client(port, deadline, seed, counts, lock):
    rng = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    while time.time() < deadline:
        body = {"max_tokens": rng.randint(1, 48), "temperature": rng.choice([0, 0.8])}
        kind = rng.random()
        if kind < 0.6:
            body["mixture"] = {e: round(rng.uniform(0.01, 1), 4) for e in rng.sample(["cat", "dog", "bird"], rng.randint(1, 3))}
        elif kind < 0.7:
            body["expert"] = "none"
        chat = rng.random() < 0.4
        path = "/v1/chat/completions" if chat else "/v1/completions"
        if chat:
            body["messages"] = [{"role": "user", "content": "Tell me about a " + rng.choice(["cat", "dog", "bird", "tree"])}]
        else:
            body["prompt"] = "Once upon a time"
        body["stream"] = rng.random() < 0.3
        try:
            conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            status = r.status
        except Exception:
            status = "error"
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        with lock:
            counts[status] = counts.get(status, 0) + 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8091)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=int, default=300)
    a = ap.parse_args()
    deadline = time.time() + a.seconds
    counts, lock = {}, threading.Lock()
    threads = [threading.Thread(target=client, args=(a.port, deadline, i, counts, lock)) for i in range(a.clients)]
    for t in threads:
        t.start()
    start, samples = time.time(), []
    while time.time() < deadline:
        time.sleep(10)
        samples.append((round(time.time() - start), round(rss_mb(a.pid), 1)))
        print("t=%ds rss=%.1f MB requests=%s" % (samples[-1][0], samples[-1][1], counts), flush=True)
    for t in threads:
        t.join()
    c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=30)
    c.request("GET", "/metrics")
    metrics = c.getresponse().read().decode()
    series = sum(1 for l in metrics.splitlines() if l and not l.startswith("#"))
    after_minute = next(r for t, r in samples if t >= 60)
    last = samples[-1][1]
    ok = abs(last - after_minute) <= 0.1 * after_minute
    print(json.dumps({"requests": counts, "rss_after_first_minute_mb": after_minute, "rss_end_mb": last,
                      "within_10_percent": ok, "metrics_series": series, "metrics_bytes": len(metrics)}))
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
