"""Tests for rlrf_nb.store: content keys, resumable JSONL artifacts, run metadata, checkpoints."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess

import pytest
import yaml

import rlrf_nb.store as store_module
from rlrf_nb.jsonl import JsonlError, read_jsonl
from rlrf_nb.store import (
    VERSIONED_PACKAGES,
    JsonlArtifact,
    RunStore,
    content_key,
    git_info,
    is_complete,
    mark_complete,
)


def test_content_key_is_stable_across_key_order():
    a = {"model": "m0", "prompt": "hi", "decode": {"temperature": 0.7, "max_new_tokens": 64}}
    b = {"decode": {"max_new_tokens": 64, "temperature": 0.7}, "prompt": "hi", "model": "m0"}
    assert content_key(a) == content_key(b)
    assert re.fullmatch(r"[0-9a-f]{16}", content_key(a))


@pytest.mark.parametrize(
    "changed",
    [
        {"model": "m1", "prompt": "hi", "decode": {"temperature": 0.7}},
        {"model": "m0", "prompt": "hi ", "decode": {"temperature": 0.7}},
        {"model": "m0", "prompt": "hi", "decode": {"temperature": 0.8}},
        {"model": "m0", "prompt": "hi", "decode": {"temperature": "0.7"}},
        {"model": "m0", "prompt": "hi", "decode": {"temperature": 0.7}, "judge": "j"},
    ],
)
def test_content_key_changes_with_any_input(changed):
    base = {"model": "m0", "prompt": "hi", "decode": {"temperature": 0.7}}
    assert content_key(changed) != content_key(base)


def test_map_reuses_finished_records_and_computes_only_new_items(tmp_path):
    calls = []

    def fn(x):
        calls.append(x)
        return {"x": x, "y": x * x}

    items = [1, 2, 3]
    first = RunStore(tmp_path).map("sq", items, key_fn=lambda x: content_key({"x": x}), fn=fn)
    assert calls == [1, 2, 3]
    assert [r["y"] for r in first] == [1, 4, 9]
    assert all(r["key"] == content_key({"x": r["x"]}) for r in first)

    calls.clear()  # a rerun in a fresh process: a new store reading the file
    again = RunStore(tmp_path).map("sq", items, key_fn=lambda x: content_key({"x": x}), fn=fn)
    assert calls == []
    assert again == first

    more = RunStore(tmp_path).map("sq", [4, 2, 5], key_fn=lambda x: content_key({"x": x}), fn=fn)
    assert calls == [4, 5]
    assert [r["y"] for r in more] == [16, 4, 25]  # item order, stored and new mixed
    assert len(list(read_jsonl(tmp_path / "sq.jsonl"))) == 5


def test_map_appends_each_record_immediately(tmp_path):
    """An exception mid-map keeps the records finished before it."""
    store = RunStore(tmp_path)

    def fn(x):
        if x == 3:
            raise RuntimeError("crash")
        return {"x": x}

    with pytest.raises(RuntimeError):
        store.map("part", [1, 2, 3], key_fn=str, fn=fn)
    assert [r["x"] for r in read_jsonl(tmp_path / "part.jsonl")] == [1, 2]


def test_map_with_workers_gives_the_records_of_one_worker_in_item_order(tmp_path):
    """feedback.concurrency: threads finish out of order; map still returns item order, computes a duplicate once,
    and writes the same file as a single worker."""
    import random
    import threading
    import time

    live, peak, lock = [0], [0], threading.Lock()

    def fn(x):
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        time.sleep(random.Random(x).uniform(0, 0.02))  # finish in a shuffled order
        with lock:
            live[0] -= 1
        return {"x": x, "y": x * x}

    items = [5, 3, 8, 3, 1, 9, 2, 7, 4, 6, 0]
    one = RunStore(tmp_path / "one").map("sq", items, key_fn=str, fn=fn)
    many = RunStore(tmp_path / "many").map("sq", items, key_fn=str, fn=fn, workers=4)
    assert many == one and [r["x"] for r in many] == items
    assert 1 < peak[0] <= 4
    stored = [r["x"] for r in read_jsonl(tmp_path / "many/sq.jsonl")]
    assert stored == list(dict.fromkeys(items))  # each key once, in item order whatever finished first
    assert (tmp_path / "many/sq.jsonl").read_bytes() == (tmp_path / "one/sq.jsonl").read_bytes()
    calls = []
    again = RunStore(tmp_path / "many").map("sq", items, key_fn=str, fn=lambda x: calls.append(x), workers=4)
    assert again == one and calls == []  # a rerun computes nothing


def test_map_with_workers_keeps_what_finished_and_raises_the_error(tmp_path):
    """One failing call: nothing new starts, the calls in flight finish and are stored, the error is raised; a rerun
    computes only what is missing."""
    import threading
    import time

    started = threading.Event()

    def fn(x):
        if x == 0:
            started.wait(5)  # fail only once another call is in flight
            raise RuntimeError("judge down")
        started.set()
        time.sleep(0.005)
        return {"x": x}

    with pytest.raises(RuntimeError, match="judge down"):
        RunStore(tmp_path).map("part", list(range(200)), key_fn=str, fn=fn, workers=2)
    kept = {r["x"] for r in read_jsonl(tmp_path / "part.jsonl")}
    assert kept and 0 not in kept and len(kept) < 199  # the queue was cancelled
    calls = []
    out = RunStore(tmp_path).map("part", list(range(200)), key_fn=str,
                                 fn=lambda x: (calls.append(x), {"x": x})[1], workers=2)
    assert [r["x"] for r in out] == list(range(200)) and sorted(calls) == sorted(set(range(200)) - kept)


def test_torn_last_line_is_truncated_with_warning_and_appends_stay_clean(tmp_path, caplog):
    path = tmp_path / "gen.jsonl"
    path.write_text('{"key": "a", "v": 1}\n{"key": "b", "v": 2}\n{"key": "c", "v"', encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="rlrf_nb.store"):
        art = JsonlArtifact(path)
    assert any(str(path) in r.getMessage() and "torn" in r.getMessage() for r in caplog.records)
    assert art.keys() == ["a", "b"]
    art.append({"key": "c", "v": 3})
    assert [r["key"] for r in read_jsonl(path)] == ["a", "b", "c"]  # strict read: no glued line
    assert JsonlArtifact(path).get("c") == {"key": "c", "v": 3}


def test_complete_last_line_without_newline_is_kept(tmp_path):
    path = tmp_path / "hand.jsonl"
    path.write_text('{"key": "a"}\n{"key": "b"}', encoding="utf-8")
    art = JsonlArtifact(path)
    art.append({"key": "c"})
    assert [r["key"] for r in read_jsonl(path)] == ["a", "b", "c"]


def test_append_is_one_write_of_a_whole_line(tmp_path, monkeypatch):
    art = JsonlArtifact(tmp_path / "a.jsonl")
    writes = []
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: writes.append(data) or real_write(fd, data))
    art.append({"key": "k", "text": "héllo"})
    monkeypatch.undo()
    assert len(writes) == 1 and writes[0].endswith(b"\n")
    assert json.loads(writes[0]) == {"key": "k", "text": "héllo"}


def test_append_refuses_duplicate_or_missing_key(tmp_path):
    art = JsonlArtifact(tmp_path / "a.jsonl")
    art.append({"key": "k", "v": 1})
    with pytest.raises(ValueError, match=r"a\.jsonl: key 'k' is already stored"):
        art.append({"key": "k", "v": 2})
    with pytest.raises(ValueError, match="needs a non-empty string 'key'"):
        art.append({"v": 3})
    assert len(art) == 1 and "k" in art and art.get("k")["v"] == 1
    assert len(list(read_jsonl(tmp_path / "a.jsonl"))) == 1


def test_duplicate_keys_in_existing_file_keep_first_with_warning(tmp_path, caplog):
    path = tmp_path / "d.jsonl"
    path.write_text('{"key": "a", "v": 1}\n{"key": "a", "v": 2}\n{"key": "b", "v": 3}\n', encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="rlrf_nb.store"):
        art = JsonlArtifact(path)
    assert [r["v"] for r in art.records()] == [1, 3]
    assert any("duplicate key 'a'" in r.getMessage() for r in caplog.records)


@pytest.mark.bad_input("malformed JSONL line: run artifact")
def test_malformed_middle_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"key": "a"}\n{"key": oops}\n{"key": "c"}\n', encoding="utf-8")
    with pytest.raises(JsonlError, match=re.escape(f"{path}:2: invalid JSON")):
        JsonlArtifact(path)


@pytest.mark.bad_input("missing field: artifact record key")
def test_record_without_key_in_file_is_an_error(tmp_path):
    path = tmp_path / "nokey.jsonl"
    path.write_text('{"key": "a"}\n{"v": 1}\n', encoding="utf-8")
    with pytest.raises(JsonlError, match=r"nokey\.jsonl: record 2 has no string 'key'"):
        JsonlArtifact(path)


def test_artifact_paths_and_cache(tmp_path):
    store = RunStore(tmp_path / "run")
    art = store.artifact("eval/gsm8k/M0")
    assert art is store.artifact("eval/gsm8k/M0")
    art.append({"key": "x"})
    assert (tmp_path / "run" / "eval" / "gsm8k" / "M0.jsonl").is_file()
    assert store.path("a", "b.txt") == tmp_path / "run" / "a" / "b.txt"


def test_write_metadata(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "VERSIONED_PACKAGES", (*VERSIONED_PACKAGES, "no-such-package-xyz"))
    store = RunStore(tmp_path)
    config = {"run": {"name": "tiny", "seed": 3, "runs_dir": "runs"}}
    meta = store.write_metadata(config, seed=3)
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == config
    on_disk = json.loads((tmp_path / "run.json").read_text())
    assert on_disk == meta
    assert on_disk["seed"] == 3
    assert "torch" in on_disk["versions"] and "papermill" in on_disk["versions"]
    assert on_disk["versions"]["rlrf_nb"] == "0.1.0"
    assert on_disk["versions"]["no-such-package-xyz"] is None
    assert "git_sha" in on_disk and "git_dirty" in on_disk
    assert re.fullmatch(r"\d+\.\d+\.\d+", on_disk["python"])
    assert on_disk["created_utc"].endswith("+00:00")


def test_git_info_inside_and_outside_a_checkout(tmp_path):
    assert git_info(tmp_path) == {"git_sha": None, "git_dirty": None}
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    (repo / "f.txt").write_text("x")
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "f.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    info = git_info(repo)
    assert re.fullmatch(r"[0-9a-f]{40}", info["git_sha"]) and info["git_dirty"] is False
    (repo / "f.txt").write_text("changed")
    assert git_info(repo)["git_dirty"] is True


def test_checkpoint_complete_marker(tmp_path):
    store = RunStore(tmp_path)
    ckpt = store.checkpoint_dir("M1")
    assert ckpt == tmp_path / "checkpoints" / "M1" and ckpt.is_dir()
    (ckpt / "model.safetensors").write_bytes(b"half-written")
    assert not is_complete(ckpt)
    mark_complete(ckpt, {"step": 10})
    assert is_complete(ckpt)
    marker = json.loads((ckpt / "COMPLETE.json").read_text())
    assert marker["step"] == 10 and "completed_utc" in marker
    assert sorted(p.name for p in ckpt.iterdir()) == ["COMPLETE.json", "model.safetensors"]  # no temp left


def test_update_results_merges_and_keeps_earlier_keys(tmp_path):
    store = RunStore(tmp_path / "run")
    store.update_results({"a": 1, "b": {"x": 1}})
    merged = store.update_results({"b": {"y": 2}, "c": 3})
    assert merged == {"a": 1, "b": {"y": 2}, "c": 3}
    assert json.loads((tmp_path / "run/results.json").read_text()) == merged


def test_map_batches_recomputes_whole_fixed_batches_so_resume_matches(tmp_path):
    """fn's output depends on its batch (like seeded sampling); a resume must give the same records."""
    def fn(batch):
        return [{"v": f"{x}@{batch[0]}"} for x in batch]

    items = list(range(10))
    full = RunStore(tmp_path / "a").map_batches("x", items, str, fn, batch_size=4)
    store = RunStore(tmp_path / "b")
    store.map_batches("x", items[:6], str, fn, batch_size=4)  # "crash" after 6 of 10
    lines = (tmp_path / "b/x.jsonl").read_text().splitlines()
    (tmp_path / "b/x.jsonl").write_text("\n".join(lines[:5]) + "\n")  # and lose one more record
    resumed = RunStore(tmp_path / "b").map_batches("x", items, str, fn, batch_size=4)
    assert [r["v"] for r in resumed] == [r["v"] for r in full]
    assert len((tmp_path / "b/x.jsonl").read_text().splitlines()) == 10


