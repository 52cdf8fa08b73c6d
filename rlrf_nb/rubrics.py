"""Per-aspect scoring rubrics (paper §3.1): one YAML per aspect under ``data/rubrics/`` with a definition, a descriptor
for every score level and what a critique must point to. :func:`load_rubric_set` loads and validates them; the set's
``version`` is a content hash that judge records carry, tracing each judgement to the exact rubric text.
:data:`TASK_ASPECTS` says which aspects apply to which task tag.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from rlrf_nb.paths import resolve_path

FIELDS = ("name", "title", "source", "definition", "scale", "levels", "critique_must")
TEXT_FIELDS = ("name", "title", "source", "definition", "critique_must")

# Aspects per task tag: math and bios follow the paper's fine-grained setup (§3.1),
# general and safety follow Just-Eval (Lin et al. 2023).
TASK_ASPECTS: dict[str, list[str]] = {
    "math": ["logical_correctness", "completeness"],
    "bios": ["factuality", "completeness", "readability"],
    "general": ["helpfulness", "clarity", "factuality", "depth", "engagement"],
    "safety": ["safety"],
}


# The single overall score of the scalar-reward ablation: a rubric like the others, but never chosen per prompt.
OVERALL = "overall_quality"


class RubricError(ValueError):
    """A rubric file is unreadable or invalid; the message names the file and the field."""


@dataclass(frozen=True)
class Rubric:
    """One aspect's rubric, as loaded from ``data/rubrics/<name>.yaml``."""

    name: str  # aspect id, equal to the file stem
    title: str  # human wording shown in prompts and critiques
    source: str  # where the aspect comes from: FLASK, Just-Eval, ...
    definition: str
    min_score: int
    max_score: int
    levels: dict[int, str]  # a descriptor for every integer score min_score..max_score
    critique_must: str  # what a critique for this aspect must point to

    def render(self) -> str:
        """The text an LLM judge sees for this aspect."""
        lines = [
            f"Aspect: {self.title}",
            f"Definition: {self.definition}",
            f"Score rubric ({self.min_score}-{self.max_score}):",
            *(f"{k}: {self.levels[k]}" for k in sorted(self.levels)),
            f"The critique must: {self.critique_must}",
        ]
        return "\n".join(lines)


