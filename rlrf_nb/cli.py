"""``rlrf-nb``: the command line. ``demo`` runs the main job on the tiny world through papermill;
``world`` regenerates ``data/tiny_world/``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from rlrf_nb.paths import PROJECT_ROOT, resolve_path
from rlrf_nb.stats import format_rate

NOTEBOOKS = PROJECT_ROOT / "notebooks"
MAIN_NOTEBOOKS = ["00_tiny_world.ipynb", "01_feedback_rubrics.ipynb", "02_reflection_sampling.ipynb",
                  "03_dpo_finetuning.ipynb", "04_rlrf_rounds.ipynb", "05_benchmark_analysis.ipynb"]


def _say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def run_notebook(name: str, out_dir: Path, parameters: dict) -> Path:
    """Execute ``notebooks/<name>`` with papermill into ``out_dir``, from the project root."""
    import papermill

    out = out_dir / name
    papermill.execute_notebook(str(NOTEBOOKS / name), str(out), parameters=parameters, kernel_name="python3",
                               cwd=str(PROJECT_ROOT), progress_bar=sys.stderr.isatty())
    return out


def cmd_demo(args) -> int:
    from rlrf_nb.config import load_recipe

    recipe = load_recipe(resolve_path(args.recipe))  # validate before starting a kernel
    run_dir = resolve_path(recipe.run.runs_dir) / args.name
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    for nb in MAIN_NOTEBOOKS:
        _say(f">> running notebooks/{nb} -> {run_dir / nb}")
        params = {"recipe_path": str(args.recipe), "run_name": args.name}
        if nb.startswith("00"):
            params["retrain"] = args.retrain
        elif nb[:2] in ("01", "02", "05"):
            params["interactive"] = False
        run_notebook(nb, run_dir, params)
    res = json.loads((run_dir / "results.json").read_text())
    _say(f"\nM0 held-out math accuracy ({recipe.eval.split}): {format_rate(res['m0_math_accuracy'])}")
    _say(f"M0 refinement success, own wrong drafts:        {format_rate(res['m0_refine_own_success'])}")
    _say(f"M0 refinement success, injected-error drafts:   {format_rate(res['m0_refine_injected_success'])}")
    _say(f"M0 bio claims supported by the KB:              {format_rate(res['m0_bio_claims_supported'])}")
    fb = res["feedback"]
    _say(f"verifier 5 => right final answer:               {format_rate(fb['verifier_precision'])}")
    _say(f"right final answers with a wrong step (score<5):  {format_rate(fb['right_answer_wrong_steps'])}")
    _say(f"LLM judge parse rate ({fb['llm_judge_id']}):  {format_rate(fb['llm_judge_parse_rate'])}")
    rf = res["reflection"]
    _say(f"reflection: refinement beats its draft:         {format_rate(rf['refinement_beats_parent'])}")
    _say(f"reflection: best candidate is a refinement:     {format_rate(rf['best_is_refinement'])}")
    _say("pairs per policy: " + ", ".join(f"{k} {v['pairs']}" for k, v in rf["pair_yield"].items()))
    _say("one DPO round and its variants, dev math exact match:")
    for name, ev in res["dpo"].items():
        if "math_accuracy" in ev:
            _say(f"  {name:<16} {format_rate(ev['math_accuracy'])}")
    _say("RLRF rounds, dev math exact match / bio claims supported / wall time of the round:")
    for r in res["rounds"]:
        bio = format_rate(r["bio_claims_supported"]) if "bio_claims_supported" in r else "n/a"
        secs = f"{r['round_seconds']:.0f} s" if "round_seconds" in r else "-"
        _say(f"  {r['policy']:<3} {format_rate(r['math_accuracy'])}  {bio}  {secs}")
    bm = res["benchmarks"]["summary"]
    _say("benchmarks (test split): GSM8K strict / FactScore / Just-Eval stand-in helpfulness:")
    for name, row in bm.items():
        fs = row.get("factscore", {}).get("score", float("nan"))
        helpful = row["just_eval"]["helpfulness"]["mean"]
        _say(f"  {name:<14} {format_rate(row['gsm8k_strict'])}  {fs:.3f}  {helpful:.2f}")
    _say(f"\nresults: {run_dir / 'results.json'}   wall time: {time.monotonic() - t0:.0f} s")
    return 0


def _overrides(pairs: list[str]) -> dict:
    from rlrf_nb.config import parse_override

    return dict(parse_override(p) for p in pairs or [])


def cmd_rounds(args) -> int:
    """The RLRF round loop without a notebook (what notebook 04 calls); resumes a killed run."""
    from rlrf_nb import tiny_world as tw
    from rlrf_nb.judges import make_judge
    from rlrf_nb.rounds import run_rounds
    from rlrf_nb.rubrics import load_rubric_set
    from rlrf_nb.tasks.world import build_world

    recipe, store = tw.load_run(args.recipe, args.name, _overrides(args.set))
    world = build_world(recipe.world)
    _model, _tok, info = tw.get_m0(recipe, store, world)
    rubrics = load_rubric_set()
    judge = make_judge(recipe.feedback, rubrics, {p["name"]: p for p in world.people})
    rows = run_rounds(recipe, store, world, judge, rubrics, info["path"], say=_say)
    for r in rows:
        _say(f"{r['policy']}: dev math {format_rate(r['math_accuracy'])}")
    return 0


def cmd_world(args) -> int:
    from rlrf_nb.config import load_recipe
    from rlrf_nb.tasks.world import build_world, save_world

    recipe = load_recipe(resolve_path(args.recipe))
    for p in save_world(build_world(recipe.world), resolve_path(args.out)):
        _say(str(p))
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(prog="rlrf-nb", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="run the main job on the tiny world (papermill) and print its results")
    d.add_argument("--recipe", default="recipes/tiny.yaml")
    d.add_argument("--name", default="demo", help="run name: outputs go to runs/<name>/")
    d.add_argument("--retrain", action="store_true", help="pre-train M0 from scratch instead of loading it")
    d.set_defaults(fn=cmd_demo)
    r = sub.add_parser("rounds", help="run or resume the RLRF rounds M0 -> M1 -> ... (what notebook 04 runs)")
    r.add_argument("--recipe", default="recipes/tiny.yaml")
    r.add_argument("--name", default="rounds", help="run name: outputs go to runs/<name>/")
    r.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="recipe override (repeatable)")
    r.set_defaults(fn=cmd_rounds)
    w = sub.add_parser("world", help="write the tiny world's fixed splits and KB")
    w.add_argument("--recipe", default="recipes/tiny.yaml")
    w.add_argument("--out", default="data/tiny_world")
    w.set_defaults(fn=cmd_world)
    args = ap.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(main())
