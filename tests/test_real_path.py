"""The real-model path end to end, on a stand-in (issue 15): ``rlrf-nb run --recipe recipes/qwen2.5-1.5b-gsm8k.yaml``,
stages 01 to 05 with LoRA, small budgets, nothing downloaded.

- The policy is a tiny random ``Qwen2ForCausalLM`` with Qwen2.5-Instruct's ChatML chat template, loaded by its Hub
  id from a Hugging Face cache layout (``HF_HUB_OFFLINE=1``; tests/stand_in.py).
- GSM8K is two local JSONL files in the ``openai/gsm8k`` format, train and test.
- Run A judges with a real ``transformers serve`` on 127.0.0.1 (serving the stand-in, which never writes the
  rubric JSON): every judgement is a parse failure, there are no pairs, and every stage still finishes.
- Run B judges with a small OpenAI-compatible server that answers well-formed rubric JSON: the parsed-feedback
  path, pairs, the pre-flight on ChatML pairs, LoRA DPO with merged checkpoints, two rounds, the benchmarks.

A ``sitecustomize`` audit hook in every process of the runs records any file opened under ``data/tiny_world``.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from faults import JudgeServer, kill_tree
from stand_in import RubricJudgeServer, save_hub_standin, write_gsm8k

pytestmark = pytest.mark.timeout(900)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
POLICY, OTHER = "Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct"
STAGES = ["01_feedback_rubrics", "02_reflection_sampling", "03_dpo_finetuning", "04_rlrf_rounds",
          "05_benchmark_analysis"]

AUDIT = textwrap.dedent('''\
    """Test-only: log every file opened or listed under $RLRF_AUDIT_ROOT to $RLRF_AUDIT_LOG."""
    import os
    import sys

    _root, _log = os.environ.get("RLRF_AUDIT_ROOT"), os.environ.get("RLRF_AUDIT_LOG")
    if _root and _log:
        def _hook(event, args):
            if event in ("open", "os.listdir", "os.scandir") and args and isinstance(args[0], (str, bytes)):
                path = os.path.abspath(os.fsdecode(args[0]))
                if path.startswith(_root):
                    with open(_log, "a") as fh:
                        fh.write(f"{os.getpid()} {event} {path}\\n")
        sys.addaudithook(_hook)
''')


def _overrides(base: Path, train: Path, test: Path, judge_model: str) -> list[str]:
    """Small budgets for the real recipe: a few prompts, short answers, one rlrf variant, two rounds."""
    ovr = {"run.runs_dir": base / "runs", "reflection.prompt_source": train, "eval.gsm8k_source": test,
           "eval.gsm8k_train_source": train, "eval.gsm8k_k": 2, "eval.n_math": 4, "eval.max_new_tokens": 24,
           "eval.batch_size": 8, "feedback.judge_model": judge_model, "feedback.consensus_k": 1,
           "feedback.max_new_tokens": 12, "feedback.max_repairs": 0, "feedback.max_retries": 1,
           "feedback.n_math": 3, "feedback.samples_per_prompt": 2, "feedback.max_response_tokens": 24,
           "feedback.n_llm_judged": 2, "reflection.n_prompts": 3, "reflection.n_samples": 2, "reflection.top_k": 1,
           "reflection.m_refinements": 1, "reflection.max_new_tokens": 24, "reflection.batch_size": 8,
           "reflection.backend": "transformers", "dpo.max_length": 512, "dpo.batch_size": 2, "dpo.grad_accum": 1,
           "dpo.learning_rate": 1e-3, "dpo.logging_steps": 1, "rounds.n_rounds": 2, "rounds.prompts_per_round": 3,
           "rounds.eval_n_math": 3, "rounds.variants": "[rlrf]"}
    return [x for k, v in ovr.items() for x in ("-p", f"{k}={v}")]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The stand-in's files, both judges, and both runs (A: transformers serve, B: rubric-JSON judge)."""
    base = tmp_path_factory.mktemp("real")
    train, test = write_gsm8k(base / "gsm8k", n_train=40, n_test=8)
    corpus = [line for path in (train, test) for line in path.read_text().splitlines()]
    hub = base / "hub"
    snapshot = save_hub_standin(hub, POLICY, corpus, seed=0)
    save_hub_standin(hub, OTHER, corpus, seed=1, hidden=48)
    (base / "site").mkdir()
    (base / "site" / "sitecustomize.py").write_text(AUDIT)
    audit = base / "tiny_world_reads.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_CACHE": str(hub),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(base / "site"), os.environ.get("PYTHONPATH")])),
           "RLRF_AUDIT_ROOT": str(ROOT / "data" / "tiny_world"),
           "RLRF_AUDIT_LOG": str(audit), "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}

    def start(name: str, url: str) -> subprocess.Popen:
        # one thread each: the two runs go side by side on CI's two cores (each run is mostly kernel start-up and
        # imports), and two-thread OpenMP pools sharing two cores stall
        cmd = [str(BIN / "rlrf-nb"), "run", "--recipe", "recipes/qwen2.5-1.5b-gsm8k.yaml", "--name", name,
               "--stages", "01", "02", "03", "04", "05", "-p", "shift_prompts=2", "-p", "export_figures=false",
               *_overrides(base, train, test, str(snapshot))]
        return subprocess.Popen(cmd, cwd=ROOT, env={**env, "RLRF_JUDGE_URL": url, "OMP_NUM_THREADS": "1"},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)

    def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
        try:
            out, err = proc.communicate(timeout=800)
        except subprocess.TimeoutExpired:
            kill_tree(proc.pid)  # the runner and its kernel
            out, err = proc.communicate()
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    serve = JudgeServer(snapshot, base / "serve", env={"OMP_NUM_THREADS": "1"})
    rubric = RubricJudgeServer()
    try:
        serve.start(timeout=120)
        proc_a, proc_b = start("judge-serve", serve.base_url), start("judge-rubric", rubric.base_url)
        a, b = finish(proc_a), finish(proc_b)
    finally:
        serve.kill()
        rubric.stop()
    return {"base": base, "train": train, "test": test, "hub": hub, "audit": audit, "a": a, "b": b,
            "rubric_requests": rubric.requests, "snapshot": snapshot, "env": env}


