"""Fault injection: stage commands a test SIGKILLs and reruns, the kill harness, and the ``make fault`` summary.

The kit's promise is that a killed run loses nothing: every expensive step appends one record per item to an
append-only JSONL artifact as soon as the item is done (:class:`rlrf_nb.store.RunStore`), whole files are
replaced atomically, and checkpoints count only once ``COMPLETE.json`` is written. This module checks that with
real processes and real kills.

Stage commands, each a real slice of the pipeline on the tiny world (the committed M0, tiny sizes)::

    python tests/faults.py stage sample --run-dir DIR   # policy samples        -> samples.jsonl
    python tests/faults.py stage judge  --run-dir DIR   # verifier + LLM judge  -> feedback.jsonl, feedback_llm.jsonl
    python tests/faults.py stage pairs  --run-dir DIR   # preference pairs      -> pairs.jsonl
    python tests/faults.py stage dpo    --run-dir DIR   # DPO through TRL       -> checkpoints/dpo-<key>/

Each takes ``--set section.key=value`` recipe overrides on top of :data:`STAGE_OVERRIDES` and prints
``fault-stage <name>: working`` once its imports and loading are done, so a harness can aim its kills at the
work itself. A fifth stage, ``runner``, is the papermill runner itself (``rlrf-nb run --stages 00 01``, see
:data:`RUNNER_PARAMS`). :func:`kill_campaign` kills one stage at random points (drawn from a seeded RNG), kills
everything below it too (a papermill kernel runs in its own session), reruns the same command each time, leaves a
torn last line behind now and then (what a crash in the middle of a write leaves), and finally compares every
artifact with an uninterrupted run's. :class:`JudgeServer` is a real ``transformers serve`` that a test can kill
and restart.

``python tests/faults.py suite`` (``make fault``) runs the fault suite under pytest with a summary plugin: the
tests marked ``fault_suite`` (tests/test_faults.py, tests/test_security.py) and every test marked
``bad_input(what)`` elsewhere. Tests report what they did through ``record_property`` (``fault_kills``,
``fault_records_lost``, ``fault_bad_input``, ...) or their ``bad_input`` marker, and the plugin prints the totals
at the end. This is the test harness, not the kit: it lives under ``tests/`` (issue 17) and the tests import it as
``faults`` (pytest puts ``tests/`` on the path).

The stage commands print their progress lines (``fault-stage <name>: ...``) to stdout: that is the protocol the
harness reads to aim its kills, so they are ``print`` calls, not log records (those go to stderr, where the harness
looks for the store's torn-line warnings).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rlrf_nb.paths import PROJECT_ROOT, resolve_path
from rlrf_nb.serve import ModelServer, free_port  # noqa: F401  (free_port: the tests import it from here)

log = logging.getLogger(__name__)

RECIPE = "recipes/tiny-smoke.yaml"
WORKING = "working"  # the stage prints "fault-stage <name>: working" when its work starts

# Tiny, deterministic settings: the committed M0 (no pre-training), greedy LLM judging (consensus_k=1, so a rerun
# judges exactly as an uninterrupted run does), small batches (many appends to kill between).
STAGE_OVERRIDES: dict[str, object] = {
    "m0.retrain": False,
    "feedback.judge": "verifier",
    "feedback.consensus_k": 1,
    "feedback.n_math": 4,
    "feedback.n_bios": 2,
    "feedback.samples_per_prompt": 2,
    "feedback.max_response_tokens": 64,
    "feedback.n_llm_judged": 3,
    "feedback.max_new_tokens": 12,
    "reflection.batch_size": 2,
    "dpo.epochs": 1,
    "dpo.batch_size": 2,
    "dpo.logging_steps": 1,
}


@dataclass(frozen=True)
class Stage:
    name: str
    artifacts: tuple[str, ...] | None  # JSONL files it writes (run-dir relative); None: every *.jsonl it writes
    needs: tuple[str, ...]  # files of earlier stages it reads
    append_only: bool  # artifacts grow record by record (resumable) rather than being replaced whole
    checkpoint: str | None = None  # glob of the checkpoint directories it writes
    marker: str = f": {WORKING}"  # a stdout line with this means the work (not the imports) has started
    granularity: int | None = 1  # records appended at once (a generate() batch); None: aim kills by time
    optional: tuple[str, ...] = ()  # JSONL files it writes in some configurations (compared when the baseline has them)


STAGES: dict[str, Stage] = {
    "sample": Stage("sample", ("samples.jsonl",), (), True, granularity=int(STAGE_OVERRIDES["reflection.batch_size"])),
    "judge": Stage("judge", ("feedback.jsonl", "feedback_llm.jsonl"), ("samples.jsonl",), True),
    "pairs": Stage("pairs", ("pairs.jsonl",), ("samples.jsonl", "feedback.jsonl"), False, granularity=None),
    "dpo": Stage("dpo", (), ("samples.jsonl", "feedback.jsonl", "pairs.jsonl"), False, "checkpoints/dpo-*",
                 granularity=None, optional=("ref_logps.jsonl",)),  # the reference log-prob cache (dpo.cache_ref)
    # The papermill runner (rlrf_nb.runner, `rlrf-nb run`): notebooks 00 and 01 with the committed M0.
    "runner": Stage("runner", None, (), True, marker=": running", granularity=None),
}

# `rlrf-nb run` settings for the runner stage: notebooks 00-01 on tiny-smoke, M0 loaded (not retrained), a greedy
# LLM judge so that a resumed run's records equal an uninterrupted run's.
RUNNER_PARAMS = ["m0.retrain=false", "feedback.consensus_k=1", "eval.n_math=12", "eval.n_bios=4",
                 "feedback.n_math=4", "feedback.n_bios=2", "feedback.n_llm_judged=2", "feedback.max_new_tokens=12"]
RUNNER_STAGES = ["00", "01"]


# The fault campaign of `make fault`: 20 SIGKILLs across the stages. Without a runner to kill, its kills go to
# sampling and judging so that the total stays 20.
KILL_PLAN = {"sample": 5, "judge": 5, "pairs": 3, "dpo": 4, "runner": 3}


def kill_plan(runner_reason: str | None) -> dict[str, int]:
    """:data:`KILL_PLAN`, with the runner's kills moved to sampling and judging when ``runner_reason`` says
    the runner cannot be killed (the runner entry stays, as the hook, with 0 kills)."""
    plan = dict(KILL_PLAN)
    if runner_reason:
        extra, plan["runner"] = plan["runner"], 0
        plan["sample"] += extra - extra // 2
        plan["judge"] += extra // 2
    return plan


def runner_available() -> str | None:
    """None when ``rlrf-nb run`` (the papermill runner, :mod:`rlrf_nb.runner`) exists to be killed too, else why
    not (the hook stays in place: the runner stage is skipped with this reason). Asked of the CLI itself
    (``rlrf-nb run --help`` in a subprocess: argparse exits 2 on an unknown command), since ``cli.main()`` would
    configure logging for the whole calling process."""
    r = subprocess.run([sys.executable, "-m", "rlrf_nb.cli", "run", "--help"], cwd=PROJECT_ROOT, env=stage_env(),
                       capture_output=True, text=True, errors="replace")
    if r.returncode != 0:
        return f"`rlrf-nb run` is not a command of rlrf_nb.cli ({r.stderr.strip().splitlines()[-1:]})"
    return None


# ---------------------------------------------------------------------------------------------------------------
# The stage commands
# ---------------------------------------------------------------------------------------------------------------


def _say(text: str) -> None:
    """A progress line of the stage protocol, on stdout (what :func:`run_command` watches for its marker)."""
    print(text, flush=True)


def _context(run_dir: Path, sets: dict):
    from rlrf_nb.runs import open_run
    from rlrf_nb.tiny_world import build_world

    run_dir = Path(run_dir).resolve()
    recipe, store = open_run(RECIPE, run_dir.name, {**STAGE_OVERRIDES, **sets,
                                                       "run.runs_dir": str(run_dir.parent)})
    return recipe, store, build_world(recipe.world)


def _examples(recipe, world) -> list:
    fb = recipe.feedback
    return world.math["rl"][:fb.n_math] + world.bios["rl"][:fb.n_bios]


def _rows(store, world) -> list[dict]:
    by_id = {ex.id: ex for split in world.math.values() for ex in split}
    by_id.update({ex.id: ex for split in world.bios.values() for ex in split})
    return [{"example": by_id[s["source_id"]], "response_id": s["response_id"], "response": s["text"]}
            for s in store.artifact("samples").records()]


def _pool(store, world, recipe) -> list:
    from rlrf_nb.feedback import judge_responses
    from rlrf_nb.pairs import Candidate
    from rlrf_nb.rubrics import load_rubric_set
    from rlrf_nb.tasks import math
    from rlrf_nb.verifier import make_judge

    rubrics = load_rubric_set()
    judge = make_judge(recipe.feedback, rubrics, {p["name"]: p for p in world.people})
    rows = _rows(store, world)
    judged = judge_responses(store, "feedback", judge, rows, rubrics, recipe.feedback.weights)  # all stored
    by_id = {r["example"].id: r["example"] for r in rows}
    return [Candidate(r["response_id"], r["example_id"], r["prompt"], r["response"], "sample", r["reward"],
                      {a["aspect"]: a["score"] for a in r["feedback"]["aspects"]},
                      correct=(math.is_correct(r["response"], by_id[r["example_id"]].answer)
                               if by_id[r["example_id"]].task == "math" else None))
            for r in judged]


def stage_sample(run_dir: Path, sets: dict) -> None:
    """Policy samples for the first prompts of the rl split (what the reflection search starts with)."""
    from rlrf_nb.generation import generate_to_store
    from rlrf_nb.models import load_policy, model_fingerprint

    recipe, store, world = _context(run_dir, sets)
    path = resolve_path(recipe.m0.pretrained)
    model, tok = load_policy(path)
    fb = recipe.feedback
    items = [{"id": ex.id, "prompt": ex.prompt} for ex in _examples(recipe, world)]
    _say(f"fault-stage sample: {WORKING}")
    recs = generate_to_store(store, "samples", model, tok, model_fingerprint(path), items,
                             n=fb.samples_per_prompt, temperature=fb.temperature, top_p=fb.top_p,
                             max_new_tokens=fb.max_response_tokens, seed=recipe.run.seed,
                             batch_size=recipe.reflection.batch_size)
    _say(f"fault-stage sample: {len(recs)} samples")


def stage_judge(run_dir: Path, sets: dict) -> None:
    """Every sample judged by the verifier (``feedback``), the first ``feedback.n_llm_judged`` also by the LLM
    judge (``feedback_llm``): local M0 greedy, or over HTTP when ``feedback.judge_url`` is set."""
    from rlrf_nb.feedback import judge_responses
    from rlrf_nb.llm_judge import make_llm_judge
    from rlrf_nb.rubrics import load_rubric_set
    from rlrf_nb.verifier import make_judge

    recipe, store, world = _context(run_dir, sets)
    fb = recipe.feedback
    rubrics = load_rubric_set()
    rows = _rows(store, world)
    model = tok = None
    if not fb.judge_url:
        from rlrf_nb.models import load_policy

        model, tok = load_policy(resolve_path(fb.judge_model))
    llm = make_llm_judge(fb, rubrics, model, tok)
    if fb.judge_url:  # the stage's output cap, so that a judge call takes about a second against M0
        llm.transport.max_tokens = fb.max_new_tokens
    _say(f"fault-stage judge: {WORKING}")
    ver = judge_responses(store, "feedback", make_judge(fb, rubrics, {p["name"]: p for p in world.people}), rows,
                          rubrics, fb.weights)
    out = judge_responses(store, "feedback_llm", llm, rows[:fb.n_llm_judged], rubrics, fb.weights)
    # an OpenAITransport counts its retries (one judge: consensus_k is 1 here unless a test sets it)
    retries = llm.transport.retries if fb.judge_url and fb.consensus_k == 1 else 0
    _say(f"fault-stage judge: {len(ver)} verifier and {len(out)} LLM judgements ({retries} transport retries)")


def stage_pairs(run_dir: Path, sets: dict) -> None:
    """Preference pairs (``pairs.policy``) from the judged samples, written whole and atomically."""
    from rlrf_nb.pairs import build_pairs, save_pairs

    recipe, store, world = _context(run_dir, sets)
    _say(f"fault-stage pairs: {WORKING}")
    pool = _pool(store, world, recipe)
    pairs = build_pairs(pool, recipe.pairs.policy, min_margin=recipe.pairs.min_margin)
    save_pairs(store, pairs, "pairs")
    _say(f"fault-stage pairs: {len(pairs)} pairs from {len(pool)} candidates")


def stage_dpo(run_dir: Path, sets: dict) -> None:
    """DPO through TRL from M0 on ``pairs.jsonl``, into a checkpoint marked complete only after saving."""
    from rlrf_nb.jsonl import read_jsonl
    from rlrf_nb.training import train_cached

    recipe, store, world = _context(run_dir, sets)
    pool = _pool(store, world, recipe)
    pairs = list(read_jsonl(store.path("pairs.jsonl")))
    _say(f"fault-stage dpo: {WORKING}")
    out = train_cached(store, "dpo", resolve_path(recipe.m0.pretrained), pool, pairs, recipe.dpo)
    _say(f"fault-stage dpo: {out['path']} ({'cached' if out['cached'] else 'trained'}, "
         f"{out['info'].get('steps')} steps)")


STAGE_FNS = {"sample": stage_sample, "judge": stage_judge, "pairs": stage_pairs, "dpo": stage_dpo}


# ---------------------------------------------------------------------------------------------------------------
# The harness: run, kill, rerun, compare
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class StageRun:
    """One process of a stage command: its exit code (None if killed), output, and when its work started."""

    rc: int | None
    killed: bool
    stdout: str
    stderr: str
    work_seconds: float | None  # from the "working" line to the exit or the kill
    kill_after: float | None = None


def stage_command(stage: str, run_dir: Path, sets: dict | None = None) -> list[str]:
    run_dir = Path(run_dir).resolve()
    if stage == "runner":
        cmd = [str(Path(sys.executable).parent / "rlrf-nb"), "run", "--recipe", RECIPE, "--name", run_dir.name,
               "--stages", *RUNNER_STAGES, "-p", f"run.runs_dir={run_dir.parent}"]
        for p in [*RUNNER_PARAMS, *(f"{k}={v}" for k, v in (sets or {}).items())]:
            cmd += ["-p", p]
        return cmd
    cmd = [sys.executable, str(Path(__file__).resolve()), "stage", stage, "--run-dir", str(run_dir)]
    for k, v in (sets or {}).items():
        cmd += ["--set", f"{k}={v}"]
    return cmd


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), e.g. the Jupyter kernel a papermill run started in its own
    session, which a kill of the run's process group alone would leave writing for a moment."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid``'s process group and every process below it, as a crash or a job scheduler would."""
    below = _descendants(pid)
    for target in [pid, *below]:
        try:
            os.killpg(os.getpgid(target), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            os.kill(target, signal.SIGKILL)
        except ProcessLookupError:
            pass


def stage_env(extra: dict | None = None) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
            "TOKENIZERS_PARALLELISM": "false", **(extra or {})}


