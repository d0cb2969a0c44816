#!/usr/bin/env python3
"""LLaVA-NeXT benchmark: t2 and HF transformers side by side on a random-weight
Llama-3-8B-shaped LLaVA-NeXT (CLIP ViT-L/14-336 tower, anyres pinpoints of
llava-hf/llama3-llava-next-8b-hf), bf16 on one GPU.

  make-model DIR   writes the checkpoint (random weights, normal(0, 0.02)),
                   preprocessor_config.json and stories260K's tokenizer.model
                   (t2 needs a tokenizer to serve chats; ids past its 512 pieces
                   are never sampled, which changes no timing)
  t2 URL           against a running `t2 serve --model DIR`:
                   * time to first token of one 672x672 PNG plus a 64-token question
                     (streamed chat, from sending the request to the first content
                     delta: upload, decode, preprocessing, vision encoder, prefill);
                   * after one unmeasured round (a fresh server's first batch pays
                     first-use costs), decode tok/s of 16 text streams, alone and with 4 image requests
                     arriving once they decode, and the text streams' longest gap
                     between tokens while the images are encoded and prefilled.
  hf DIR           the same through transformers: processor + generate(max_new_tokens=1)
                   for the first token; a static batch of 16 text + 4 image prompts
                   for decode (HF cannot add requests mid-generation).
Prints one JSON object per subcommand. Run on the GPU machine (bench/gpu_vision.sh).
"""
import argparse
import base64
import http.client
import json
import os
import shutil
import struct
import sys
import threading
import time
import urllib.parse
import zlib