def _text(value: str) -> str:
    # Collapse whitespace so re-wrapping a YAML block changes neither the prompt nor the version.
    return " ".join(value.split())


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def load_rubric(path: str | Path) -> Rubric:
    """Load and validate one rubric file; raise :class:`RubricError` naming the file and field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise RubricError(f"{path}: not valid UTF-8 (byte {e.object[e.start]:#04x} at offset {e.start})") from None
    except yaml.MarkedYAMLError as e:
        raise RubricError(f"{path}: YAML syntax error at line {e.problem_mark.line + 1}: {e.problem}") from e
    if not isinstance(data, dict):
        raise RubricError(f"{path}: expected a mapping of fields {list(FIELDS)}, got {type(data).__name__}")
    unknown = sorted(set(data) - set(FIELDS), key=str)
    if unknown:
        raise RubricError(f"{path}: unknown field {unknown[0]!r} (allowed: {', '.join(FIELDS)})")
    for name in FIELDS:
        if name not in data:
            raise RubricError(f"{path}: missing field {name!r}")
    for name in TEXT_FIELDS:
        if not isinstance(data[name], str) or not data[name].strip():
            raise RubricError(f"{path}: field {name!r} must be a non-empty string")
    if data["name"] != path.stem:
        raise RubricError(f"{path}: field 'name' is {data['name']!r} but the file is named {path.name!r}")

    scale = data["scale"]
    if not isinstance(scale, dict) or set(scale) != {"min", "max"}:
        raise RubricError(f"{path}: field 'scale' must be a mapping with exactly 'min' and 'max'")
    lo, hi = scale["min"], scale["max"]
    if not _is_int(lo):
        raise RubricError(f"{path}: field 'scale.min' must be an int")
    if not _is_int(hi) or hi <= lo:
        raise RubricError(f"{path}: field 'scale.max' must be an int > scale.min")

    levels = data["levels"]
    if not isinstance(levels, dict):
        raise RubricError(f"{path}: field 'levels' must be a mapping from score to descriptor")
    for key in levels:
        if not _is_int(key) or not lo <= key <= hi:
            raise RubricError(f"{path}: field 'levels' has key {key!r}; keys must be the ints {lo}..{hi}")
    for k in range(lo, hi + 1):
        if k not in levels:
            raise RubricError(f"{path}: field 'levels' has no descriptor for level {k}")
        if not isinstance(levels[k], str) or not levels[k].strip():
            raise RubricError(f"{path}: field 'levels.{k}' must be a non-empty string")

    return Rubric(
        name=data["name"],
        **{f: _text(data[f]) for f in TEXT_FIELDS if f != "name"},
        min_score=lo,
        max_score=hi,
        levels={k: _text(levels[k]) for k in range(lo, hi + 1)},
    )


@dataclass(frozen=True)
class RubricSet:
    """Rubrics by aspect name, with ``version``: a 12-hex sha256 of their canonical JSON."""

    rubrics: dict[str, Rubric]
    version: str = field(init=False)

    def __post_init__(self):
        rubrics = dict(sorted(self.rubrics.items()))
        canonical = json.dumps([asdict(r) for r in rubrics.values()], sort_keys=True, ensure_ascii=False)
        object.__setattr__(self, "rubrics", rubrics)
        object.__setattr__(self, "version", hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12])

    def __getitem__(self, name: str) -> Rubric:
        if name not in self.rubrics:
            raise KeyError(_unknown("aspect", name, list(self.rubrics)))
        return self.rubrics[name]

    def names(self) -> list[str]:
        return list(self.rubrics)

    def by_title(self, title: str) -> Rubric:
        """The rubric whose human title is ``title`` (as critiques and prompts show it)."""
        by_title = {r.title: r for r in self.rubrics.values()}
        if title not in by_title:
            raise KeyError(_unknown("aspect title", title, list(by_title)))
        return by_title[title]

    def subset(self, names: list[str]) -> RubricSet:
        """A set of only ``names``, with its own version."""
        return RubricSet({n: self[n] for n in names})

    def table(self) -> pd.DataFrame:
        """One row per aspect, for reading the rubrics in a notebook."""
        df = pd.DataFrame([asdict(r) for r in self.rubrics.values()]).set_index("name").rename_axis("aspect")
        df["scale"] = df["min_score"].astype(str) + "-" + df["max_score"].astype(str)
        return df[["title", "source", "scale", "definition", "critique_must"]]


@dataclass(frozen=True)
class AspectSpec:
    """What a judge needs to know about one aspect: its key, title, score range and rubric text."""

    name: str  # the JSON key the judge must use, e.g. "helpfulness"
    title: str  # human-readable, e.g. "Helpfulness"
    min_score: int
    max_score: int
    text: str  # the rubric rendered for the prompt (score-level descriptors)


def aspect_specs(rubrics: RubricSet, names: list[str]) -> list[AspectSpec]:
    """The rubrics ``names`` as the LLM judge's :class:`AspectSpec` (name, title, scale, rendered rubric)."""
    return [AspectSpec(r.name, r.title, r.min_score, r.max_score, r.render()) for r in (rubrics[n] for n in names)]


def _unknown(kind: str, key: str, available: list[str]) -> str:
    close = difflib.get_close_matches(key, available, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {key!r}{hint} (available: {', '.join(available)})"


def load_rubric_set(directory: str | Path = "data/rubrics") -> RubricSet:
    """Load every ``*.yaml`` rubric in ``directory`` (a relative one missing under the cwd is taken from the project
    root, so notebooks running from ``notebooks/`` find ``data/rubrics``).
    """
    directory = resolve_path(directory)
    paths = sorted(directory.glob("*.yaml"))
    if not paths:
        raise RubricError(f"{directory}: no *.yaml rubric files")
    rubrics = [load_rubric(p) for p in paths]
    seen: dict[str, Path] = {}
    for path, r in zip(paths, rubrics):
        if r.title in seen:  # by_title() and critiques identify aspects by title
            raise RubricError(f"{path}: field 'title' {r.title!r} is also used by {seen[r.title].name}")
        seen[r.title] = path
    return RubricSet({r.name: r for r in rubrics})


def aspects_for_tags(tags: list[str]) -> list[str] | None:
    """The aspects that apply to an example with ``tags``, in first-seen order; None when no tag is in
    :data:`TASK_ASPECTS` (the judge is then asked which apply).
    """
    known = [t for t in tags if t in TASK_ASPECTS]
    if not known:
        return None
    return list(dict.fromkeys(a for t in known for a in TASK_ASPECTS[t]))