def run_command(cmd: list[str], *, env: dict | None = None, kill_after: float | None = None,
                kill_when: Callable[[], bool] | None = None, timeout: float = 600,
                marker: str = f": {WORKING}") -> StageRun:
    """Run ``cmd`` from the project root. With ``kill_after``, SIGKILL it and everything below it that many seconds
    after it prints a line containing ``marker`` and (if given) ``kill_when()`` turns true, if it still runs."""
    proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env or stage_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True)
    out: list[str] = []
    err: list[str] = []
    started = threading.Event()
    t_work: list[float] = []

    def read_out():
        for line in proc.stdout:
            out.append(line)
            if marker in line and not started.is_set():
                t_work.append(time.monotonic())
                started.set()

    def read_err():
        for line in proc.stderr:
            err.append(line)

    readers = [threading.Thread(target=read_out, daemon=True), threading.Thread(target=read_err, daemon=True)]
    for t in readers:
        t.start()
    deadline = time.monotonic() + timeout
    killed = False
    try:
        if kill_after is not None:
            while not started.wait(0.05):
                if proc.poll() is not None or time.monotonic() > deadline:
                    break
            if started.is_set() and kill_when is not None:
                while not kill_when() and proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.02)
                armed = time.monotonic()
            else:
                armed = t_work[0] if t_work else time.monotonic()
            if started.is_set():
                time.sleep(max(0.0, armed + kill_after - time.monotonic()))
                if proc.poll() is None:
                    kill_tree(proc.pid)
                    killed = True
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        proc.wait()
        raise
    finally:
        for t in readers:
            t.join(timeout=10)
    end = time.monotonic()
    return StageRun(None if killed else proc.returncode, killed, "".join(out), "".join(err),
                    end - t_work[0] if t_work else None, kill_after)


