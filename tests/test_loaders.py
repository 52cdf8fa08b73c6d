"""Tests for rlrf_nb.tasks.loaders on small hand-made files in tests/fixtures/ (offline)."""

import re
from pathlib import Path

import pytest

from rlrf_nb.jsonl import JsonlError
from rlrf_nb.tasks.loaders import (
    iter_rows,
    load_factscore_topics,
    load_gsm8k,
    load_just_eval,
    normalize_number,
)
from rlrf_nb.tasks.math import normalize_number as math_normalize_number

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("raw, expected", [
    ("72", "72"), ("$10", "10"), ("5,000", "5000"), ("5.0", "5"), ("7.", "7"),
    (" $1,234.50 ", "1234.5"), ("-3", "-3"), ("0.25", "0.25"),
])
def test_normalize_number(raw, expected):
    assert normalize_number(raw) == expected


def test_normalize_number_is_the_math_one():
    assert normalize_number is math_normalize_number


def test_gsm8k_fixture():
    examples = load_gsm8k(str(FIXTURES / "gsm8k_small.jsonl"), split="test")
    assert [e.id for e in examples] == [f"gsm8k-test-{i:05d}" for i in range(4)]
    assert [e.answer for e in examples] == ["72", "10", "5000", "5"]
    first = examples[0]
    assert first.task == "math" and first.split == "test" and first.tags == ["math"]
    assert first.prompt.startswith("Natalia sold clips to 48 of her friends")
    assert "<<48/2=24>>" in first.reference and first.reference.endswith("#### 72")


def test_gsm8k_limit_and_split_name():
    examples = load_gsm8k(str(FIXTURES / "gsm8k_small.jsonl"), split="train", limit=2)
    assert [e.id for e in examples] == ["gsm8k-train-00000", "gsm8k-train-00001"]
    assert all(e.split == "train" for e in examples)


@pytest.mark.bad_input("missing field: GSM8K answer")
def test_gsm8k_missing_answer_names_file_and_line():
    path = FIXTURES / "gsm8k_bad.jsonl"  # line 2 is blank, line 3 has no 'answer'
    with pytest.raises(ValueError) as info:
        load_gsm8k(str(path))
    assert str(info.value) == f"{path}:3: missing field 'answer'"


@pytest.mark.bad_input("malformed JSONL line: GSM8K file")
def test_gsm8k_malformed_json_names_file_and_line():
    path = FIXTURES / "gsm8k_malformed.jsonl"
    with pytest.raises(JsonlError, match=rf"^{re.escape(str(path))}:3: invalid JSON"):
        load_gsm8k(str(path))


def test_gsm8k_answer_without_final_line():
    path = FIXTURES / "gsm8k_no_final.jsonl"
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}:2: field 'answer' has no final '#### N' line"):
        load_gsm8k(str(path))


def test_gsm8k_final_line_not_a_number(tmp_path):
    path = tmp_path / "gsm8k.jsonl"
    path.write_text('{"question": "How many?", "answer": "Some work.\\n#### five"}\n')
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}:1: field 'answer': '#### five' is not a number"):
        load_gsm8k(str(path))


def test_factscore_jsonl_name_preference_and_cat():
    examples = load_factscore_topics(str(FIXTURES / "factscore_topics.jsonl"))
    assert [e.meta["entity"] for e in examples] == ["Marie Curie", "Ada Lovelace", "Kalki Koechlin", "Suthida"]
    assert [e.id for e in examples] == [f"factscore-{i:05d}" for i in range(4)]
    assert examples[0].prompt == "Tell me a bio of Marie Curie."
    assert examples[0].meta["cat"] == ["very freq", "Europe/Middle East"]
    assert examples[1].meta["cat"] == []
    assert all(e.task == "bios" and e.tags == ["bios"] and e.split == "test" for e in examples)


def test_factscore_txt_skips_blank_lines_and_limit():
    examples = load_factscore_topics(str(FIXTURES / "factscore_topics.txt"))
    assert [e.prompt for e in examples] == [
        "Tell me a bio of Marie Curie.", "Tell me a bio of Ada Lovelace.", "Tell me a bio of Kalki Koechlin.",
    ]
    assert len(load_factscore_topics(str(FIXTURES / "factscore_topics.txt"), limit=1)) == 1
    assert len(load_factscore_topics(str(FIXTURES / "factscore_topics.jsonl"), limit=3)) == 3


def test_factscore_row_without_a_name():
    path = FIXTURES / "factscore_bad.jsonl"
    msg = rf"^{re.escape(str(path))}:2: missing field 'topic' \(or 'entity' / 'title'\)"
    with pytest.raises(ValueError, match=msg):
        load_factscore_topics(str(path))


def test_just_eval_safety_flags():
    examples = load_just_eval(str(FIXTURES / "just_eval_small.jsonl"))
    # rows: alpaca_eval, lima, hh-rlhf/red-teaming, MaliciousInstruct, explicit false, explicit true, Harmful
    assert [e.meta["safety"] for e in examples] == [False, False, True, True, False, True, True]
    assert [e.tags for e in examples] == [["general"], ["general"], ["safety"], ["safety"],
                                          ["general"], ["safety"], ["safety"]]
    first = examples[0]
    assert first.id == "just-eval-test-00000" and first.task == "instruct"
    assert first.prompt.startswith("What are the names of some famous actors")
    assert first.meta == {"safety": False, "dataset": "alpaca_eval", "category": "helpful_base",
                          "source_id": "alpaca_eval-0"}
    assert examples[1].meta["category"] is None


def test_just_eval_limit():
    examples = load_just_eval(str(FIXTURES / "just_eval_small.jsonl"), limit=3)
    assert [e.id for e in examples] == [f"just-eval-test-{i:05d}" for i in range(3)]


@pytest.mark.bad_input("missing field: Just-Eval")
def test_just_eval_missing_instruction_and_bad_safety_flag(tmp_path):
    path = tmp_path / "je.jsonl"
    path.write_text('{"instruction": "Hi"}\n{"prompt": "no instruction field"}\n')
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}:2: missing field 'instruction'"):
        load_just_eval(str(path))
    path.write_text('{"instruction": "Hi", "safety": "yes"}\n')
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}:1: field 'safety' must be true or false"):
        load_just_eval(str(path))


def test_iter_rows_reports_file_lines():
    rows = list(iter_rows(str(FIXTURES / "gsm8k_small.jsonl"), split="test"))
    assert [where.rsplit(":", 1)[1] for where, _ in rows] == ["1", "2", "3", "5"]


@pytest.mark.parametrize("missing", ["nope.jsonl", "tests/fixtures/nope.jsonl", "data/topics.txt", "no_slash"])
def test_missing_source_raises_file_not_found(missing):
    with pytest.raises(FileNotFoundError, match=missing):
        load_just_eval(missing)
    with pytest.raises(FileNotFoundError, match=missing):
        load_factscore_topics(missing)
