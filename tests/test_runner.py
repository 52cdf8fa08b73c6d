"""The papermill runner (``rlrf-nb run``): the smoke recipe end to end, killed mid-run and resumed; parameter
validation before injection; a failing notebook; sweeps and collation; every shipped recipe validates."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from rlrf_nb import runner
from rlrf_nb.collate import collate, flatten_metrics, per_run_table, runs_of_sweep, t975
from rlrf_nb.config import ConfigError, load_recipe
from rlrf_nb.runner import STAGES, RunError, parse_grid, resolve_grid_key, run, split_params, sweep, validate_params

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def _cli(*args):
    return [str(BIN / "rlrf-nb"), *args]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """``rlrf-nb run`` of the smoke recipe, SIGKILLed (with its kernel) while notebook 02 runs, then rerun to the
    end with the same command. Returns (run dir, the killed run's output, the rerun's CompletedProcess)."""
    base = tmp_path_factory.mktemp("runner")
    cmd = _cli("run", "--recipe", "recipes/tiny-smoke.yaml", "--name", "smoke", "-p", f"run.runs_dir={base}")
    run_dir = base / "smoke"
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 420
    samples = run_dir / "samples.jsonl"
    while True:  # notebook 02 has started writing its search records
        stages = json.loads((run_dir / "stages.json").read_text()) if (run_dir / "stages.json").exists() else {}
        if stages.get("02_reflection_sampling", {}).get("status") == "running" and samples.exists() \
                and samples.stat().st_size > 0:
            break
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        assert time.monotonic() < deadline, "notebook 02 never started"
        time.sleep(0.2)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its kernel
    proc.wait()
    killed_out = proc.stdout.read().decode()
    again = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    return run_dir, killed_out, again


@pytest.mark.timeout(1200)
def test_runner_smoke_end_to_end_resumes_after_a_kill(smoke_run):
    run_dir, killed_out, again = smoke_run
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-3000:]
    out = again.stdout
    assert "[1/6] 00_tiny_world: done before" in out and "[2/6] 01_feedback_rubrics: done before" in out
    assert "[3/6] 02_reflection_sampling: running (resuming from its stored records)" in out
    for i, nb in enumerate(STAGES, start=1):
        assert f"[{i}/6] {nb.removesuffix('.ipynb')}" in out
        book = nbformat.read(run_dir / nb, as_version=4)
        errors = [o for c in book.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{nb}: {errors[:1]}"
    stages = json.loads((run_dir / "stages.json").read_text())
    assert [stages[nb.removesuffix(".ipynb")]["status"] for nb in STAGES] == ["done"] * 6
    res = json.loads((run_dir / "results.json").read_text())
    for key in ("m0_math_accuracy", "feedback", "reflection", "dpo", "rounds", "benchmarks", "run"):
        assert key in res, key
    assert set(res["run"]["stage_seconds"]) == {nb.removesuffix(".ipynb") for nb in STAGES}
    # every round-loop variant ran M0 -> M2, and notebook 05 evaluated their last rounds
    assert set(res["round_variants"]) == {"rlrf", "no_reflection", "scalar", "rs_sft"}
    for variant, rows in res["round_variants"].items():
        assert [r["policy"] for r in rows] == ["M0", "M1", "M2"], variant
    # the smoke M0 rarely gets a perfect answer: RS-SFT then keeps the start policy and says so
    assert all(r["method"] in ("rs_sft", "none (no candidate good enough for RS-SFT)")
               for r in res["round_variants"]["rs_sft"][1:])
    assert {"M2", "no reflection M2", "scalar reward M2", "RS-SFT M2"} <= set(res["benchmarks"]["summary"])
    claims = {c["claim"]: c for c in res["benchmarks"]["claims"]}
    assert "M2 beats M0, gsm8k_strict" in claims and "reflection helps (M2 vs no reflection M2), gsm8k_strict" in claims
    assert all(c["verdict"] in ("holds", "under the bar", "not shown", "reversed") for c in claims.values())
    # no duplicate records in what notebook 02 was writing when it was killed
    from rlrf_nb.jsonl import read_jsonl

    for name in ("samples", "feedback", "refinements"):
        keys = [r["key"] for r in read_jsonl(run_dir / f"{name}.jsonl")]
        assert len(keys) == len(set(keys)), name
    assert (run_dir / "report.html").stat().st_size > 10_000
    assert "the paper's claims in miniature" in out and "HTML report:" in out


@pytest.mark.timeout(600)
def test_runner_rerun_skips_every_finished_stage_and_changed_params_rerun(smoke_run):
    run_dir, _, _ = smoke_run
    base = run_dir.parent
    t0 = time.monotonic()
    res = run("recipes/tiny-smoke.yaml", "smoke", params=[f"run.runs_dir={base}"],
              progress=False)
    assert [s.status for s in res.stages] == ["skipped"] * 6 and time.monotonic() - t0 < 30
    # a changed notebook parameter reruns only the notebooks that take it ... and only them
    res = run("recipes/tiny-smoke.yaml", "smoke", params=[f"run.runs_dir={base}", "shift_prompts=3"],
              stages=["05"], progress=False)
    assert [s.status for s in res.stages] == ["done"]
    assert json.loads((run_dir / "stages.json").read_text())["05_benchmark_analysis"]["status"] == "done"


def test_failing_notebook_stops_the_run_with_the_cell_error_and_keeps_the_output(tmp_path):
    # a recipe whose M0 path does not exist: notebook 00 fails in its loading cell
    recipe = tmp_path / "broken.yaml"
    recipe.write_text((ROOT / "recipes/tiny-smoke.yaml").read_text().replace("retrain: true", "retrain: false")
                      + "\n")
    with pytest.raises(RunError) as err:
        run(str(recipe), "broken", params=[f"run.runs_dir={tmp_path}", "m0.pretrained=/nonexistent/m0"],
            stages=["00"], progress=False)
    msg = str(err.value)
    assert "stage 00_tiny_world failed in cell" in msg and "/nonexistent/m0" in msg
    assert "kept for inspection" in msg and (tmp_path / "broken/00_tiny_world.ipynb").exists()
    stages = json.loads((tmp_path / "broken/stages.json").read_text())
    assert stages["00_tiny_world"]["status"] == "failed" and "/nonexistent/m0" in stages["00_tiny_world"]["error"]


def test_a_stage_shows_a_live_bar_with_the_running_cell_and_no_transport_warning(tmp_path, monkeypatch, capfd,
                                                                                caplog):
    """Issue 17, point 8: while a stage runs, papermill's bar counts its cells (done of total, elapsed) and shows
    the running cell's first line; the kernel gets CurveZMQ keys, so it does not warn about plain TCP."""
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                           "display_name": "Python 3"}})
    params = nbformat.v4.new_code_cell("recipe_path = None\nrun_name = None\noverrides = {}")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# A tiny stage"), params,
                nbformat.v4.new_code_cell("\n\ntotal = 1 + 1  # the cell the bar names\nprint(total)")]
    (tmp_path / "nb").mkdir()
    nbformat.write(nb, tmp_path / "nb" / "00_tiny.ipynb")
    monkeypatch.setattr(runner, "NOTEBOOKS", tmp_path / "nb")
    monkeypatch.setattr(runner, "STAGES", ["00_tiny.ipynb"])
    caplog.set_level("INFO", logger="rlrf_nb.runner")
    res = run("recipes/tiny-smoke.yaml", "bar", params=[f"run.runs_dir={tmp_path}"], progress=True)
    assert [s.status for s in res.stages] == ["done"]
    err = capfd.readouterr().err
    assert "[1/1] 00_tiny: 100%" in err and "4/4 [00:0" in err  # 3 cells + papermill's injected parameters
    assert "total = 1 + 1  # the cell the bar names" in err
    assert "without encryption" not in err
    assert "[1/1] 00_tiny: done in" in caplog.text
    assert runner.first_line("\n  x = 1\ny = 2") == "x = 1" and runner.first_line("a" * 80, 10) == "aaaaaaa..."