def run_stage(stage: str, run_dir: Path, sets: dict | None = None, **kw) -> StageRun:
    return run_command(stage_command(stage, run_dir, sets), marker=STAGES[stage].marker, **kw)


def jsonl_state(path: Path) -> dict:
    """What a killed writer left in ``path``: the keys of its complete lines (in order) and whether a torn
    (unterminated, unparseable) last line follows them. A bad complete line is an error: nothing may glue."""
    if not path.exists():
        return {"keys": [], "torn": False, "lines": 0}
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    keys = [json.loads(raw)["key"] for raw in lines if raw.strip()]
    torn = False
    if tail.strip():
        try:
            keys.append(json.loads(tail)["key"])
        except ValueError:
            torn = True
    return {"keys": keys, "torn": torn, "lines": len(lines)}


def compare_jsonl(baseline: Path, final: Path) -> dict:
    """``final`` against the uninterrupted ``baseline``: strict parse (no partial line), no duplicate key,
    the same keys in the same order and the same records. Returns counts and a list of problems."""
    from rlrf_nb.jsonl import read_jsonl

    problems = []
    base = list(read_jsonl(baseline))
    raw = final.read_bytes()
    if raw and not raw.endswith(b"\n"):
        problems.append(f"{final}: last line has no newline (partial line)")
    try:
        got = list(read_jsonl(final))
    except ValueError as e:
        return {"records": 0, "problems": [f"{final}: {e}"], "missing": [r["key"] for r in base]}
    keys = [r["key"] for r in got]
    dups = sorted({k for k in keys if keys.count(k) > 1})
    if dups:
        problems.append(f"{final}: duplicate keys {dups[:3]}")
    base_keys = [r["key"] for r in base]
    missing = [k for k in base_keys if k not in set(keys)]
    extra = [k for k in keys if k not in set(base_keys)]
    if missing or extra:
        problems.append(f"{final}: {len(missing)} keys missing and {len(extra)} extra against the uninterrupted run")
    elif keys != base_keys:
        problems.append(f"{final}: same keys as the uninterrupted run, in another order")
    by_key = {r["key"]: r for r in base}
    differ = [r["key"] for r in got if r["key"] in by_key and r != by_key[r["key"]]]
    if differ:
        problems.append(f"{final}: {len(differ)} records differ from the uninterrupted run's (first key {differ[0]})")
    return {"records": len(got), "problems": problems, "missing": missing}


