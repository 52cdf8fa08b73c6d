"""report.html: a header worth sending (title, run, recipe, date, git SHA, M0, organism, claims first), every figure,
and no code, injected parameters, progress bars or stderr; a smoke run's report says its M0 is untrained."""

import json
import re
from datetime import UTC, datetime

import nbformat
import plotly.graph_objects as go
import pytest

from rlrf_nb.report import UNTRAINED_SECONDS, write_report

SHA = "0123456789abcdef0123456789abcdef01234567"
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _figure_output(title):
    return nbformat.v4.new_output("display_data", data={"application/vnd.plotly.v1+json":
                                                        json.loads(go.Figure(layout={"title": title}).to_json())})


def _stage(path, title, code_outputs):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('recipe_path = "recipes/tiny.yaml"', metadata={"tags": ["parameters"]})
    injected = nbformat.v4.new_code_cell('# Parameters\nrun_name = "SECRET_INJECTED"',
                                         metadata={"tags": ["injected-parameters"]})
    code = nbformat.v4.new_code_cell("print(CODE_THAT_MUST_NOT_SHOW)")
    code.outputs = code_outputs
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}\nnarrative text"), params, injected, code]
    nbformat.write(nb, path)


@pytest.fixture
def run_dir(tmp_path):
    d = tmp_path / "runs" / "smoke"
    d.mkdir(parents=True)
    _stage(d / "00_tiny_world.ipynb", "00 · The tiny world", [
        nbformat.v4.new_output("stream", name="stdout", text="M0 accuracy 12/24\n"),
        nbformat.v4.new_output("stream", name="stderr", text="STDERR_WARNING\n"),
        nbformat.v4.new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "x"},
                                                     "text/plain": "PROGRESS_BAR 0%|"}),
        _figure_output("FIRST_FIGURE")])
    _stage(d / "05_benchmark_analysis.ipynb", "05 · Benchmarks", [_figure_output("SECOND_FIGURE")])
    (d / "run.json").write_text(json.dumps({"created_utc": "2026-11-28T11:00:00+00:00", "git_sha": SHA,
                                            "git_dirty": False, "seed": 0}))
    t0 = datetime(2026, 11, 28, 11, 0, tzinfo=UTC).timestamp()
    (d / "stages.json").write_text(json.dumps({
        "00_tiny_world": {"status": "done", "seconds": 12.1, "started": t0, "finished": t0 + 12.1},
        "05_benchmark_analysis": {"status": "done", "seconds": 3.0, "started": t0 + 600, "finished": t0 + 603}}))
    claims = [{"claim": "M2 beats M0, gsm8k_strict", "diff": -0.016, "ci_low": -0.042, "ci_high": 0.01, "bar": 0.1,
               "verdict": "not shown"}]
    results = {"run": {"name": "smoke", "recipe": "recipes/tiny-smoke.yaml", "overrides": {}, "params": {}},
               "m0": {"path": "data/tiny_world/m0", "source": "pretrained", "train_seconds": 442.0,
                      "n_params": 541536}, "benchmarks": {"claims": claims}}
    (d / "results.json").write_text(json.dumps(results))
    ck = d / "checkpoints" / "M0-2e38b5c708ea4639"
    ck.mkdir(parents=True)
    (ck / "COMPLETE.json").write_text(json.dumps({"seconds": 4.1}))
    return d


def test_report_header_title_claims_first_and_every_figure(run_dir):
    page = write_report(run_dir, now=NOW).read_text()
    assert "<title>rlrf_nb report: smoke (tiny-smoke.yaml)</title>" in page  # not "Notebook"
    for fact in ("recipes/tiny-smoke.yaml", SHA, "2026-11-28 11:00 to 2026-11-28 11:10 UTC",
                 "2026-11-28T12:00:00+00:00", "data/tiny_world/m0", "smoke/checkpoints/M0-2e38b5c708ea4639",
                 "00 done (12 s)"):
        assert fact in page, fact
    claims_at = page.index("M2 beats M0, gsm8k_strict")
    assert claims_at < page.index("00 · The tiny world") < page.index("05 · Benchmarks")  # the claims come first
    assert "not shown" in page and "None of the paper" in page  # the claims' reading sits under the table
    assert "FIRST_FIGURE" in page and "SECOND_FIGURE" in page and "narrative text" in page
    assert len(re.findall(r"plotly\.js v\d", page)) == 1  # plotly embedded once: the page opens offline


def test_report_hides_code_injected_parameters_progress_bars_and_stderr(run_dir):
    page = write_report(run_dir, now=NOW).read_text()
    for hidden in ("CODE_THAT_MUST_NOT_SHOW", "SECRET_INJECTED", "recipes/tiny.yaml\"", "STDERR_WARNING",
                   "PROGRESS_BAR"):
        assert hidden not in page, hidden
    assert "M0 accuracy 12/24" in page


def test_a_smoke_report_says_its_m0_is_untrained(run_dir):
    page = write_report(run_dir, now=NOW).read_text()
    assert "This run&#39;s M0 is untrained" in page or "This run's M0 is untrained" in page
    assert "trained for 4 s" in page
    (run_dir / "checkpoints" / "M0-2e38b5c708ea4639" / "COMPLETE.json").write_text(
        json.dumps({"seconds": UNTRAINED_SECONDS + 400}))
    assert "untrained" not in write_report(run_dir, now=NOW).read_text()


def test_report_shows_the_organism_when_results_has_a_diagnosis(run_dir):
    page = write_report(run_dir, now=NOW).read_text()
    assert "no <code>diagnose</code> entry" in page
    res = json.loads((run_dir / "results.json").read_text())
    res["diagnose"] = {"verdicts": [{"property": "critique beats a fresh sample", "value": 0.8, "bar": ">= 1",
                                     "holds": False}], "headline": {"chance_pass_k": 0.012}}
    (run_dir / "results.json").write_text(json.dumps(res))
    page = write_report(run_dir, now=NOW).read_text()
    assert "critique beats a fresh sample" in page and "0.800" in page and "chance_pass_k" in page
    assert "0.012" in page and "no <code>diagnose</code> entry" not in page


def test_no_report_before_any_stage_ran(tmp_path):
    assert write_report(tmp_path) is None