def test_map_writes_records_together_and_flushes_what_it_has_when_fn_raises(tmp_path, monkeypatch):
    """map appends new records in one write per FLUSH_SECONDS (one fsync per record cost the verifier half its
    time); records computed before an error are still written."""
    from rlrf_nb import store as store_mod

    writes = []
    real = store_mod.JsonlArtifact._write
    monkeypatch.setattr(store_mod.JsonlArtifact, "_write", lambda self, data: (writes.append(data), real(self, data)))
    RunStore(tmp_path).map("many", list(range(50)), key_fn=str, fn=lambda x: {"x": x})
    assert len(writes) == 1 and len(list(read_jsonl(tmp_path / "many.jsonl"))) == 50

    def fn(x):
        if x == 3:
            raise RuntimeError("crash")
        return {"x": x}

    with pytest.raises(RuntimeError):
        RunStore(tmp_path).map("part", [1, 2, 3], key_fn=str, fn=fn)
    assert [r["x"] for r in read_jsonl(tmp_path / "part.jsonl")] == [1, 2]
    monkeypatch.setattr(store_mod, "FLUSH_SECONDS", 0.0)  # every record written as soon as it is computed
    writes.clear()
    RunStore(tmp_path).map("each", [1, 2, 3], key_fn=str, fn=lambda x: {"x": x})
    assert len(writes) == 3
    monkeypatch.setattr(store_mod, "FLUSH_SECONDS", 60.0)
    monkeypatch.setenv(store_mod.FLUSH_ENV, "0")  # the environment overrides the default (the fault suite's way)
    writes.clear()
    RunStore(tmp_path).map("env", [1, 2, 3], key_fn=str, fn=lambda x: {"x": x})
    assert len(writes) == 3
    monkeypatch.setenv(store_mod.FLUSH_ENV, "soon")
    with pytest.raises(ValueError, match="RLRF_NB_FLUSH_SECONDS='soon'"):
        RunStore(tmp_path).map("bad", [1], key_fn=str, fn=lambda x: {"x": x})