def _ok(proc):
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]


def _results(world, name):
    return json.loads((world["base"] / "runs" / name / "results.json").read_text())


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_judge_that_never_parses_is_reported_and_every_stage_finishes(world):
    """Run A, transformers serve: notebook 01 raised a pandas KeyError and notebook 03 an IndexError on 0 pairs
    (issue 15, item 4); now the parse failures are counted and nothing is trained."""
    _ok(world["a"])
    res = _results(world, "judge-serve")
    assert res["feedback"]["llm_judge_parse_rate"]["k"] == 0 and res["feedback"]["llm_judge_parse_rate"]["n"] > 0
    assert res["feedback"]["reference_judge_id"] == "verifier/v2"  # item 8: never the LLM judge itself
    assert res["dpo"]["preflight"]["pairs"] == 0
    assert [r["method"] for r in res["rounds"][1:]] == ["none (no pairs)"] * 2
    assert "no pairs to check: nothing will be trained" in world["a"].stdout + \
        (world["base"] / "runs/judge-serve/03_dpo_finetuning.ipynb").read_text()


def test_chat_template_pairs_pass_the_preflight_and_checkpoints_are_merged(world):
    """Run B: ChatML pairs (turn end <|im_end|> + newline) pass the pre-flight (item 1); LoRA adapters are merged
    into plain Qwen2 checkpoints, one per round."""
    from safetensors import safe_open

    _ok(world["b"])
    run = world["base"] / "runs" / "judge-rubric"
    res = _results(world, "judge-rubric")
    pf = res["dpo"]["preflight"]
    assert pf["pairs"] > 0 and pf["end_of_turn"] == "<|im_end|>\n"
    pairs = _jsonl(run / "pairs.jsonl")
    assert pairs and pairs[0]["prompt"][0]["role"] == "user" and pairs[0]["chosen"][0]["role"] == "assistant"
    rounds = res["rounds"]
    assert [r["policy"] for r in rounds] == ["M0", "M1", "M2"] and all(r["method"] == "dpo" for r in rounds[1:])
    m1 = next(run.glob("checkpoints/dpo-M1-*"))
    with safe_open(str(run / "checkpoints/rounds/M2/model.safetensors"), "pt") as fh:
        keys = list(fh.keys())
    for ckpt in (m1, run / "checkpoints/rounds/M1", run / "checkpoints/rounds/M2"):
        assert (ckpt / "model.safetensors").exists() and not (ckpt / "adapter_config.json").exists()
        assert json.loads((ckpt / "config.json").read_text())["architectures"] == ["Qwen2ForCausalLM"]
        assert json.loads((ckpt / "training_log.json").read_text())["method"] == "dpo"
    assert keys and not any("lora" in k or "base_layer" in k for k in keys)
    for ckpt in (m1, run / "checkpoints/rounds/M2"):
        log = json.loads((ckpt / "training_log.json").read_text())
        assert log["lora_merged"] is True and log["placement"] == "cpu, float32"


