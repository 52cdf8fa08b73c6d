"""The run directory and its append-only, resumable JSONL artifacts.

Every expensive step writes one JSONL record per item to ``<run_dir>/<name>.jsonl`` as soon as it is done, with a
``key`` from :func:`content_key` over the step's *inputs* (model fingerprint, prompt, decode params, rubric version,
judge id ...), so a rerun computes only what is missing (:meth:`RunStore.map`). A run also saves what it was run with
(:meth:`RunStore.write_metadata`), and checkpoints count as done only once ``COMPLETE.json`` is written atomically
(:func:`mark_complete`).
"""

from __future__ import annotations

import builtins
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import platform
import subprocess
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import UTC, datetime
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from rlrf_nb.jsonl import JsonlError, append_bytes, atomic_write_text, dumps_line, read_jsonl

log = logging.getLogger(__name__)

VERSIONED_PACKAGES = ("rlrf_nb", "torch", "transformers", "trl", "peft", "accelerate", "datasets",
                      "tokenizers", "pandas", "plotly", "papermill", "ipywidgets")
COMPLETE_MARKER = "COMPLETE.json"

#: :meth:`RunStore.map` writes its new records together at most this many seconds after computing them.
#: The environment variable ``RLRF_NB_FLUSH_SECONDS`` overrides it (``0`` writes every record at once).
FLUSH_SECONDS = 1.0
FLUSH_ENV = "RLRF_NB_FLUSH_SECONDS"


def flush_seconds() -> float:
    """:data:`FLUSH_SECONDS`, or the value of ``RLRF_NB_FLUSH_SECONDS`` when it is set."""
    raw = os.environ.get(FLUSH_ENV, "").strip()
    if not raw:
        return FLUSH_SECONDS
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{FLUSH_ENV}={raw!r}: expected a number of seconds (0 writes every record at once)") from None
    if value < 0 or value != value:
        raise ValueError(f"{FLUSH_ENV}={raw!r}: expected a number of seconds >= 0")
    return value


def content_key(obj: object) -> str:
    """First 16 hex chars of sha256 over the canonical JSON of ``obj`` (dict key order does not matter). Hash a step's
    *inputs*, never its outputs, so a rerun recognises the records it already has.
    """
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class JsonlArtifact:
    """An append-only JSONL file of records that each carry a unique ``"key"``, indexed in memory on open;
    :meth:`append` writes through to disk. One process writes a given artifact at a time.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._records: dict[str, dict] = {}  # key -> record, in file order
        if not self.path.exists():
            return
        self._repair_tail()  # after this the file ends with a newline, so any bad line is an error
        for i, rec in enumerate(read_jsonl(self.path), start=1):
            key = rec.get("key")
            if not isinstance(key, str):
                raise JsonlError(f"{self.path}: record {i} has no string 'key' field")
            if key in self._records:
                log.warning("%s: duplicate key %r in record %d; keeping the first", self.path, key, i)
                continue
            self._records[key] = rec

    def _repair_tail(self) -> None:
        """Make the file end with a newline: a last line without one is a write cut off by a crash (each write is one
        whole line: truncated off) or a hand edit that is valid JSON (kept, newline added).
        """
        data = self.path.read_bytes()
        if not data or data.endswith(b"\n"):
            return
        start = data.rfind(b"\n") + 1
        try:
            json.loads(data[start:])
        except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            log.warning("%s: truncating a torn last line (%d bytes, no newline; an interrupted write)",
                        self.path, len(data) - start)
            os.truncate(self.path, start)
        else:
            self._write(b"\n")

    def _write(self, data: bytes) -> None:
        append_bytes(self.path, data)

    def append(self, record: dict) -> dict:
        """Write ``record`` (which needs a new string ``"key"``) and return it as stored."""
        return self.extend([record])[0]

    def extend(self, records: list[dict]) -> list[dict]:
        """Write ``records`` (each with a new string ``"key"``) in one write and one fsync; return them as stored.
        A crash loses at most the lines of this call (a torn last line is cut off on the next open)."""
        lines: dict[str, str] = {}
        for record in records:
            key = record.get("key")
            if not isinstance(key, str) or not key:
                raise ValueError(f"{self.path}: record needs a non-empty string 'key', got {key!r}")
            if key in self._records or key in lines:
                raise ValueError(f"{self.path}: key {key!r} is already stored")
            lines[key] = dumps_line(record)
        if not lines:
            return []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write("".join(lines.values()).encode("utf-8"))
        # what a reader of the file will see (tuples become lists ...)
        self._records.update({key: json.loads(line) for key, line in lines.items()})
        return [self._records[key] for key in lines]

    def __contains__(self, key: object) -> bool:
        return key in self._records

    def __len__(self) -> int:
        return len(self._records)

    def keys(self) -> list[str]:
        return list(self._records)

    def get(self, key: str, default: dict | None = None) -> dict | None:
        """The stored record for ``key``, or ``default`` (like ``dict.get``)."""
        return self._records.get(key, default)

    def records(self) -> list[dict]:
        """All records in file order."""
        return list(self._records.values())


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], check=False, cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_info(path: str | os.PathLike) -> dict:
    """``{"git_sha", "git_dirty"}`` of the checkout containing ``path`` (both None outside git).

    Dirty means modified tracked files or untracked, non-ignored files.
    """
    sha = _git(["rev-parse", "HEAD"], Path(path))
    status = _git(["status", "--porcelain"], Path(path)) if sha else None
    return {"git_sha": sha, "git_dirty": None if status is None else bool(status)}


def package_versions() -> dict[str, str | None]:
    """Installed version of each of :data:`VERSIONED_PACKAGES`, None where not installed."""
    versions = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def is_complete(path: str | os.PathLike) -> bool:
    """True once :func:`mark_complete` has finished for the directory ``path``."""
    return (Path(path) / COMPLETE_MARKER).is_file()


def mark_complete(path: str | os.PathLike, info: dict) -> None:
    """Write ``<path>/COMPLETE.json`` (``info`` plus a UTC time) atomically, after the checkpoint."""
    record = {**info, "completed_utc": datetime.now(UTC).isoformat(timespec="seconds")}
    atomic_write_text(Path(path) / COMPLETE_MARKER, json.dumps(record, indent=2, sort_keys=True) + "\n")


def _nan_to_none(obj):
    """NaN and infinities become null: results.json stays standard JSON that any tool reads."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj


