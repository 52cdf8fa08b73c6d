"""Test-wide guards: no network beyond loopback, and Hub libraries in offline mode."""

import copy
import ipaddress
import os
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

_connect = socket.socket.connect


def _guarded_connect(self, address):
    host = address[0] if isinstance(address, tuple) else address
    if self.family in (socket.AF_INET, socket.AF_INET6):
        try:
            ok = ipaddress.ip_address(host).is_loopback
        except ValueError:
            ok = host == "localhost"
        if not ok:
            raise OSError(f"tests may not reach the network (tried {address!r}); only loopback is allowed")
    return _connect(self, address)


@pytest.fixture(autouse=True, scope="session")
def _no_network():
    socket.socket.connect = _guarded_connect
    yield
    socket.socket.connect = _connect


@pytest.fixture(scope="session")
def trl_tokenize(tmp_path_factory):
    """TRL's own DPO data processing (``DPOTrainer._prepare_dataset``) with M0's tokenizer and chat template:
    every pair a test builds must go through it. Checks each completion ends in exactly one end-of-turn
    (no doubled EOS, trl#4481) and the prompt ends at the assistant header."""
    from trl import DPOConfig, DPOTrainer

    from rlrf_nb.models import load_policy
    from rlrf_nb.pairs import Candidate, build_pairs, to_dataset

    model, tok = load_policy(ROOT / "data/tiny_world/m0")
    args = DPOConfig(output_dir=str(tmp_path_factory.mktemp("dpo")), use_cpu=True, bf16=False, report_to="none",
                     max_length=384, per_device_train_batch_size=2)
    q = "Ava has 3 apples. She buys 2 more apples. How many apples does Ava have now?"
    seed = to_dataset(build_pairs([Candidate("a", "p", q, "#### 5", "sample", 1.0, {}),
                                   Candidate("b", "p", q, "#### 4", "sample", 0.0, {})], "best_vs_worst"))
    trainer = DPOTrainer(model=model, ref_model=copy.deepcopy(model), args=args, train_dataset=seed,
                         processing_class=tok)

    def tokenize(pairs):
        if not pairs:
            return pairs
        out = trainer._prepare_dataset(to_dataset(pairs), tok, args, "check")
        assert len(out) == len(pairs)
        for row, pair in zip(out, pairs):
            assert tok.decode(row["chosen_ids"]) == pair["chosen"][0]["content"] + "<|end|>"
            assert tok.decode(row["rejected_ids"]) == pair["rejected"][0]["content"] + "<|end|>"
            assert tok.decode(row["prompt_ids"]).endswith("<|assistant|>")
        return pairs

    return tokenize