@pytest.mark.parametrize("params, match", [
    (["n_mth=3"], "no notebook in this run has a parameter 'n_mth'"),
    (["shift_prompts=many"], "expects int"),
    (["interactive=3"], "expects bool"),
    (["run_name=x"], "set by the runner"),
    (["dpo.bet=0.3"], "dpo.bet"),
    (["dpo.beta=high"], "dpo.beta"),
    (["a b=1"], "not a parameter name"),
    (["novalue"], "expected key=value"),
])
def test_parameters_are_validated_before_anything_runs(tmp_path, params, match):
    with pytest.raises((RunError, ConfigError), match=match):
        run("recipes/tiny-smoke.yaml", "x", params=[f"run.runs_dir={tmp_path}", *params])
    assert not (tmp_path / "x" / "stages.json").exists()  # nothing was started


def test_split_and_validate_params():
    ovr, params = split_params(["dpo.beta=0.3", "n_math=20", "interactive=false", "gsm8k_source=data/x.jsonl"])
    assert ovr == {"dpo.beta": "0.3"} and params == {"n_math": 20, "interactive": False,
                                                       "gsm8k_source": "data/x.jsonl"}
    per_nb = validate_params(params, STAGES)
    assert per_nb["05_benchmark_analysis.ipynb"] == {"interactive": False, "n_math": 20,
                                                     "gsm8k_source": "data/x.jsonl"}
    assert per_nb["04_rlrf_rounds.ipynb"] == {}  # 04 has none of these parameters


