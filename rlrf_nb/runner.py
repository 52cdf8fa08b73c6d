"""Batch runs: the numbered notebooks executed in order with papermill (``rlrf-nb run``), and sweeps over them.

A run is ``runs/<name>/``: the executed notebooks, the artifacts they write through the run store, ``results.json``
and ``stages.json``, which records each stage (one notebook) with its status, wall time and a hash of what it ran with
(recipe text, overrides, parameters and :func:`stage_inputs`). A rerun skips the stages that finished with the same
hash; a failed or killed stage runs again and resumes from its last stored record.

Parameters are validated before injection: ``-p section.key=value`` is a recipe override checked against the recipe's
dataclasses (an unknown key or bad type names the key), ``-p name=value`` must be a parameter of some notebook, of the
kind of its default. :class:`StageEngine` shows papermill's progress; the kernel gets CurveZMQ keys (KERNEL_CONFIG).
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import itertools
import json
import logging
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import papermill
import yaml
import zmq
from papermill.engines import NBClientEngine, papermill_engines
from papermill.exceptions import PapermillExecutionError
from traitlets.config import Config

from rlrf_nb.config import SECTIONS, ConfigError, load_recipe
from rlrf_nb.jsonl import atomic_write_text
from rlrf_nb.paths import PROJECT_ROOT, resolve_path
from rlrf_nb.store import RunStore

NOTEBOOKS = PROJECT_ROOT / "notebooks"
STAGES = ["00_tiny_world.ipynb", "01_feedback_rubrics.ipynb", "02_reflection_sampling.ipynb",
          "03_dpo_finetuning.ipynb", "04_rlrf_rounds.ipynb", "05_benchmark_analysis.ipynb"]
# Batch defaults: widgets become static tables; anything else comes from the notebook's own parameters cell.
BATCH_PARAMS = {"interactive": False}
# Short names a sweep grid may use; ``seed`` moves every seed of a run that is not M0's or the world's.
GRID_ALIASES = {"seed": ["run.seed", "dpo.seed"]}
# The kernel's channels get CurveZMQ keys when its kernelspec declares support (ipykernel's does), instead of
# plain TCP and the kernel's warning about it; "auto" needs a libzmq built with curve, else jupyter_client refuses.
KERNEL_CONFIG = Config({"KernelManager": {"transport_encryption": "auto"}}) if zmq.has("curve") else Config()

log = logging.getLogger(__name__)


class RunError(RuntimeError):
    """A run could not start (bad parameters) or a stage failed; the message says which and where."""


@dataclass
class StageResult:
    notebook: str
    status: str  # done | skipped | failed
    seconds: float
    output: str
    error: str | None = None


@dataclass
class RunResult:
    name: str
    run_dir: Path
    stages: list[StageResult] = field(default_factory=list)
    seconds: float = 0.0


class StageEngine(NBClientEngine):
    """papermill's nbclient engine, with the first line of the running cell after the progress bar."""

    @classmethod
    def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):
        start = nb_man.cell_start

        def cell_start(cell, cell_index=None, **kw):
            start(cell, cell_index, **kw)
            if nb_man.pbar is not None:
                nb_man.pbar.set_postfix_str(first_line(cell.source), refresh=True)

        nb_man.cell_start = cell_start
        return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)


def first_line(source: str, width: int = 60) -> str:
    """The first non-blank line of a cell's source, cut to ``width`` characters: what the progress bar shows."""
    line = next((ln.strip() for ln in source.splitlines() if ln.strip()), "")
    return line if len(line) <= width else line[: width - 3] + "..."


# ----------------------------------------------------------------------------------------------------------- Parameters


def notebook_parameters(notebook: str) -> dict[str, dict]:
    """The ``parameters`` cell of ``notebooks/<notebook>`` as papermill reads it: ``{name: {default, type}}``."""
    out = {}
    for k, v in papermill.inspect_notebook(str(NOTEBOOKS / notebook)).items():
        kind = v["inferred_type_name"]
        if kind == "None":  # no annotation: the kind of the default's literal
            try:
                kind = type(ast.literal_eval(v["default"])).__name__
            except (ValueError, SyntaxError):
                kind = "None"
            kind = "None" if kind == "NoneType" else kind
        out[k] = {"default": v["default"], "type": kind}
    return out


def parse_value(text: str):
    """A ``-p`` value as YAML (``3`` -> int, ``0.1`` -> float, ``true`` -> bool, ``[a, b]`` -> list)."""
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError as e:
        raise RunError(f"cannot parse value {text!r}: {e}") from None


