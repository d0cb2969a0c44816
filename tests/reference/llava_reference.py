#!/usr/bin/env python3
"""Reference image features and logits from Hugging Face transformers for t2's LLaVA-NeXT tests.

Writes <out>/llava_tiny/: a tiny random LlavaNextForConditionalGeneration
(CLIP vision tower, Llama text model) as save_pretrained writes it (model/),
the same weights renamed to the transformers 4.x hub layout (model_v4/:
vision_tower.vision_model.*) and to transformers 5's module names
(model_v5_names/: model.language_model.*, lm_head.weight, model.vision_tower.*),
and reference.safetensors: per image its pixel_values, original size, HF's
packed image features and a prompt with the image expanded, HF's logits for
one- and two-image prompts, and HF's feature and patch counts for many sizes.
Also <out>/served: a servable tiny LLaVA-NeXT over stories260K's tokenizer, with
<out>/images/ (PNG and JPEG photos, a PNG bomb) and HF's pixel values for them.
float32 runs on the CPU; where CUDA is present, bfloat16 runs there as well.
"""
import argparse
import json
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration
from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

IMAGE_SIZE = 32
PATCH_SIZE = 8
PINPOINTS = [[32, 64], [64, 32], [64, 64]]
IMAGE_TOKEN = 95
IMAGE_SIZES = [(40, 30), (30, 90), (64, 64)]  # (height, width) of the three reference images
COUNT_SIZES = [(40, 30), (30, 90), (64, 64), (1, 1), (32, 32), (10, 500), (500, 10), (33, 65), (100, 37),
               (7, 13), (64, 31), (1000, 999)]
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def tiny_config(vocab_size=96, image_token=IMAGE_TOKEN):
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                              image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, initializer_range=0.15,
                              initializer_factor=4.0)
    text = LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=vocab_size, max_position_embeddings=512, rms_norm_eps=1e-5,
                       initializer_range=0.15, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
                       pad_token_id=0)
    return LlavaNextConfig(vision_config=vision, text_config=text, image_token_index=image_token,
                           image_grid_pinpoints=PINPOINTS, projector_hidden_act="gelu", vision_feature_layer=-2,
                           vision_feature_select_strategy="default")


def image_processor_settings():
    return dict(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                image_grid_pinpoints=PINPOINTS, image_mean=CLIP_MEAN, image_std=CLIP_STD, resample=3,
                do_pad=True, do_convert_rgb=True, do_normalize=True, do_rescale=True, rescale_factor=1 / 255)


def pil_processor():
    """transformers' PIL image processor, or None without Pillow."""
    try:
        import PIL  # noqa: F401
        from transformers import LlavaNextImageProcessorPil
    except ImportError:
        return None
    return LlavaNextImageProcessorPil(**image_processor_settings())


