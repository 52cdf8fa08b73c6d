"""``rlrf-nb``: the command line.

``run`` executes the numbered notebooks with papermill into ``runs/<name>/`` (resumable), ``demo`` is ``run`` on
the tiny world followed by its results table, ``sweep`` runs a grid of runs and ``collate`` merges their results;
``rounds`` runs the round loop without a notebook and ``world`` regenerates ``data/tiny_world/``.

What the kit says goes through :mod:`logging`; :func:`main` sends the ``rlrf_nb`` loggers to stdout as plain lines
(the results table, the runner's stage lines) and other libraries' records to stderr with their level and name."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from rlrf_nb.config import load_recipe, parse_override
from rlrf_nb.paths import resolve_path
from rlrf_nb.stats import format_rate, signed

log = logging.getLogger(__name__)


def print_results(run_dir: Path) -> None:
    """The results table of a finished run (``make demo`` ends with it): what each stage measured, then the
    benchmarks with paired differences to M0 and the headline comparisons, each with its 95% interval."""
    res = json.loads((run_dir / "results.json").read_text())
    if "m0_math_accuracy" in res:
        log.info(f"M0 held-out math accuracy:                      {format_rate(res['m0_math_accuracy'])}")
    if "feedback" in res:
        fb = res["feedback"]
        log.info(f"verifier 5 => right final answer:               {format_rate(fb['verifier_precision'])}")
        log.info(f"LLM judge parse rate ({fb['llm_judge_id']}):  {format_rate(fb['llm_judge_parse_rate'])}")
    if "reflection" in res:
        rf = res["reflection"]
        log.info(f"reflection: refinement beats its draft:         {format_rate(rf['refinement_beats_parent'])}")
        log.info(f"reflection: best candidate is a refinement:     {format_rate(rf['best_is_refinement'])}")
    variants = res.get("round_variants") or ({"rlrf": res["rounds"]} if "rounds" in res else {})
    if variants:
        log.info("rounds, dev math exact match (bio claims supported), wall time and generated tokens of each round:")
        for variant in sorted(variants, key=lambda v: v != "rlrf"):  # RLRF first, then its ablations
            for r in variants[variant]:
                if r["round"] == 0 and variant != "rlrf":
                    continue
                bio = format_rate(r["bio_claims_supported"]) if "bio_claims_supported" in r else "n/a"
                secs = f"{r['round_seconds']:.0f} s" if "round_seconds" in r else "-"
                toks = f"  {r['generated_tokens']} tokens" if "generated_tokens" in r else ""
                log.info(f"  {variant:<14} {r['policy']:<3} {format_rate(r['math_accuracy'])}  ({bio})  {secs}{toks}")
    bm = res.get("benchmarks", {})
    if bm.get("table"):
        log.info("benchmarks, held-out test split: value [95% CI]; paired difference to M0 [95% CI], p")
        log.info(benchmark_lines(bm["table"]))
    if bm.get("claims"):
        log.info("the paper's claims in miniature (paired difference on the same test items [95% CI]):")
    for c in bm.get("claims", []):
        bar = f" (bar {c['bar']:+.2f})" if c.get("bar") is not None else ""
        value = "n/a (no paired items)" if c.get("diff") is None else \
            f"{c['diff']:+.3f} [{signed(c.get('ci_low'))}, {signed(c.get('ci_high'))}]"
        log.info(f"  {c['claim']:<58} {value}{bar}  {c['verdict']}")
    stages = res.get("run", {}).get("stage_seconds") or {}
    if stages:
        log.info("wall time per stage: " + ", ".join(f"{k[:2]} {v:.0f} s" for k, v in stages.items() if v is not None))


def benchmark_lines(table: list[dict]) -> str:
    """GSM8K strict (the kit's grade, and lm-eval's strict-match) and FactScore per model from notebook 05's long
    table, as fixed-width lines."""
    wanted = {"gsm8k_strict": "GSM8K strict", "gsm8k_lm_eval_strict": "lm-eval strict-match",
              "factscore": "FactScore"}
    by_model: dict[str, dict] = {}
    for r in table:
        if r["metric"] in wanted:
            by_model.setdefault(r["model"], {})[r["metric"]] = r
    head = "".join(f"{name + ': value [CI], diff to M0 [CI], p':<56}" for name in wanted.values())
    lines = [f"  {'model':<22}{head}"]
    for model, ms in by_model.items():
        cells = []
        for m in wanted:
            r = ms.get(m)
            if r is None or r.get("value") is None:
                cells.append(f"{'-':<56}")
                continue
            lo, hi = (("n/a" if r.get(k) is None else f"{r[k]:.3f}") for k in ("ci_low", "ci_high"))
            cell = f"{r['value']:.3f} [{lo}, {hi}]"
            if r.get("diff") is not None and r["diff"] == r["diff"]:
                cell += f" {r['diff']:+.3f} [{signed(r.get('diff_low'))}, {signed(r.get('diff_high'))}]"
                if r.get("p") is not None:
                    cell += f" p={r['p']:.3f}"
            cells.append(f"{cell:<56}")
        lines.append(f"  {model:<22}" + "".join(cells))
    return "\n".join(lines)


def cmd_run(args) -> int:
    from rlrf_nb.report import write_report
    from rlrf_nb.runner import RunError, run

    try:
        res = run(args.recipe, args.name, params=args.param, stages=args.stages, force=args.force)
    except RunError as e:
        log.error(f"error: {e}")
        return 1
    report = write_report(res.run_dir)
    if (res.run_dir / "results.json").exists():
        log.info("")
        print_results(res.run_dir)
    if report:
        log.info(f"\nHTML report: {report}")
    log.info(f"results: {res.run_dir / 'results.json'}")
    return 0


def cmd_demo(args) -> int:
    """``make demo``: the whole experiment on the tiny world (all six notebooks) and its results table."""
    if args.retrain:
        args.param = [*(args.param or []), "retrain=true"]
    return cmd_run(args)


def cmd_sweep(args) -> int:
    from rlrf_nb.collate import collate, runs_of_sweep, write_collation
    from rlrf_nb.runner import RunError, sweep

    try:
        results, index = sweep(args.recipe, args.grid, args.name, params=args.param, stages=args.stages)
    except RunError as e:
        log.error(f"error: {e}")
        return 1
    dirs = runs_of_sweep(index)
    if dirs:
        table = collate(dirs)
        paths = write_collation(table, index.parent / f"{args.name}.collated")
        log.info(f"collated {len(dirs)} runs: {paths['csv']}")
    return 0 if len(results) == len(json.loads(index.read_text())["runs"]) else 1


def cmd_collate(args) -> int:
    import pandas as pd

    from rlrf_nb.collate import collate, runs_of_sweep, write_collation

    dirs = [d for p in map(Path, args.runs) for d in (runs_of_sweep(p) if p.suffix == ".json" else [p])]
    if not dirs:
        log.error("error: no runs to collate")
        return 1
    table = collate(dirs, args.metric or None)
    with pd.option_context("display.width", 200, "display.max_rows", 200, "display.max_colwidth", 90):
        log.info(table.drop(columns=["values", "runs"]).to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    paths = write_collation(table, args.out)
    log.info(f"written: {', '.join(str(p) for p in paths.values())}")
    return 0


def _overrides(pairs: list[str]) -> dict:
    return dict(parse_override(p) for p in pairs or [])


def cmd_rounds(args) -> int:
    """The RLRF round loop without a notebook (what notebook 04 calls); resumes a killed run."""
    from rlrf_nb import task_data
    from rlrf_nb import tiny_world as tw
    from rlrf_nb.rounds import run_rounds
    from rlrf_nb.rubrics import load_rubric_set
    from rlrf_nb.runs import open_run
    from rlrf_nb.verifier import make_judge

    recipe, store = open_run(args.recipe, args.name, _overrides(args.set))
    world = task_data.load_world(recipe)  # None in a real recipe
    _model, _tok, info = tw.get_m0(recipe, store, world)
    del _model
    rubrics = load_rubric_set()
    judge = make_judge(recipe.feedback, rubrics, task_data.kb(world))
    rows = run_rounds(recipe, store, world, judge, rubrics, info["path"])
    for r in rows:
        log.info(f"{r['policy']}: dev math {format_rate(r['math_accuracy'])}")
    return 0


def cmd_diagnose(args) -> int:
    """The organism's properties for a policy and world (M0 of the recipe unless ``--policy``)."""
    from rlrf_nb import tiny_world as tw
    from rlrf_nb.diagnose import diagnose, report_lines
    from rlrf_nb.models import load_policy
    from rlrf_nb.rubrics import load_rubric_set
    from rlrf_nb.runs import open_run
    from rlrf_nb.verifier import VerifierJudge

    recipe, store = open_run(args.recipe, args.name, _overrides(args.set))
    world = tw.build_world(recipe.world)
    if args.policy:
        model, tok = load_policy(resolve_path(args.policy))
        fp = tw.model_fingerprint(resolve_path(args.policy))
    else:
        model, tok, info = tw.get_m0(recipe, store, world)
        fp = info["fingerprint"]
    rubrics = load_rubric_set()
    judge = VerifierJudge(rubrics, {p["name"]: p for p in world.people})  # diagnose measures against exact critiques
    d = diagnose(model, tok, fp, world, store, recipe.diagnose, judge=judge, rubrics=rubrics, seed=recipe.run.seed)
    out = store.path("diagnose.json")
    out.write_text(json.dumps(d, indent=1, default=str))
    for line in report_lines(d):
        log.info(line)
    log.info(f"written: {out}")
    return 0


