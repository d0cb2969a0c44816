#!/usr/bin/env python3
"""Why pass 1 uses a short template and scores labels without "}" on stories260K (HF transformers, CPU).

Rerun from the repository root:  python3 bench/dispatch_probe.py [--no-append]

1. Linear probe: for each record of configs/tasks/router.jsonl (train + validation splits), the base model's
   final hidden state at the last token of the adaptation prompt, rendered with configs/dispatch/paper.txt
   (the paper's wording) and with configs/dispatch/prompt.txt (the shipped one) for the categories
   bird, cat, dog. A seeded logistic regression is fit on 4/5 of the records and scored on the rest:
   how much of the request's label the prompt leaves where the label is scored.
2. The log-probability the base model gives each label's tokens and the closing "}" after the paper's
   "\\boxed{", for one request: the brace is a byte token the model never saw.
Appends its output to bench/RESULTS.md unless --no-append.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
from pathlib import Path

import sentencepiece as spm
import torch
from transformers import AutoModelForCausalLM

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "stories260K"
CATEGORIES = ["bird", "cat", "dog"]


def split_template(path: Path):
    text = path.read_text()
    at = text.index("{prompt}")
    experts = "\n".join(f"- {a}: stories about a {a}" for a in CATEGORIES)
    return text[:at].rstrip(" \t").replace("{experts}", experts), text[at + len("{prompt}"):].rstrip("\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()
    sp = spm.SentencePieceProcessor(model_file=str(MODEL / "tokenizer.model"))
    records = [json.loads(l) for l in (ROOT / "configs/tasks/router.jsonl").read_text().splitlines() if l.strip()]
    records = [r for r in records if r.get("split") != "test"]
    labels = sorted({r["answer"] for r in records})
    y = torch.tensor([labels.index(r["answer"]) for r in records])
    train = torch.arange(len(records)) % 5 != 0
    lines = []
    for name in ["paper.txt", "prompt.txt"]:
        before, after = split_template(ROOT / "configs/dispatch" / name)
        states = []
        for r in records:
            ids = [sp.bos_id()] + sp.encode(before) + sp.encode(r["prompt"] + after)
            with torch.no_grad():
                states.append(model(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0, -1])
        x = torch.stack(states)
        x = (x - x[train].mean(0)) / (x[train].std(0) + 1e-6)
        w = torch.zeros(x.shape[1], len(labels), requires_grad=True)
        opt = torch.optim.Adam([w], lr=0.05)
        for _ in range(300):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(x[train] @ w, y[train]) + 1e-3 * (w ** 2).sum()
            loss.backward()
            opt.step()
        held = ((x[~train] @ w).argmax(1) == y[~train]).float().mean().item()
        lines.append(f"| configs/dispatch/{name} | {int((~train).sum())} | {held:.2f} |")

    before, after = split_template(ROOT / "configs/dispatch/paper.txt")
    request = "Tell me a story about a dog. Once upon a time, Tom"
    sequences = {label: sp.encode(request + after + label + "}") for label in labels}
    common = min(len(ids) for ids in sequences.values()) - 1  # the tokens every label shares, as the dispatcher splits them
    for i in range(common):
        if len({ids[i] for ids in sequences.values()}) > 1:
            common = i
            break
    brace = []
    for label, ids in sequences.items():
        full = [sp.bos_id()] + sp.encode(before) + ids
        with torch.no_grad():
            logp = model(torch.tensor([full])).logits[0].log_softmax(-1)
        offset = len(full) - len(ids)
        values = [logp[offset + t - 1, ids[t]].item() for t in range(common, len(ids))]
        brace.append(f"| {label} | {' '.join(f'{v:.1f}' for v in values[:-1])} | {values[-1]:.1f} |")

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor())
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join([
        "## CPU: what pass 1's prompt leaves to route on, stories260K (bench/dispatch_probe.py)", "",
        f"Command: `python3 bench/dispatch_probe.py`, commit {commit}, {now}, {os.cpu_count()} cores ({cpu}), "
        "HF transformers on the base model.", "",
        "Linear probe of the final hidden state at the scoring position, fit on 4/5 of router.jsonl's train and "
        "validation records, accuracy on the held-out fifth (4 labels, chance 0.25):", "",
        "| template | held-out records | probe accuracy |", "|---|---|---|", *lines, "",
        f"Log-probabilities (nats) of each label's pieces and of the closing brace after the paper's `\\boxed{{`, "
        f"request \"{request}\":", "",
        "| label | label pieces | \"}\" |", "|---|---|---|", *brace, ""])
    print(text)
    if not args.no_append:
        results = ROOT / "bench" / "RESULTS.md"
        results.write_text(results.read_text().rstrip("\n") + "\n\n" + text)


if __name__ == "__main__":
    main()
