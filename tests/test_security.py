"""Security: no eval/exec of model or data text, math only through the bounded safe parser, models only from
safetensors and without remote code unless a recipe asks, and API keys only from the environment and never
written into a run."""

from __future__ import annotations

import ast
import json
import re
import shutil
import time
from fractions import Fraction
from pathlib import Path

import faults  # tests/faults.py: the harness
import pytest

from rlrf_nb.tasks import math as M

pytestmark = pytest.mark.fault_suite  # make fault runs these (tests/faults.py suite)

ROOT = Path(__file__).resolve().parents[1]
M0 = ROOT / "data" / "tiny_world" / "m0"
SOURCES = sorted([*(ROOT / "rlrf_nb").rglob("*.py"), *(ROOT / "notebooks").glob("*.py")])

# Calls that run or unpickle arbitrary code. (``ast.literal_eval`` and ``yaml.safe_load`` are the safe forms.)
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "execfile"}
FORBIDDEN_ATTRS = {("pickle", "load"), ("pickle", "loads"), ("marshal", "loads"), ("yaml", "load"),
                   ("yaml", "unsafe_load"), ("yaml", "full_load"), ("torch", "load"), ("dill", "load"),
                   ("shelve", "open"), ("os", "system"), ("builtins", "eval"), ("builtins", "exec")}


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name}:{node.lineno}"
        f = node.func
        if isinstance(f, ast.Name) and f.id in FORBIDDEN_CALLS:
            out.append(f"{where}: {f.id}()")
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and (f.value.id, f.attr) in FORBIDDEN_ATTRS:
            out.append(f"{where}: {f.value.id}.{f.attr}()")
        for kw in node.keywords:
            if kw.arg == "shell" and isinstance(kw.value, ast.Constant) and kw.value.value is True:
                out.append(f"{where}: subprocess with shell=True")
            if kw.arg == "trust_remote_code" and isinstance(kw.value, ast.Constant) and kw.value.value is True:
                out.append(f"{where}: trust_remote_code=True hard-coded")
            if kw.arg == "use_safetensors" and isinstance(kw.value, ast.Constant) and kw.value.value is not True:
                out.append(f"{where}: use_safetensors={kw.value.value!r}")
        # a model (not a tokenizer or config) loaded from disk must insist on safetensors
        if (isinstance(f, ast.Attribute) and f.attr == "from_pretrained" and "Model" in ast.unparse(f.value)
                and not any(kw.arg == "use_safetensors" for kw in node.keywords)):
            out.append(f"{where}: {ast.unparse(f)}() without use_safetensors=True")
    return out


def test_no_eval_exec_or_unsafe_loading_anywhere_in_the_library(record_property):
    record_property("fault_security", "no eval/exec/compile/pickle/yaml.load/torch.load/shell=True in "
                                      f"{len(SOURCES)} library and notebook sources")
    assert len(SOURCES) > 20
    bad = [v for p in SOURCES for v in _violations(p)]
    assert bad == []


def test_the_source_scan_catches_what_it_forbids(tmp_path):
    """The scan above is not vacuous: each forbidden form in a file is reported."""
    src = tmp_path / "probe.py"
    src.write_text("import pickle, yaml, torch, subprocess\nfrom transformers import AutoModelForCausalLM\n"
                   "eval(text)\nexec(code)\npickle.loads(b)\nyaml.load(s)\ntorch.load(p)\n"
                   "subprocess.run(c, shell=True)\nAutoModelForCausalLM.from_pretrained(p)\n"
                   "AutoModelForCausalLM.from_pretrained(p, use_safetensors=True, trust_remote_code=True)\n"
                   "model.eval()\nast.literal_eval(s)\n", encoding="utf-8")
    found = _violations(src)
    assert [v.split(": ", 1)[1] for v in found] == [
        "eval()", "exec()", "pickle.loads()", "yaml.load()", "torch.load()", "subprocess with shell=True",
        "AutoModelForCausalLM.from_pretrained() without use_safetensors=True", "trust_remote_code=True hard-coded"]