def test_grid_keys_resolve_to_recipe_fields():
    assert resolve_grid_key("beta") == ["dpo.beta"]
    assert resolve_grid_key("seed") == ["run.seed", "dpo.seed"]
    assert resolve_grid_key("dpo.learning_rate") == ["dpo.learning_rate"]
    with pytest.raises(RunError, match="ambiguous"):
        resolve_grid_key("n_math")
    with pytest.raises(RunError, match="no recipe section"):
        resolve_grid_key("betta")
    assert parse_grid(["seed=0,1,2", "beta=0.1,0.3"]) == [("seed", ["0", "1", "2"]), ("beta", ["0.1", "0.3"])]


@pytest.mark.timeout(600)
def test_sweep_and_collate_two_smoke_runs(tmp_path):
    results, index = sweep("recipes/tiny-smoke.yaml", ["seed=0,1"], "sw", stages=["00"], progress=False,
                           params=[f"run.runs_dir={tmp_path}", "m0.retrain=false",
                                                   "m0.pretrained=data/tiny_world/m0"])
    assert len(results) == 2
    assert index == tmp_path / "sw.sweep.json"
    dirs = runs_of_sweep(index)
    assert [d.name for d in dirs] == ["sw-seed0", "sw-seed1"]
    for d, seed in zip(dirs, (0, 1)):
        res = json.loads((d / "results.json").read_text())
        assert res["sweep"]["point"] == {"seed": str(seed)}
        assert load_recipe(d / "config.yaml").run.seed == seed  # the override reached the notebook
    table = collate(dirs)
    row = table[table["metric"] == "m0_math_accuracy"].iloc[0]
    values = [flatten_metrics(json.loads((d / "results.json").read_text()))["m0_math_accuracy"] for d in dirs]
    assert row["n_runs"] == 2 and row["values"] == values and row["mean"] == pytest.approx(sum(values) / 2)
    # the CLI collates the sweep index too, and writes the table and the figure
    out = subprocess.run(_cli("collate", str(index), "--out", str(tmp_path / "col")), cwd=ROOT, env=ENV,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "m0_math_accuracy" in out.stdout
    assert (tmp_path / "col/collated.csv").exists() and (tmp_path / "col/collated.html").exists()


def test_collate_mean_and_t_interval_across_seeds(tmp_path):
    vals = {0: 0.40, 1: 0.50, 2: 0.45}
    for seed, v in vals.items():
        for beta in ("0.1", "0.3"):
            d = tmp_path / f"s{seed}-b{beta}"
            d.mkdir()
            res = {"sweep": {"point": {"seed": str(seed), "beta": beta}},
                   "m0_math_accuracy": {"rate": v + (0.1 if beta == "0.3" else 0), "n": 200, "k": 1,
                                        "ci_low": 0, "ci_high": 1},
                   "rounds": [{"policy": "M0", "math_accuracy": {"rate": v, "n": 200}},
                              {"policy": "M1", "math_accuracy": {"rate": None, "n": 0}}]}
            (d / "results.json").write_text(json.dumps(res))
    table = collate(sorted(tmp_path.iterdir()))
    m = table[table["metric"] == "m0_math_accuracy"].set_index("beta")
    assert list(m["n_runs"]) == [3, 3]
    mean, sd = 0.45, 0.05
    assert m.loc["0.1", "mean"] == pytest.approx(mean) and m.loc["0.1", "sd"] == pytest.approx(sd)
    half = t975(2) * sd / 3 ** 0.5
    assert m.loc["0.1", "ci_low"] == pytest.approx(mean - half) and m.loc["0.3", "mean"] == pytest.approx(0.55)
    assert "rounds.M0.math_accuracy" in set(table["metric"])
    assert "rounds.M1.math_accuracy" not in set(table["metric"])  # a missing rate is not a zero
    long = per_run_table(sorted(tmp_path.iterdir()))
    assert len(long) == 12


def test_collate_reads_notebook_05s_claims_and_variant_comparison(tmp_path):
    for seed, diff in ((0, -0.02), (1, 0.0), (2, 0.02)):
        d = tmp_path / f"s{seed}"
        d.mkdir()
        res = {"sweep": {"point": {"seed": str(seed)}}, "benchmarks": {
            "claims": [{"claim": "M2 beats M0, gsm8k_strict", "diff": diff, "ci_low": diff - 0.03, "bar": 0.1,
                        "verdict": "not shown"}],
            "comparison": {"GRPO M2": {"variant": "grpo", "gsm8k_strict_diff": diff, "generated_tokens": 1000 + seed,
                                       "wall_seconds": 90.0, "judge_calls": 7}}},
               "dpo": {"positive_controls": [  # notebook 03's rows: keyed by model and measure
                   {"model": "M0", "measure": "every step", "value": 0.3, "diff": None, "verdict": None},
                   {"model": "gold DPO", "measure": "every step", "value": 0.3 + diff, "diff": diff,
                    "diff_low": diff - 0.01, "verdict": "raises"}]}}
        (d / "results.json").write_text(json.dumps(res))
    table = collate(sorted(tmp_path.iterdir())).set_index("metric")
    assert table.loc["dpo.positive_controls.gold DPO.every step.diff", "n_runs"] == 3
    assert "dpo.positive_controls.M0.every step.diff" not in table.index  # M0's row has no difference
    assert table.loc["benchmarks.claims.M2 beats M0, gsm8k_strict.diff", "mean"] == pytest.approx(0.0)
    assert table.loc["benchmarks.comparison.GRPO M2.gsm8k_strict_diff", "n_runs"] == 3
    assert table.loc["benchmarks.comparison.GRPO M2.generated_tokens", "mean"] == pytest.approx(1001)
    assert "benchmarks.comparison.GRPO M2.judge_calls" not in table.index  # not a headline metric
    from rlrf_nb.collate import comparison_over_seeds

    view = comparison_over_seeds(collate(sorted(tmp_path.iterdir())))
    half = t975(2) * 0.02 / 3 ** 0.5
    assert view.loc["GRPO M2", "gsm8k_strict Δ vs M0"] == f"{0.0:+.3f} [{-half:+.3f}, {half:+.3f}]"
    assert (view.loc["GRPO M2", "seeds"], view.loc["GRPO M2", "generated_tokens"]) == (3, 1001.0)


def test_collate_figure_shares_one_axis_for_a_seed_sweep_and_splits_panels_by_group(tmp_path):
    from rlrf_nb.collate import collate_figure

    for seed, v in enumerate((0.40, 0.50, 0.45)):
        for beta in ("0.1", "0.3"):
            d = tmp_path / "grouped" / f"s{seed}-b{beta}"
            d.mkdir(parents=True)
            res = {"sweep": {"point": {"seed": str(seed), "beta": beta}}, "m0_math_accuracy": {"rate": v, "n": 200},
                   "reflection": {"best_is_refinement": {"rate": v / 2, "n": 200}}}
            (d / "results.json").write_text(json.dumps(res))
            if beta == "0.1":
                flat = tmp_path / "seeds" / f"s{seed}"
                flat.mkdir(parents=True)
                res["sweep"]["point"] = {"seed": str(seed)}
                (flat / "results.json").write_text(json.dumps(res))
    seeds = collate(sorted((tmp_path / "seeds").iterdir()))
    fig = collate_figure(seeds)
    means = fig.data[0]
    assert list(means.y) == list(seeds["metric"]) and len(fig.layout.annotations) == 0  # one panel, one axis
    assert list(means.x) == pytest.approx([0.45, 0.225])
    assert list(means.error_x.arrayminus) == pytest.approx(list(seeds["mean"] - seeds["ci_low"]))
    assert [list(t.x) for t in fig.data[1:]] == [[0.40, 0.50, 0.45], [0.20, 0.25, 0.225]]  # every run shown
    grouped = collate(sorted((tmp_path / "grouped").iterdir()))
    fig = collate_figure(grouped)
    assert [a.text for a in fig.layout.annotations] == list(dict.fromkeys(grouped["metric"]))  # a panel per metric
    assert set(fig.data[0].y) == {"beta=0.1", "beta=0.3"}


def test_collate_bad_results_names_the_file(tmp_path):
    d = tmp_path / "r"
    d.mkdir()
    (d / "results.json").write_text('{"m0_math_accuracy": ')
    with pytest.raises(ValueError, match=r"r/results.json:1: invalid JSON"):
        collate([d])
    with pytest.raises(FileNotFoundError, match="no results.json"):
        collate([tmp_path / "missing"])


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "recipes").glob("*.yaml")))
def test_every_recipe_validates_without_downloading(name, monkeypatch):
    monkeypatch.setenv("RLRF_JUDGE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recipe = load_recipe(ROOT / "recipes" / name)
    assert recipe.reflection.n_samples >= 1 and recipe.rounds.n_rounds >= 1


def test_real_gsm8k_recipe_fields(monkeypatch):
    monkeypatch.setenv("RLRF_JUDGE_URL", "http://judge.internal:8000/v1")
    r = load_recipe(ROOT / "recipes/qwen2.5-1.5b-gsm8k.yaml")
    assert r.m0.pretrained == "Qwen/Qwen2.5-1.5B-Instruct" and not r.m0.retrain
    assert r.feedback.judge == "llm" and r.feedback.judge_url == "http://judge.internal:8000/v1"
    assert r.feedback.api_key_env == "OPENAI_API_KEY"
    assert r.reflection.prompt_source == "openai/gsm8k" and r.eval.gsm8k_source == "openai/gsm8k"
    assert r.eval.gsm8k_k == 8 and r.dpo.lora and r.reflection.backend == "vllm"
    assert set(r.rounds.variants) == {"rlrf", "no_reflection", "scalar", "rs_sft"}
    monkeypatch.delenv("RLRF_JUDGE_URL")
    with pytest.raises(ConfigError, match="feedback.judge_url_env.*'RLRF_JUDGE_URL'.*not set"):
        load_recipe(ROOT / "recipes/qwen2.5-1.5b-gsm8k.yaml")


def test_prompt_source_reads_a_local_gsm8k_file_for_search(tmp_path):
    from rlrf_nb.task_data import search_examples
    from rlrf_nb.tiny_world import build_world

    rows = [{"question": f"What is {i} + 1?", "answer": f"{i} + 1 = <<{i}+1={i + 1}>>{i + 1}\n#### {i + 1}"}
            for i in range(10)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = load_recipe(ROOT / "recipes/tiny-smoke.yaml", {"reflection.prompt_source": str(tmp_path / "train.jsonl")})
    world = build_world(recipe.world)
    exs = search_examples(recipe, world, n_math=4, n_bios=1, offset_math=4)
    assert [e.prompt for e in exs[:4]] == [f"What is {i} + 1?" for i in range(4, 8)]
    assert exs[4].task == "bios"
    with pytest.raises(ValueError, match="prompt_source.*has 10"):
        search_examples(recipe, world, n_math=8, n_bios=0, offset_math=4)


def test_stage_hash_follows_the_judge_url_in_the_environment_the_policy_and_data_contents(tmp_path, monkeypatch):
    """Issue 15, item 10: the stage hash covered only the recipe's text, so a judge URL read from $RLRF_JUDGE_URL,
    a policy's new weights or an edited data file left finished stages standing."""
    from rlrf_nb.runner import _stage_hash, stage_inputs

    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"question": "What is 1 + 1?", "answer": "1 + 1 = 2\n#### 2"}) + "\n")
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text("feedback: {judge: llm, judge_url_env: JUDGE_URL, judge_model: m}\n"
                           f"reflection: {{prompt_source: {train}}}\n")

    def digest():
        return _stage_hash(recipe_file.read_text(), {}, {}, stage_inputs(load_recipe(recipe_file)))

    monkeypatch.setenv("JUDGE_URL", "http://u:secret@127.0.0.1:8000/v1")
    first = digest()
    assert "secret" not in json.dumps(stage_inputs(load_recipe(recipe_file)))
    monkeypatch.setenv("JUDGE_URL", "http://127.0.0.1:8001/v1")
    assert digest() != first
    monkeypatch.setenv("JUDGE_URL", "http://u:secret@127.0.0.1:8000/v1")
    assert digest() == first
    train.write_text(train.read_text().replace("1 + 1", "2 + 0"))
    assert digest() != first
