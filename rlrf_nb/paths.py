"""Where the project lives, how recipe paths resolve, and whether a data source is a Hub id: one place for every
module and notebook."""

from __future__ import annotations

import re
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")  # owner/name, as on the Hub


def resolve_path(p: str | Path) -> Path:
    """A recipe path: absolute, or relative to the working directory, else to the project root
    (so a notebook opened from ``notebooks/`` finds ``data/...`` too)."""
    p = Path(p).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return PROJECT_ROOT / p


def is_hub_dataset(source: str) -> bool:
    """Whether ``source`` names a Hub dataset (``owner/name``) rather than a local file: an existing file, or a name
    with a data-file suffix, is local."""
    return not Path(source).is_file() and bool(_HUB_ID.fullmatch(str(source))) and \
        not str(source).endswith((".jsonl", ".json", ".txt"))