@pytest.mark.parametrize("expr", [
    "9" * 13,  # a literal over the 10**12 bound
    "999999*999999*999999",  # an intermediate over the bound
    "9**9**9",  # power is not an operator the parser knows
    "2**10000000",
    "1e999999999",  # exponent notation is not a number the parser reads
    "10" + "*10" * 66,  # stays short of the length cap; overflows the bound on the way
    "(" * 99 + "1" + ")" * 99,  # deep nesting
    "-" * 199 + "1",
    "1/" * 99 + "1",
    "1" * 201,  # over the length cap
    "__import__('os').system('true')",
    "().__class__.__bases__[0].__subclasses__()",
    "[x for x in range(10**9)]",
    "1_000_000_000_000_000",
])
def test_safe_parser_rejects_big_or_foreign_expressions_fast(expr, record_property):
    record_property("fault_bad_input", f"huge or foreign arithmetic: {expr[:24]}")
    t0 = time.monotonic()
    try:
        value = M.safe_eval(expr)
    except M.ArithmeticError_ as e:
        assert str(e)
    else:  # the only acceptable success is a small exact value
        assert abs(value) <= M.MAX_ABS and isinstance(value, Fraction)
    assert time.monotonic() - t0 < 0.1


@pytest.mark.parametrize("text", ["1e999999999", "9" * 100_000, "1/" + "9" * 5000, "-" + "9" * 4400 + ".5"])
def test_number_normalisation_never_expands_huge_numbers(text, record_property):
    """Answers from model output and data files go through normalize_number; a size bomb stays text."""
    record_property("fault_bad_input", f"huge number in an answer: {text[:12]}... ({len(text)} chars)")
    t0 = time.monotonic()
    out = M.normalize_number(text)
    assert out == text.replace(",", "")
    assert M.extract_answer(f"so #### {text}", "strict") is not None or "e" in text
    assert not M.is_correct(f"#### {text}", "5")
    check = M.check_solution(f"<<{text}={text}>>\n#### {text}", [[2, "+", 3, 5]], "5")
    assert check.error_kind == "unparseable"
    assert time.monotonic() - t0 < 0.5


def test_models_load_only_from_safetensors(tmp_path, record_property):
    """A checkpoint that has only pickle weights (pytorch_model.bin) is refused, never unpickled."""
    from rlrf_nb.models import load_policy

    record_property("fault_security", "a pickle-only checkpoint is refused (safetensors only)")
    import torch

    model, _ = load_policy(M0)
    ckpt = tmp_path / "pickled"
    shutil.copytree(M0, ckpt)
    (ckpt / "model.safetensors").unlink()
    torch.save(model.state_dict(), ckpt / "pytorch_model.bin")  # the legacy pickle format
    with pytest.raises(OSError, match="safetensors"):
        load_policy(ckpt)


def _remote_code_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    """M0 with a config that asks for custom modelling code, which would write a sentinel file if run."""
    ckpt = tmp_path / "remote"
    shutil.copytree(M0, ckpt)
    sentinel = tmp_path / "REMOTE_CODE_RAN"
    (ckpt / "evil_config.py").write_text(
        f"from pathlib import Path\nPath({str(sentinel)!r}).write_text('ran')\n"
        "from transformers import LlamaConfig\n\nclass EvilConfig(LlamaConfig):\n    model_type = 'llama'\n")
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "evil_config.EvilConfig"}
    (ckpt / "config.json").write_text(json.dumps(cfg))
    return ckpt, sentinel


def test_remote_code_is_never_run_unless_asked(tmp_path, record_property):
    from rlrf_nb.models import load_policy

    record_property("fault_security", "a checkpoint's custom code is not run without trust_remote_code")
    ckpt, sentinel = _remote_code_checkpoint(tmp_path)
    try:
        load_policy(ckpt)
    except (ValueError, OSError) as e:  # transformers may refuse outright; either way the code must not run
        assert "trust_remote_code" in str(e)
    assert not sentinel.exists()
    # the probe is real: asked explicitly, transformers does import the checkpoint's code
    with pytest.raises(ValueError):  # (its config class is not a causal LM, so loading stops after that)
        load_policy(ckpt, trust_remote_code=True)
    assert sentinel.read_text() == "ran"


def test_trust_remote_code_comes_only_from_the_recipe(monkeypatch, record_property):
    """Off by default; a recipe's feedback.trust_remote_code reaches the judge model's loader unchanged."""
    from rlrf_nb import models
    from rlrf_nb.config import FeedbackConfig, M0Config
    from rlrf_nb.llm_judge import make_llm_judge
    from rlrf_nb.rubrics import load_rubric_set

    record_property("fault_security", "trust_remote_code is off unless the recipe sets feedback.trust_remote_code")
    assert FeedbackConfig().trust_remote_code is False
    assert "trust_remote_code" not in vars(M0Config())  # M0 is the kit's own model: never remote code
    seen = []
    monkeypatch.setattr(models, "load_policy", lambda path, **kw: seen.append(kw) or (None, None))
    for flag in (False, True):
        make_llm_judge(FeedbackConfig(judge="llm", judge_model=str(M0), trust_remote_code=flag), load_rubric_set())
    assert [kw["trust_remote_code"] for kw in seen] == [False, True]


