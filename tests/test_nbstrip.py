"""The git clean filter that keeps committed notebooks output-free (rlrf_nb/nbstrip.py, registered by make install):
an unchanged notebook passes byte for byte, a notebook run and saved in JupyterLab is stored without its outputs, and
git sees no change until a cell's source changes."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rlrf_nb.nbstrip import clean_text

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _as_run_in_lab(text: str) -> str:
    """What JupyterLab saves after a run: outputs, execution counts, cell and notebook metadata."""
    nb = json.loads(text)
    for i, c in enumerate(nb["cells"]):
        c["metadata"].update({"execution": {"iopub.status.idle": "2026-11-28T12:00:00Z"}, "scrolled": True})
        if c["cell_type"] == "code":
            c["execution_count"] = i
            c["outputs"] = [{"name": "stdout", "output_type": "stream", "text": ["run directory: runs/demo\n"]}]
    nb["metadata"]["language_info"] = {"name": "python", "version": "3.11.7"}
    nb["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_a_notebook_run_in_lab_is_stored_exactly_as_committed(nb):
    committed = subprocess.run(["git", "show", f"HEAD:{nb.relative_to(ROOT)}"], cwd=ROOT, capture_output=True,
                               text=True).stdout or nb.read_text(encoding="utf-8")
    assert clean_text(committed) == committed  # an unchanged notebook passes byte for byte
    ran = _as_run_in_lab(committed)
    assert ran != committed and clean_text(ran) == committed
    assert json.loads(clean_text(ran))["cells"][1]["metadata"].get("tags") == json.loads(committed)["cells"][1][
        "metadata"].get("tags")  # the papermill "parameters" tag survives


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_stores_and_diffs_notebooks_without_outputs(tmp_path):
    """A real git repository with the filter as make install registers it (run as a script: no venv needed)."""
    src = ROOT / "notebooks" / "01_feedback_rubrics.ipynb"
    committed = clean_text(src.read_text(encoding="utf-8"))
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "rlrf_nb").mkdir()
    shutil.copy(ROOT / "rlrf_nb" / "nbstrip.py", tmp_path / "rlrf_nb" / "nbstrip.py")
    shutil.copy(ROOT / ".gitattributes", tmp_path / ".gitattributes")
    nb = tmp_path / "notebooks" / src.name
    nb.write_text(committed, encoding="utf-8")

    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, capture_output=True, text=True, check=True).stdout

    git("init", "-q")
    git("config", "user.email", "t@example.com"), git("config", "user.name", "t")
    # what the Makefile's nbstrip target sets, with this interpreter for "python3"
    git("config", "filter.nbstrip.clean", f"{sys.executable} rlrf_nb/nbstrip.py")
    git("config", "filter.nbstrip.smudge", "cat")
    git("add", "."), git("commit", "-qm", "clean")
    nb.write_text(_as_run_in_lab(committed), encoding="utf-8")  # run and saved in JupyterLab
    assert git("diff") == ""  # no 2,000-line diff
    git("add", ".")  # (git status lists the file until then: its size changed; the stored content did not)
    assert git("status", "--porcelain") == ""  # nothing to commit
    assert git("show", f":notebooks/{src.name}") == committed  # stored without outputs
    assert '"output_type"' in nb.read_text(encoding="utf-8")  # the working copy keeps them
    book = json.loads(nb.read_text(encoding="utf-8"))
    book["cells"][0]["source"] = ["# a changed heading\n"]
    nb.write_text(json.dumps(book, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    diff = git("diff")
    assert "a changed heading" in diff and "output_type" not in diff  # a source change shows, and only it


def test_the_repository_applies_the_filter_to_notebooks():
    assert "notebooks/*.ipynb filter=nbstrip" in (ROOT / ".gitattributes").read_text().splitlines()
    make = (ROOT / "Makefile").read_text()
    assert 'git config filter.nbstrip.clean "python3 rlrf_nb/nbstrip.py"' in make
    assert "install: $(STAMP) nbstrip" in make and "test: $(STAMP) nbstrip" in make