class RunStore:
    """One run directory: JSONL artifacts, metadata and checkpoints."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._artifacts: dict[str, JsonlArtifact] = {}

    def path(self, *parts: str) -> Path:
        return self.run_dir.joinpath(*parts)

    def artifact(self, name: str) -> JsonlArtifact:
        """The artifact ``<run_dir>/<name>.jsonl``; ``name`` may have folders (``eval/gsm8k/M0``)."""
        if name not in self._artifacts:
            self._artifacts[name] = JsonlArtifact(self.run_dir / f"{name}.jsonl")
        return self._artifacts[name]

    def map(self, name: str, items: Iterable, key_fn: Callable[[object], str],
            fn: Callable[[object], dict], desc: str | None = None, workers: int = 1) -> list[dict]:
        """``fn(item)`` for each item whose ``key_fn(item)`` is not stored yet in artifact ``name``; returns the records
        (stored or new) in item order. New records are appended together at most :data:`FLUSH_SECONDS` after they are
        computed (and when ``fn`` raises), so an interrupted map resumes where it stopped, having lost at most that
        much work (an fsync per record cost a fast judge half its time). ``desc`` labels the progress bar (default:
        ``name``).

        ``workers`` > 1 runs ``fn`` in that many threads at once (an HTTP judge: requests in flight); ``fn`` must then
        be thread-safe and its result must not depend on the order of the calls. Records are taken in item order (a
        finished record waits for the ones before it), so the artifact's file, which readers such as
        ``rlrf-nb train-judge`` take in order, is the same for any ``workers``. When a call raises, no new call
        starts, the calls in flight finish, everything finished is stored, and the error is raised.
        """
        art = self.artifact(name)
        items = list(items)
        keys = [key_fn(it) for it in items]
        todo, seen = [], set()
        for i, k in enumerate(keys):
            if k not in art and k not in seen:  # the same inputs twice in one call: computed once
                todo.append(i)
                seen.add(k)
        pending: dict[str, dict] = {}
        kept: set[int] = set()
        every = flush_seconds()
        last = time.monotonic()

        def keep(i: int, rec) -> None:
            nonlocal pending, last
            kept.add(i)
            if not isinstance(rec, dict):
                raise TypeError(f"{name}: fn must return dicts, got {type(rec).__name__}")
            pending[keys[i]] = {**rec, "key": keys[i]}
            if time.monotonic() - last >= every:
                art.extend(list(pending.values()))
                pending, last = {}, time.monotonic()

        bar = tqdm(total=len(todo), desc=desc or name, disable=not todo)
        try:
            if workers <= 1:
                for i in todo:
                    keep(i, fn(items[i]))
                    bar.update()
            else:
                with ThreadPoolExecutor(workers) as pool:
                    futures = [(i, pool.submit(fn, items[i])) for i in todo]
                    try:
                        for i, fut in futures:  # in item order: the file's order does not depend on timing
                            keep(i, fut.result())
                            bar.update()
                    except BaseException:
                        for _, fut in futures:
                            fut.cancel()
                        wait([fut for _, fut in futures])  # what is in flight finishes and is kept
                        for i, fut in futures:
                            if i not in kept and not fut.cancelled() and fut.exception() is None:
                                keep(i, fut.result())
                        raise
        finally:
            bar.close()
            art.extend(list(pending.values()))
        log.info("%s: %d records reused, %d computed", art.path, len(items) - len(todo), len(todo))
        return [art.get(k) for k in keys]

    def map_batches(self, name: str, items: Iterable, key_fn: Callable[[object], str],
                    fn: Callable[[list], list[dict]], batch_size: int, desc: str | None = None,
                    imap: Callable = builtins.map) -> list[dict]:
        """Like :meth:`map`, but ``fn`` takes a batch of up to ``batch_size`` items (e.g. one ``generate`` call) and
        returns one record per item; each batch is appended (one write) as soon as it is done.

        Batches are cut from the whole item list, not the missing items, so a seeded ``fn`` gives a resumed run exactly
        the records of an uninterrupted one; a batch with any record missing is recomputed whole and only the missing
        records are appended. ``imap`` applies ``fn`` to the batches in order (``map``, or a process pool's ordered
        ``imap`` that computes later batches while earlier ones are written).
        """
        art = self.artifact(name)
        items = list(items)
        keys = [key_fn(it) for it in items]
        starts = [b for b in range(0, len(items), batch_size) if any(k not in art for k in keys[b:b + batch_size])]
        computed = 0
        results = imap(fn, [items[start:start + batch_size] for start in starts])
        for start, recs in zip(tqdm(starts, desc=desc or name, disable=not starts), results):
            batch = items[start:start + batch_size]
            if not isinstance(recs, list) or len(recs) != len(batch):
                raise TypeError(f"{name}: fn must return a list of {len(batch)} dicts, got {type(recs).__name__}")
            new = {}
            for k, rec in zip(keys[start:start + batch_size], recs):
                if not isinstance(rec, dict):
                    raise TypeError(f"{name}: fn must return dicts, got {type(rec).__name__}")
                if k not in art and k not in new:  # done before the crash, or the same inputs twice: keep the first
                    new[k] = {**rec, "key": k}
            art.extend(list(new.values()))
            computed += len(new)
        log.info("%s: %d records reused, %d computed", art.path, len(items) - computed, computed)
        return [art.get(k) for k in keys]

    def write_metadata(self, config: dict, seed: int) -> dict:
        """Write ``config.yaml`` (the resolved config) and ``run.json`` (seed, versions, git); return the latter."""
        atomic_write_text(self.path("config.yaml"), yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
        meta = {
            "seed": seed,
            "versions": package_versions(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            **git_info(Path(__file__).resolve().parent),
        }
        atomic_write_text(self.path("run.json"), json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return meta

    def results(self) -> dict:
        """``<run_dir>/results.json``: what the stages have written so far ({} before any)."""
        path = self.path("results.json")
        return json.loads(path.read_text()) if path.exists() else {}

    def update_results(self, row: dict) -> dict:
        """Merge ``row`` into ``<run_dir>/results.json`` (written atomically); returns the merged results."""
        results = self.results()
        path = self.path("results.json")
        results.update(_nan_to_none(row))
        atomic_write_text(path, json.dumps(results, indent=2, sort_keys=True, allow_nan=False) + "\n")
        return results

    def checkpoint_dir(self, name: str) -> Path:
        """``<run_dir>/checkpoints/<name>`` (created); done only once :func:`is_complete` says so."""
        path = self.path("checkpoints", name)
        path.mkdir(parents=True, exist_ok=True)
        return path