def split_params(pairs: list[str] | None) -> tuple[dict, dict]:
    """``-p`` arguments -> (recipe overrides ``{section.key: value}``, notebook parameters ``{name: value}``)."""
    overrides, params = {}, {}
    for item in pairs or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RunError(f"-p {item!r}: expected key=value (section.key=value for a recipe field)")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?", key):
            raise RunError(f"-p {item!r}: {key!r} is not a parameter name or section.key")
        (overrides if "." in key else params)[key] = value.strip() if "." in key else parse_value(value.strip())
    return overrides, params


_KIND = {"bool": (bool,), "int": (int,), "float": (int, float), "str": (str,), "dict": (dict,), "list": (list,),
         "None": (type(None), str, int, float, bool)}


def validate_params(params: dict, stages: list[str]) -> dict[str, dict]:
    """Check notebook parameters before injection; returns ``{notebook: {name: value}}``. Each name must be a parameter
    of some stage's notebook, its value JSON of the default's kind (a ``None`` default accepts a scalar);
    ``recipe_path``, ``run_name`` and ``overrides`` are set by the runner and may not be given. Any violation is a
    :class:`RunError`."""
    reserved = {"recipe_path", "run_name", "overrides"}
    declared = {nb: notebook_parameters(nb) for nb in stages}
    for name, value in params.items():
        if name in reserved:
            raise RunError(f"-p {name}=...: {name} is set by the runner (use --recipe / --name / -p section.key=v)")
        owners = [nb for nb, ps in declared.items() if name in ps]
        if not owners:
            known = sorted({k for ps in declared.values() for k in ps} - reserved)
            raise RunError(f"-p {name}=...: no notebook in this run has a parameter {name!r}; known: {known}")
        try:
            json.dumps(value)
        except TypeError:
            raise RunError(f"-p {name}: value {value!r} is not JSON-serialisable") from None
        for nb in owners:
            kind = declared[nb][name]["type"]
            ok = _KIND.get(kind)
            if ok and not (isinstance(value, ok) and not (kind in ("int", "float") and isinstance(value, bool))):
                raise RunError(f"-p {name}={value!r}: notebooks/{nb} expects {kind} "
                               f"(default {declared[nb][name]['default']})")
    return {nb: {k: v for k, v in {**BATCH_PARAMS, **params}.items() if k in declared[nb]} for nb in stages}


def _stage_hash(recipe_text: str, overrides: dict, params: dict, inputs: dict | None = None) -> str:
    blob = json.dumps({"recipe": recipe_text, "overrides": overrides, "params": params, "inputs": inputs or {}},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _file_or_id(source: str | None) -> str | None:
    """A data source as it enters the stage hash: a local file by its content (sha256), a Hub dataset by its id."""
    if source is None:
        return None
    path = resolve_path(source)
    if path.is_file():
        return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return source


def _model_id(name: str) -> str:
    """A model as it enters the stage hash: :func:`rlrf_nb.models.model_fingerprint` (local weights, or Hub id +
    resolved revision + config); a model that cannot be resolved yet (not downloaded) by its name."""
    from rlrf_nb.models import model_fingerprint

    path = resolve_path(name)
    try:
        return model_fingerprint(path if path.exists() else name)
    except (OSError, ValueError) as e:
        return f"{name} (unresolved: {type(e).__name__})"


def stage_inputs(recipe) -> dict:
    """What a stage's results depend on beyond the recipe text and parameters, for the stage hash: the judge as resolved
    when the recipe loaded (``feedback.judge_url_env`` reads its URL from the environment; credentials redacted), the
    policy's and the local judge's fingerprints (not for a retrained M0) and the contents of the data files the recipe
    names. Changing any of them reruns every stage."""
    from rlrf_nb.llm_judge import redact_url

    fb = recipe.feedback
    out = {"judge": {"kind": fb.judge, "url": redact_url(fb.judge_url), "model": fb.judge_model},
           "data": {"reflection.prompt_source": _file_or_id(recipe.reflection.prompt_source),
                    "eval.gsm8k_source": _file_or_id(recipe.eval.gsm8k_source),
                    "eval.gsm8k_train_source": _file_or_id(recipe.eval.gsm8k_train_source)}}
    if not recipe.m0.retrain:
        out["policy"] = _model_id(recipe.m0.pretrained)
    if fb.judge_url is None:  # the LLM judge runs locally from judge_model (notebook 01 always builds one)
        out["judge"]["weights"] = _model_id(fb.judge_model)
    return out


# -------------------------------------------------------------------------------------------------------------- One run


def _write_json(path: Path, obj: dict) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str))


