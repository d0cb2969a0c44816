#!/usr/bin/env python3
"""The official OpenAI Python client sends images to the real `t2 serve` on the
tiny LLaVA-NeXT of tests/reference/llava_reference.py: base64 data URLs in chat
content parts, streamed and not, and a bad image's 400 as the client raises it.

Run by CTest: openai_vision_test.py --t2 BUILD/t2 --llava REFERENCE/llava --source REPO
"""
import argparse
import base64
import os
import sys
import tempfile
import unittest

import openai

from t2_process import T2Server

ARGS = None


def data_url(name, mime):
    with open(os.path.join(ARGS.llava, "images", name), "rb") as f:
        return f"data:{mime};base64," + base64.b64encode(f.read()).decode()


def chat(url):
    return [{"role": "user", "content": [{"type": "text", "text": "What is in the picture?"},
                                         {"type": "image_url", "image_url": {"url": url, "detail": "auto"}}]}]


class OpenAIVisionTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        model = os.path.join(ARGS.llava, "served")
        cls.tmp = tempfile.TemporaryDirectory()
        cls.server = T2Server(ARGS.t2, [
            "--model", model, "--experts-dir", os.path.join(cls.tmp.name, "experts"),
            "--cache-dir", os.path.join(cls.tmp.name, "cache"),
            "--dispatch-template", os.path.join(ARGS.source, "configs", "dispatch", "prompt.txt")])
        cls.client = openai.OpenAI(base_url=cls.server.url, api_key="unused", max_retries=0)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls.tmp.cleanup()

    def test_image_chat_streamed_and_not(self):
        messages = chat(data_url("photo.png", "image/png"))
        reply = self.client.chat.completions.create(model="served", messages=messages, max_tokens=10, temperature=0)
        text = reply.choices[0].message.content
        self.assertTrue(text)
        self.assertGreater(reply.usage.prompt_tokens, 20)  # the image's features count as prompt tokens
        stream = self.client.chat.completions.create(model="served", messages=messages, max_tokens=10, temperature=0,
                                                     stream=True)
        streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        self.assertEqual(streamed, text)

    def test_jpeg_and_the_models_list(self):
        reply = self.client.chat.completions.create(model="served", messages=chat(data_url("photo.jpg", "image/jpeg")),
                                                    max_tokens=4, temperature=0)
        self.assertEqual(reply.choices[0].finish_reason, "length")
        models = self.client.models.list()
        self.assertEqual(models.data[0].model_extra["input_modalities"], ["text", "image"])

    def test_a_corrupt_image_is_a_bad_request(self):
        with self.assertRaises(openai.BadRequestError) as caught:
            self.client.chat.completions.create(model="served", messages=chat("data:image/png;base64,iVBORw0KGgo="),
                                                max_tokens=4)
        self.assertEqual(caught.exception.body["param"], "messages[0].content[1]")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--t2", required=True)
    parser.add_argument("--llava", required=True)
    parser.add_argument("--source", required=True)
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest)
