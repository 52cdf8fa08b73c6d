"""The trained feedback model (issue 19): teacher rows in LLMJudge's exact format, a split by prompt, the report
against the teacher, and a tiny judge trained for a few steps by TRL's SFTTrainer, then served by a real
``transformers serve`` on 127.0.0.1 and asked through LLMJudge's HTTP transport."""

import dataclasses
import json
from pathlib import Path

import pytest
from faults import JudgeServer  # the real `transformers serve` of the HTTP judge tests

from rlrf_nb.config import DPOStageConfig
from rlrf_nb.feedback import AspectFeedback, Feedback
from rlrf_nb.judge_model import (
    balanced,
    judge_report,
    judge_tokenizer,
    judgement_text,
    named_step,
    prompt_phrases,
    teacher_rows,
    token_lengths,
    train_judge,
)
from rlrf_nb.llm_judge import LLMJudge, OpenAITransport, parse_judgement
from rlrf_nb.rubrics import aspect_specs, load_rubric_set
from rlrf_nb.tasks.schema import Example
from rlrf_nb.verifier import VerifierJudge

ROOT = Path(__file__).resolve().parents[1]
M0 = ROOT / "data" / "tiny_world" / "m0"
RUBRICS = load_rubric_set()
JUDGE = VerifierJudge(RUBRICS, {})
ASPECTS = ["logical_correctness", "completeness"]


def example(i: int, a: int, b: int) -> Example:
    c = a + b
    return Example(f"m{i}", "math", "rl", f"Ava has {a} apples. She gets {b} more. How many?",
                   f"She gets {b} more, so Ava has {a}+{b}=<<{a}+{b}={c}>>{c} apples.\n#### {c}", str(c), ["math"],
                   {"steps": [[a, "+", b, c]]})


def records(n: int = 6) -> list[dict]:
    """The verifier's judgement records (``judge_responses``' shape) of a right and a wrong response per problem."""
    out = []
    for i in range(n):
        ex = example(i, 3 + i, 4)
        wrong = ex.reference.replace(f"={ex.answer}>>{ex.answer}", f"={int(ex.answer) + 1}>>{int(ex.answer) + 1}")
        wrong = wrong.replace(f"#### {ex.answer}", f"#### {int(ex.answer) + 1}")
        for k, text in enumerate([ex.reference, wrong, ex.reference]):  # the third repeats the first
            fb = JUDGE.judge(ex.prompt, text, ASPECTS, ex)
            out.append({"example_id": ex.id, "response_id": f"{ex.id}/s{k}", "task": "math", "prompt": ex.prompt,
                        "response": text, "parse_ok": fb.parse_ok, "feedback": fb.to_dict()})
    return out


def test_judgement_text_is_what_the_llm_judge_parses():
    for rec in records(2):
        specs = aspect_specs(RUBRICS, ASPECTS)
        got, error = parse_judgement(judgement_text(rec["feedback"]["aspects"]), specs)
        assert error is None
        assert [(a.aspect, a.score, a.critique) for a in got] == [
            (a["aspect"], a["score"], a["critique"]) for a in rec["feedback"]["aspects"]]
    quoted = [{"aspect": "logical_correctness", "critique": 'Step 1 says "7"; ünïcode \\ ok', "score": 2}]
    got, error = parse_judgement(judgement_text(quoted), aspect_specs(RUBRICS, ["logical_correctness"]))
    assert error is None and got[0].critique == quoted[0]["critique"]


def test_teacher_rows_split_by_prompt_and_drop_failures_and_repeats():
    recs = records(10)
    bad = dict(recs[0], parse_ok=False, feedback={**recs[0]["feedback"], "aspects": [
        dict(a, score=None, parse_ok=False, error="x") for a in recs[0]["feedback"]["aspects"]]})
    rows = teacher_rows(recs + [bad], RUBRICS, held_out_share=0.3, seed=1)
    train, held = {r["example_id"] for r in rows["train"]}, {r["example_id"] for r in rows["held_out"]}
    assert not train & held and len(held) == 3 and len(train) == 7
    assert len(rows["train"]) + len(rows["held_out"]) == 20  # 2 distinct responses per problem, the failure left out
    row = rows["train"][0]
    assert row["prompt"][0]["role"] == "system" and row["question"] in row["prompt"][1]["content"]
    assert json.loads(row["completion"][0]["content"])["logical_correctness"]["score"] in (1, 2, 3, 4, 5)
    assert teacher_rows(recs, RUBRICS, 0.3, seed=1) == teacher_rows(recs, RUBRICS, 0.3, seed=1)


