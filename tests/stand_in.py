"""A stand-in for a real Hub chat model and real GSM8K, built offline in seconds (tests only).

- :func:`save_hub_standin` writes a tiny, randomly initialised ``Qwen2ForCausalLM`` with Qwen2.5-Instruct's exact
  ChatML chat template (``tests/fixtures/qwen2.5_chat_template.jinja``), its special tokens (``<|im_start|>``,
  ``<|im_end|>`` as EOS, ``<|endoftext|>`` as pad) and its generation config (two EOS ids, top-k 20, top-p 0.8,
  repetition penalty 1.1) into a Hugging Face cache layout, ``<cache>/models--Qwen--<name>/snapshots/<commit>/``
  with ``refs/main`` naming the commit: with ``HF_HUB_CACHE=<cache>`` and ``HF_HUB_OFFLINE=1`` it loads by its Hub
  id, as ``huggingface_hub`` resolves a downloaded model.
- :func:`write_gsm8k` writes train and test JSONL files in the ``openai/gsm8k`` format (``question``, ``answer``
  with ``<<a*b=c>>`` annotations and a final ``#### N``).
- :class:`RubricJudgeServer` is a judge that always answers well-formed rubric JSON, behind a small
  OpenAI-compatible server on 127.0.0.1 (the parsed-feedback path; ``transformers serve`` with a random model never
  parses).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
QWEN25_CHAT_TEMPLATE = (FIXTURES / "qwen2.5_chat_template.jinja").read_text(encoding="utf-8")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_TEMPLATES = [
    ("{n} sold clips to {a} of her friends in April, and then she sold half as many clips in May. How many clips "
     "did {n} sell altogether in April and May?",
     lambda a, b: [(f"{a}/2", a // 2, "clips in May"), (f"{a}+{a // 2}", a + a // 2, "clips altogether")]),
    ("{n} earns ${b} an hour for babysitting. Yesterday, she did {a} hours of babysitting. How much did she earn?",
     lambda a, b: [(f"{b}*{a}", a * b, "dollars")]),
    ("{n} has {a} marbles. She buys {b} more bags with 3 marbles each. How many marbles does she have now?",
     lambda a, b: [(f"{b}*3", 3 * b, "new marbles"), (f"{a}+{3 * b}", a + 3 * b, "marbles")]),
    ("A baker makes {a} loaves in the morning and {b} in the afternoon. He sells {c} loaves. How many are left?",
     lambda a, b: [(f"{a}+{b}", a + b, "loaves baked"), (f"{a + b}-{(a + b) // 3}", a + b - (a + b) // 3, "left")]),
]
_NAMES = ["Natalia", "Weng", "Betty", "Julie", "James", "Albert", "Mark", "Ken"]


def gsm8k_rows(n: int, seed: int) -> list[dict]:
    """``n`` GSM8K-format rows (distinct questions), deterministic from ``seed``."""
    rng, rows, seen = random.Random(seed), [], set()
    while len(rows) < n:
        text, steps_of = rng.choice(_TEMPLATES)
        a, b, name = 2 * rng.randint(3, 40), rng.randint(2, 12), rng.choice(_NAMES)
        question = text.format(n=name, a=a, b=b, c=(a + b) // 3)
        if question in seen:
            continue
        seen.add(question)
        lines = [f"That is {expr} = <<{expr}={val}>>{val} {what}." for expr, val, what in steps_of(a, b)]
        rows.append({"question": question, "answer": "\n".join(lines + [f"#### {steps_of(a, b)[-1][1]}"])})
    return rows


def write_gsm8k(directory: Path, n_train: int = 64, n_test: int = 16) -> tuple[Path, Path]:
    """``train.jsonl`` and ``test.jsonl`` (disjoint questions) under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = gsm8k_rows(n_train + n_test, seed=1234)
    paths = directory / "train.jsonl", directory / "test.jsonl"
    for path, part in zip(paths, (rows[:n_train], rows[n_train:])):
        path.write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
    return paths


