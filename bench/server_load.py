#!/usr/bin/env python3
"""Load test of `t2 serve` and the dispatch pass's share of request time.

What it does (all on 127.0.0.1, stdlib only):
  1. builds 3 random SVF experts (alpha, beta, gamma; gamma is the classifier
     expert) with `t2 experts import` in a temp dir;
  2. starts `t2 serve` itself (--port 0, --max-batch 32, --dispatch none,
     --classifier-expert gamma; HTTP worker threads: the server's automatic
     default unless --http-threads);
  3. load: for N concurrent clients (--clients, default 1,8,32), each sending
     streaming greedy completions (prompts cycled from a fixed list of story
     starts, max_tokens 64, temperature 0, stream_options.include_usage) until
     --requests requests in total have finished: requests/s, generated
     tokens/s (usage.completion_tokens), time to first token p50/p95 (request
     send -> first chunk with non-empty text), end-to-end latency p50/p95;
  4. dispatch share: for each strategy (none, explicit = "expert": "alpha",
     prompt, classifier), one client, --dispatch-requests non-streamed
     requests of max_tokens 64 each, the strategies interleaved request by
     request, a new connection per request: mean(t2.dispatch_ms) /
     mean(request wall time), mean dispatch_ms, dispatch_tokens,
     dispatch_cached_tokens, and the mean wall time less that of "none". The
     first request of each strategy (it builds the cached template prefix) is
     reported separately (cold_dispatch_ms) and not averaged.

The load runs once per client connection mode (--connection): keep-alive
(one connection per client, as the openai package pools them; the server
closes one after 5 requests, cpp-httplib's default, and the client reopens it)
and close (a new connection per request). Each level also reports the
kernel's TcpExtListenOverflows delta (machine-wide) and how many requests
waited over 0.9 s for their first token: with cpp-httplib's listen backlog
of 5, a burst of connects can overflow the accept queue, and those clients
wait for a TCP retransmission (about 1 s).

Prints a JSON line per measurement (and one for the environment) as it goes,
then markdown tables.

Usage (repo root):  python3 bench/server_load.py [--t2 build/t2] [--requests 128]
"""

import argparse
import concurrent.futures as cf
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROMPTS = [
    "Once upon a time",
    "One day, a little girl named Lily",
    "Tom and his dog went to the park",
    "There was a big red ball",
    "The sun was shining and the birds",
    "Sam wanted to play with his friend",
    "Mom said it was time for bed",
    "A little cat lived in a small house",
]

EXPERTS = ["alpha", "beta", "gamma"]
CLASSIFIER = "gamma"
MLP_NAMES = [f"model.layers.{l}.mlp.{p}_proj.weight" for l in range(5) for p in ("gate", "up", "down")]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def emit(record):
    print(json.dumps(record, sort_keys=True), flush=True)