def test_balanced_draws_each_teacher_score_group_equally():
    rows = teacher_rows(records(10), RUBRICS, held_out_share=0.0)["train"]
    got = balanced(rows, 7, seed=3)
    scores = [r["teacher"]["aspects"][0]["score"] for r in got]
    assert len(got) == 14 and scores.count(5) == 7 and got == balanced(rows, 7, seed=3)
    assert len({r["response_id"] for r in balanced(rows, 3)}) == 6  # groups larger than 3: drawn without repeats


def test_judge_report_against_the_teacher():
    rows = teacher_rows(records(8), RUBRICS, held_out_share=0.5)["held_out"]
    teacher = [Feedback.from_dict(r["teacher"]) for r in rows]
    perfect = judge_report(teacher, rows)
    lc = perfect["aspects"]["logical_correctness"]
    assert lc["alpha"] == pytest.approx(1.0) and lc["exact"] == 1.0 and lc["parse"]["rate"] == 1.0
    assert perfect["names_first_wrong_step"]["rate"] == 1.0 and perfect["names_first_wrong_step"]["n"] == 4

    def failed(fb):
        return Feedback("learned", fb.rubric_version, [AspectFeedback(a.aspect, None, 1, 5, "", False, "invalid JSON")
                                                       for a in fb.aspects], raw="not json")
    half = [failed(t) if i % 2 else t for i, t in enumerate(teacher)]
    rep = judge_report(half, rows)
    assert rep["aspects"]["completeness"]["parse"]["rate"] == 0.5 and rep["parse_all_aspects"]["rate"] == 0.5
    assert named_step("Step 2 computes 5+4=10; 5+4 is 9.") == 2 and named_step("All steps are right.") is None


@pytest.mark.timeout(300)
def test_tiny_judge_trains_then_judges_through_transformers_serve(tmp_path):
    """A few SFT steps on M0 (not a judge: what matters is the path), saved in safetensors, served by a real
    ``transformers serve`` on loopback, judging held-out rows through LLMJudge's HTTP transport; every reply is a
    judgement or a counted parse failure with its raw text."""
    if not (M0 / "config.json").exists():
        pytest.skip(f"{M0} has no model yet")
    rows = teacher_rows(records(6), RUBRICS, held_out_share=0.34)
    from rlrf_nb.models import load_policy

    _, tok = load_policy(str(M0))
    phrases = prompt_phrases(RUBRICS, [ASPECTS])
    plain = max(token_lengths(tok, rows["train"]))
    longest = max(token_lengths(judge_tokenizer(tok, phrases), rows["train"]))
    assert len(phrases) > 10 and longest < plain / 3  # the fixed prompt text is one token per line
    cfg = dataclasses.replace(DPOStageConfig(), learning_rate=1e-3, epochs=1.0, batch_size=4, warmup_ratio=0.0,
                              max_length=longest, logging_steps=1)
    out = train_judge(M0, rows["train"], cfg, tmp_path / "judge", phrases=phrases)
    assert out["steps"] >= 2 and (out["path"] / "model.safetensors").exists()
    assert json.loads((out["path"] / "config.json").read_text())["max_position_embeddings"] >= longest
    saved = load_policy(str(out["path"]))[1]
    assert max(token_lengths(saved, rows["train"])) == longest  # the served tokenizer has the phrases
    srv = JudgeServer(out["path"], tmp_path / "serve")
    try:
        srv.start(timeout=120)
        judge = LLMJudge(OpenAITransport(srv.base_url, str(out["path"]), max_retries=0, max_tokens=48),
                         lambda names: aspect_specs(RUBRICS, names), RUBRICS.version, "learned", max_repairs=0)
        judged = [judge.judge(r["question"], r["response"], ASPECTS) for r in rows["held_out"][:3]]
    finally:
        srv.kill()
    for fb in judged:
        for a in fb.aspects:
            assert a.parse_ok == (a.score is not None) and (a.parse_ok or (a.error and fb.raw is not None))
    rep = judge_report(judged, rows["held_out"][:3])
    assert rep["n"] == 3 and set(rep["aspects"]) == set(ASPECTS)
