#!/usr/bin/env python3
"""The official OpenAI Python client against the real `t2 serve` on stories260K.

Run by CTest: openai_client_test.py --t2 BUILD/t2 --stories models/stories260K --source REPO
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import unittest

import openai
import torch

from t2_process import T2Server

ARGS = None
API_KEY = "sk-t2-e2e"


class OpenAIClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        model = ARGS.stories
        if not os.path.isdir(model):
            if os.environ.get("CI") == "true":
                raise RuntimeError(f"{model} is missing")  # in CI a missing model is a failure
            raise unittest.SkipTest(f"{model} is missing")
        cls.tmp = tempfile.TemporaryDirectory()
        experts = os.path.join(cls.tmp.name, "experts")
        # An expert as the reference implementation saves one, imported through the CLI.
        torch.manual_seed(0)
        policy = {f"model.layers.{l}.mlp.{p}_proj.weight": torch.nn.Parameter(torch.randn(64))
                  for l in range(5) for p in ("gate", "up", "down")}
        policy_path = os.path.join(cls.tmp.name, "policy.pt")
        torch.save(policy, policy_path)
        subprocess.run([ARGS.t2, "experts", "import", policy_path, "--name", "dragons", "--model", model,
                        "--experts-dir", experts, "--max-mult", "2", "--description", "stories about dragons"],
                       check=True, capture_output=True)
        meta_path = os.path.join(experts, "dragons", "expert.json")
        with open(meta_path) as f:
            meta = json.load(f)
        meta["dispatch"] = "target"  # a category of pass 1, so requests that name no expert are dispatched
        with open(meta_path, "w") as f:
            json.dump(meta, f)
        cls.server = T2Server(ARGS.t2, [
            "--model", model, "--experts-dir", experts, "--cache-dir", os.path.join(cls.tmp.name, "cache"),
            "--api-key", API_KEY, "--dispatch-template", os.path.join(ARGS.source, "configs", "dispatch", "prompt.txt")])
        cls.client = openai.OpenAI(base_url=cls.server.url, api_key=API_KEY, max_retries=0)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls.tmp.cleanup()

    def test_completion(self):
        r = self.client.completions.create(model="stories260K", prompt="Once upon a time", max_tokens=12, temperature=0,
                                           extra_body={"expert": "none"})
        self.assertEqual(r.object, "text_completion")
        self.assertTrue(r.choices[0].text.startswith(", there was a little girl named Lily"))
        self.assertEqual(r.choices[0].finish_reason, "length")
        self.assertEqual(r.usage.completion_tokens, 12)
        self.assertEqual(r.usage.total_tokens, r.usage.prompt_tokens + 12)

    def test_streamed_completion_with_usage(self):
        chunks = list(self.client.completions.create(model="stories260K", prompt="Once upon a time", max_tokens=12,
                                                     temperature=0, stream=True, extra_body={"expert": "none"},
                                                     stream_options={"include_usage": True}))
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        self.assertTrue(text.startswith(", there was a little girl named Lily"))
        self.assertEqual(chunks[-1].usage.completion_tokens, 12)
        self.assertEqual(chunks[-1].choices, [])

    def test_chat_and_streamed_chat(self):
        messages = [{"role": "user", "content": "Tell me a story about a dog."}]
        r = self.client.chat.completions.create(model="stories260K", messages=messages, max_tokens=10, temperature=0)
        self.assertEqual(r.choices[0].message.role, "assistant")
        content = r.choices[0].message.content
        self.assertTrue(content)
        stream = self.client.chat.completions.create(model="stories260K", messages=messages, max_tokens=10,
                                                     temperature=0, stream=True)
        streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        self.assertEqual(streamed, content)

    def test_expert_as_model_and_extension_fields(self):
        r = self.client.completions.create(model="dragons", prompt="Once upon a time", max_tokens=8, temperature=0)
        self.assertEqual(r.model_extra["t2"]["adaptation"], "dragons")
        r = self.client.completions.create(model="stories260K", prompt="Once upon a time", max_tokens=8,
                                           extra_body={"dispatch": "prompt"})
        t2 = r.model_extra["t2"]
        self.assertEqual(t2["strategy"], "prompt")
        self.assertEqual(t2["scores"]["method"], "mean_logprob")
        scores = t2["scores"]["labels"]
        self.assertEqual(set(scores), {"dragons", "others"})
        self.assertEqual(t2["label"], max(scores, key=scores.get))
        self.assertEqual(t2["adaptation"], "base" if t2["label"] == "others" else "dragons")
        default = self.client.completions.create(model="stories260K", prompt="Once upon a time", max_tokens=8)
        self.assertEqual(default.model_extra["t2"]["strategy"], "prompt")  # auto: a target and no classifier

    def test_models(self):
        ids = {m.id: m for m in self.client.models.list()}
        self.assertIn("stories260K", ids)
        self.assertEqual(ids["dragons"].model_extra["parent"], "stories260K")

    def test_errors(self):
        with self.assertRaises(openai.NotFoundError):
            self.client.completions.create(model="gpt-9", prompt="x", max_tokens=2)
        with self.assertRaises(openai.BadRequestError) as caught:
            self.client.completions.create(model="stories260K", prompt="x", max_tokens=2, temperature=5)
        self.assertEqual(caught.exception.body["param"], "temperature")
        bad_key = openai.OpenAI(base_url=self.client.base_url, api_key="sk-wrong", max_retries=0)
        with self.assertRaises(openai.AuthenticationError):
            bad_key.models.list()


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--t2", required=True)
    parser.add_argument("--stories", required=True, help="the stories260K model folder")
    parser.add_argument("--source", required=True)
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
