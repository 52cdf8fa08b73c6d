"""Where the project lives, and how recipe paths resolve: one place for every module and notebook."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def resolve_path(p: str | Path) -> Path:
    """A recipe path: absolute, or relative to the working directory, else to the project root
    (so a notebook opened from ``notebooks/`` finds ``data/...`` too)."""
    p = Path(p).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return PROJECT_ROOT / p