def test_notebook_05_evaluates_the_test_file_with_shots_from_the_train_file(world):
    """Items 6 and 14: k-shot GSM8K on the test file, shots from the train file, graded both by the kit and by
    lm-eval's strict-match / flexible-extract."""
    _ok(world["b"])
    run = world["base"] / "runs" / "judge-rubric"
    test_q = [json.loads(x)["question"] for x in world["test"].read_text().splitlines()]
    train_q = [json.loads(x)["question"] for x in world["train"].read_text().splitlines()]
    recs = _jsonl(run / "eval/M0/gsm8k.jsonl")
    assert len(recs) == 4 and all(r["k"] == 2 for r in recs)
    assert [r["question"] for r in recs] == test_q[:4]
    assert all(s.startswith("gsm8k-train-") and int(s[-5:]) < len(train_q) for r in recs for s in r["shots"])
    assert all("lm_eval_strict_pred" in r and "lm_eval_flexible_correct" in r for r in recs)
    summary = _results(world, "judge-rubric")["benchmarks"]["summary"]
    assert {"M0", "M1", "M2", "RLRF 1 round"} <= set(summary)
    for model in summary.values():
        assert model["gsm8k_lm_eval_strict"]["n"] == 4 and model["placement"]["device"] == "cpu"
        assert "factscore" not in model  # the bios are the tiny world's: skipped in a real recipe
    je = summary["M0"]["just_eval"]
    assert je["helpfulness"]["n"] == 4 and summary["M0"]["just_eval_judge"].startswith("just-eval:")


def test_the_parsed_feedback_path_runs_end_to_end(world):
    """Run B's judge answered rubric JSON: every judgement parsed, rewards ranked candidates, and the dev slice
    (the tail of the train file) was evaluated after each round (item 7)."""
    _ok(world["b"])
    run = world["base"] / "runs" / "judge-rubric"
    assert world["rubric_requests"] > 20
    fb = _jsonl(run / "feedback.jsonl")
    llm = [r for r in fb if r["judge_id"].startswith("llm:")]
    assert llm and all(r["parse_ok"] and r["reward"] is not None for r in llm)
    res = _results(world, "judge-rubric")
    assert res["feedback"]["llm_judge_parse_rate"]["rate"] == 1.0
    dev = [r["id"] for r in _jsonl(run / "eval/M0/math_dev.jsonl")]
    assert dev == [f"gsm8k-train-{i:05d}" for i in range(37, 40)]  # the tail of train: max(feedback, rounds) = 3


def test_no_tiny_world_data_is_read(world):
    _ok(world["a"])
    _ok(world["b"])
    reads = world["audit"].read_text() if world["audit"].exists() else ""
    assert reads == "", f"files under data/tiny_world were read:\n{reads[:2000]}"
    for name in ("judge-serve", "judge-rubric"):
        for path in (world["base"] / "runs" / name).rglob("*.jsonl"):
            text = path.read_text()
            assert '"math-' not in text and '"bios-' not in text, path  # tiny-world example ids


def test_round_one_shares_notebook_02s_search(world):
    """Item 5: with a Hub id, round 1 keyed its search by sha256 of nothing while notebook 02 used the id: round 1
    searched again. Now round 1 adds no sample to notebook 02's."""
    _ok(world["b"])
    run = world["base"] / "runs" / "judge-rubric"
    samples = _jsonl(run / "samples.jsonl")
    # notebook 01: 3 dev prompts x 2 samples; notebook 02 (= round 1): 3 prompts x 2 samples; nothing else
    assert len(samples) == 3 * 2 + 3 * 2
    assert len(_jsonl(run / "rounds/r2/samples.jsonl")) == 3 * 2  # round 2 searched fresh prompts with M1


