"""Notebooks: papermill smoke runs in a small mode, jupytext twins in sync, outputs stripped."""

import json
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _stored(nb: Path) -> str:
    """The notebook as git stores it: through the nbstrip clean filter once ``make install`` has registered it (a
    notebook run and saved in JupyterLab keeps its outputs in the working copy only), else the file itself."""
    import subprocess

    from rlrf_nb.nbstrip import clean_text

    text = nb.read_text(encoding="utf-8")
    registered = subprocess.run(["git", "config", "filter.nbstrip.clean"], cwd=ROOT, capture_output=True)
    return clean_text(text) if registered.returncode == 0 else text


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_committed_clean_with_parameters_cell_and_in_sync_with_its_twin(nb):
    book = nbformat.reads(_stored(nb), as_version=4)
    code = [c for c in book.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "strip outputs"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    twin = jupytext.read(nb.with_suffix(".py"))
    assert [(c.cell_type, c.source) for c in twin.cells] == [(c.cell_type, c.source) for c in book.cells], \
        f"{nb.name} and its py:percent twin differ: run `jupytext --sync {nb}`"


def test_notebook_00_smoke(tmp_path):
    """Notebook 00 end to end in the smoke recipe: trains a tiny M0, evaluates it, writes results.json;
    a second run is served from the store (cached model, no new generations)."""
    import papermill

    params = {"recipe_path": "recipes/tiny-smoke.yaml", "run_name": "smoke", "retrain": True,
              "overrides": {"run.runs_dir": str(tmp_path)}}
    for attempt in range(2):
        papermill.execute_notebook(str(ROOT / "notebooks/00_tiny_world.ipynb"), str(tmp_path / f"out{attempt}.ipynb"),
                                   parameters=params, kernel_name="python3", cwd=str(ROOT), progress_bar=False)
        res = json.loads((tmp_path / "smoke/results.json").read_text())
        assert res["m0"]["source"] == ("trained now" if attempt == 0 else "cached retrain")
        if attempt == 0:
            first = res
            sizes = {p.name: p.stat().st_size for p in (tmp_path / "smoke/eval/M0").glob("*.jsonl")}
    acc = res["m0_math_accuracy"]
    assert acc["n"] == 24 and 0 <= acc["ci_low"] <= acc["rate"] <= acc["ci_high"] <= 1
    assert res["m0_refine_injected_success"]["n"] == 24
    first["m0"].pop("source"), res["m0"].pop("source")
    assert res == first  # the same numbers, served from the store
    assert sizes == {p.name: p.stat().st_size for p in (tmp_path / "smoke/eval/M0").glob("*.jsonl")}
    run = json.loads((tmp_path / "smoke/run.json").read_text())
    assert run["seed"] == 0 and run["versions"]["torch"].startswith("2.13.0") and "git_sha" in run
    assert (tmp_path / "smoke/config.yaml").exists()
    out = nbformat.read(tmp_path / "out1.ipynb", as_version=4)
    assert not [o for c in out.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]


@pytest.fixture(scope="module")
def tiny_judge(tmp_path_factory):
    """A judge LM trained for a few steps from the committed M0 (test_judge_model's teacher rows), with the judge
    prompt's fixed lines of both tasks as single tokens: what `feedback.learned_judge` names."""
    import dataclasses

    from test_judge_model import ASPECTS, M0, RUBRICS, records

    from rlrf_nb.config import DPOStageConfig
    from rlrf_nb.judge_model import prompt_phrases, teacher_rows, train_judge

    rows = teacher_rows(records(4), RUBRICS, held_out_share=0.0)["train"]
    phrases = prompt_phrases(RUBRICS, [ASPECTS, ["factuality", "completeness", "readability"]])
    cfg = dataclasses.replace(DPOStageConfig(), learning_rate=1e-3, epochs=1.0, batch_size=4, warmup_ratio=0.0,
                              max_length=1024, logging_steps=1)
    return train_judge(M0, rows, cfg, tmp_path_factory.mktemp("judge"), phrases=phrases)["path"]


def test_notebook_01_smoke(tmp_path, tiny_judge):
    """Notebook 01 in the smoke recipe: samples, verifier and LLM-judge feedback, parse accounting; then a trained
    judge served by a real `transformers serve`, greedy and as a consensus of 2, measured against the verifier."""
    import papermill

    params = {"recipe_path": "recipes/tiny-smoke.yaml", "run_name": "smoke", "interactive": False,
              "overrides": {"run.runs_dir": str(tmp_path), "feedback.learned_judge": str(tiny_judge),
                            "feedback.n_learned_judged": 2, "feedback.learned_consensus_k": 2,
                            "feedback.learned_max_new_tokens": 32}}
    papermill.execute_notebook(str(ROOT / "notebooks/01_feedback_rubrics.ipynb"), str(tmp_path / "out.ipynb"),
                               parameters=params, kernel_name="python3", cwd=str(ROOT), progress_bar=False)
    from rlrf_nb.jsonl import read_jsonl

    run = tmp_path / "smoke"
    samples = list(read_jsonl(run / "samples.jsonl"))
    ver = list(read_jsonl(run / "feedback.jsonl"))
    llm = list(read_jsonl(run / "feedback_llm.jsonl"))
    assert len(samples) == (6 + 4) * 2 and len(ver) == len(samples) and len(llm) == 2
    for rec in ver:
        assert rec["judge_id"] == "verifier/v2" and rec["parse_ok"] and rec["aspects_how"] == "tags"
        assert all(1 <= a["score"] <= 5 for a in rec["feedback"]["aspects"])
    fb = json.loads((run / "results.json").read_text())["feedback"]
    assert fb["verifier_math_agreement"]["n"] == 12 and sum(fb["verifier_vs_answer"].values()) == 12
    assert fb["verifier_vs_answer"]["verifier_5__answer_wrong"] == 0  # a verifier 5 is always a right answer
    assert fb["llm_judge_parse_rate"]["n"] == 2 + 3  # one math response (2 aspects), one bio (3)
    for rec in llm:
        assert rec["judge_id"].startswith("consensus2(llm:") and rec["feedback"]["raw"] != ""
        assert all(len(v) == 2 for v in rec["feedback"]["meta"]["votes"].values())
        for a in rec["feedback"]["aspects"]:
            assert (a["score"] is None) == (not a["parse_ok"])
    from rlrf_nb.judge_model import weights_id

    greedy, k2 = (list(read_jsonl(run / f"feedback_learned_k{k}.jsonl")) for k in (1, 2))
    assert [r["task"] for r in greedy] == ["math", "bios"] and len(k2) == 2
    assert greedy[0]["judge_id"] == f"learned:{weights_id(tiny_judge)}/cap32" and k2[0]["judge_id"].endswith("/k2")
    assert all(len(v) == 2 for r in k2 for v in r["feedback"]["meta"]["votes"].values())
    learned = json.loads((run / "results.json").read_text())["learned_judge"]
    assert set(learned) == {"greedy", "consensus of 2"} and learned["greedy"]["n"] == 2
    assert (run / "serve" / "serve-1.log").exists()


def test_notebook_02_smoke_and_review_decisions_are_honoured_in_batch(tmp_path):
    """Notebook 02 in the smoke recipe: the reflection search, pairs of every policy, figures and static review
    tables; then review decisions written to decisions.jsonl change the pairs of the next batch run, which is
    served from the store (no new generations)."""
    import papermill

    from rlrf_nb.jsonl import read_jsonl
    from rlrf_nb.pairs import POLICIES, record_decision

    # run.seed 2: the smoke M0 writes noise, so whether two samples of a prompt differ in reward is luck of the
    # sampling streams; seed 2 gives no_reflection pairs (seed 0 gave none once generation.py's streams changed)
    params = {"recipe_path": "recipes/tiny-smoke.yaml", "run_name": "smoke", "interactive": False,
              "overrides": {"run.runs_dir": str(tmp_path), "pairs.min_margin": 0.0, "run.seed": 2}}
    nb = str(ROOT / "notebooks/02_reflection_sampling.ipynb")
    papermill.execute_notebook(nb, str(tmp_path / "out0.ipynb"), parameters=params, kernel_name="python3",
                               cwd=str(ROOT), progress_bar=False)
    run = tmp_path / "smoke"
    res = json.loads((run / "results.json").read_text())["reflection"]
    assert res["samples"] == (6 + 2) * 3 and res["prompts"] == 8
    assert res["candidates"] == res["samples"] + res["budget"]["spent"]
    refs = list(read_jsonl(run / "refinements.jsonl"))
    assert len(refs) == res["budget"]["spent"]
    assert set(res["pair_yield"]) == set(POLICIES)
    sizes = {n: (run / f"{n}.jsonl").stat().st_size for n in ("samples", "refinements", "feedback")}
    pairs = list(read_jsonl(run / "pairs/no_reflection.jsonl"))
    assert len(pairs) == res["pair_yield"]["no_reflection"]["pairs"] >= 1
    assert all(p["pair_policy"] == "no_reflection" and p["chosen_kind"] == p["rejected_kind"] == "sample"
               for p in pairs)
    record_decision(run / "decisions.jsonl", pairs[0], "swap")
    if len(pairs) > 1:
        record_decision(run / "decisions.jsonl", pairs[1], "reject")
    papermill.execute_notebook(nb, str(tmp_path / "out1.ipynb"), parameters=params, kernel_name="python3",
                               cwd=str(ROOT), progress_bar=False)
    after = {p["pair_id"]: p for p in read_jsonl(run / "pairs/no_reflection.jsonl")}
    assert after[pairs[0]["pair_id"]]["chosen_id"] == pairs[0]["rejected_id"]
    assert after[pairs[0]["pair_id"]]["review"] == ["swap"]
    assert len(after) == len(pairs) - (len(pairs) > 1)
    assert sizes == {n: (run / f"{n}.jsonl").stat().st_size for n in sizes}  # nothing regenerated
    out = nbformat.read(tmp_path / "out1.ipynb", as_version=4)
    assert not [o for c in out.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    figs = [o for c in out.cells for o in c.get("outputs", []) if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figs) == 5


def _run_nb(name, tmp_path, **extra):
    import papermill

    # one ablation keeps the variant code paths covered; the runner's smoke test runs all four
    params = {"recipe_path": "recipes/tiny-smoke.yaml", "run_name": "smoke",
              "overrides": {"run.runs_dir": str(tmp_path), "m0.retrain": False,
                            "rounds.variants": ["rlrf", "no_reflection"]}, **extra}
    out = tmp_path / f"{name}.out.ipynb"
    papermill.execute_notebook(str(ROOT / "notebooks" / name), str(out), parameters=params, kernel_name="python3",
                               cwd=str(ROOT), progress_bar=False)
    book = nbformat.read(out, as_version=4)
    assert not [o for c in book.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    return book


def test_notebook_03_smoke(tmp_path):
    """Notebook 03 with the committed M0 on the smoke search: pre-flight, DPO, diagnostics, before/after, and the
    no-reflection / scalar / RS-SFT variants, each evaluated on dev with intervals, and the positive controls on a gold
    budget of their own (dpo.control_prompts: 10 prompts where the search has 6)."""
    book = _run_nb("03_dpo_finetuning.ipynb", tmp_path, overrides={
        "run.runs_dir": str(tmp_path), "m0.retrain": False, "rounds.variants": ["rlrf", "no_reflection"],
        "dpo.control_prompts": 10, "dpo.dpo_learning_rate": 2e-5})
    printed = "".join(o.get("text", "") for c in book.cells for o in c.get("outputs", []))
    assert "controls on 10 gold solutions" in printed
    data = json.loads((tmp_path / "smoke/results.json").read_text())["dpo"]["positive_controls_data"]
    assert data["gold_solutions"] == 10 and data["gold_dpo_learning_rate"] == 2e-5  # DPO's own step size
    assert data["gold_sft_learning_rate"] != 2e-5
    res = json.loads((tmp_path / "smoke/results.json").read_text())["dpo"]
    assert {"M0", "RLRF (DPO)"} <= set(res) and res["preflight"]["max_tokens"] <= 384
    for name, ev in res.items():
        if name in ("diagnostics", "preflight", "positive_controls", "positive_controls_data"):
            continue
        acc = ev["math_accuracy"]
        assert acc["n"] == 12 and 0 <= acc["ci_low"] <= acc["rate"] <= acc["ci_high"] <= 1
    assert res["diagnostics"]["notes"] and "probe" in res["diagnostics"]["source"]
    controls = res["positive_controls"]  # issue 16: gold SFT and gold DPO on test, paired against M0
    assert {(r["model"], r["measure"]) for r in controls} == {(m, k) for m in ("M0", "gold SFT", "gold DPO")
                                                              for k in ("final answer", "every step")}
    assert all(r["n"] == 24 for r in controls) and all("verdict" in r for r in controls if r["model"] != "M0")
    ckpts = list((tmp_path / "smoke/checkpoints").glob("dpo-M1-*/COMPLETE.json"))
    assert len(ckpts) == 1
    outputs = [o for c in book.cells for o in c.get("outputs", [])]
    assert len([o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]) == 2


@pytest.fixture(scope="module")
def rounds_run(tmp_path_factory):
    """Notebook 04 run once for the module: its own smoke test checks it, and notebook 05's reads its rounds."""
    base = tmp_path_factory.mktemp("rounds")
    _run_nb("04_rlrf_rounds.ipynb", base)
    return base


def test_notebook_04_smoke(rounds_run):
    """Notebook 04: two rounds M0 -> M1 -> M2 on fresh prompts, with dev metrics per round and a rerun that
    skips the finished rounds."""
    tmp_path = rounds_run
    rows = json.loads((tmp_path / "smoke/results.json").read_text())["rounds"]
    assert [r["policy"] for r in rows] == ["M0", "M1", "M2"]
    assert all(r["math_accuracy"]["n"] == 12 for r in rows) and rows[1]["pairs_this_round"] >= 1
    done = {t: (tmp_path / f"smoke/checkpoints/rounds/M{t}/COMPLETE.json").read_text() for t in (1, 2)}
    variants = json.loads((tmp_path / "smoke/results.json").read_text())["round_variants"]
    assert [r["policy"] for r in variants["no_reflection"]] == ["M0", "M1", "M2"]
    assert all(r["pair_policy"] == "no_reflection" for r in variants["no_reflection"][1:])
    # round 1's search (M0) is shared; round 2 of the ablation searches with its own M1 and never refines
    assert (tmp_path / "smoke/rounds/no_reflection/r2/samples.jsonl").exists()
    assert not (tmp_path / "smoke/rounds/no_reflection/r2/refinements.jsonl").exists()
    assert not (tmp_path / "smoke/rounds/no_reflection/r1/samples.jsonl").exists()
    assert (tmp_path / "smoke/rounds/no_reflection/r1/pairs.jsonl").exists()
    _run_nb("04_rlrf_rounds.ipynb", tmp_path)
    assert done == {t: (tmp_path / f"smoke/checkpoints/rounds/M{t}/COMPLETE.json").read_text() for t in (1, 2)}


def _notebook_02_pool(tmp_path):
    """Notebook 02's search and ``save_pool`` in this process (its own smoke test runs the notebook): the pool notebook
    05 reads back. About 1 s here, against 10 s for a second papermill kernel."""
    from rlrf_nb import task_data
    from rlrf_nb import tiny_world as tw
    from rlrf_nb.generation import load_sampler
    from rlrf_nb.pairs import save_pool
    from rlrf_nb.reflection import reflection_search
    from rlrf_nb.rubrics import load_rubric_set
    from rlrf_nb.runs import open_run
    from rlrf_nb.verifier import make_judge

    recipe, store = open_run("recipes/tiny-smoke.yaml", "smoke", {"run.runs_dir": str(tmp_path), "m0.retrain": False,
                                                                  "rounds.variants": ["rlrf", "no_reflection"]})
    world = task_data.load_world(recipe)
    model, tok, info = tw.get_m0(recipe, store, world)
    rubrics = load_rubric_set()
    pool = reflection_search(store, load_sampler(recipe.reflection.backend, model, info["path"], model.dtype), tok,
                             info["fingerprint"], task_data.search_examples(recipe, world),
                             make_judge(recipe.feedback, rubrics, task_data.kb(world)), rubrics, recipe.reflection,
                             seed=recipe.run.seed, weights=recipe.feedback.weights)["pool"]
    save_pool(store, pool)
    return pool


def test_notebook_05_smoke(rounds_run):
    """Notebook 05 on a run with rounds: every checkpoint on GSM8K (strict and flexible), FactScore and the Just-Eval
    stand-in, the paired results table, token shift, blind spot, drill-down, and exported figures."""
    tmp_path = rounds_run  # notebook 04's rounds
    searched = _notebook_02_pool(tmp_path)  # the blind spot's data, saved as notebook 02 saves it
    _run_nb("05_benchmark_analysis.ipynb", tmp_path, interactive=False, shift_prompts=4)
    res = json.loads((tmp_path / "smoke/results.json").read_text())["benchmarks"]
    assert set(res["summary"]) == {"M0", "M1", "M2", "no reflection M2"}
    assert [c["claim"] for c in res["claims"]] == [  # "every step right" first: the measure chance cannot pass
        "M2 beats M0, math_perfect", "M2 beats M0, gsm8k_strict", "M2 beats M0, factscore",
        "reflection helps (M2 vs no reflection M2), math_perfect",
        "reflection helps (M2 vs no reflection M2), gsm8k_strict",
        "reflection helps (M2 vs no reflection M2), factscore"]
    assert [c["bar"] for c in res["claims"][:3]] == [0.10, 0.10, 0.08]
    for row in res["summary"].values():
        assert row["gsm8k_strict"]["n"] == 24 and row["gsm8k_flexible"]["k"] >= row["gsm8k_strict"]["k"]
        assert row["just_eval_judge"].startswith("just-eval-standin/") and 0 <= row["factscore"]["score"] <= 1
    metrics = {r["metric"] for r in res["table"]}
    assert {"gsm8k_strict", "gsm8k_flexible", "factscore", "just_eval_helpfulness"} <= metrics
    assert all("p" in r for r in res["table"] if r["model"] != "M0")
    assert res["token_shift"]["n_positions"] > 0 and res["token_shift"]["aligned"] == "M2"
    assert (tmp_path / "smoke/figures/05/gsm8k.html").exists()
    from rlrf_nb.analysis import blind_spot
    from rlrf_nb.pairs import load_pool
    from rlrf_nb.store import RunStore

    pool = load_pool(RunStore(tmp_path / "smoke"))  # notebook 02's pool, read back instead of searched again
    assert pool == searched
    assert res["blind_spot"]["pairs"] == blind_spot(pool, {})["pairs"]


def test_notebook_06_smoke(tmp_path):
    """Notebook 06 collates a sweep index of three seeds at two betas: table, figure and files."""
    import papermill

    runs = []
    for seed, v in enumerate((0.40, 0.50, 0.45)):
        for beta in ("0.1", "0.3"):
            d = tmp_path / f"sw-seed{seed}-beta{beta}"
            d.mkdir()
            res = {"sweep": {"prefix": "sw", "point": {"seed": str(seed), "beta": beta}},
                   "m0_math_accuracy": {"rate": v, "n": 200, "k": int(v * 200), "ci_low": 0, "ci_high": 1},
                   "rounds": [{"policy": "M0", "math_accuracy": {"rate": v, "n": 200}},
                              {"policy": "M2", "math_accuracy": {"rate": v + float(beta) / 10, "n": 200}}]}
            (d / "results.json").write_text(json.dumps(res))
            runs.append({"name": d.name, "point": res["sweep"]["point"], "status": "done", "run_dir": str(d)})
    index = tmp_path / "sw.sweep.json"
    index.write_text(json.dumps({"runs": runs}))
    out_dir = tmp_path / "collated"
    papermill.execute_notebook(str(ROOT / "notebooks/06_compare_runs.ipynb"), str(tmp_path / "out.ipynb"),
                               parameters={"sweep": str(index), "out_dir": str(out_dir)}, kernel_name="python3",
                               cwd=str(ROOT), progress_bar=False)
    rows = json.loads((out_dir / "collated.json").read_text())
    m2 = {r["beta"]: r for r in rows if r["metric"] == "rounds.M2.math_accuracy"}
    assert m2["0.3"]["n_runs"] == 3 and abs(m2["0.3"]["mean"] - 0.48) < 1e-9
    assert (out_dir / "collated.html").exists()