def checkpoint_state(run_dir: Path, pattern: str) -> dict:
    """The checkpoint directories matching ``pattern``: complete ones (marker written) with their fingerprint."""
    from rlrf_nb.models import model_fingerprint
    from rlrf_nb.store import is_complete

    dirs = sorted(p for p in run_dir.glob(pattern) if p.is_dir())
    return {p.name: {"complete": is_complete(p),
                     "fingerprint": model_fingerprint(p) if is_complete(p) else None} for p in dirs}


def copy_inputs(stage: str, src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in STAGES[stage].needs:
        shutil.copy2(src / name, dst / name)


def _inject_torn_tail(path: Path, baseline: Path, committed: list[str], rng: random.Random) -> bool:
    """Leave what a crash inside a write leaves: the first part of a record line, without its newline (the record
    the writer was busy with, i.e. the next one the uninterrupted run has). SIGKILL alone never does this here,
    since each record is one ``write`` of a whole line."""
    lines = baseline.read_bytes().splitlines(keepends=True)
    pending = [ln for ln in lines if json.loads(ln)["key"] not in set(committed)]
    line = (pending or lines)[0]
    cut = rng.randint(1, len(line) - 2)
    with open(path, "ab") as fh:
        fh.write(line[:cut])
    return True


@dataclass
class CampaignReport:
    stage: str
    kills: list[dict] = field(default_factory=list)  # one per landed kill
    misses: int = 0  # runs that finished before their kill time (not counted as kills)
    restarts: int = 0  # times every record was written by the time of a kill, so the campaign started over
    records_checked: int = 0  # records committed before some kill, or in the final artifacts
    records_lost: int = 0
    torn_injected: int = 0
    torn_dropped: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return dict(vars(self))


def kill_campaign(stage: str, baseline_dir: Path, work_dir: Path, n_kills: int, rng: random.Random, *,
                  baseline_work_s: float, sets: dict | None = None, torn_every: int = 2,
                  env: dict | None = None) -> CampaignReport:
    """SIGKILL ``stage`` ``n_kills`` times at random moments of its work in ``work_dir`` (inputs copied from
    ``baseline_dir``), rerunning the same command each time, then let it finish and compare every artifact with
    ``baseline_dir``'s (the uninterrupted run).

    Kill points are drawn from ``rng``. On a stage that appends records, a kill comes ``j`` more records into the
    rerun (``j`` uniform over the records still missing, less the last batch) plus a delay uniform in 0-90 % of
    the uninterrupted run's time per record, so that it lands inside the work whatever the machine's load; on
    the other stages (pairs, DPO, the runner) it comes at a time uniform in 5-85 % of the uninterrupted run's
    work. Every ``torn_every``-th
    landed kill on an append-only stage also leaves a torn last line, which the rerun must drop with a warning.
    A run that finishes before its kill is a miss: it is checked like a final run, its outputs are removed, and
    the campaign goes on.
    """
    t0 = time.monotonic()
    spec = STAGES[stage]
    rep = CampaignReport(stage)
    copy_inputs(stage, baseline_dir, work_dir)
    artifacts = stage_artifacts(stage, baseline_dir)
    total = {a: len(jsonl_state(baseline_dir / a)["keys"]) for a in artifacts}
    committed: dict[str, set[str]] = {a: set() for a in artifacts}
    expect_torn: list[Path] = []
    attempts = 0
    while len(rep.kills) < n_kills:
        attempts += 1
        if attempts > 3 * n_kills + 3:
            rep.problems.append(f"{stage}: only {len(rep.kills)} of {n_kills} kills landed in {attempts - 1} runs")
            break
        done = _count_lines(work_dir, artifacts)
        left = sum(total.values()) - done
        if spec.append_only and left <= 0 and rep.kills:  # all written: check it, then start over so the
            _check_final(stage, baseline_dir, work_dir, artifacts, committed, rep)  # next kill has work to hit
            _reset(stage, baseline_dir, work_dir, artifacts)
            committed = {a: set() for a in artifacts}
            rep.restarts += 1
            log.info("[%s] every record was written before this kill; checked, starting over from empty", stage)
            continue
        kill_when, point = None, ""
        if spec.granularity and left > 0:
            more = rng.randrange(max(1, left - spec.granularity + 1))  # never armed only once all are written
            at = rng.uniform(0.0, 0.9) * baseline_work_s / max(1, sum(total.values()))
            point = f"{more} more records + "

            def kill_when(target=done + more):
                return _count_lines(work_dir, artifacts) >= target
        else:  # a resumed runner skips what is stored, so it has about the missing share of the work left
            share = max(0.1, left / max(1, sum(total.values()))) if spec.append_only else 1.0
            at = rng.uniform(0.05, 0.85) * baseline_work_s * share
        r = run_stage(stage, work_dir, sets, kill_after=at, kill_when=kill_when, env=env)
        rep.torn_dropped += _count_torn_drops(r.stderr, expect_torn, rep)
        expect_torn = []
        if not r.killed:
            if r.rc != 0:
                rep.problems.append(f"{stage}: a rerun failed with exit code {r.rc}:\n{r.stderr[-3000:]}")
                break
            rep.misses += 1
            log.info("[%s] run finished before its kill at %s%.2f s: a miss; checking it and starting over", stage,
                     point, at)
            _check_final(stage, baseline_dir, work_dir, artifacts, committed, rep)
            _reset(stage, baseline_dir, work_dir, artifacts)
            committed = {a: set() for a in artifacts}
            continue
        kill = {"at": f"{point}{at:.2f} s", "committed": {}, "torn_injected": False}
        for a in artifacts:
            st = jsonl_state(work_dir / a)
            if st["torn"]:
                rep.problems.append(f"{work_dir / a}: a SIGKILL left a torn line (a record was not one write)")
            committed[a].update(st["keys"])
            if st["keys"]:
                kill["committed"][a] = len(st["keys"])
        if spec.checkpoint:
            kill["checkpoints"] = checkpoint_state(work_dir, spec.checkpoint)
        if spec.append_only and torn_every and len(rep.kills) % torn_every == torn_every - 1:
            # the artifact being written: the last one that exists (a kill before the first record leaves a
            # file holding only the torn start of its first line)
            target = next((a for a in reversed(artifacts) if (work_dir / a).exists()), artifacts[0])
            _inject_torn_tail(work_dir / target, baseline_dir / target, jsonl_state(work_dir / target)["keys"], rng)
            kill["torn_injected"] = True
            rep.torn_injected += 1
            expect_torn = [work_dir / target]
        rep.kills.append(kill)
        log.info("[%s] kill %d/%d at %s%.2f s into the rerun's work: committed %s%s", stage, len(rep.kills), n_kills,
                 point, at, kill["committed"] or kill.get("checkpoints"),
                 ", torn tail left" if kill["torn_injected"] else "")
    final = run_stage(stage, work_dir, sets, env=env)
    rep.torn_dropped += _count_torn_drops(final.stderr, expect_torn, rep)
    if final.rc != 0:
        rep.problems.append(f"{stage}: the final rerun failed with exit code {final.rc}:\n{final.stderr[-3000:]}")
    else:
        _check_final(stage, baseline_dir, work_dir, artifacts, committed, rep)
    rep.seconds = round(time.monotonic() - t0, 1)
    return rep


def _count_lines(run_dir: Path, artifacts: tuple[str, ...]) -> int:
    """Complete lines (records) in ``artifacts``: cheap enough to poll while a stage runs."""
    n = 0
    for a in artifacts:
        try:
            n += (run_dir / a).read_bytes().count(b"\n")
        except FileNotFoundError:
            pass
    return n


def _count_torn_drops(stderr: str, expected: list[Path], rep: CampaignReport) -> int:
    n = 0
    for path in expected:
        if f"{path}: truncating a torn last line" in stderr:
            n += 1
        else:
            rep.problems.append(f"{path}: the rerun did not report dropping the torn last line left there")
    return n


def _reset(stage: str, baseline_dir: Path, work_dir: Path, artifacts: tuple[str, ...]) -> None:
    """Remove what ``stage`` wrote in ``work_dir`` (its inputs stay), so that the campaign can go on."""
    spec = STAGES[stage]
    if spec.artifacts is None:  # the runner: start over from an empty run directory
        shutil.rmtree(work_dir)
        copy_inputs(stage, baseline_dir, work_dir)
    for a in artifacts:
        (work_dir / a).unlink(missing_ok=True)
    for d in work_dir.glob(spec.checkpoint or "__none__"):
        shutil.rmtree(d)


def stage_artifacts(stage: str, baseline_dir: Path) -> tuple[str, ...]:
    """The JSONL artifacts ``stage`` writes; for the runner, every ``*.jsonl`` the uninterrupted run wrote."""
    spec = STAGES[stage]
    if spec.artifacts is not None:
        return spec.artifacts + tuple(a for a in spec.optional if (baseline_dir / a).exists())
    return tuple(sorted(str(p.relative_to(baseline_dir)) for p in baseline_dir.rglob("*.jsonl")))


def _check_final(stage: str, baseline_dir: Path, work_dir: Path, artifacts: tuple[str, ...],
                 committed: dict[str, set], rep: CampaignReport):
    spec = STAGES[stage]
    for a in artifacts:
        cmp = compare_jsonl(baseline_dir / a, work_dir / a)
        rep.problems += cmp["problems"]
        final_keys = {r for r in jsonl_state(work_dir / a)["keys"]}
        lost = (committed[a] | set(jsonl_state(baseline_dir / a)["keys"])) - final_keys
        rep.records_lost += len(lost)
        rep.records_checked += len(committed[a] | final_keys)
    if stage == "runner":  # every notebook stage recorded as done, its executed notebook written
        state = json.loads((work_dir / "stages.json").read_text())
        undone = [k for k, v in state.items() if v.get("status") != "done" or not Path(v["output"]).exists()]
        if undone:
            rep.problems.append(f"runner: stages {undone} not done after the final rerun")
    if spec.checkpoint:
        base, got = checkpoint_state(baseline_dir, spec.checkpoint), checkpoint_state(work_dir, spec.checkpoint)
        rep.records_checked += len(base)
        if got != base:
            rep.problems.append(f"{stage}: checkpoints {got} differ from the uninterrupted run's {base}")
            rep.records_lost += sum(1 for k, v in base.items() if got.get(k) != v)


# ---------------------------------------------------------------------------------------------------------------
# A real judge server that a test can kill and bring back
# ---------------------------------------------------------------------------------------------------------------

# The server is a child of the test process: if that process is killed (so no teardown runs), the kernel sends
# the server SIGTERM (prctl PR_SET_PDEATHSIG = 1, kept across exec) instead of leaving it running.
class JudgeServer(ModelServer):
    """The kit's ``transformers serve`` launcher (:class:`rlrf_nb.serve.ModelServer`) with the stage environment,
    whose :meth:`kill` is a crash a test can aim: SIGKILL of the server and everything below it, then a restart on
    the same port."""

    def __init__(self, model: str | Path, log_dir: Path, port: int | None = None, env: dict | None = None):
        super().__init__(model, log_dir, port, env=stage_env(env))

    def kill(self) -> None:
        """SIGKILL the server (a crash: in-flight requests get a reset connection)."""
        if self.proc is not None and self.proc.poll() is None:
            kill_tree(self.proc.pid)
            self.proc.wait()
        self.proc = None


# ---------------------------------------------------------------------------------------------------------------
# `make fault`: the pytest plugin that prints the summary, and the suite command
# ---------------------------------------------------------------------------------------------------------------

class _SummaryPlugin:
    """Collects what the fault tests report through ``record_property`` and prints the totals at the end."""

    def __init__(self):
        self.t0 = time.monotonic()
        self.kills: list[tuple[str, int, bool]] = []  # (stage, landed kills, test passed)
        self.lost = self.checked = 0
        self.torn = [0, 0]  # injected, dropped with a warning
        self.server: list[tuple[dict, bool]] = []
        self.bad: list[tuple[str, bool]] = []  # (what was tried, rejected with a clear error = the test passed)
        self.security: list[tuple[str, bool]] = []
        self.skipped: list[str] = []
        self.bad_input_tests: dict[str, str] = {}  # node id -> what it tries (its bad_input marker)

    def pytest_collection_modifyitems(self, items):
        for item in items:
            mark = item.get_closest_marker("bad_input")
            if mark is not None:
                self.bad_input_tests[item.nodeid] = mark.args[0]

    def pytest_runtest_logreport(self, report):
        if report.skipped and report.when in ("setup", "call"):
            reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            self.skipped.append(f"{report.nodeid.split('::')[-1]}: {reason}")
        if report.when != "call":
            return
        ok = report.passed
        if report.nodeid in self.bad_input_tests:
            self.bad.append((self.bad_input_tests[report.nodeid], ok))
        for name, value in report.user_properties:
            if name == "fault_kills":
                self.kills.append((value["stage"], value["landed"], ok))
            elif name == "fault_records_lost":
                self.lost += value
            elif name == "fault_records_checked":
                self.checked += value
            elif name == "fault_torn":
                self.torn[0] += value[0]
                self.torn[1] += value[1]
            elif name == "fault_server":
                self.server.append((value, ok))
            elif name == "fault_bad_input":
                self.bad.append((value, ok))
            elif name == "fault_security":
                self.security.append((value, ok))

    def pytest_terminal_summary(self, terminalreporter):
        w = terminalreporter.write_line
        terminalreporter.section("fault summary")
        by_stage: dict[str, list[int]] = {}
        for stage, landed, ok in self.kills:
            row = by_stage.setdefault(stage, [0, 0])
            row[0] += landed
            row[1] += landed if ok else 0
        landed = sum(v[0] for v in by_stage.values())
        survived = sum(v[1] for v in by_stage.values())
        stages = ", ".join(f"{k} {v[1]}/{v[0]}" for k, v in by_stage.items())
        w(f"kills survived:   {survived} of {landed} SIGKILLs ({stages or 'none run'})")
        w(f"torn last lines:  {self.torn[1]} of {self.torn[0]} left after a kill were dropped with a warning "
          "by the rerun")
        w(f"records lost:     {self.lost} (of {self.checked} records committed before a kill or expected at the "
          "end; final artifacts compared with an uninterrupted run's)")
        for info, ok in self.server:
            w(f"judge server:     {info.get('what', '')}: {'ok' if ok else 'FAILED'} ("
              + ", ".join(f"{k} {v}" for k, v in info.items() if k != "what") + ")")
        cats: dict[str, list] = {}  # "kind: case" -> grouped by kind
        for what, ok in self.bad:
            kind, _, case = what.partition(": ")
            c = cats.setdefault(kind, [0, 0, []])
            c[0] += 1
            c[1] += ok
            if case:
                c[2].append(case if ok else f"FAILED {case}")
        w(f"bad inputs:       {len(self.bad)} tried, {sum(ok for _, ok in self.bad)} rejected with a clear error "
          "(or handled, for huge/empty outputs)")
        for kind, (n, k, cases) in cats.items():
            shown = "; ".join(c[:48] for c in cases[:4]) + ("; ..." if len(cases) > 4 else "")
            w(f"                  {k:>3}/{n:<3} {kind}" + (f" ({shown})" if shown else ""))
        if self.security:
            w(f"security checks:  {sum(ok for _, ok in self.security)} of {len(self.security)} passed")
            for name, ok in self.security:
                w(f"                  {'ok  ' if ok else 'FAIL'} {name}")
        for line in self.skipped:
            w(f"skipped:          {line}")
        w(f"duration:         {time.monotonic() - self.t0:.0f} s")


def suite(extra: list[str]) -> int:
    """Run the fault suite (``make fault``): the fault and security tests (marker ``fault_suite``), heavy ones
    included, and every test marked ``bad_input``, with the summary plugin."""
    import pytest

    args = ["-m", "(fault_suite or bad_input) and not slow and not gpu", "-k", "not quick_kill", "--durations=12",
            str(PROJECT_ROOT / "tests"), *extra]
    return pytest.main(args, plugins=[_SummaryPlugin()])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["suite"]:  # everything after it goes to pytest as is (-x, -k ..., -s)
        return suite(argv[1:])
    ap = argparse.ArgumentParser(prog="python tests/faults.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("stage", help="run one pipeline stage on the tiny world (what the fault tests kill)")
    st.add_argument("name", choices=sorted(STAGE_FNS))
    st.add_argument("--run-dir", required=True, type=Path)
    st.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="recipe override")
    sub.add_parser("suite", help="run the fault suite under pytest and print its summary (make fault); "
                                 "further arguments go to pytest")
    args = ap.parse_args(argv)
    from rlrf_nb.config import parse_override

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    STAGE_FNS[args.name](args.run_dir, dict(parse_override(s) for s in args.set))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