def _select(stages: list[str] | None) -> list[str]:
    if not stages:
        return list(STAGES)
    out = []
    for s in stages:
        hits = [nb for nb in STAGES if nb.startswith(s) or nb == s]
        if len(hits) != 1:
            raise RunError(f"--stages {s!r}: matches {hits or 'no notebook'}; use the number, e.g. 02, of one of "
                           f"{STAGES}")
        out.append(hits[0])
    return sorted(set(out), key=STAGES.index)


def run(recipe_path: str, name: str | None = None, *, params: list[str] | None = None,
        overrides: dict | None = None, stages: list[str] | None = None, force: bool = False,
        progress: bool | None = None) -> RunResult:
    """Execute the numbered notebooks for ``recipe_path`` into ``runs/<name>/`` (``name`` default: the recipe's
    ``run.name``), skipping finished stages with the same inputs unless ``force``; ``params`` are ``-p`` strings,
    ``overrides`` extra recipe overrides, ``progress`` a live bar per stage (default: when stderr is a terminal). Raises
    :class:`RunError` naming the failing stage and cell."""
    recipe_file = resolve_path(recipe_path)
    if not recipe_file.exists():
        raise RunError(f"recipe {recipe_path}: no such file")
    ovr, nb_params = split_params(params)
    ovr.update(overrides or {})
    try:
        recipe = load_recipe(recipe_file, ovr)  # validates every override before a kernel starts
    except ConfigError as e:
        raise RunError(str(e)) from None
    chosen = _select(stages)
    per_nb = validate_params(nb_params, chosen)
    name = name or recipe.run.name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise RunError(f"--name {name!r}: use letters, digits and ._- (it becomes a directory name)")
    run_dir = resolve_path(recipe.run.runs_dir) / name
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    stages_path = run_dir / "stages.json"
    try:
        state = json.loads(stages_path.read_text()) if stages_path.exists() else {}
    except json.JSONDecodeError:  # a kill while writing: the file is rewritten atomically, but be safe
        state = {}
    recipe_text = recipe_file.read_text(encoding="utf-8")
    inputs = stage_inputs(recipe)
    result = RunResult(name, run_dir)
    t_run = time.monotonic()
    show = sys.stderr.isatty() if progress is None else progress
    papermill_engines.register("rlrf_nb", StageEngine)  # papermill looks engines up by name
    log.info(f">> run '{name}' -> {run_dir}  ({len(chosen)} stages; recipe {recipe_path}"
        + (f"; overrides {ovr}" if ovr else "") + ")")
    for i, nb in enumerate(chosen, start=1):
        stage = nb.removesuffix(".ipynb")
        out_nb = run_dir / nb
        digest = _stage_hash(recipe_text, ovr, per_nb[nb], inputs)
        prev = state.get(stage, {})
        if not force and prev.get("status") == "done" and prev.get("hash") == digest and out_nb.exists():
            log.info(f"[{i}/{len(chosen)}] {stage}: done before in {prev.get('seconds', 0):.0f} s, skipped")
            result.stages.append(StageResult(nb, "skipped", 0.0, str(out_nb)))
            continue
        resumed = prev.get("status") in ("running", "failed")
        log.info(f"[{i}/{len(chosen)}] {stage}: running" + (" (resuming from its stored records)" if resumed else "")
            + f"; cell outputs stream to {run_dir / 'logs' / (stage + '.log')}")
        state[stage] = {"status": "running", "hash": digest, "started": time.time(), "output": str(out_nb)}
        _write_json(stages_path, state)
        t0 = time.monotonic()
        parameters = {"recipe_path": str(recipe_path), "run_name": name, "overrides": ovr, **per_nb[nb]}
        try:
            with open(run_dir / "logs" / f"{stage}.log", "w", encoding="utf-8") as log_fh:
                papermill.execute_notebook(str(NOTEBOOKS / nb), str(out_nb), parameters=parameters,
                                           engine_name="rlrf_nb", kernel_name="python3", cwd=str(PROJECT_ROOT),
                                           progress_bar={"desc": f"[{i}/{len(chosen)}] {stage}"} if show else False,
                                           log_output=False, stdout_file=log_fh, stderr_file=log_fh,
                                           config=KERNEL_CONFIG)
        except PapermillExecutionError as e:
            secs = time.monotonic() - t0
            where = f"cell {e.cell_index}" + (f" (In [{e.exec_count}])" if e.exec_count else "")
            msg = f"stage {stage} failed in {where}: {e.ename}: {e.evalue}"
            state[stage].update(status="failed", seconds=round(secs, 1), error=msg)
            _write_json(stages_path, state)
            result.stages.append(StageResult(nb, "failed", secs, str(out_nb), msg))
            raise RunError(f"{msg}\n   the executed notebook is kept for inspection: {out_nb}\n"
                           f"   rerun the same command to resume from the stored records") from None
        secs = time.monotonic() - t0
        state[stage].update(status="done", seconds=round(secs, 1), finished=time.time())
        _write_json(stages_path, state)
        result.stages.append(StageResult(nb, "done", secs, str(out_nb)))
        log.info(f"[{i}/{len(chosen)}] {stage}: done in {secs:.0f} s")
    result.seconds = time.monotonic() - t_run
    stage_seconds = {k: v.get("seconds") for k, v in state.items()}  # the run's own record in results.json
    RunStore(run_dir).update_results({"run": {
        "name": name, "recipe": str(recipe_path), "overrides": ovr, "params": nb_params,
        "stage_seconds": stage_seconds, "total_stage_seconds": round(sum(s or 0 for s in stage_seconds.values()), 1),
        "this_invocation_seconds": round(result.seconds, 1)}})
    log.info(f">> run '{name}' finished in {result.seconds:.0f} s; results: {run_dir / 'results.json'}")
    return result


