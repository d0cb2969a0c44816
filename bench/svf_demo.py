#!/usr/bin/env python3
"""SVF experts trained from data on stories260K, end to end on a CPU (stdlib only).

Rerun from the repository root:

    python3 bench/svf_demo.py [--t2 build/t2] [--models ../shared/models]

What it does (every step is a `t2` command; their JSON outputs are parsed):
  1. writes the task files (deterministic, no randomness):
       configs/tasks/{dog,cat,bird}.jsonl  60 story starts each ("Once upon a time, Tom", ...),
                                           answer the animal, reward "contains"; explicit splits
                                           40 train / 10 validation / 10 test;
       configs/tasks/pets_fewshot.jsonl    8 held-out story starts (new names and openers),
                                           answer the regex "dog|cat|bird" (few-shot task for CEM);
       configs/tasks/pets.jsonl            40 further held-out story starts, same regex, all "test";
       configs/tasks/router.jsonl          90 requests ("Tell me a story about a dog.") whose answer is
                                           the regex "^\\s*dog" (the completion after "\\boxed{" starts
                                           with the label); 48 train / 12 validation on 10 phrasings,
                                           30 test on 5 phrasings never trained on;
       configs/tasks/router_first.jsonl    the same requests, answer a regex "the first label the completion
                                           mentions is the right one" (^(?:(?!cat|dog)[\s\S])*bird);
       configs/tasks/router_only.jsonl     the same requests, answer a regex "the right label and no other"
                                           (^(?![\s\S]*(?:cat|dog))[\s\S]*bird);
       configs/tasks/router_template.txt   the filled dispatch template passed as --template;
  2. trains experts/{dog,cat,bird} with `t2 train` (REINFORCE, seeded); an animal whose best
     validation accuracy stays under 0.5 is replaced by the next word of FALLBACK_WORDS;
  3. trains experts/router, the classifier expert, through the filled dispatch template
     (configs/dispatch/prompt.txt, {experts} = "- bird: stories about a bird" ..., trailing
     newlines stripped as the dispatcher does). First with the strict reward (regex "^\\s*LABEL",
     4 tokens) in a temp folder; if that never scores, with the shaped reward "first label mentioned
     in 8 tokens is right", which is what ships. (A plain "contains LABEL" reward was tried during
     development and gamed: the router learnt to emit "st dog cathry", which contains "cat" for any
     request.) All three criteria are then measured for base and router on the training requests and
     on the held-out test phrasings (t2 eval, free-text greedy: the reference's "prompt" strategy);
  4. `t2 adapt` (CEM) mixes dog,cat,bird for pets_fewshot.jsonl into experts/pets-cem and
     evaluates base, each expert, the uniform mixture and pets-cem on pets.jsonl;
  5. counts parameters: SVF's z values (read from z.safetensors) against LoRA of rank 1 and 4
     on the same matrices (computed from the model's shapes; no LoRA is built);
  6. prints a markdown table, appends it to bench/RESULTS.md (unless --no-append) and writes
     experts/README.md. train_state.safetensors is deleted; train_log.jsonl kept when < 20 KB.

SVD cache: --cache-dir (default build/svd-cache, git-ignored), never $HOME.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import re
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TASKS = ROOT / "configs" / "tasks"
EXPERTS = ROOT / "experts"
RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "## CPU: SVF experts from data on stories260K (bench/svf_demo.py)"

ANIMALS = ["dog", "cat", "bird"]
FALLBACK_WORDS = ["ball", "tree", "fish"]  # tried in order if an animal does not learn
SEED = 1

# Training story starts: 10 openers x 6 names = 60 distinct prompts.
TRAIN_NAMES = ["Tom", "Lily", "Sam", "Anna", "Ben", "Mia"]
TRAIN_OPENERS = ["Once upon a time, {n}", "One day, {n}", "{n} and his mom", "{n} was playing",
                 "There was a little kid named {n}.", "The sun was shining and {n}", "{n} had a",
                 "In the park, {n}", "A little girl named {n}", "{n} and the boy"]
# Held-out story starts (names and most openers never trained on).
HELD_NAMES_TEST = ["Max", "Sue", "Tim", "Amy"]
HELD_NAMES_FEW = ["Jack", "Zoe"]
HELD_OPENERS = ["Once upon a time, {n}", "It was a sunny day and {n}", "{n} went to the store",
                "Long ago, {n}", "{n} woke up and", "At the beach, {n}", "{n} found a box",
                "After school, {n}", "{n} and her dad", "There was a happy kid named {n}."]
# Router requests.
ROUTER_TRAIN = ["Tell me a story about a {a}.", "Write a story about a {a}.", "I want a story with a {a}.",
                "Can you tell me a tale about a {a}?", "Please write a short story where a {a} plays.",
                "A story about a little {a}, please.", "Make up a story about a {a} and a girl.",
                "Tell a bedtime story about a {a}.", "I like my {a}. Tell me a story.",
                "Write about a {a} in the park."]
ROUTER_TEST = ["Could you write a funny story about a {a}?", "My friend has a {a}. Write a story about it.",
               "Once more, a story with a big {a}, please.", "Tell me about a {a} who is sad.",
               "I would like a tale where a {a} finds a ball."]
ROUTER_SUFFIXES = ["", " Thank you."]

# Training hyperparameters. Measured: t2 train's defaults (--lr 2e-3 --max-grad-norm 1e-3) left dog at
# validation 0.0 -> 0.0 after 100 steps (seed 1); lr 5e-2 without clipping learns in 40-90 steps.
TRAIN_ARGS = ["--reward", "contains", "--iters", "100", "--batch-size", "16", "--lr", "5e-2",
              "--max-grad-norm", "0", "--max-tokens", "48", "--eval-every", "10", "--seed", str(SEED)]
ROUTER_COMMON = ["--batch-size", "16", "--lr", "5e-2", "--max-grad-norm", "0", "--eval-every", "10",
                 "--seed", str(SEED)]
ROUTER_STRICT = ["--reward", "regex", "--max-tokens", "4"] + ROUTER_COMMON
ROUTER_STRICT_ARGS = ROUTER_STRICT + ["--iters", "40"]
ROUTER_SHAPED_ARGS = ["--reward", "regex", "--max-tokens", "8", "--iters", "120"] + ROUTER_COMMON
CEM_ARGS = ["--reward", "regex", "--max-tokens", "48", "--population", "16", "--elite-ratio", "0.25",
            "--iters", "8", "--seed", str(SEED)]


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def story_task(word: str) -> list[dict]:
    records = []
    for i in range(60):
        prompt = TRAIN_OPENERS[(i + i // 10) % 10].format(n=TRAIN_NAMES[i // 10])
        split = "validation" if i % 6 == 4 else "test" if i % 6 == 5 else "train"
        records.append({"prompt": prompt, "answer": word, "split": split})
    return records


def pets_tasks(regex: str) -> tuple[list[dict], list[dict]]:
    few = [{"prompt": HELD_OPENERS[i].format(n=HELD_NAMES_FEW[i % 2]), "answer": regex} for i in range(8)]
    test = [{"prompt": o.format(n=n), "answer": regex, "split": "test"} for n in HELD_NAMES_TEST for o in HELD_OPENERS]
    return few, test


def router_tasks(labels: list[str]) -> tuple[list[dict], list[dict], list[dict]]:
    seen = [(t.format(a=a) + s, a) for s in ROUTER_SUFFIXES for t in ROUTER_TRAIN for a in labels]
    # Deterministic shuffle so validation holds every label (a fixed stride would pick one label only).
    order = list(range(len(seen)))
    random.Random(0).shuffle(order)
    splits = {}
    for rank, i in enumerate(order):
        splits[i] = "validation" if rank < len(seen) // 5 else "train"
    held = [(t.format(a=a) + s, a) for s in ROUTER_SUFFIXES for t in ROUTER_TEST for a in labels]
    strict, first, only = [], [], []
    for i, (p, a) in enumerate(seen + held):
        split = splits[i] if i < len(seen) else "test"
        others = "|".join(x for x in labels if x != a)
        strict.append({"prompt": p, "answer": "^\\s*" + a, "split": split})
        first.append({"prompt": p, "answer": f"^(?:(?!{others})[\\s\\S])*{a}", "split": split})
        only.append({"prompt": p, "answer": f"^(?![\\s\\S]*(?:{others}))[\\s\\S]*{a}", "split": split})
    return strict, first, only


def dispatch_template(labels: list[str]) -> str:
    text = (ROOT / "configs" / "dispatch" / "prompt.txt").read_text()
    while text.endswith("\n"):
        text = text[:-1]  # the dispatcher drops the suffix's trailing newlines too
    return text.replace("{experts}", "\n".join(f"- {a}: stories about a {a}" for a in sorted(labels)))


class T2:
    def __init__(self, binary: str, model: Path, cache_dir: Path):
        self.binary, self.model, self.cache_dir = binary, model, cache_dir
        self.log: list[str] = []
        self.template, self.template_file = None, None

    def run(self, *args: str, show: bool = True) -> dict:
        cmd = [self.binary, args[0], "--model", str(self.model), "--cache-dir", str(self.cache_dir), *args[1:]]
        for attempt in range(30):  # build/t2 may vanish for a moment while the other checkout relinks
            if Path(self.binary).exists():
                break
            time.sleep(10)
        printable = " ".join(self.quote(c) for c in cmd)
        if show:
            print("$", printable if len(printable) < 400 else printable[:400] + " ...", flush=True)
        started = time.time()
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-4000:])
            raise SystemExit(f"t2 failed ({proc.returncode}): {printable}")
        line = [l for l in proc.stdout.splitlines() if l.startswith("{")][-1]
        out = json.loads(line)
        out["_seconds"] = round(time.time() - started, 1)
        self.log.append(printable)
        return out

    def quote(self, arg: str) -> str:
        if arg == self.template and self.template_file:
            return '"$(cat ' + os.path.relpath(self.template_file, ROOT) + ')"'
        if arg.startswith(str(ROOT.parent) + "/"):
            arg = os.path.relpath(arg, ROOT)
        return shlex.quote(arg)

    def eval(self, task: Path, reward: str, max_tokens: int, split: str = "test", template: str | None = None,
             expert: str | None = None, mixture: str | None = None) -> dict:
        args = ["eval", "--task", str(task), "--reward", reward, "--max-tokens", str(max_tokens), "--split", split,
                "--experts-dir", str(EXPERTS)]
        if template is not None:
            args += ["--template", template]
        if expert:
            args += ["--expert", expert]
        if mixture:
            args += ["--mixture", mixture]
        return self.run(*args, show=False)


def acc(r: dict) -> str:
    lo, hi = r["ci95"]
    return f"{r['accuracy']:.2f} ({r['correct']}/{r['total']}, 95% CI {lo:.2f}-{hi:.2f})"


def safetensors_shapes(path: Path) -> dict[str, list[int]]:
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}


def tidy(folder: Path) -> None:
    state = folder / "train_state.safetensors"
    if state.exists():
        state.unlink()
    log = folder / "train_log.jsonl"
    if log.exists() and log.stat().st_size >= 20_000:
        log.unlink()


def validation_curve(folder: Path) -> str:
    log = folder / "train_log.jsonl"
    if not log.exists():
        return ""
    points = [json.loads(l) for l in log.read_text().splitlines() if l.strip()]
    return " ".join(f"{p['iter']}:{p['validation']:.1f}" for p in points if "validation" in p)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--t2", default="build/t2")
    ap.add_argument("--models", default="../shared/models")
    ap.add_argument("--cache-dir", default="build/svd-cache", help="SVD cache folder (git-ignored)")
    ap.add_argument("--no-append", action="store_true", help="do not append to bench/RESULTS.md")
    a = ap.parse_args()
    os.chdir(ROOT)
    model = (ROOT / a.models / "stories260K").resolve()
    if not (model / "model.safetensors").exists():
        raise SystemExit(f"{model}: no stories260K")
    t2 = T2(str((ROOT / a.t2).resolve()) if not os.path.isabs(a.t2) else a.t2, model, (ROOT / a.cache_dir).resolve())
    started = time.time()
    load_start = os.getloadavg()
    EXPERTS.mkdir(exist_ok=True)
    rows: list[tuple[str, str, str]] = []  # (step, what, result)
    notes: list[str] = []
    commands: dict[str, str] = {}

    # 1-2. Story-word experts.
    learned: list[str] = []
    candidates = list(ANIMALS)
    spare = list(FALLBACK_WORDS)
    train_results = {}
    while candidates:
        word = candidates.pop(0)
        task = TASKS / f"{word}.jsonl"
        write_jsonl(task, story_task(word))
        out = EXPERTS / word
        r = t2.run("train", "--task", str(task), "--out", str(out), "--description", f"stories about a {word}",
                   "--no-resume", *TRAIN_ARGS)
        commands[word] = t2.log[-1]
        r["curve"] = validation_curve(out)
        tidy(out)
        train_results[word] = r
        print(f"  {word}: base {r['base_validation_accuracy']:.2f} -> best {r['best_validation_accuracy']:.2f} "
              f"(iter {r['best_iter']}, {r['_seconds']} s)", flush=True)
        if r["best_validation_accuracy"] >= 0.5:
            learned.append(word)
        else:
            notes.append(f"'{word}' did not learn (best validation {r['best_validation_accuracy']:.2f}); "
                         f"replaced by '{spare[0] if spare else 'nothing'}'")
            if spare:
                candidates.append(spare.pop(0))
            shutil.rmtree(out)  # not shipped
    for word, r in train_results.items():
        base = t2.eval(TASKS / f"{word}.jsonl", "contains", 48)
        test_e = t2.eval(TASKS / f"{word}.jsonl", "contains", 48, expert=word)
        r["base_test"], r["expert_test"] = base, test_e
        rows.append(("train", f"`{word}` expert: validation (10), base -> best (iter)",
                     f"{r['base_validation_accuracy']:.2f} -> {r['best_validation_accuracy']:.2f} "
                     f"(iter {r['best_iter']}; curve {r['curve']}; {r['_seconds']} s)"))
        rows.append(("train", f"`{word}` expert: test split (10), base vs expert",
                     f"{acc(base)} vs {acc(test_e)}"))

    # 3. Router (classifier expert) through the dispatch template.
    labels = sorted(learned)
    template = dispatch_template(labels)
    template_file = TASKS / "router_template.txt"
    template_file.write_text(template)
    t2.template, t2.template_file = template, template_file
    strict, first, only = router_tasks(labels)
    write_jsonl(TASKS / "router.jsonl", strict)
    write_jsonl(TASKS / "router_first.jsonl", first)
    write_jsonl(TASKS / "router_only.jsonl", only)
    with tempfile.TemporaryDirectory() as tmp:
        r = t2.run("train", "--task", str(TASKS / "router.jsonl"), "--out", str(Path(tmp) / "router-strict"),
                   "--template", template, "--no-resume", *ROUTER_STRICT_ARGS)
        rewards = [json.loads(l)["reward"] for l in (Path(tmp) / "router-strict" / "train_log.jsonl").read_text().splitlines()]
    positive = sum(1 for x in rewards if x > -1)
    rows.append(("router", "strict reward (regex `^\\s*LABEL`, 4 tokens, 40 iters): validation base -> best",
                 f"{r['base_validation_accuracy']:.2f} -> {r['best_validation_accuracy']:.2f}; "
                 f"{positive}/{len(rewards)} steps had any rewarded sample"))
    strict_ok = r["best_validation_accuracy"] > r["base_validation_accuracy"]
    router_out = EXPERTS / "router"
    if strict_ok:
        r = t2.run("train", "--task", str(TASKS / "router.jsonl"), "--out", str(router_out), "--template", template,
                   "--description", "classifier expert: story request -> " + "/".join(labels) + " via configs/dispatch/prompt.txt",
                   "--no-resume", *ROUTER_STRICT, "--iters", "120")
    else:
        notes.append("the strict router reward never fired (every sampled first token after '\\boxed{' was wrong), "
                     "so REINFORCE had no signal; the shipped router uses the shaped reward")
        r = t2.run("train", "--task", str(TASKS / "router_first.jsonl"), "--out", str(router_out), "--template", template,
                   "--description", "classifier expert: story request -> " + "/".join(labels) + " via configs/dispatch/prompt.txt",
                   "--no-resume", *ROUTER_SHAPED_ARGS)
    commands["router"] = t2.log[-1]
    r["_iters"] = 120
    r["curve"] = validation_curve(router_out)
    tidy(router_out)
    train_results["router"] = r
    rows.append(("router", f"router expert ({'strict' if strict_ok else 'shaped: first label mentioned in 8 tokens'}, "
                 f"{r['_iters']} iters): validation (12) base -> best",
                 f"{r['base_validation_accuracy']:.2f} -> {r['best_validation_accuracy']:.2f} (iter {r['best_iter']}; "
                 f"curve {r['curve']}; {r['_seconds']} s)"))
    router_eval = {}
    for name, task, reward, tokens in [("strict: completion starts with the label", "router.jsonl", "regex", 4),
                                       ("first label mentioned in 8 tokens is right", "router_first.jsonl", "regex", 8),
                                       ("right label and no other in 8 tokens", "router_only.jsonl", "regex", 8)]:
        for split, size in [("train", 48), ("test", 30)]:
            b = t2.eval(TASKS / task, reward, tokens, split=split, template=template)
            e = t2.eval(TASKS / task, reward, tokens, split=split, template=template, expert="router")
            router_eval[(name, split)] = (b, e)
            where = "held-out phrasings (test, 30)" if split == "test" else "training requests (train, 48)"
            rows.append(("router", f"{name}, {where}: base vs router", f"{acc(b)} vs {acc(e)}"))

    # 4. CEM mixture on a held-out few-shot task.
    regex = "|".join(labels)
    few, test = pets_tasks(regex)
    write_jsonl(TASKS / "pets_fewshot.jsonl", few)
    write_jsonl(TASKS / "pets.jsonl", test)
    cem = t2.run("adapt", "--experts", ",".join(labels), "--examples", str(TASKS / "pets_fewshot.jsonl"),
                 "--out", str(EXPERTS / "pets-cem"), "--experts-dir", str(EXPERTS), *CEM_ARGS)
    commands["pets-cem"] = t2.log[-1]
    weights = ", ".join(f"{c['expert']}={c['weight']:.3f}" for c in cem["components"])
    rows.append(("cem", f"`pets-cem` (CEM, {CEM_ARGS[5]} candidates x {CEM_ARGS[9]} iterations) on pets_fewshot (8): "
                 "base vs best few-shot accuracy",
                 f"{cem['scores']['base_few_shot_accuracy']:.2f} vs {cem['scores']['few_shot_accuracy']:.2f} "
                 f"(weights {weights}; {cem['_seconds']} s)"))
    pets = {"base": t2.eval(TASKS / "pets.jsonl", "regex", 48)}
    for word in labels:
        pets[word] = t2.eval(TASKS / "pets.jsonl", "regex", 48, expert=word)
    uniform = ",".join(f"{w}={1 / len(labels):.4f}" for w in labels)
    pets["uniform mixture"] = t2.eval(TASKS / "pets.jsonl", "regex", 48, mixture=uniform)
    pets["pets-cem"] = t2.eval(TASKS / "pets.jsonl", "regex", 48, expert="pets-cem")
    for name, res in pets.items():
        rows.append(("cem", f"pets.jsonl (40 held-out starts, regex `{regex}`): {name}", acc(res)))

    # 5. Parameter counts.
    z_count = sum(s[0] if s else 1 for s in safetensors_shapes(EXPERTS / labels[0] / "z.safetensors").values())
    shapes = {k: v for k, v in safetensors_shapes(model / "model.safetensors").items() if ".mlp." in k}
    lora1 = sum(m + n for m, n in shapes.values())
    dense = sum(m * n for m, n in shapes.values())
    rows.append(("params", f"SVF z per expert ({len(shapes)} MLP matrices, read from z.safetensors)", f"{z_count}"))
    rows.append(("params", "LoRA rank 1 / rank 4 on the same matrices (computed r*(m+n); no LoRA built)",
                 f"{lora1} / {4 * lora1}"))
    rows.append(("params", "the matrices themselves (m*n)", f"{dense}"))

    validate = subprocess.run([t2.binary, "experts", "validate", "--model", str(model), "--experts-dir", str(EXPERTS)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rows.append(("check", "`t2 experts validate --experts-dir experts`",
                 f"exit {validate.returncode}: " + ", ".join(" ".join(l.split()) for l in validate.stdout.strip().splitlines())))
    elapsed = time.time() - started

    # 6. Report.
    table = ["| step | what | result |", "|---|---|---|"]
    table += [f"| {s} | {w} | {r} |" for s, w, r in rows]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, stdout=subprocess.PIPE, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "src", "include", "CMakeLists.txt"], cwd=ROOT,
                           stdout=subprocess.PIPE, text=True).stdout.strip()
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor())
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_end = os.getloadavg()
    header = [
        SECTION, "",
        f"Command (repo root): `python3 bench/svf_demo.py --t2 {a.t2} --models {a.models}` (every step is a `t2` "
        f"command; the exact ones are in experts/README.md). t2: the existing `{a.t2}`; checkout at commit {commit}"
        f"{' (src/include had uncommitted edits by the other engineer; build/t2 may be newer than the commit)' if dirty else ''}.",
        f"Machine: nproc {os.cpu_count()}, CPU: {cpu}, load average at start {load_start[0]:.2f} / at end {load_end[0]:.2f} "
        "(the machine was shared, so the seconds below are not benchmarks).",
        f"Date: {now}; whole run {elapsed / 60:.1f} min.", "",
    ]
    footer = [""] + [f"- {n}" for n in notes] + [
        "- Accuracies are greedy (temperature 0) completions scored by the task's reward; CIs are Wilson 95%.",
        "- Validation 'best' is the maximum over the checkpoints evaluated every 10 iterations on 10-12 examples, "
        "so it is optimistic (selection on the validation set); the test rows are the honest figures.",
        "- The router rows use t2 eval with the filled dispatch template as --template and free-text greedy "
        "decoding (the dispatcher's 'prompt' strategy), not the server's constrained label scoring.",
        "",
    ]
    text = "\n".join(header + table + footer)
    print()
    print(text)
    if not a.no_append:
        existing = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
        RESULTS.write_text(existing.rstrip("\n") + "\n\n" + text)

    # experts/README.md
    lines = ["# Shipped SVF experts (stories260K)", "",
             "Made by `python3 bench/svf_demo.py` (see bench/RESULTS.md for the full table); base model "
             "`../shared/models/stories260K`, SVF on the 15 MLP matrices (`--targets mlp`), "
             f"{z_count} z values per expert. Scores below are copied from each expert.json; rerunning the script "
             "retrains and overwrites them. Check them with "
             "`./build/t2 experts validate --model ../shared/models/stories260K --experts-dir experts`.", ""]
    for name in labels + ["router", "pets-cem"] + [w for w in train_results if w not in labels and w != "router"]:
        meta_path = EXPERTS / name / "expert.json"
        if not meta_path.exists():
            continue
        meta = json.loads(meta_path.read_text())
        lines.append(f"## {name}")
        lines.append("")
        lines.append(f"- kind: {meta.get('kind')}; description: {meta.get('description')}")
        if name in labels or (name in train_results and name != "router"):
            lines.append(f"- task: configs/tasks/{name}.jsonl, completions of story starts that contain \"{name}\" "
                         "(reward contains, 48 tokens)")
        elif name == "router":
            lines.append("- task: configs/tasks/" + ("router.jsonl" if strict_ok else "router_first.jsonl") +
                         ", story requests rendered through configs/dispatch/prompt.txt with {experts} = "
                         + "; ".join(f"`- {w}: stories about a {w}`" for w in labels) +
                         ". The template is not stored in expert.json: use the same one when running it.")
            test_b, test_e = router_eval[("strict: completion starts with the label", "test")]
            sh_b, sh_e = router_eval[("first label mentioned in 8 tokens is right", "test")]
            on_b, on_e = router_eval[("right label and no other in 8 tokens", "test")]
            lines.append(f"- held-out phrasings (30): completion starts with the label: base {acc(test_b)}, router {acc(test_e)}; "
                         f"first label mentioned in 8 tokens is right: base {acc(sh_b)}, router {acc(sh_e)}; "
                         f"right label and no other: base {acc(on_b)}, router {acc(on_e)}")
            lines.append("- it does not emit `LABEL}` right after `\\boxed{` (it writes e.g. `. The dog ...`), so the "
                         "dispatcher's free-text mode, which needs the exact label before `}`, would still map it to "
                         "`others`; constrained label scoring (the server default) was not measured here")
        else:
            lines.append(f"- task: configs/tasks/pets_fewshot.jsonl (8 few-shot examples, regex `{regex}`); "
                         f"weights {weights}")
            lines.append(f"- pets.jsonl (40 held-out): base {acc(pets['base'])}, pets-cem {acc(pets['pets-cem'])}")
        if name in commands:
            lines.append(f"- command: `{commands[name]}`")
        lines.append(f"- scores: `{json.dumps(meta.get('scores', {}), sort_keys=True)}`")
        if "provenance" in meta:
            lines.append(f"- provenance: `{json.dumps(meta['provenance'], sort_keys=True)}`")
        if name in train_results and "expert_test" in train_results[name]:
            r = train_results[name]
            lines.append(f"- test split (10): base {acc(r['base_test'])}, expert {acc(r['expert_test'])}")
        lines.append("")
    (EXPERTS / "README.md").write_text("\n".join(lines))
    print(f"wrote experts/README.md; {elapsed:.0f} s in all")
    if validate.returncode != 0:
        print(validate.stdout)
        raise SystemExit("t2 experts validate failed")


if __name__ == "__main__":
    main()
