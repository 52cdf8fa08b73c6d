"""The one record schema (:class:`Example`) shared by the tiny world's splits and the real-data loaders."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

TASKS = ("math", "bios", "instruct")


@dataclass(frozen=True)
class Example:
    """One prompt with what is known about its answer: ``id``, ``task`` (math | bios | instruct), ``split``, ``prompt``,
    ``reference`` (or None), ``answer`` (math's gold number string), ``tags`` (pick aspects) and task ``meta``.
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