# --------------------------------------------------------------------------------------------------------------- Sweeps


def resolve_grid_key(key: str) -> list[str]:
    """A grid key -> the dotted recipe fields it sets: ``dpo.beta`` as is, ``beta`` if exactly one section has a
    field of that name, ``seed`` per :data:`GRID_ALIASES`."""
    if "." in key:
        return [key]
    if key in GRID_ALIASES:
        return GRID_ALIASES[key]
    hits = [f"{section}.{key}" for section, cls in SECTIONS.items() if key in {f.name for f in dataclasses.fields(cls)}]
    if len(hits) != 1:
        raise RunError(f"--grid {key}=...: " + (f"ambiguous, it is a field of {hits}; write one of them in full"
                                                if hits else "no recipe section has such a field"))
    return hits


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    """``["seed=0,1,2", "beta=0.1,0.3"]`` -> ``[("seed", ["0", "1", "2"]), ("beta", ["0.1", "0.3"])]``."""
    grid = []
    for item in items:
        key, sep, values = item.partition("=")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key.strip() or not vals:
            raise RunError(f"--grid {item!r}: expected key=v1,v2,...")
        resolve_grid_key(key.strip())
        grid.append((key.strip(), vals))
    return grid


def sweep(recipe_path: str, grid: list[str], prefix: str = "sweep", *, params: list[str] | None = None,
          stages: list[str] | None = None, progress: bool | None = None) -> tuple[list[RunResult], Path]:
    """Run every point of ``grid`` in turn (``runs/<prefix>-<key><value>-.../``, e.g. ``sweep-seed0-beta0.1``: each
    key's last part, values made directory-safe) and write the sweep's index (``runs/<prefix>.sweep.json``) for
    :func:`rlrf_nb.collate.collate`. A point that fails is reported and the sweep goes on; the index records it.
    Returns the finished runs and the index path."""
    parsed = parse_grid(grid)
    points = [dict(zip([k for k, _ in parsed], combo)) for combo in itertools.product(*(vals for _, vals in parsed))]
    try:
        recipe = load_recipe(resolve_path(recipe_path), split_params(params)[0])
    except ConfigError as e:
        raise RunError(str(e)) from None
    index_path = resolve_path(recipe.run.runs_dir) / f"{prefix}.sweep.json"
    index_path.parent.mkdir(parents=True, exist_ok=True)
    index = {"recipe": str(recipe_path), "grid": grid, "params": params or [], "runs": []}
    results = []
    for j, point in enumerate(points, start=1):
        name = prefix + "".join(f"-{k.split('.')[-1]}{re.sub(r'[^A-Za-z0-9._-]', '_', v)}" for k, v in point.items())
        ovr = {field_: value for key, value in point.items() for field_ in resolve_grid_key(key)}
        log.info(f"== sweep point {j}/{len(points)}: {point}")
        entry = {"name": name, "point": point, "overrides": ovr}
        try:
            res = run(recipe_path, name, params=params, overrides=ovr, stages=stages, progress=progress)
            entry.update(status="done", run_dir=str(res.run_dir), seconds=round(res.seconds, 1))
            results.append(res)
            RunStore(res.run_dir).update_results({"sweep": {"prefix": prefix, "point": point}})
        except RunError as e:
            log.info(f"   point {point} failed: {e}")
            entry.update(status="failed", error=str(e),
                         run_dir=str(resolve_path(recipe.run.runs_dir) / name))
        index["runs"].append(entry)
        _write_json(index_path, index)
    log.info(f">> sweep '{prefix}': {sum(e['status'] == 'done' for e in index['runs'])}/{len(points)} runs done; "
        f"index {index_path}")
    return results, index_path
