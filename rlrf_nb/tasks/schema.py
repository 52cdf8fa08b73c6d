"""The one record schema (:class:`Example`) of every prompt the kit samples, judges or evaluates: the tiny world's
splits (``data/tiny_world/*.jsonl``) and the real-data loaders alike."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

TASKS = ("math", "bios", "instruct")


@dataclass(frozen=True)
class Example:
    """One prompt with what is known about its answer: ``id`` (stable, unique, e.g. ``math-test-00012``), ``task`` (math
    | bios | instruct), ``split`` (train | rl | dev | test, or a real dataset's split), ``prompt`` (the user message),
    ``reference`` (a GSM8K solution or reference bio, or None), ``answer`` (math's gold final answer as a normalised
    number string, else None), ``tags`` (pick feedback aspects: ``["math"]``, ``["bios"]``, ``["safety"]``) and ``meta``
    (task-specific: the bio's entity, the math steps, a safety flag).
    """

    id: str
    task: str
    split: str
    prompt: str
    reference: str | None = None
    answer: str | None = None
    tags: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"Example {self.id!r}: task must be one of {TASKS}, got {self.task!r}")
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError(f"Example {self.id!r}: field 'prompt' must be a non-empty string")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, *, where: str = "") -> Example:
        """Build from a dict; a missing or unknown field raises naming ``where`` (e.g. ``file:line``)."""
        prefix = f"{where}: " if where else ""
        names = {f for f in cls.__dataclass_fields__}
        missing = [k for k in ("id", "task", "split", "prompt") if k not in d]
        if missing:
            raise ValueError(f"{prefix}missing field(s) {missing}")
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"{prefix}unknown field(s) {unknown}; expected a subset of {sorted(names)}")
        try:
            return cls(**d)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{prefix}{e}") from None
