"""Keep committed notebooks output-free: a git *clean filter* that strips outputs before git stores a notebook.

``make install`` registers it (``git config filter.nbstrip.clean "python3 rlrf_nb/nbstrip.py"``) and ``.gitattributes``
applies it to ``notebooks/*.ipynb``: the working copy keeps its outputs, while git diffs, status and commits see the
notebook without outputs, execution counts or run metadata, so only source changes show. Standard library only (git runs
it with any ``python3``), and JSON written exactly as nbformat and jupytext do, so an unchanged notebook comes out byte
for byte as committed.
"""

from __future__ import annotations

import json
import sys

NOTEBOOK_METADATA = ("jupytext", "kernelspec")  # what a committed notebook keeps; language_info, widgets, papermill go
CELL_METADATA = ("tags",)  # the "parameters" tag papermill needs; execution times, collapsed/scrolled state go


def strip(nb: dict) -> dict:
    """``nb`` (a parsed .ipynb) without outputs, execution counts and run metadata."""
    out = dict(nb)
    out["metadata"] = {k: v for k, v in nb.get("metadata", {}).items() if k in NOTEBOOK_METADATA}
    cells = []
    for cell in nb.get("cells", []):
        c = dict(cell)
        c["metadata"] = {k: v for k, v in cell.get("metadata", {}).items() if k in CELL_METADATA}
        if c.get("cell_type") == "code":
            c["outputs"], c["execution_count"] = [], None
        cells.append(c)
    out["cells"] = cells
    return out


def clean_text(text: str) -> str:
    """The stored form of a notebook's text (what the clean filter writes)."""
    return json.dumps(strip(json.loads(text)), indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> int:
    """The filter: a notebook on stdin, its stripped form on stdout (git passes every notebook through this)."""
    data = sys.stdin.buffer.read().decode("utf-8")
    sys.stdout.buffer.write(clean_text(data).encode("utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