QUESTION_WORDS = 60  # with the chat markup, about 64 prompt tokens under stories260K's tokenizer
TEXT_PROMPT_WORDS = 100
PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def png_bytes(width, height, seed=0):
    """A deterministic RGB PNG (gradients and a checkerboard), written with zlib alone."""
    rows = bytearray()
    for y in range(height):
        rows.append(0)
        for x in range(width):
            c = 255 if ((x // 16 + y // 16 + seed) % 2) else 0
            rows += bytes(((x * 255) // max(width - 1, 1), (y * 255) // max(height - 1, 1), c))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(bytes(rows), 6)) + chunk(b"IEND", b""))


def question():
    return " ".join(["Describe what you see in the picture and say why it matters."] * (QUESTION_WORDS // 12))


def text_prompt(i):
    return f"Story {i}: " + " ".join(["Once upon a time there was a little dog who liked to run."] * (TEXT_PROMPT_WORDS // 12))


def vision_config():
    return {"model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
            "num_attention_heads": 16, "image_size": 336, "patch_size": 14, "projection_dim": 768,
            "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "vocab_size": 32000}


def make_model(args):
    import torch
    from transformers import LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration

    text = LlamaConfig.from_json_file(os.path.join(os.path.dirname(__file__), "llama3-8b-shape.json"))
    text.vocab_size = 128320
    config = LlavaNextConfig(text_config=text.to_dict(), vision_config=vision_config(), image_token_index=128256,
                             image_grid_pinpoints=PINPOINTS, vision_feature_layer=-2,
                             vision_feature_select_strategy="default", projector_hidden_act="gelu")
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlavaNextForConditionalGeneration(config).to(torch.bfloat16)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layer_norm" in name or "layernorm" in name:
                p.fill_(1.0) if name.endswith("weight") else p.zero_()
            else:
                p.normal_(0.0, 0.02)
    os.makedirs(args.dir, exist_ok=True)
    model.save_pretrained(args.dir, max_shard_size="5GB")
    with open(os.path.join(args.dir, "preprocessor_config.json"), "w") as f:
        json.dump({"image_processor_type": "LlavaNextImageProcessor", "do_resize": True, "size": {"shortest_edge": 336},
                   "resample": 3, "do_center_crop": True, "crop_size": {"height": 336, "width": 336},
                   "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": CLIP_MEAN,
                   "image_std": CLIP_STD, "do_convert_rgb": True, "do_pad": True, "image_grid_pinpoints": PINPOINTS}, f)
    shutil.copy(args.tokenizer, os.path.join(args.dir, "tokenizer.model"))
    print(json.dumps({"made": args.dir, "parameters": sum(p.numel() for p in model.parameters())}))


class Stream:
    """One streamed chat completion; records when each chunk of tokens arrived (counted by its logprobs)."""

    def __init__(self, url, messages, max_tokens):
        self.url, self.messages, self.max_tokens = url, messages, max_tokens
        self.arrivals, self.error, self.sent = [], None, None  # arrivals: (time, tokens in the chunk)
        self.thread = threading.Thread(target=self.run)

    def token_times(self):
        """One timestamp per generated token."""
        return [t for t, n in self.arrivals for _ in range(n)]

    def run(self):
        u = urllib.parse.urlparse(self.url)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
        body = json.dumps({"messages": self.messages, "max_tokens": self.max_tokens, "temperature": 0,
                           "stream": True, "ignore_eos": True, "logprobs": True})
        self.sent = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        if r.status != 200:
            self.error = f"HTTP {r.status}: {r.read()[:300]!r}"
            return
        for line in r:
            if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                continue
            event = json.loads(line[6:])
            choice = event["choices"][0] if event.get("choices") else None
            tokens = len(((choice or {}).get("logprobs") or {}).get("content") or [])
            if tokens:  # the first chunk only names the role
                self.arrivals.append((time.perf_counter(), tokens))


def engine_steps(url):
    """t2's engine step counter, from /metrics."""
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("GET", "/metrics")
    for line in conn.getresponse().read().decode().splitlines():
        if line.startswith("t2_decode_steps_total "):
            return int(float(line.split()[1]))
    raise SystemExit("no t2_decode_steps_total on /metrics")


def image_message(png):
    return [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(png).decode()}},
        {"type": "text", "text": question()}]}]


def run_t2(args):
    png = png_bytes(672, 672)
    out = {"machine": args.machine}
    # Time to first token, one image request alone.
    ttft = []
    for _ in range(0 if args.text_only else args.repeat + 1):
        s = Stream(args.url, image_message(png), 1)
        s.run()
        if s.error:
            raise SystemExit(s.error)
        ttft.append(1e3 * (s.arrivals[0][0] - s.sent))
    if ttft:
        out["image_ttft_ms"] = sorted(ttft[1:])[len(ttft[1:]) // 2]
        out["image_ttft_ms_all"] = ttft[1:]

    def text_batch(with_images):
        steps_before, began = engine_steps(args.url), time.perf_counter()
        streams = [Stream(args.url, [{"role": "user", "content": text_prompt(i)}], args.gen) for i in range(16)]
        for s in streams:
            s.thread.start()
        while min(len(s.token_times()) for s in streams) < 8:  # all 16 are decoding
            time.sleep(0.005)
        images = [Stream(args.url, image_message(png_bytes(672, 672, seed=k)), args.gen) for k in range(4 if with_images else 0)]
        for s in images:
            s.thread.start()
        for s in streams + images:
            s.thread.join()
        errors = [s.error for s in streams + images if s.error]
        if errors:
            raise SystemExit(errors[0])
        # The window in which every text stream decodes: from the last one's 8th token to the first one's end.
        start = max(s.token_times()[7] for s in streams)
        end = min(s.token_times()[-1] for s in streams)
        if end <= start:
            raise SystemExit("the text streams never decoded together; raise --gen")
        tokens = sum(sum(1 for t in s.token_times() if start < t <= end) for s in streams + images)
        gaps = [b[0] - a[0] for s in streams for a, b in zip(s.arrivals, s.arrivals[1:]) if a[0] >= start]
        steps, took = engine_steps(args.url) - steps_before, time.perf_counter() - began
        return {"decode_tok_s": tokens / (end - start), "window_s": end - start, "engine_steps": steps,
                "ms_per_engine_step": 1e3 * took / steps, "max_text_gap_ms": 1e3 * max(gaps),
                "median_text_gap_ms": 1e3 * sorted(gaps)[len(gaps) // 2]}

    text_batch(False)  # warm-up: a server's first batch pays first-use costs (allocator, kernel selection)
    out["text16"] = text_batch(False)
    if not args.text_only:
        out["text16_plus_4_images"] = text_batch(True)
    print(json.dumps({"t2": out}))


def run_hf(args):
    import torch
    from transformers import LlavaNextForConditionalGeneration
    import numpy as np
    try:  # the processor t2 matches (Pillow); else transformers' default (torchvision)
        import PIL  # noqa: F401
        from transformers import LlavaNextImageProcessorPil as Processor
    except ImportError:
        from transformers import LlavaNextImageProcessor as Processor

    model = LlavaNextForConditionalGeneration.from_pretrained(args.dir, dtype=torch.bfloat16, device_map="cuda").eval()
    processor = Processor.from_pretrained(args.dir)
    print(f"HF image processor: {type(processor).__name__}", file=sys.stderr)
    cfg = model.config
    rng = np.random.default_rng(0)

    def image_array(seed):
        # The pixels png_bytes() encodes, as an HWC uint8 array (t2 decodes the PNG; HF skips that step).
        y, x = np.mgrid[0:672, 0:672]
        checker = np.where(((x // 16 + y // 16 + seed) % 2) == 1, 255, 0)
        return np.stack([(x * 255) // 671, (y * 255) // 671, checker], -1).astype(np.uint8)

    def image_inputs(seed):
        batch = processor(images=[image_array(seed)], return_tensors="pt")
        return batch["pixel_values"].to("cuda", torch.bfloat16), batch["image_sizes"].to("cuda")

    with torch.no_grad():
        pv, sz = image_inputs(0)
        features = model.model.get_image_features(pv, sz, vision_feature_layer=cfg.vision_feature_layer,
                                                  vision_feature_select_strategy=cfg.vision_feature_select_strategy).pooler_output
        n_image = int(features[0].shape[0] if isinstance(features, (list, tuple)) else features.shape[0])
    q = [int(t) for t in rng.integers(3, 500, 64)]

    def image_prompt():
        return [128000] + [cfg.image_token_index] * n_image + q

    def sync():
        torch.cuda.synchronize()

    with torch.no_grad():
        ttft = []
        for r in range(args.repeat + 1):
            sync()
            t0 = time.perf_counter()
            pixel_values, sizes = image_inputs(r)
            ids = torch.tensor([image_prompt()], device="cuda")
            model.generate(input_ids=ids, pixel_values=pixel_values, image_sizes=sizes, max_new_tokens=1, do_sample=False)
            sync()
            ttft.append(1e3 * (time.perf_counter() - t0))
        out = {"image_ttft_ms": sorted(ttft[1:])[len(ttft[1:]) // 2], "image_ttft_ms_all": ttft[1:],
               "image_tokens": n_image}

        def batch_decode(with_images):
            prompts = [[128000] + [int(t) for t in rng.integers(3, 500, 128)] for _ in range(16)]
            pv, sz = [], []
            if with_images:
                for k in range(4):
                    p, s = image_inputs(k)
                    pv.append(p)
                    sz.append(s)
                    prompts.append(image_prompt())
            width = max(len(p) for p in prompts)
            ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts], device="cuda")
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device="cuda")
            extra = {"pixel_values": torch.cat(pv), "image_sizes": torch.cat(sz)} if with_images else {}
            times = {}
            for gen in (1, args.gen):
                sync()
                t0 = time.perf_counter()
                model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=gen, min_new_tokens=gen,
                               do_sample=False, pad_token_id=0, **extra)
                sync()
                times[gen] = time.perf_counter() - t0
            rows = len(prompts)
            return {"decode_tok_s": rows * (args.gen - 1) / (times[args.gen] - times[1]), "batch": rows,
                    "prefill_s": times[1]}

        out["text16"] = batch_decode(False)
        out["text16_plus_4_images"] = batch_decode(True)
    print(json.dumps({"hf": out}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make-model")
    m.add_argument("dir")
    m.add_argument("--tokenizer", default="models/stories260K/tokenizer.model")
    t = sub.add_parser("t2")
    t.add_argument("url")
    t.add_argument("--text-only", action="store_true", help="only the 16 text streams (no images)")
    h = sub.add_parser("hf")
    h.add_argument("dir")
    for p in (t, h):
        p.add_argument("--gen", type=int, default=128)
        p.add_argument("--repeat", type=int, default=5)
        p.add_argument("--machine", default=os.uname().nodename)
    args = ap.parse_args()
    {"make-model": make_model, "t2": run_t2, "hf": run_hf}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