def test_extend_rejects_a_duplicate_key_before_writing_anything(tmp_path):
    art = JsonlArtifact(tmp_path / "a.jsonl")
    art.append({"key": "a", "v": 1})
    with pytest.raises(ValueError, match="already stored"):
        art.extend([{"key": "b", "v": 2}, {"key": "a", "v": 3}])
    with pytest.raises(ValueError, match="already stored"):
        art.extend([{"key": "c", "v": 2}, {"key": "c", "v": 3}])
    assert [r["key"] for r in read_jsonl(tmp_path / "a.jsonl")] == ["a"]


def test_two_processes_writing_one_file_atomically_never_collide(tmp_path):
    """Two scripts opening one run both write its config.yaml: each write's temporary file is its own (a shared
    ``<name>.tmp`` was renamed away by the other writer: FileNotFoundError), and the file ends whole."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        pool.starmap(_write_many, [(str(tmp_path / "config.yaml"), w) for w in "ab"])
    assert (tmp_path / "config.yaml").read_text() in ("a" * 1000, "b" * 1000)
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]
    assert (tmp_path / "config.yaml").stat().st_mode & 0o777 == 0o644


def _write_many(path, letter):
    from pathlib import Path

    from rlrf_nb.jsonl import atomic_write_text

    for _ in range(300):
        atomic_write_text(Path(path), letter * 1000)