def chatml_tokenizer(corpus: list[str], vocab_size: int = 600):
    """A byte-level BPE trained on ``corpus`` with Qwen2.5-Instruct's special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer=trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                 additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    hf.chat_template = QWEN25_CHAT_TEMPLATE
    hf.model_max_length = 4096
    return hf


def commit_of(repo_id: str, seed: int) -> str:
    """A 40-hex commit hash, as the Hub's."""
    return hashlib.sha1(f"{repo_id}:{seed}".encode()).hexdigest()


def save_hub_standin(cache: Path, repo_id: str, corpus: list[str], *, seed: int = 0, hidden: int = 32,
                     layers: int = 2) -> Path:
    """The stand-in model under ``cache`` in the Hub cache layout; returns its snapshot directory."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tok = chatml_tokenizer(corpus)
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIALS}
    config = Qwen2Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, tie_word_embeddings=True,
                         bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                         pad_token_id=ids["<|endoftext|>"])
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"], pad_token_id=ids["<|endoftext|>"], do_sample=True,
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]], repetition_penalty=1.1, temperature=0.7,
        top_p=0.8, top_k=20)
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = commit_of(repo_id, seed)
    snapshot = repo / "snapshots" / commit
    model.save_pretrained(snapshot, safe_serialization=True)
    tok.save_pretrained(snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


# ---------------------------------------------------------------------------------------------------------------
# A judge that answers well-formed rubric JSON: a small OpenAI-compatible server on 127.0.0.1 (stdlib only)
# ---------------------------------------------------------------------------------------------------------------

_KEYS = re.compile(r"whose keys are exactly (.+?)\. Each value")
_RESPONSE = re.compile(r"<<<BEGIN RESPONSE>>>\n(.*)\n<<<END RESPONSE>>>", re.DOTALL)
_JUST_EVAL_OUTPUT = re.compile(r"## Output:\n(.*)\n\n\n## Evaluate", re.DOTALL)
JUST_EVAL_ASPECTS = ("helpfulness", "clarity", "factuality", "depth", "engagement")


def _score(text: str, salt: str) -> int:
    """A score from 1 to 5 that depends on the judged text only (so candidates get different rewards)."""
    return 1 + int(hashlib.sha256(f"{salt}:{text}".encode()).hexdigest(), 16) % 5


def rubric_reply(messages: list[dict]) -> str:
    """The JSON a well-behaved judge writes: the kit's rubric object ({aspect: {critique, score}}) for an LLMJudge
    prompt, Just-Eval's ({aspect: {reason, score}}) for Just-Eval's prompt."""
    user = messages[-1]["content"]
    if user.startswith("Please act as an impartial judge"):
        found = _JUST_EVAL_OUTPUT.search(user)
        output = found.group(1) if found else user
        return json.dumps({a: {"reason": f"The output is judged on {a}.", "score": str(_score(output, a))}
                           for a in JUST_EVAL_ASPECTS})
    keys = re.findall(r'"([a-z_]+)"', _KEYS.search(user).group(1))
    found = _RESPONSE.search(user)
    response = found.group(1) if found else user
    return json.dumps({k: {"critique": f"Step one of the response is judged for {k}.", "score": _score(response, k)}
                       for k in keys})


class RubricJudgeServer:
    """``POST /v1/chat/completions`` answered with :func:`rubric_reply`, ``GET /health``; in a thread of this
    process, on a free loopback port. ``requests`` counts the completions served."""

    def __init__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(200 if self.path == "/health" else 404, {"status": "ok"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests += 1
                reply = rubric_reply(body["messages"])
                self._send(200, {"id": f"cmpl-{owner.requests}", "object": "chat.completion", "created": 0,
                                 "model": body["model"], "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                                                   "total_tokens": 2},
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": reply}}]})

        self.requests = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
