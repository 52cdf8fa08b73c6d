"""The command line's results table: it prints whatever a finished run measured, including what it could not."""

import json

from rlrf_nb.analysis import headline_claims
from rlrf_nb.cli import print_results
from rlrf_nb.store import RunStore


def test_results_table_prints_a_claim_without_a_value(tmp_path, caplog):
    """A headline claim on FactScore with no scored bio has a NaN difference (null in results.json): the table
    says n/a instead of raising a TypeError after every stage has finished (issue 15, item 3)."""
    per_item = {"M0": {"gsm8k_strict": [1.0, 0.0, 1.0], "factscore": [None, None, None]},
                "M2": {"gsm8k_strict": [1.0, 1.0, 0.0], "factscore": [None, None, None]}}
    claims = headline_claims(per_item)
    assert {c["metric"]: c["verdict"] for c in claims} == {"gsm8k_strict": "not shown", "factscore": "no data"}
    table = [{"model": "M0", "metric": "factscore", "value": None, "ci_low": None, "ci_high": None},
             {"model": "M2", "metric": "gsm8k_strict", "value": 0.667, "ci_low": None, "ci_high": None,
              "diff": 0.0, "diff_low": None, "diff_high": None, "p": None}]
    RunStore(tmp_path).update_results({"benchmarks": {"table": table, "claims": claims}})
    assert json.loads((tmp_path / "results.json").read_text())["benchmarks"]["claims"][1]["diff"] is None
    caplog.set_level("INFO", logger="rlrf_nb.cli")
    print_results(tmp_path)
    text = caplog.text
    assert "M2 beats M0, factscore" in text and "n/a (no paired items)" in text and "no data" in text
    assert "0.667 [n/a, n/a] +0.000 [n/a, n/a]" in text


def test_world_writes_world_v1s_committed_splits_by_default(tmp_path):
    """``rlrf-nb world`` writes to data/tiny_world by default, world v1's committed splits, so its default recipe is
    world v1's even though the other commands default to world v2 (which would overwrite them with another world)."""
    from pathlib import Path

    from rlrf_nb.cli import main

    root = Path(__file__).resolve().parents[1]
    assert main(["world", "--out", str(tmp_path)]) == 0
    for name in ("kb.jsonl", "math_test.jsonl"):
        assert (tmp_path / name).read_bytes() == (root / "data/tiny_world" / name).read_bytes(), name