def pixel_values_for(processor, height, width, generator):
    """HF's processor output for one random image of that size: [patches, 3, S, S] float32."""
    patches = image_size_to_num_patches((height, width), PINPOINTS, IMAGE_SIZE)
    if processor is None:
        return torch.randn(patches, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    import numpy as np
    from PIL import Image
    pixels = torch.randint(0, 256, (height, width, 3), generator=generator, dtype=torch.uint8).numpy()
    out = processor(Image.fromarray(np.asarray(pixels)), return_tensors="pt")
    values = out["pixel_values"][0, :patches].float()
    assert out["image_sizes"][0].tolist() == [height, width]
    return values


def feature_count(height, width):
    """What LlavaNextProcessor expands <image> to (as its _get_number_of_features, CLS dropped)."""
    from transformers import LlavaNextProcessor
    processor = LlavaNextProcessor.__new__(LlavaNextProcessor)
    processor.image_processor = type("Pinpoints", (), {"image_grid_pinpoints": PINPOINTS})()
    processor.patch_size = PATCH_SIZE
    processor.num_additional_image_tokens = 1
    return processor._get_number_of_features(height, width, IMAGE_SIZE, IMAGE_SIZE) - 1


def prompt_with_images(counts, generator):
    """Random text ids around each image's run of image tokens: [5 text][image][4 text] per image, BOS first."""
    ids = [1]
    for count in counts:
        ids += torch.randint(3, IMAGE_TOKEN, (5,), generator=generator).tolist()
        ids += [IMAGE_TOKEN] * count
        ids += torch.randint(3, IMAGE_TOKEN, (4,), generator=generator).tolist()
    return torch.tensor(ids)


def rename_checkpoint(src, dst, rename):
    shutil.copytree(src, dst)
    tensors = load_file(os.path.join(src, "model.safetensors"))
    save_file({rename(name): t.contiguous() for name, t in tensors.items()}, os.path.join(dst, "model.safetensors"),
              metadata={"format": "pt"})


def hub_v4_name(name):
    return name.replace("vision_tower.", "vision_tower.vision_model.", 1) if name.startswith("vision_tower.") else name


def v5_module_name(name):
    if name.startswith("language_model.lm_head."):
        return name[len("language_model."):]
    if name.startswith("language_model.model."):
        return "model.language_model." + name[len("language_model.model."):]
    return "model." + name


def reference(model, images, two_images_prompt, device, dtype):
    """Packed features per image and logits of the one- and two-image prompts."""
    model = model.to(device=device, dtype=dtype).eval()
    out = {}
    with torch.no_grad():
        for i, (pixels, (height, width), prompt) in enumerate(images):
            sizes = torch.tensor([[height, width]], device=device)
            features = model.model.get_image_features(pixels.to(device, dtype), sizes).pooler_output
            out[f"image{i}_features"] = torch.cat(features, 0).float().cpu()
            out[f"image{i}_logits"] = model(input_ids=prompt[None].to(device), pixel_values=pixels[None].to(device, dtype),
                                            image_sizes=sizes).logits[0].float().cpu()
        (p0, s0, _), (p1, s1, _) = images[0], images[1]
        pixels = torch.nn.utils.rnn.pad_sequence([p0, p1], batch_first=True)
        out["two_images_logits"] = model(input_ids=two_images_prompt[None].to(device), pixel_values=pixels.to(device, dtype),
                                         image_sizes=torch.tensor([s0, s1], device=device)).logits[0].float().cpu()
    return out


def png_claiming(width, height):
    """A PNG whose header says width x height over a few bytes of data (a decompression bomb's shape)."""
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def write_served(out, stories):
    """<out>/served: the tiny architecture over stories260K's tokenizer (512 pieces; the image token is 512),
    servable by `t2 serve`; <out>/images: PNG and JPEG photos and a bomb; served_pixels.safetensors:
    HF's processor output for the photos."""
    import numpy as np
    from PIL import Image

    folder = os.path.join(out, "served")
    torch.manual_seed(1)
    model = LlavaNextForConditionalGeneration(tiny_config(vocab_size=520, image_token=512)).float().eval()
    with torch.no_grad():
        model.model.image_newline.normal_(0, 1)
    model.save_pretrained(folder, safe_serialization=True)
    processor = pil_processor()
    processor.save_pretrained(folder)
    shutil.copy(os.path.join(stories, "tokenizer.model"), os.path.join(folder, "tokenizer.model"))

    images = os.path.join(out, "images")
    os.makedirs(images)
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:30, 0:48]
    wide = np.stack([x * 5, y * 8, rng.integers(0, 256, (30, 48))], -1).astype(np.uint8)
    Image.fromarray(wide).save(os.path.join(images, "photo.png"))
    y, x = np.mgrid[0:50, 0:30]
    tall = np.stack([255 - y * 5, x * 8, (x * y) % 256], -1).astype(np.uint8)
    Image.fromarray(tall).save(os.path.join(images, "photo.jpg"), quality=90)
    with open(os.path.join(images, "bomb.png"), "wb") as f:
        f.write(png_claiming(30000, 30000))
    pixels = {}
    for name, file in (("png", "photo.png"), ("jpg", "photo.jpg")):
        batch = processor(Image.open(os.path.join(images, file)), return_tensors="pt")
        patches = image_size_to_num_patches(tuple(batch["image_sizes"][0].tolist()), PINPOINTS, IMAGE_SIZE)
        pixels["pixel_values_" + name] = batch["pixel_values"][0, :patches].float().contiguous()
        pixels["image_sizes_" + name] = batch["image_sizes"][0].contiguous()
    save_file(pixels, os.path.join(out, "served_pixels.safetensors"))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--stories", required=True, help="models/stories260K, whose tokenizer the served model uses")
    args = parser.parse_args()
    precisions = [("float32", "cpu", torch.float32)]
    if torch.cuda.is_available():
        precisions.append(("bfloat16", "cuda", torch.bfloat16))

    shutil.rmtree(args.out, ignore_errors=True)
    folder = os.path.join(args.out, "llava_tiny")
    os.makedirs(folder)
    torch.manual_seed(0)
    model = LlavaNextForConditionalGeneration(tiny_config()).float().eval()
    with torch.no_grad():  # a random newline vector, not the initialiser's zeros-like scale
        model.model.image_newline.normal_(0, 1)
    model.save_pretrained(os.path.join(folder, "model"), safe_serialization=True)
    processor = pil_processor()
    if processor is not None:
        processor.save_pretrained(os.path.join(folder, "model"))
    else:
        with open(os.path.join(folder, "model", "preprocessor_config.json"), "w") as f:
            json.dump(dict(image_processor_settings(), image_processor_type="LlavaNextImageProcessor"), f, indent=2)
    rename_checkpoint(os.path.join(folder, "model"), os.path.join(folder, "model_v4"), hub_v4_name)
    rename_checkpoint(os.path.join(folder, "model"), os.path.join(folder, "model_v5_names"), v5_module_name)

    g = torch.Generator().manual_seed(1234)
    data = {"image_count": torch.tensor(len(IMAGE_SIZES))}
    images = []
    for i, (height, width) in enumerate(IMAGE_SIZES):
        pixels = pixel_values_for(processor, height, width, g)
        prompt = prompt_with_images([feature_count(height, width)], g)
        images.append((pixels, (height, width), prompt))
        data[f"image{i}_pixel_values"] = pixels.contiguous()
        data[f"image{i}_size"] = torch.tensor([height, width])
        data[f"image{i}_prompt"] = prompt
    data["two_images_prompt"] = prompt_with_images([feature_count(*size) for size in IMAGE_SIZES[:2]], g)
    data["count_sizes"] = torch.tensor(COUNT_SIZES)
    data["count_features"] = torch.tensor([feature_count(h, w) for h, w in COUNT_SIZES])
    data["count_patches"] = torch.tensor([image_size_to_num_patches((h, w), PINPOINTS, IMAGE_SIZE) for h, w in COUNT_SIZES])

    for precision, device, dtype in precisions:
        torch.manual_seed(0)
        computed = reference(model, images, data["two_images_prompt"], device, dtype)
        suffix = "" if precision == "float32" else "_" + precision
        data.update({name + suffix: t.contiguous() for name, t in computed.items()})
        print(f"llava_reference: {precision} on {device}")
    for i, (_, _, prompt) in enumerate(images):
        assert (prompt == IMAGE_TOKEN).sum().item() == data[f"image{i}_features"].shape[0]
    save_file({k: v.contiguous() for k, v in data.items()}, os.path.join(folder, "reference.safetensors"))
    if processor is not None:
        write_served(args.out, args.stories)
    else:  # the served model's tests compare against HF's processor, which needs Pillow
        print("llava_reference: no Pillow, so no served model (pip install -r requirements.txt)")
    with open(os.path.join(folder, "meta.json"), "w") as f:
        json.dump({"pixel_values": "pil_processor" if processor is not None else "random", "precisions":
                   [p for p, _, _ in precisions]}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
