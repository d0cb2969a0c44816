#!/usr/bin/env python3
"""Slow and idle clients against a running `t2 serve` (issue 12's goals).

Measures, on a fresh connection each time: /health and a 4-token completion
while N slow-drip connections are open (one header byte every 2 s), then while
N idle keep-alive connections are open; a 1 MB header's answer and the
server's RSS before/after; and connect latency of a burst of 256 simultaneous
connects. Usage:
  OMP_NUM_THREADS=1 t2 serve --model models/stories260K --port 8090 &
  python3 bench/slow_clients.py --port 8090 --pid $!
"""
import argparse, json, socket, threading, time, http.client

from process_stats import rss_mb


def fresh(port):
    out = {}
    for name, method, path, body in (("health", "GET", "/health", None),
                                     ("completion", "POST", "/v1/completions", json.dumps({"prompt": "Once", "max_tokens": 4}))):
        t = time.perf_counter()
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request(method, path, body=body, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        out[name] = {"status": r.status, "ms": round((time.perf_counter() - t) * 1000, 1)}
        c.close()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8090)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--n", type=int, default=1000)
    a = ap.parse_args()
    results = {"baseline": fresh(a.port)}

    slow = []
    for _ in range(a.n):
        s = socket.create_connection(("127.0.0.1", a.port))
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Drip: ")
        slow.append(s)
    stop = threading.Event()

    def drip():
        while not stop.wait(2.0):
            for s in slow:
                try:
                    s.send(b"a")
                except OSError:
                    pass
    t = threading.Thread(target=drip)
    t.start()
    time.sleep(4)  # two drips
    results["slow_drip"] = fresh(a.port)
    stop.set()
    t.join()
    for s in slow:
        s.close()

    idle = []
    for _ in range(a.n):
        s = socket.create_connection(("127.0.0.1", a.port))
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        s.recv(4096)
        idle.append(s)
    results["idle_keep_alive"] = fresh(a.port)
    for s in idle:
        s.close()

    before = rss_mb(a.pid)
    s = socket.create_connection(("127.0.0.1", a.port))
    t0 = time.perf_counter()
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    sent = 0
    try:
        while sent < 200 << 20:
            s.sendall(b"X-Padding: " + b"a" * 8000 + b"\r\n")
            sent += 8013
    except OSError:
        pass
    s.settimeout(5)
    try:
        answer = s.recv(4096).split(b"\r\n")[0].decode()
    except OSError as e:
        answer = repr(e)
    s.close()
    results["huge_header"] = {"answer": answer, "ms": round((time.perf_counter() - t0) * 1000, 1), "sent_mb": round(sent / 2**20, 2),
                              "rss_before_mb": round(before, 1), "rss_after_mb": round(rss_mb(a.pid), 1)}

    lat = [None] * 256
    go = threading.Barrier(256)

    def connect(i):
        go.wait()
        t = time.perf_counter()
        c = socket.create_connection(("127.0.0.1", a.port), timeout=10)
        lat[i] = (time.perf_counter() - t) * 1000
        c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        c.recv(4096)
        c.close()
    threads = [threading.Thread(target=connect, args=(i,)) for i in range(256)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    lat.sort()
    results["connect_burst_256"] = {"p50_ms": round(lat[127], 2), "p99_ms": round(lat[252], 2), "max_ms": round(lat[-1], 2)}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