def test_api_keys_come_only_from_environment_variables():
    """No config field can hold a key (only the *name* of its variable), so a key never reaches config.yaml."""
    import dataclasses

    from rlrf_nb.config import SECTIONS

    names = [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]
    keyish = [n for n in names if re.search(r"key|token|secret|password", n.split(".")[1], re.I)
              and not n.endswith("_env") and not n.split(".")[1].endswith("_tokens")]
    assert keyish == [] and "feedback.api_key_env" in names


SECRET = "sk-rlrf-security-test-" + "5f3a9c1e7b2d4086"
# The same check on a run of the stage commands (sampling, then judging over HTTP) runs in CI:
# tests/test_faults.py::test_fake_api_key_reaches_no_file_of_a_run, on the judge-server tests' runs.


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not (M0 / "config.json").exists():
        pytest.skip(f"{M0} has no model yet; build M0 first")
    srv = faults.JudgeServer(M0, tmp_path_factory.mktemp("serve"))
    srv.start()
    yield srv
    srv.kill()


def _files_containing(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.mark.fault
@pytest.mark.timeout(900)
def test_fake_api_key_reaches_no_file_of_a_papermill_run(server, tmp_path, record_property):
    """The same through the papermill runner (notebook 01 with its LLM judge over HTTP): the executed notebook,
    its logs and every artifact are free of the key."""
    reason = faults.runner_available()
    if reason:
        pytest.skip(f"papermill runner not available: {reason}")
    record_property("fault_security", "a fake API key (env var) is in no file of a papermill run, notebooks included")
    run = tmp_path / "nbrun"
    extra = {"feedback.judge_url": server.base_url, "feedback.judge_model": str(M0),
             "feedback.api_key_env": "RLRF_SECURITY_JUDGE_KEY"}
    env = faults.stage_env({"RLRF_SECURITY_JUDGE_KEY": SECRET})
    r = faults.run_stage("runner", run, extra, env=env, timeout=850)
    assert r.rc == 0, r.stdout[-3000:] + r.stderr[-3000:]
    notebooks = list(run.glob("*.ipynb"))
    assert notebooks and server.base_url in "".join(p.read_text() for p in notebooks)
    assert _files_containing(run, SECRET.encode()) == []
    assert SECRET not in r.stdout + r.stderr


@pytest.mark.parametrize("url,shown", [
    ("http://user:secret@127.0.0.1:8000/v1", "http://***@127.0.0.1:8000/v1"),
    ("https://token@judge.example/v1", "https://***@judge.example/v1"),
    ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
])
def test_judge_url_credentials_never_reach_the_judge_id(url, shown, tmp_path):
    from rlrf_nb.config import FeedbackConfig
    from rlrf_nb.llm_judge import OpenAITransport, make_llm_judge, redact_url
    from rlrf_nb.rubrics import load_rubric_set
    from rlrf_nb.runs import open_run

    assert redact_url(url) == shown
    cfg = FeedbackConfig(judge="llm", judge_url=url, judge_model="tiny")
    judge = make_llm_judge(cfg, load_rubric_set(ROOT / "data" / "rubrics"))
    assert judge.id == f"llm:tiny@{shown}" and "secret" not in judge.id
    transport = OpenAITransport(url, "tiny")
    assert transport.base_url == url  # requests still go to the real URL
    assert "secret" not in repr(transport) and transport.describe()["base_url"] == shown
    recipe, store = open_run(ROOT / "recipes" / "tiny-smoke.yaml", "creds",
                             {"run.runs_dir": str(tmp_path), "feedback.judge_url": url})
    assert recipe.feedback.judge_url == url
    written = (store.path("config.yaml")).read_text()
    assert shown in written and "secret" not in written


def test_just_eval_huge_digit_score_is_a_parse_failure_not_a_crash():
    from rlrf_nb.evals.just_eval import ASPECTS, parse_just_eval

    raw = json.dumps({a: {"reason": "ok", "score": "9" * 5000 if a == ASPECTS[0] else 3} for a in ASPECTS})
    scores, error = parse_just_eval(raw, ASPECTS)
    assert error is not None and scores[0].score is None and len(scores[0].error) < 300
    assert [s.score for s in scores[1:]] == [3] * (len(ASPECTS) - 1)