def test_two_model_ids_give_different_store_keys_and_stage_hashes(world, monkeypatch):
    """Item 5 and Deliver 3: the sample keys notebook 01 stored are the 1.5B id's; the 0.5B id keys the same prompt
    differently, and switching to it (or changing the judge URL, or a data file) changes the runner's stage hash."""
    from huggingface_hub import constants

    from rlrf_nb.config import load_recipe
    from rlrf_nb.models import model_fingerprint
    from rlrf_nb.runner import _stage_hash, stage_inputs
    from rlrf_nb.store import content_key

    _ok(world["b"])
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(world["hub"]))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    run = world["base"] / "runs" / "judge-rubric"
    rec = _jsonl(run / "samples.jsonl")[0]
    prompt = next(r["prompt"] for r in _jsonl(run / "feedback.jsonl") if r["response_id"] == rec["response_id"])

    def key(model_id):
        return content_key({"model": model_fingerprint(model_id), "prompt": prompt, "decode": rec["decode"],
                            "index": int(rec["response_id"].rsplit("s", 1)[1])})

    assert key(POLICY) == rec["key"] and key(OTHER) != rec["key"]
    monkeypatch.setenv("RLRF_JUDGE_URL", "http://127.0.0.1:1/v1")
    recipe_path = ROOT / "recipes/qwen2.5-1.5b-gsm8k.yaml"
    ovr = {"reflection.prompt_source": str(world["train"]), "eval.gsm8k_source": str(world["test"]),
           "eval.gsm8k_train_source": str(world["train"])}

    def digest(**more):
        return _stage_hash("same recipe text", {}, {}, stage_inputs(load_recipe(recipe_path, {**ovr, **more})))

    base = digest()
    assert digest(**{"m0.pretrained": OTHER}) != base
    monkeypatch.setenv("RLRF_JUDGE_URL", "http://127.0.0.1:2/v1")
    assert digest() != base  # item 10: the judge's URL comes from the environment, not the recipe text
    monkeypatch.setenv("RLRF_JUDGE_URL", "http://127.0.0.1:1/v1")
    assert digest() == base
    data = world["base"] / "train-copy.jsonl"  # a data file is hashed by its content: same content, same hash
    data.write_text(world["train"].read_text())
    assert digest(**{"reflection.prompt_source": str(data)}) == base
    data.write_text(world["train"].read_text().replace("Natalia", "Natalie"))  # edited in place
    assert digest(**{"reflection.prompt_source": str(data)}) != base


def test_the_recipes_judge_section_distils_the_teacher_into_a_small_lora_judge(world):
    """Issue 19, item 4: ``rlrf-nb train-judge`` with the real recipe's ``judge_train`` section on run B, whose
    search was judged by the rubric-JSON server (the stronger judge's URL): the 0.5B stand-in is fine-tuned with LoRA
    on those judgements (TRL's SFTTrainer), merged, saved in safetensors with its ChatML template, served by a real
    ``transformers serve`` on 127.0.0.1 and asked through LLMJudge on held-out prompts. Nothing is downloaded."""
    from safetensors import safe_open

    _ok(world["b"])
    ovr = {"run.runs_dir": world["base"] / "runs", "reflection.prompt_source": world["train"],
           "eval.gsm8k_source": world["test"], "eval.gsm8k_train_source": world["train"], "feedback.n_math": 3,
           "rounds.eval_n_math": 3, "reflection.n_prompts": 3, "rounds.prompts_per_round": 3,
           "judge_train.epochs": 1, "judge_train.batch_size": 2, "judge_train.grad_accum": 1,
           "judge_train.held_out_share": 0.34, "judge_train.n_eval": 2, "judge_train.max_new_tokens": 16,
           "judge_train.logging_steps": 1}
    cmd = [str(BIN / "rlrf-nb"), "train-judge", "--recipe", "recipes/qwen2.5-1.5b-gsm8k.yaml", "--name",
           "judge-rubric", *[x for k, v in ovr.items() for x in ("--set", f"{k}={v}")]]
    proc = subprocess.run(cmd, cwd=ROOT, env={**world["env"], "RLRF_JUDGE_URL": "http://127.0.0.1:9/v1"},
                          capture_output=True, text=True, timeout=600)
    _ok(proc)
    run = world["base"] / "runs" / "judge-rubric"
    res = _results(world, "judge-rubric")["judge_train"]
    assert res["teacher"].startswith("llm:") and res["train_rows"] > 0 and res["steps"] >= 1 and res["phrases"] == 0
    path = Path(res["path"])
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "qwen2" and config["hidden_size"] == 48  # the 0.5B stand-in, not the policy
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if "lora" in k]  # the adapter is merged into plain weights
    assert "<|im_start|>" in (path / "chat_template.jinja").read_text()
    judged = _jsonl(run / "judge_eval.jsonl")
    assert len(judged) == res["report"]["n"] >= 1 and all(j["judge_id"] == res["judge_id"] for j in judged)
    assert res["judge_id"].startswith("learned:")
    for j in judged:  # a random stand-in rarely writes the JSON: each reply is a judgement or a counted failure
        for a in j["feedback"]["aspects"]:
            assert (a["score"] is None) == (not a["parse_ok"]) and (a["parse_ok"] or j["feedback"]["raw"] is not None)
    assert "transformers serve" in proc.stdout and "serve it:" in proc.stdout
