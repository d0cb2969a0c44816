#!/usr/bin/env python3
"""Transformer² at demo scale on stories260K: experts, a classifier, CEM, and the paper's Table 2 (CPU, stdlib only).

Rerun from the repository root (after scripts/setup.sh):

    python3 bench/svf_demo.py [--t2 build/t2] [--no-append]

Every step is a `t2` command (their JSON outputs are parsed; the exact commands land in experts/README.md):
  1. writes the task files (deterministic):
       configs/tasks/{bird,cat,dog}.jsonl  story requests ("Tell me a story about a dog. One day, Lily"); reward
                                           contains the animal; 72 train / 18 validation on 5 phrasings, 6 names and 3 openers,
                                           36 test on 3 phrasings, 4 names and 3 openers never trained on;
       configs/tasks/router.jsonl          the same kind of requests for bird, cat, dog and "others" (requests
                                           about a ball, tree, cake or car), answer = the label, balanced;
                                           64 train / 16 validation; test: held-out phrasings and held-out
                                           "others" topics (boat, flower, princess, train);
       configs/tasks/mixed.jsonl           the held-out mixed task of Table 2: 24 requests per label, held-out
                                           phrasings, names, openers and topics, each with its "label" and a
                                           regex answer (the animal, or for "others": no bird/cat/dog at all);
       configs/tasks/mixed_fewshot.jsonl   8 examples of the mixed task (2 per label) for few-shot CEM;
  2. trains experts/{bird,cat,dog} with `t2 train --dispatch-target` at the defaults (KL 0.1), and the same
     experts with --kl-coef 0 into build/demo/ (not shipped) to measure what the KL penalty buys;
  3. trains experts/router with `t2 train --objective labels --kl-coef 0`: REINFORCE over the label set, scored
     as the server scores labels in pass 1 (configs/dispatch/prompt.txt, mean log-probability);
  4. `t2 adapt` (CEM) mixes bird,cat,dog on mixed_fewshot.jsonl into experts/pets-cem (not a dispatch target);
  5. Table 2 through `t2 eval` on mixed.jsonl: base, each expert, T² prompt, T² classifier, T² few-shot CEM and
     oracle routing, with task accuracy, routing accuracy (Wilson 95%) and perplexity under the base model;
  6. the same mixed task through a real `t2 serve` (configs/server.json, dispatch auto -> classifier) over HTTP,
     per strategy, with the dispatch share of request time;
  7. appends the tables to bench/RESULTS.md (unless --no-append) and writes experts/README.md.
The t2 processes run with OMP_NUM_THREADS=1 (reproducible numbers; libtorch's spinning threads collapse on a
shared 2-core machine).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TASKS = ROOT / "configs" / "tasks"
EXPERTS = ROOT / "experts"
WORK = ROOT / "build" / "demo"
RESULTS = ROOT / "bench" / "RESULTS.md"
MODEL = ROOT / "models" / "stories260K"
SECTION = "## CPU: Transformer² at demo scale on stories260K (bench/svf_demo.py)"
SEED = "1"

PETS = ["bird", "cat", "dog"]
OTHERS_TRAIN = ["ball", "tree", "cake", "car"]
OTHERS_TEST = ["boat", "flower", "princess", "train"]
TRAIN_REQUESTS = ["Tell me a story about a {a}.", "Write a story about a {a}.", "I want a story with a {a}.",
                  "A story about a little {a}, please.", "Tell a bedtime story about a {a}."]
TEST_REQUESTS = ["Could you write a funny story about a {a}?", "I would like a tale where a {a} is happy.",
                 "My friend has a {a}. Write about it."]
TRAIN_NAMES = ["Tom", "Lily", "Sam", "Anna", "Ben", "Mia"]
TEST_NAMES = ["Max", "Sue", "Tim", "Amy"]
TRAIN_OPENERS = ["Once upon a time, {n}", "One day, {n}", "{n} was playing"]
TEST_OPENERS = ["Once upon a time, {n}", "It was a sunny day and {n}", "{n} went to the store"]
NO_PET = "^(?![\\s\\S]*(bird|cat|dog))"  # the "others" answer: a story that brings in no expert's animal

TRAIN_ARGS = ["--reward", "contains", "--max-tokens", "48", "--seed", SEED]
# The classification expert only scores labels in pass 1 and never writes text, so the KL penalty that keeps
# the other experts fluent has nothing to protect there.
ROUTER_ARGS = ["--iters", "60", "--kl-coef", "0", "--seed", SEED]
CEM_ARGS = ["--reward", "regex", "--max-tokens", "48", "--population", "16", "--elite-ratio", "0.25", "--iters", "8",
            "--seed", SEED]


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def request(template: str, topic: str, opener: str, name: str) -> str:
    return template.format(a=topic) + " " + opener.format(n=name)


def expert_task(pet: str) -> list[dict]:
    records, k = [], 0
    for t in TRAIN_REQUESTS:
        for n in TRAIN_NAMES:
            for o in TRAIN_OPENERS:
                k += 1
                split = "validation" if k % 5 == 0 else "train"
                records.append({"prompt": request(t, pet, o, n), "answer": pet, "split": split})
    for t in TEST_REQUESTS:
        for n in TEST_NAMES:
            for o in TEST_OPENERS:
                records.append({"prompt": request(t, pet, o, n), "answer": pet, "split": "test"})
    return records


def router_task() -> list[dict]:
    records, k = [], 0
    for label in PETS + ["others"]:
        for i, t in enumerate(TRAIN_REQUESTS):
            for j, n in enumerate(TRAIN_NAMES[:4]):
                k += 1
                topic = label if label != "others" else OTHERS_TRAIN[(i * 4 + j) % 4]
                records.append({"prompt": request(t, topic, TRAIN_OPENERS[(i + j) % 3], n), "answer": label, "label": label,
                                "split": "validation" if k % 5 == 0 else "train"})
        for i, t in enumerate(TEST_REQUESTS):
            for j, n in enumerate(TEST_NAMES):
                topic = label if label != "others" else OTHERS_TEST[(i + j) % 4]
                records.append({"prompt": request(t, topic, TEST_OPENERS[(i + j) % 3], n), "answer": label, "label": label,
                                "split": "test"})
    return records


def mixed_task() -> list[dict]:
    records = []
    for label in PETS + ["others"]:
        for i, t in enumerate(TEST_REQUESTS):
            for j, n in enumerate(TEST_NAMES):
                for o in range(2):
                    topic = label if label != "others" else OTHERS_TEST[(i + j + o) % 4]
                    records.append({"prompt": request(t, topic, TEST_OPENERS[(i + j + o) % 3], n),
                                    "answer": label if label != "others" else NO_PET, "label": label, "split": "test"})
    return records


def fewshot_task() -> list[dict]:
    records = []
    for k, label in enumerate(PETS + ["others"]):
        for j in range(2):
            topic = label if label != "others" else OTHERS_TRAIN[j]
            records.append({"prompt": request(TRAIN_REQUESTS[(k + j) % 5], topic, TRAIN_OPENERS[j], TRAIN_NAMES[k + j]),
                            "answer": label if label != "others" else NO_PET})
    return records


class T2:
    def __init__(self, binary: str, cache_dir: Path):
        self.binary, self.cache_dir = binary, cache_dir
        self.env = dict(os.environ, OMP_NUM_THREADS="1")
        self.commands: dict[str, str] = {}

    def run(self, *args: str, key: str | None = None) -> dict:
        cmd = [self.binary, args[0], "--model", str(MODEL), "--cache-dir", str(self.cache_dir), *args[1:]]
        printable = " ".join(shlex.quote(os.path.relpath(c, ROOT) if c.startswith(str(ROOT) + "/") else c) for c in cmd)
        print("$", printable[:300], flush=True)
        started = time.time()
        proc = subprocess.run(cmd, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-4000:])
            raise SystemExit(f"t2 failed ({proc.returncode}): {printable}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        out["_seconds"] = round(time.time() - started, 1)
        out["_warnings"] = [l for l in proc.stderr.splitlines() if "[warning]" in l]
        if key:
            self.commands[key] = printable
        return out

    def eval(self, task: Path, *extra: str, reward: str = "regex") -> dict:
        return self.run("eval", "--task", str(task), "--reward", reward, "--max-tokens", "48", "--split", "test",
                        "--experts-dir", str(EXPERTS), *extra)


def ci(r: dict) -> str:
    lo, hi = r["ci95"]
    return f"{r['accuracy']:.2f} ({r['correct']}/{r['total']}, {lo:.2f}-{hi:.2f})"


def serve_table(binary: str, cache_dir: Path, mixed: list[dict]) -> tuple[list[str], dict]:
    """The mixed task through a real server, one request at a time, per strategy."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [binary, "serve", "--config", "configs/server.json", "--host", "127.0.0.1", "--port", "0", "--cache-dir", str(cache_dir)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    port, ready = None, ""
    for line in proc.stdout:
        if m := re.search(r"listening on http://127\.0\.0\.1:(\d+)", line):
            port = int(m.group(1))
        if "t2 ready" in line:
            ready = line.strip()
            break
    if port is None or not ready:
        proc.kill()
        raise SystemExit("the server did not start")
    results = {}
    try:
        for name, extra in [("server default (auto)", {}), ("dispatch: prompt", {"dispatch": "prompt"}),
                            ("dispatch: classifier", {"dispatch": "classifier"}), ("expert: none (base)", {"expert": "none"}),
                            ("oracle (expert named)", None)]:
            correct = routed = 0
            dispatch_ms = total_ms = 0.0
            for r in mixed:
                body = {"prompt": r["prompt"], "max_tokens": 48, "temperature": 0}
                body.update(extra if extra is not None else {"expert": r["label"] if r["label"] != "others" else "none"})
                req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
                started = time.perf_counter()
                with urllib.request.urlopen(req, timeout=60) as resp:
                    out = json.loads(resp.read())
                total_ms += (time.perf_counter() - started) * 1000
                text = out["choices"][0]["text"]
                correct += bool(re.search(r["answer"], text))
                label = out["t2"]["label"] if out["t2"]["strategy"] in ("prompt", "classifier") else None
                routed += label == r["label"]
                dispatch_ms += out["t2"].get("dispatch_ms", 0.0)
            results[name] = {"accuracy": correct / len(mixed), "correct": correct, "routing": routed / len(mixed),
                             "dispatch_share": dispatch_ms / total_ms, "ms": total_ms / len(mixed),
                             "dispatch_ms": dispatch_ms / len(mixed), "strategy": name}
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return [ready], results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--t2", default="build/t2")
    ap.add_argument("--no-append", action="store_true", help="do not append to bench/RESULTS.md")
    a = ap.parse_args()
    os.chdir(ROOT)
    binary = str((ROOT / a.t2).resolve())
    cache = WORK / "svd-cache"
    t2 = T2(binary, cache)
    started = time.time()

    # 1. Tasks.
    for pet in PETS:
        write_jsonl(TASKS / f"{pet}.jsonl", expert_task(pet))
    write_jsonl(TASKS / "router.jsonl", router_task())
    mixed = mixed_task()
    write_jsonl(TASKS / "mixed.jsonl", mixed)
    write_jsonl(TASKS / "mixed_fewshot.jsonl", fewshot_task())
    for old in ["pets.jsonl", "pets_fewshot.jsonl", "router_first.jsonl", "router_only.jsonl", "router_template.txt"]:
        (TASKS / old).unlink(missing_ok=True)

    # 2. Experts (dispatch targets), and the KL-free variants for comparison.
    shutil.rmtree(EXPERTS, ignore_errors=True)
    shutil.rmtree(WORK / "kl0", ignore_errors=True)
    EXPERTS.mkdir()
    trained, kl_rows = {}, []
    for pet in PETS:
        task = TASKS / f"{pet}.jsonl"
        r = t2.run("train", "--task", str(task), "--out", str(EXPERTS / pet), "--description", f"stories about a {pet}",
                   "--dispatch-target", "--no-resume", *TRAIN_ARGS, key=pet)
        free = t2.run("train", "--task", str(task), "--out", str(WORK / "kl0" / pet), "--no-resume", "--kl-coef", "0", *TRAIN_ARGS)
        (EXPERTS / pet / "train_state.safetensors").unlink(missing_ok=True)
        base_test = t2.eval(task, reward="contains")
        with_kl = t2.eval(task, "--expert", pet, reward="contains")
        without = t2.run("eval", "--task", str(task), "--reward", "contains", "--max-tokens", "48", "--split", "test",
                         "--experts-dir", str(WORK / "kl0"), "--expert", pet)
        trained[pet] = r
        kl_rows.append(f"| `{pet}` | {ci(base_test)}, ppl {base_test['perplexity']:.2f} | {ci(without)}, ppl {without['perplexity']:.2f} "
                       f"({without['perplexity'] / base_test['perplexity']:.2f}x) | {ci(with_kl)}, ppl {with_kl['perplexity']:.2f} "
                       f"({with_kl['perplexity'] / base_test['perplexity']:.2f}x) | {r['best_iter']} / {free['best_iter']} | {r['_seconds']} s |")

    # 3. The classification expert, trained on pass 1's own objective.
    router = t2.run("train", "--objective", "labels", "--task", str(TASKS / "router.jsonl"), "--out", str(EXPERTS / "router"),
                    "--experts-dir", str(EXPERTS), "--description", "classification expert for pass 1 (bird, cat, dog, others)",
                    "--no-resume", *ROUTER_ARGS, key="router")
    (EXPERTS / "router" / "train_state.safetensors").unlink(missing_ok=True)

    # 4. Few-shot CEM over the three experts.
    cem = t2.run("adapt", "--experts", ",".join(PETS), "--examples", str(TASKS / "mixed_fewshot.jsonl"),
                 "--out", str(EXPERTS / "pets-cem"), "--experts-dir", str(EXPERTS), *CEM_ARGS, key="pets-cem")

    # 5. Table 2 through t2 eval.
    mixed_path = TASKS / "mixed.jsonl"
    routing_test = t2.eval(TASKS / "router.jsonl", "--dispatch", "classifier", reward="exact")
    rows = [("base (no adaptation)", t2.eval(mixed_path)), ]
    rows += [(f"single expert `{pet}`", t2.eval(mixed_path, "--expert", pet)) for pet in PETS]
    rows += [("T² prompt (base model labels the request)", t2.eval(mixed_path, "--dispatch", "prompt")),
             ("T² classifier (`router`)", t2.eval(mixed_path, "--dispatch", "classifier")),
             ("T² few-shot CEM (`pets-cem`)", t2.eval(mixed_path, "--expert", "pets-cem")),
             ("oracle routing (the record's label)", t2.eval(mixed_path, "--dispatch", "oracle"))]

    # 6. Through the server.
    ready, served = serve_table(binary, cache, mixed)

    validate = subprocess.run([binary, "experts", "validate", "--model", str(MODEL), "--experts-dir", str(EXPERTS)],
                              cwd=ROOT, capture_output=True, text=True, env=t2.env)
    elapsed = time.time() - started

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor())
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [SECTION, "",
             f"Command: `python3 bench/svf_demo.py` (each step a `t2` command, listed in experts/README.md), commit {commit}, "
             f"{now}, {os.cpu_count()} cores ({cpu}), OMP_NUM_THREADS=1, whole run {elapsed / 60:.1f} min. "
             "It supersedes the earlier 'SVF experts from data' sections: the shipped experts were retrained by it.", "",
             "**Table 2 at demo scale** (`t2 eval --task configs/tasks/mixed.jsonl --reward regex --max-tokens 48 ...`): "
             f"{len(mixed)} held-out requests, 24 per label (bird, cat, dog, others) with phrasings, names, openers and "
             "'others' topics never trained on. A pet request is solved when the story names the animal; an 'others' "
             "request when it names none of the three. Intervals are Wilson 95%; perplexity is that of the completions "
             "under the base model.", "",
             "| adaptation | task accuracy | routing accuracy | solved per label | perplexity |", "|---|---|---|---|---|"]
    for name, r in rows:
        routing = ci(r["routing"]) if "routing" in r else "-"
        per_label = ", ".join(f"{k} {v['correct']}/{v['total']}" for k, v in r.get("by_label", {}).items())
        lines.append(f"| {name} | {ci(r)} | {routing} | {per_label} | {r['perplexity']:.2f} |")
    lines += ["", f"Classifier routing on router.jsonl's test split (held-out phrasings and 'others' topics, "
                  f"{routing_test['routing']['total']} requests): {ci(routing_test['routing'])}; confusion "
                  f"`{json.dumps(routing_test['routing']['confusion'], sort_keys=True)}`.",
              f"Router training (`t2 train --objective labels --kl-coef 0`, {ROUTER_ARGS[1]} steps, {router['_seconds']} s): validation "
              f"{router['base_validation_accuracy']:.2f} (base model) -> {router['best_validation_accuracy']:.2f} (step {router['best_iter']}).",
              f"CEM (`t2 adapt`, 8 examples): weights {json.dumps({c['expert']: round(c['weight'], 3) for c in cem.get('components', [])})}.",
              "", f"**Through the server** (`t2 serve --config configs/server.json`; {ready[0]}): the same {len(mixed)} requests, "
              "one at a time over HTTP; dispatch share = pass-1 ms / request ms.", "",
              "| request | task accuracy | routing accuracy | ms per request | pass 1 ms | dispatch share |", "|---|---|---|---|---|---|"]
    for name, r in served.items():
        lines.append(f"| {name} | {r['accuracy']:.2f} ({r['correct']}/{len(mixed)}) | "
                     f"{r['routing']:.2f} | {r['ms']:.1f} | {r['dispatch_ms']:.1f} | {100 * r['dispatch_share']:.1f}% |")
    lines += ["", "**What the KL penalty buys** (each expert's own test split, 36 held-out requests; `t2 train` defaults "
              "lr 5e-2, no clipping, KL 0.1, 100 steps, against the same run with `--kl-coef 0`):", "",
              "| expert | base model | KL 0 | KL 0.1 (default) | best step (KL 0.1 / 0) | train time |", "|---|---|---|---|---|---|"]
    lines += kl_rows
    warnings = [w for r in list(trained.values()) + [router] for w in r["_warnings"]]
    if warnings:
        lines += ["", "Warnings: " + "; ".join(warnings)]
    lines.append("")
    text = "\n".join(lines)
    print("\n" + text)
    if not a.no_append:
        RESULTS.write_text(RESULTS.read_text().rstrip("\n") + "\n\n" + text)

    readme = ["# Shipped experts (stories260K)", "",
              "Made by `python3 bench/svf_demo.py` (results in bench/RESULTS.md); base model `models/stories260K`, SVF on the "
              "15 MLP matrices. Check them with `build/t2 experts validate --model models/stories260K --experts-dir experts`.", ""]
    for name in PETS + ["router", "pets-cem"]:
        meta = json.loads((EXPERTS / name / "expert.json").read_text())
        readme += [f"## {name}", "", f"- {meta.get('kind')}, dispatch role: {meta.get('dispatch', 'none')}; {meta.get('description')}",
                   f"- command: `{t2.commands[name]}`", f"- scores: `{json.dumps(meta.get('scores', {}), sort_keys=True)}`", ""]
    (EXPERTS / "README.md").write_text("\n".join(readme))
    if validate.returncode != 0:
        print(validate.stdout, validate.stderr)
        raise SystemExit("t2 experts validate failed")


if __name__ == "__main__":
    main()
