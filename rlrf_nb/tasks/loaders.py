"""Real-data loaders: GSM8K, FactScore topics and Just-Eval-Instruct as :class:`Example` records, from a local file
(errors name ``file:line``) or a Hub dataset id (errors name dataset, split and row), matching the tiny world's.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterator
from pathlib import Path

from rlrf_nb.jsonl import iter_jsonl
from rlrf_nb.paths import is_hub_dataset
from rlrf_nb.tasks.math import normalize_number
from rlrf_nb.tasks.schema import Example

# normalize_number is re-exported: GSM8K gold answers and graded predictions share one normaliser; is_hub_dataset
# (rlrf_nb.paths) is the rule iter_rows reads a source by.

log = logging.getLogger(__name__)

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_GSM8K_FINAL = re.compile(r"^####\s*(.*?)\s*$", re.MULTILINE)
# Just-Eval's safety subset comes from e.g. "hh-rlhf/red-teaming" and "MaliciousInstruct".
_SAFETY_WORDS = ("safety", "red-team", "red_team", "harmful", "malicious")


def iter_rows(source: str, split: str, config: str | None = None, limit: int | None = None
              ) -> Iterator[tuple[str, dict]]:
    """Yield ``(where, row)`` from a local JSONL file or a Hub dataset split, at most ``limit`` rows; ``where``
    (``path:line`` or ``source[split] row i``) prefixes error messages.
    """
    path = Path(source)
    if path.is_file():
        rows = ((f"{path}:{lineno}", row) for lineno, row in iter_jsonl(path))
    elif is_hub_dataset(source):
        rows = _hub_rows(str(source), split, config)
    else:
        raise FileNotFoundError(f"{source}: no such file, and not a Hub dataset id (owner/name)")
    return itertools.islice(rows, limit)


def _hub_rows(source: str, split: str, config: str | None) -> Iterator[tuple[str, dict]]:
    import datasets  # heavy import, and only Hub sources need it

    ds = datasets.load_dataset(source, config, split=split)
    for i, row in enumerate(ds):
        yield f"{source}[{split}] row {i}", row


def _text_field(row: dict, where: str, name: str) -> str:
    """``row[name]`` as a non-empty string, or an error naming ``where`` and the field."""
    if name not in row or row[name] is None:
        raise ValueError(f"{where}: missing field {name!r}")
    value = row[name]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: field {name!r} must be a non-empty string, got {value!r}")
    return value


def load_gsm8k(source: str = "openai/gsm8k", split: str = "test", config: str = "main",
               limit: int | None = None) -> list[Example]:
    """GSM8K rows (``question``, ``answer`` ending in ``#### N``) as math examples: the full solution is the reference,
    the normalised number after ``####`` the gold answer.
    """
    examples = []
    for i, (where, row) in enumerate(iter_rows(source, split, config, limit)):
        question = _text_field(row, where, "question")
        solution = _text_field(row, where, "answer")
        finals = _GSM8K_FINAL.findall(solution)
        if not finals:
            raise ValueError(f"{where}: field 'answer' has no final '#### N' line: ...{solution[-60:]!r}")
        answer = normalize_number(finals[-1])
        if not _NUMBER.fullmatch(answer):
            raise ValueError(f"{where}: field 'answer': '#### {finals[-1]}' is not a number")
        examples.append(Example(id=f"gsm8k-{split}-{i:05d}", task="math", split=split, prompt=question,
                                reference=solution, answer=answer, tags=["math"]))
    log.info("loaded %d GSM8K examples from %s (%s)", len(examples), source, split)
    return examples


def load_factscore_topics(source: str, split: str = "test", limit: int | None = None) -> list[Example]:
    """FactScore prompt entities as bio examples (``Tell me a bio of {topic}.``) from a .txt of topics, or JSONL/Hub
    rows with ``topic`` (else ``entity``, else ``title``) and an optional ``cat`` list.
    """
    if str(source).endswith(".txt") and Path(source).is_file():
        names = [line.strip() for line in Path(source).read_text(encoding="utf-8").splitlines() if line.strip()]
        topics = [(name, []) for name in names[:limit]]
    else:
        topics = []
        for where, row in iter_rows(source, split, limit=limit):
            key = next((k for k in ("topic", "entity", "title") if k in row), None)
            if key is None:
                raise ValueError(f"{where}: missing field 'topic' (or 'entity' / 'title')")
            topics.append((_text_field(row, where, key), row.get("cat", [])))
    examples = [
        Example(id=f"factscore-{i:05d}", task="bios", split=split, prompt=f"Tell me a bio of {topic}.",
                tags=["bios"], meta={"entity": topic, "cat": cat})
        for i, (topic, cat) in enumerate(topics)
    ]
    log.info("loaded %d FactScore topics from %s", len(examples), source)
    return examples


def is_safety_row(row: dict, where: str = "") -> bool:
    """Whether a Just-Eval row is a safety prompt: an explicit boolean ``safety`` wins, else ``dataset``, ``source_id``
    or ``category`` mentions one of ``_SAFETY_WORDS``.
    """
    if "safety" in row:
        if not isinstance(row["safety"], bool):
            raise ValueError(f"{where}: field 'safety' must be true or false, got {row['safety']!r}")
        return row["safety"]
    marks = " ".join(str(row.get(k) or "") for k in ("dataset", "source_id", "category")).lower()
    return any(word in marks for word in _SAFETY_WORDS)


def load_just_eval(source: str = "re-align/just-eval-instruct", split: str = "test",
                   limit: int | None = None) -> list[Example]:
    """Just-Eval-Instruct rows (``instruction`` plus provenance) as instruct examples, tagged ``["safety"]`` (the judge
    adds the safety aspect) or ``["general"]``.
    """
    examples = []
    for i, (where, row) in enumerate(iter_rows(source, split, limit=limit)):
        instruction = _text_field(row, where, "instruction")
        safety = is_safety_row(row, where)
        meta = {"safety": safety, **{k: row.get(k) for k in ("dataset", "category", "source_id")}}
        examples.append(Example(id=f"just-eval-{split}-{i:05d}", task="instruct", split=split,
                                prompt=instruction, tags=["safety"] if safety else ["general"], meta=meta))
    log.info("loaded %d Just-Eval examples from %s (%s), %d safety", len(examples), source, split,
             sum(e.meta["safety"] for e in examples))
    return examples