def percentile(values, q):
    """Linear-interpolated percentile (q in [0, 100]); None for no values."""
    if not values:
        return None
    v = sorted(values)
    if len(v) == 1:
        return v[0]
    pos = (len(v) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def environment(t2):
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                               text=True).stdout.strip() != ""
    except OSError:
        commit, dirty = "unknown", None
    try:  # GNU nproc reports OMP_NUM_THREADS when set: ask without it
        clean_env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_THREAD_LIMIT")}
        nproc = int(subprocess.run(["nproc"], capture_output=True, text=True, env=clean_env).stdout.strip())
    except (OSError, ValueError):
        nproc = os.cpu_count()
    return {
        "kind": "environment",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": nproc,
        "cpu": cpu,
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "commit": commit,
        "tracked_changes": dirty,
        "t2": t2,
        "t2_mtime": datetime.datetime.fromtimestamp(os.path.getmtime(t2), datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def build_experts(t2, model, tmp):
    import torch  # only here: the load test itself needs no torch

    experts_dir = os.path.join(tmp, "experts")
    for i, name in enumerate(EXPERTS):
        torch.manual_seed(i)
        pt = os.path.join(tmp, name + ".pt")
        torch.save({n: torch.nn.Parameter(torch.randn(64)) for n in MLP_NAMES}, pt)
        subprocess.run([t2, "experts", "import", pt, "--name", name, "--model", model, "--experts-dir", experts_dir,
                        "--max-mult", "2", "--description", f"random test expert {name}"],
                       check=True, capture_output=True, text=True)
    return experts_dir


class Server:
    def __init__(self, t2, model, experts_dir, cache_dir, max_batch, queue, http_threads, log_path):
        args = [t2, "serve", "--model", model, "--host", "127.0.0.1", "--port", "0", "--experts-dir", experts_dir,
                "--cache-dir", cache_dir, "--max-batch", str(max_batch), "--queue", str(queue), "--dispatch", "none",
                "--classifier-expert", CLASSIFIER,
                "--dispatch-template", os.path.join(REPO, "configs", "dispatch", "prompt.txt")]
        env = dict(os.environ)
        if http_threads:
            env["T2_THREADS"] = str(http_threads)
        self.log_path = log_path
        self.err = open(log_path, "w")
        self.proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=self.err, text=True)
        self.port = None
        deadline = time.time() + 120
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            m = re.search(r"t2 listening on http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
            if line.startswith("t2 ready"):
                self.ready_line = line.strip()
                # keep draining stdout so the server never blocks on it
                threading.Thread(target=self.proc.stdout.read, daemon=True).start()
                return
        self.stop()
        with open(log_path) as f:
            raise RuntimeError("t2 serve did not become ready:\n" + f.read()[-4000:])

    def cpu_seconds(self):
        """utime + stime of the server process, in seconds."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err.close()


def proc_stat():
    """Aggregate CPU jiffies of the machine: (busy, steal, total)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return user + nice + system + irq + softirq, steal, sum(v[:8])


def scrape(port):
    """The server's /metrics counters this benchmark reads (unlabelled series only)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/metrics", headers={"Connection": "close"})
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    values = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and not line.startswith("#") and "{" not in parts[0]:
            values[parts[0]] = float(parts[1])
    return values


class Client:
    """One client: a connection reused across requests (keep_alive) or a new one per request.

    A reused connection the server has meanwhile closed (httplib closes idle
    keep-alive connections and those past their request count) is reopened
    and the request sent again once; `reconnects` counts that.
    """

    def __init__(self, port, keep_alive, timeout=120):
        self.port, self.keep_alive, self.timeout = port, keep_alive, timeout
        self.conn = None
        self.reconnects = 0

    def _send(self, body):
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Connection": "keep-alive" if self.keep_alive else "close"}
        for attempt in (0, 1):
            reused = self.conn is not None
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                self.conn.request("POST", "/v1/completions", body=data, headers=headers)
                return self.conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if not reused or attempt == 1:
                    raise
                self.reconnects += 1

    def _done(self, resp):
        if not self.keep_alive or resp.will_close:
            self.close()

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def post(self, body):
        """Non-streamed request: (wall seconds, parsed JSON, status)."""
        t0 = time.perf_counter()
        resp = self._send(body)
        raw = resp.read()
        wall = time.perf_counter() - t0
        self._done(resp)
        return wall, json.loads(raw), resp.status

    def stream(self, body):
        """Streaming request: timings and what came back; errors are returned, not raised."""
        out = {"ttft": None, "t2_in_first_chunk": None, "text": "", "completion_tokens": None, "status": None,
               "chunks": 0, "error": None, "e2e": None}
        t0 = time.perf_counter()
        try:
            resp = self._send(body)
            out["status"] = resp.status
            if resp.status != 200:
                out["error"] = resp.read().decode(errors="replace")[:300]
                self._done(resp)
                return out
            first = True
            while True:
                line = resp.readline()
                if not line:
                    break
                line = line.strip()
                if not line.startswith(b"data: "):
                    continue
                payload = line[6:]
                if payload == b"[DONE]":
                    break
                chunk = json.loads(payload)
                out["chunks"] += 1
                if first:
                    out["t2_in_first_chunk"] = "t2" in chunk
                    first = False
                if "error" in chunk:
                    out["error"] = json.dumps(chunk["error"])[:300]
                for c in chunk.get("choices", []):
                    if c.get("text"):
                        if out["ttft"] is None:
                            out["ttft"] = time.perf_counter() - t0
                        out["text"] += c["text"]
                if chunk.get("usage"):
                    out["completion_tokens"] = chunk["usage"]["completion_tokens"]
            out["e2e"] = time.perf_counter() - t0
            resp.read()  # the chunked body's end, so the connection can be reused
            self._done(resp)
        except (OSError, http.client.HTTPException, ValueError) as e:
            out["error"] = f"{type(e).__name__}: {e}"[:300]
            self.close()
        return out


def listen_overflows():
    """The kernel's TcpExtListenOverflows counter (machine-wide; None where unreadable)."""
    try:
        with open("/proc/net/netstat") as f:
            rows = [line.split() for line in f if line.startswith("TcpExt:")]
        return int(rows[1][rows[0].index("ListenOverflows")])
    except (OSError, ValueError, IndexError):
        return None


def load_level(server, clients, total, max_tokens, keep_alive):
    body_for = lambda i: {"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": max_tokens, "temperature": 0,
                          "stream": True, "stream_options": {"include_usage": True}}
    pool = [Client(server.port, keep_alive) for _ in range(clients)]
    # warm-up: one request per client, all at once, not counted (opens the keep-alive connections)
    with cf.ThreadPoolExecutor(clients) as ex:
        list(ex.map(lambda c: c.stream(body_for(0)), pool))

    lock = threading.Lock()
    counter = [0]
    results = []

    def client(c):
        while True:
            with lock:
                i = counter[0]
                if i >= total:
                    return
                counter[0] += 1
            r = c.stream(body_for(i))
            r["prompt_index"] = i % len(PROMPTS)
            with lock:
                results.append(r)

    m0 = scrape(server.port)
    overflows0 = listen_overflows()
    reconnects0 = sum(c.reconnects for c in pool)
    cpu0, own0, st0 = server.cpu_seconds(), os.times(), proc_stat()
    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in pool]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    cpu1, own1, st1 = server.cpu_seconds(), os.times(), proc_stat()
    overflows1 = listen_overflows()
    for c in pool:
        c.close()
    jiffies = max(st1[2] - st0[2], 1)
    ncpu = os.cpu_count() or 1
    m1 = scrape(server.port)
    delta = lambda k: m1.get(k, 0.0) - m0.get(k, 0.0)
    steps = delta("t2_decode_steps_total")
    ttft_n = delta("t2_time_to_first_token_seconds_count")

    ok = [r for r in results if r["status"] == 200 and r["error"] is None]
    tokens = sum(r["completion_tokens"] or 0 for r in ok)
    ttft = [r["ttft"] for r in ok if r["ttft"] is not None]
    e2e = [r["e2e"] for r in ok]
    own_cpu = (own1.user - own0.user) + (own1.system - own0.system)
    return {
        "requests": len(results),
        "ok": len(ok),
        "errors": sorted({f'{r["status"]}: {r["error"]}' for r in results if r not in ok})[:5],
        "elapsed_s": elapsed,
        "requests_per_s": len(ok) / elapsed,
        "generated_tokens": tokens,
        "tokens_per_request_mean": tokens / len(ok) if ok else None,
        "generated_tokens_per_s": tokens / elapsed,
        "ttft_p50_ms": 1e3 * percentile(ttft, 50) if ttft else None,
        "ttft_p95_ms": 1e3 * percentile(ttft, 95) if ttft else None,
        "e2e_p50_ms": 1e3 * percentile(e2e, 50) if e2e else None,
        "e2e_p95_ms": 1e3 * percentile(e2e, 95) if e2e else None,
        # server side: its own TTFT (from the handler's start) and tokens per engine step
        "server_ttft_mean_ms": 1e3 * delta("t2_time_to_first_token_seconds_sum") / ttft_n if ttft_n else None,
        "client_ttft_mean_ms": 1e3 * statistics.mean(ttft) if ttft else None,
        "engine_steps": steps,
        "tokens_per_step": delta("t2_generated_tokens_total") / steps if steps else None,
        "ttft_max_ms": 1e3 * max(ttft) if ttft else None,
        "ttft_over_900ms": sum(1 for t in ttft if t > 0.9),
        "listen_overflows": None if overflows0 is None or overflows1 is None else overflows1 - overflows0,
        "reconnects": sum(c.reconnects for c in pool) - reconnects0,
        "first_chunk_without_t2": sum(1 for r in ok if r["t2_in_first_chunk"] is False),
        "server_cpu_pct": 100 * (cpu1 - cpu0) / elapsed,
        "client_cpu_pct": 100 * own_cpu / elapsed,
        # whole machine, in % of one core (200 = both cores of a 2-core VM busy)
        "machine_busy_pct": 100 * ncpu * (st1[0] - st0[0]) / jiffies,
        "machine_steal_pct": 100 * ncpu * (st1[1] - st0[1]) / jiffies,
    }, ok


STRATEGIES = ("none", "explicit", "prompt", "classifier")


def dispatch_shares(server, requests, max_tokens):
    """One client, non-streamed. Strategies are interleaved request by request, so drift in the
    machine's speed falls on all of them alike. Returns a row per strategy."""
    def body(strategy, i):
        b = {"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": max_tokens, "temperature": 0}
        if strategy == "explicit":
            b["expert"] = "alpha"
        else:
            b["dispatch"] = strategy
        return b

    client = Client(server.port, keep_alive=False)  # keep-alive adds ~40 ms a request: see the docstring
    cold = {}
    for strategy in STRATEGIES:  # the first request builds the cached template prefix
        wall, r, status = client.post(body(strategy, 0))
        if status != 200:
            raise RuntimeError(f"dispatch {strategy}: HTTP {status}: {r}")
        cold[strategy] = (wall * 1e3, r["t2"]["dispatch_ms"])
    got = {s: {"wall": [], "ms": [], "tokens": [], "cached": [], "labels": {}, "gen": [], "reported": set()}
           for s in STRATEGIES}
    st0 = proc_stat()
    for i in range(requests):
        for strategy in STRATEGIES:
            wall, r, status = client.post(body(strategy, i))
            if status != 200:
                raise RuntimeError(f"dispatch {strategy}: HTTP {status}: {r}")
            t2, g = r["t2"], got[strategy]
            g["wall"].append(wall * 1e3)
            g["ms"].append(t2["dispatch_ms"])
            g["tokens"].append(t2["dispatch_tokens"])
            g["cached"].append(t2["dispatch_cached_tokens"])
            g["labels"][t2["label"]] = g["labels"].get(t2["label"], 0) + 1
            g["gen"].append(r["usage"]["completion_tokens"])
            g["reported"].add(t2["strategy"])
    st1 = proc_stat()
    busy = 100 * (os.cpu_count() or 1) * (st1[0] - st0[0]) / max(st1[2] - st0[2], 1)
    base_wall = statistics.mean(got["none"]["wall"])
    rows = []
    for strategy in STRATEGIES:
        g = got[strategy]
        mean_wall, mean_ms = statistics.mean(g["wall"]), statistics.mean(g["ms"])
        rows.append({
            "strategy": strategy,
            "strategy_reported": sorted(g["reported"]),
            "requests": requests,
            "machine_busy_pct": busy,
            "mean_wall_ms": mean_wall,
            "p50_wall_ms": percentile(g["wall"], 50),
            "wall_minus_none_ms": mean_wall - base_wall,
            "mean_dispatch_ms": mean_ms,
            "p50_dispatch_ms": percentile(g["ms"], 50),
            "max_dispatch_ms": max(g["ms"]),
            "dispatch_share": mean_ms / mean_wall,
            "mean_dispatch_tokens": statistics.mean(g["tokens"]),
            "mean_dispatch_cached_tokens": statistics.mean(g["cached"]),
            "mean_completion_tokens": statistics.mean(g["gen"]),
            "labels": g["labels"],
            "cold_wall_ms": cold[strategy][0],
            "cold_dispatch_ms": cold[strategy][1],
        })
    return rows


def fmt(x, digits=1):
    return "-" if x is None else f"{x:.{digits}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--t2", default="build/t2", help="t2 binary (relative to the repo root unless absolute)")
    ap.add_argument("--model", default=os.path.join(os.path.dirname(REPO), "shared", "models", "stories260K"))
    ap.add_argument("--clients", default="1,8,32", help="comma-separated concurrency levels")
    ap.add_argument("--requests", type=int, default=128, help="requests per concurrency level (after one warm-up round)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--queue", type=int, default=64, help="--queue of t2 serve")
    ap.add_argument("--http-threads", type=int, default=0, help="T2_THREADS for the server; 0 = its automatic default")
    ap.add_argument("--connection", default="keep-alive,close",
                    help="comma-separated client connection modes to measure: keep-alive (one connection per client, "
                         "reopened when the server closes it) and/or close (a new connection per request)")
    ap.add_argument("--dispatch-requests", type=int, default=32, help="requests per dispatch strategy")
    ap.add_argument("--skip-load", action="store_true")
    ap.add_argument("--skip-dispatch", action="store_true")
    args = ap.parse_args()

    t2 = args.t2 if os.path.isabs(args.t2) else os.path.join(REPO, args.t2)
    if not os.access(t2, os.X_OK):
        sys.exit(f"error: t2 binary {t2} not found")
    levels = [int(x) for x in args.clients.split(",")]
    modes = args.connection.split(",")
    if any(m not in ("keep-alive", "close") for m in modes):
        sys.exit("error: --connection takes keep-alive and/or close")

    env = environment(t2)
    emit(env)
    tmp = tempfile.mkdtemp(prefix="t2-server-load-")
    load_rows, dispatch_rows = [], []
    try:
        experts_dir = build_experts(t2, args.model, tmp)
        server = Server(t2, args.model, experts_dir, os.path.join(tmp, "cache"), args.max_batch, args.queue,
                        args.http_threads, os.path.join(tmp, "serve.log"))
        try:
            log(f"server on port {server.port}: {server.ready_line}")
            if not args.skip_load:
                reference = {}
                for mode in modes:
                    for clients in levels:
                        row, ok = load_level(server, clients, args.requests, args.max_tokens, mode == "keep-alive")
                        # greedy: every response to a prompt should be the same text at any concurrency
                        texts = {}
                        for r in ok:
                            texts.setdefault(r["prompt_index"], set()).add(r["text"])
                        if not reference:
                            reference = {k: next(iter(v)) for k, v in texts.items() if len(v) == 1}
                        differing = sum(1 for r in ok if r["prompt_index"] in reference
                                        and r["text"] != reference[r["prompt_index"]])
                        row.update({"kind": "load", "connection": mode, "clients": clients,
                                    "http_threads": args.http_threads, "max_batch": args.max_batch,
                                    "max_tokens": args.max_tokens, "texts_differing_from_first_level": differing})
                        emit(row)
                        load_rows.append(row)
            if not args.skip_dispatch:
                for row in dispatch_shares(server, args.dispatch_requests, args.max_tokens):
                    row.update({"kind": "dispatch", "clients": 1, "max_tokens": args.max_tokens})
                    emit(row)
                    dispatch_rows.append(row)
        finally:
            server.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(f"Date: {env['date']}, nproc: {env['nproc']}, CPU: {env['cpu']}, load average at start: {env['loadavg']}, "
          f"commit {env['commit']}{' (tracked files modified)' if env['tracked_changes'] else ''}, "
          f"t2 binary built {env['t2_mtime']}")
    if load_rows:
        print()
        print("| connection | clients | ok/requests | req/s | gen tok/s | TTFT p50 ms | TTFT p95 ms | TTFT max ms "
              "| e2e p50 ms | tokens/step | TTFT > 0.9 s | listen overflows | server CPU % | machine busy % |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in load_rows:
            print(f"| {r['connection']} | {r['clients']} | {r['ok']}/{r['requests']} | {fmt(r['requests_per_s'])} "
                  f"| {fmt(r['generated_tokens_per_s'], 0)} | {fmt(r['ttft_p50_ms'])} | {fmt(r['ttft_p95_ms'])} "
                  f"| {fmt(r['ttft_max_ms'], 0)} | {fmt(r['e2e_p50_ms'])} | {fmt(r['tokens_per_step'])} "
                  f"| {r['ttft_over_900ms']} | {r['listen_overflows']} | {fmt(r['server_cpu_pct'], 0)} "
                  f"| {fmt(r['machine_busy_pct'], 0)} |")
    if dispatch_rows:
        print()
        print("| strategy | mean wall ms | wall - none ms | mean dispatch_ms | p50 / max dispatch_ms | dispatch share "
              "| dispatch_tokens | dispatch_cached_tokens | cold dispatch_ms | labels |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in dispatch_rows:
            labels = ", ".join(f"{k} {v}" for k, v in sorted(r["labels"].items()))
            print(f"| {r['strategy']} | {fmt(r['mean_wall_ms'], 2)} | {r['wall_minus_none_ms']:+.2f} | {fmt(r['mean_dispatch_ms'], 2)} "
                  f"| {fmt(r['p50_dispatch_ms'], 2)} / {fmt(r['max_dispatch_ms'], 2)} | {100 * r['dispatch_share']:.1f}% "
                  f"| {fmt(r['mean_dispatch_tokens'])} | {fmt(r['mean_dispatch_cached_tokens'])} "
                  f"| {fmt(r['cold_dispatch_ms'], 2)} | {labels} |")


if __name__ == "__main__":
    main()
