#!/usr/bin/env python3
"""Writes the image references for t2_vision_tests into --out:

  files/<name>.png|jpg        test images (Pillow, plus a hand-written PNG encoder for
                              16-bit and Adam7-interlaced files, which Pillow cannot write)
  <name>.rgb                  the image as transformers sees it: convert_to_rgb(PIL image),
                              uint8 HWC (transparency composited onto white)
  <name>.<config>.f32         LlavaNextImageProcessorPil's pixel_values, float32 little-endian,
                              [patches, 3, height, width]
  <config>/preprocessor_config.json
  bad/                        inputs the decoder must refuse (bombs, zero width, CMYK)
  manifest.json               names, sizes, shapes and image_sizes of all the above

Content is deterministic: seeded noise on gradients, so resampling errors show.
"""
import argparse
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from transformers.image_transforms import convert_to_rgb
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

CONFIGS = {
    # llava-hf/llama3-llava-next-8b-hf's preprocessor_config.json
    "llava": {
        "aspect_ratio_setting": "anyres",
        "crop_size": {"height": 336, "width": 336},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_processor_type": "LlavaNextImageProcessor",
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "processor_class": "LlavaNextProcessor",
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": 336},
    },
    "tiny": {
        "crop_size": {"height": 32, "width": 32},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_grid_pinpoints": [[32, 64], [64, 32], [64, 64]],
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": 32},
    },
}