def cmd_train_judge(args) -> int:
    """Train, serve and measure the recipe's judge LM (section ``judge_train``)."""
    from rlrf_nb.judge_model import judge_stage
    from rlrf_nb.runs import open_run

    recipe, store = open_run(args.recipe, args.name, _overrides(args.set))
    summary = judge_stage(recipe, store, log=log.info)
    log.info(f"judge: {summary['path']} (serve it: transformers serve --host 127.0.0.1 --port 8000 "
             f"{summary['path']}); report in {store.path('results.json')}")
    return 0


def cmd_world(args) -> int:
    from rlrf_nb.tiny_world import build_world, save_world

    recipe = load_recipe(resolve_path(args.recipe))
    for p in save_world(build_world(recipe.world), resolve_path(args.out)):
        log.info(str(p))
    return 0


def console_logging() -> None:
    """The kit's messages as plain lines on stdout (what the user reads); other libraries' on stderr."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("papermill").setLevel(logging.WARNING)  # the runner says which stage runs
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    kit = logging.getLogger("rlrf_nb")
    kit.addHandler(handler)
    kit.setLevel(logging.INFO)
    kit.propagate = False  # not a second time through the root handler


def build_parser() -> argparse.ArgumentParser:
    """The ``rlrf-nb`` command line: one sub-command per task, each with its handler as ``fn``."""
    ap = argparse.ArgumentParser(prog="rlrf-nb", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)

    def command(name, fn, help, recipe="recipes/tiny-v2-short.yaml"):
        p = sub.add_parser(name, help=help)
        p.set_defaults(fn=fn)
        if recipe:
            p.add_argument("--recipe", default=recipe)
        return p

    def run_args(p, default_name):
        p.add_argument("--name", default=default_name, help="run name: outputs go to runs/<name>/")
        p.add_argument("-p", "--param", action="append", metavar="KEY=VALUE",
                       help="section.key=value: a recipe override; name=value: a notebook parameter (repeatable)")
        p.add_argument("--stages", nargs="+", metavar="NN", help="only these notebooks, e.g. --stages 00 01 02")

    d = command("demo", cmd_demo, "the whole experiment on the tiny world (all notebooks) and its results table")
    run_args(d, "demo")
    d.add_argument("--retrain", action="store_true", help="pre-train M0 from scratch instead of loading it")
    d.add_argument("--force", action="store_true", help="rerun finished stages (their records still come from "
                                                         "the store)")
    rn = command("run", cmd_run, "execute the numbered notebooks with papermill into runs/<name>/ (resumable)")
    run_args(rn, None)
    rn.add_argument("--force", action="store_true", help="rerun finished stages")
    sw = command("sweep", cmd_sweep, "one run per point of a grid (sequential), then collate them")
    run_args(sw, "sweep")
    sw.add_argument("--grid", nargs="+", required=True, metavar="KEY=V1,V2",
                    help="e.g. --grid seed=0,1,2 beta=0.1,0.3 (short names resolve to one recipe field)")
    co = command("collate", cmd_collate, "merge the results.json of runs (or a sweep index) into one table + plot",
                 recipe=False)
    co.add_argument("runs", nargs="+", help="run directories, or a runs/<prefix>.sweep.json index")
    co.add_argument("--metric", action="append", help="dotted metric pattern (fnmatch), repeatable; default: "
                                                        "the headline metrics")
    co.add_argument("--out", default="runs/collated", help="where collated.csv/.json/.html go")
    r = command("rounds", cmd_rounds, "run or resume the RLRF rounds M0 -> M1 -> ... (what notebook 04 runs)")
    r.add_argument("--name", default="rounds", help="run name: outputs go to runs/<name>/")
    r.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="recipe override (repeatable)")
    dg = command("diagnose", cmd_diagnose, "measure the organism: ability, chance, reflection vs resampling, facts, "
                                           "context (recipe section 'diagnose')")
    dg.add_argument("--name", default="diagnose", help="run name: records go to runs/<name>/diagnose/")
    dg.add_argument("--policy", help="a checkpoint directory to diagnose instead of the recipe's M0")
    dg.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="recipe override (repeatable)")
    tj = command("train-judge", cmd_train_judge, "train the feedback model: a judge LM distilled from a teacher's "
                                                 "stored judgements, served and measured (recipe section "
                                                 "'judge_train')")
    tj.add_argument("--name", default="judge", help="run name: outputs go to runs/<name>/")
    tj.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="recipe override (repeatable)")
    # world v1's committed splits (data/tiny_world) are what this writes by default, so its recipe is the default here
    w = command("world", cmd_world, "write the tiny world's fixed splits and KB", recipe="recipes/tiny.yaml")
    w.add_argument("--out", default="data/tiny_world")
    return ap


def main(argv: list[str] | None = None) -> int:
    console_logging()
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(main())