def pattern(h, w, channels, seed, maximum=255):
    """Gradients plus seeded noise plus a few sharp edges, per channel."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    planes = []
    for c in range(channels):
        g = (x / max(w - 1, 1)) * (0.3 + 0.2 * c) + (y / max(h - 1, 1)) * (0.7 - 0.2 * c)
        g += 0.25 * ((x // 7 + y // 5 + c) % 2)  # edges: ringing and antialiasing show
        g = g / 1.25 + rng.normal(0, 0.08, (h, w))
        planes.append(np.clip(g, 0, 1) * maximum)
    a = np.stack(planes, -1)
    return np.rint(a).astype(np.uint16 if maximum > 255 else np.uint8)


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(pixels, color_type, bit_depth, interlaced=False, trns=None):
    """A PNG writer for what Pillow cannot write: 16-bit color and Adam7 interlacing."""
    h, w = pixels.shape[:2]
    samples = pixels.reshape(h, w, -1).astype(">u2" if bit_depth == 16 else np.uint8)
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    raw = b""
    for x0, y0, dx, dy in passes if interlaced else [(0, 0, 1, 1)]:
        sub = samples[y0::dy, x0::dx]
        if sub.size == 0:
            continue
        raw += b"".join(b"\0" + row.tobytes() for row in sub)
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 1 if interlaced else 0)
    trns_chunk = chunk(b"tRNS", trns) if trns is not None else b""
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + trns_chunk + chunk(b"IDAT", zlib.compress(raw)) +
            chunk(b"IEND", b""))


def encode(img, fmt, **kwargs):
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def test_images():
    """name -> encoded bytes."""
    images = {}
    for w, h in [(40, 30), (336, 336), (500, 375), (375, 500), (1000, 200), (100, 700), (7, 300)]:
        images[f"rgb_{w}x{h}.png"] = encode(Image.fromarray(pattern(h, w, 3, seed=w * h)), "PNG")
    images["rgba_120x90.png"] = encode(Image.fromarray(pattern(90, 120, 4, seed=1), "RGBA"), "PNG")
    images["la_64x48.png"] = encode(Image.fromarray(pattern(48, 64, 2, seed=2), "LA"), "PNG")
    images["gray_50x70.png"] = encode(Image.fromarray(pattern(70, 50, 1, seed=3)[..., 0], "L"), "PNG")
    images["gray1_33x17.png"] = encode(Image.fromarray(pattern(17, 33, 1, seed=4)[..., 0] > 128), "PNG")
    palette_src = Image.fromarray(pattern(60, 80, 3, seed=5))
    images["palette_80x60.png"] = encode(palette_src.quantize(64), "PNG")
    alpha = bytes(np.linspace(0, 255, 64).astype(np.uint8))  # tRNS: one alpha per palette entry
    images["palette_trns_80x60.png"] = encode(palette_src.quantize(64), "PNG", transparency=alpha)
    images["palette4_30x20.png"] = encode(Image.fromarray(pattern(20, 30, 3, seed=16)).quantize(16), "PNG", bits=4)
    images["gray_trns_50x70.png"] = encode(Image.fromarray(pattern(70, 50, 1, seed=3)[..., 0], "L"), "PNG",
                                           transparency=100)
    images["rgb16_60x40.png"] = png_bytes(pattern(40, 60, 3, seed=6, maximum=65535), 2, 16)
    images["rgba16_60x40.png"] = png_bytes(pattern(40, 60, 4, seed=7, maximum=65535), 6, 16)
    # Pillow clamps 16-bit gray to 255 when converting to RGB: keep half the values below 256.
    gray16 = pattern(45, 30, 1, seed=8, maximum=65535)[..., 0]
    gray16[::2] //= 256
    images["gray16_30x45.png"] = png_bytes(gray16, 0, 16)
    images["gray16_trns_30x45.png"] = png_bytes(gray16, 0, 16, trns=struct.pack(">H", int(gray16[0, 0])))
    images["interlaced_rgb_77x51.png"] = png_bytes(pattern(51, 77, 3, seed=9), 2, 8, interlaced=True)
    images["interlaced_rgba16_13x9.png"] = png_bytes(pattern(9, 13, 4, seed=10, maximum=65535), 6, 16, interlaced=True)

    images["rgb_500x375.jpg"] = encode(Image.fromarray(pattern(375, 500, 3, seed=11)), "JPEG", quality=90)
    images["rgb444_375x500.jpg"] = encode(Image.fromarray(pattern(500, 375, 3, seed=12)), "JPEG", quality=95,
                                          subsampling=0)
    images["rgb_41x29.jpg"] = encode(Image.fromarray(pattern(29, 41, 3, seed=13)), "JPEG", quality=75)
    images["gray_50x70.jpg"] = encode(Image.fromarray(pattern(70, 50, 1, seed=14)[..., 0], "L"), "JPEG")
    images["progressive_336x200.jpg"] = encode(Image.fromarray(pattern(200, 336, 3, seed=15)), "JPEG",
                                               progressive=True, quality=85)
    return images


def bad_images(good):
    bad = {}
    # Valid signature and IHDR (with its CRC) claiming 30000x30000, then a tiny IDAT.
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    bad["bomb_30000x30000.png"] = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
                                   chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))
    ihdr = struct.pack(">IIBBBBB", 0, 10, 8, 2, 0, 0, 0)
    bad["zero_width.png"] = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")
    # A real JPEG whose SOF0 claims 60000x60000.
    jpeg = bytearray(good["rgb_41x29.jpg"])
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)
    bad["bomb_60000x60000.jpg"] = bytes(jpeg)
    bad["cmyk_20x10.jpg"] = encode(Image.new("CMYK", (20, 10), (10, 20, 30, 40)), "JPEG")
    return bad


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    out = parser.parse_args().out
    (out / "files").mkdir(parents=True, exist_ok=True)
    (out / "bad").mkdir(exist_ok=True)
    processors = {}
    for name, cfg in CONFIGS.items():
        (out / name).mkdir(exist_ok=True)
        (out / name / "preprocessor_config.json").write_text(json.dumps(cfg, indent=2))
        kwargs = {k: v for k, v in cfg.items()
                  if k not in ("aspect_ratio_setting", "image_processor_type", "processor_class")}
        processors[name] = LlavaNextImageProcessorPil(**kwargs)

    good = test_images()
    manifest = {"images": [], "bad": []}
    for name, data in good.items():
        (out / "files" / name).write_bytes(data)
        img = Image.open(io.BytesIO(data))
        img.load()
        rgb = convert_to_rgb(img, return_numpy=True)
        assert rgb.dtype == np.uint8 and rgb.shape == (img.height, img.width, 3), (name, rgb.shape)
        (out / f"{name}.rgb").write_bytes(np.ascontiguousarray(rgb).tobytes())
        entry = {"name": name, "width": img.width, "height": img.height, "mode": img.mode, "processed": {}}
        for config, processor in processors.items():
            result = processor(images=img, return_tensors="np")
            pixels = result["pixel_values"][0].astype("<f4")
            (out / f"{name}.{config}.f32").write_bytes(np.ascontiguousarray(pixels).tobytes())
            entry["processed"][config] = {"shape": list(pixels.shape),
                                          "image_size": [int(v) for v in result["image_sizes"][0]]}
        manifest["images"].append(entry)
    for name, data in bad_images(good).items():
        (out / "bad" / name).write_bytes(data)
        manifest["bad"].append(name)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"wrote {len(manifest['images'])} images and {len(manifest['bad'])} bad inputs to {out}")


if __name__ == "__main__":
    main()
