"""The trained feedback model (issue 19): teacher rows in LLMJudge's exact format, a split by prompt, the report
against the teacher, and a tiny judge trained for a few steps by TRL's SFTTrainer, then served by a real
``transformers serve`` on 127.0.0.1 and asked through LLMJudge's HTTP transport."""

import dataclasses
import json
from pathlib import Path

import pytest
from faults import JudgeServer  # the real `transformers serve` of the HTTP judge tests

from rlrf_nb.config import DPOStageConfig
from rlrf_nb.feedback import AspectFeedback, Feedback, judge_responses
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
from rlrf_nb.store import RunStore
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
    assert json.loads((out["path"] / "generation_config.json").read_text())["do_sample"] is True
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
    # feedback.judge: learned, as the search and the rounds use it: a server per process, seeded sampled votes
    from rlrf_nb import verifier
    from rlrf_nb.config import ConfigError, FeedbackConfig

    with pytest.raises(ConfigError, match="learned_judge"):
        FeedbackConfig(judge="learned")
    cfg = FeedbackConfig(judge="learned", learned_judge=str(out["path"]), consensus_k=2, learned_max_new_tokens=24,
                         max_repairs=0)
    try:
        judge = verifier.make_judge(cfg, RUBRICS, {})
        r = rows["held_out"][0]
        first, again = (judge.judge(r["question"], r["response"], ASPECTS) for _ in range(2))
        assert judge.id.endswith("/k2") and verifier.make_judge(cfg, RUBRICS, {}).id == judge.id
        assert len(verifier._SERVERS) == 1  # the second judge reuses the running server
        assert first.raw == again.raw and first.meta["votes"] == again.meta["votes"]  # the same seeded samples
        a, b = first.raw.split("\n---\n")
        assert a != b  # two seeds, two samples (transformers serve samples only if the judge's config says so)
        # feedback.concurrency: greedy requests in flight together (continuous batching) store the same records
        with pytest.raises(ConfigError, match="concurrency"):
            dataclasses.replace(cfg, concurrency=4)  # a sampled consensus over transformers serve: one seed
        store_rows = [{"example": Example(f"math-x-{i}", "math", "dev", r["question"]), "response_id": f"r{i}",
                       "response": r["response"]} for i, r in enumerate(rows["held_out"][:6])]
        recs = {}
        for n in (1, 4):
            judge = verifier.make_judge(dataclasses.replace(cfg, consensus_k=1, concurrency=n), RUBRICS, {})
            assert judge.concurrency == n
            recs[n] = judge_responses(RunStore(tmp_path / f"c{n}"), "feedback", judge, store_rows, RUBRICS,
                                      aspects=ASPECTS)
        assert [r["feedback"] for r in recs[4]] == [r["feedback"] for r in recs[1]]
        assert len(verifier._SERVERS) == 2  # the continuous-batching server is its own
    finally:
        for srv in verifier._SERVERS.values():
            srv.stop()
        verifier._SERVERS.clear()


def test_worked_critique_shows_each_step_before_the_first_wrong_one():
    ex = Example("w1", "math", "rl", "Ava has 120 apples. She gets 305 more. She gives 211 to Bo. How many?",
                 "She gets 305 more. 120+305: ... So Ava has 120+305=<<120+305=425>>425 apples.\n"
                 "She gives 211 to Bo. 425-211: ... So Ava has 425-211=<<425-211=214>>214 apples.\n#### 214", "214",
                 ["math"], {"steps": [[120, "+", 305, 425], [425, "-", 211, 214]]})
    from rlrf_nb.judge_model import worked_critique

    wrong = ex.reference.replace("425-211=<<425-211=214>>214", "425-241=<<425-241=184>>184").replace("214", "184")
    fb = JUDGE.judge(ex.prompt, wrong, ASPECTS, ex)
    lc = fb.aspects[0]
    text = worked_critique(wrong, ex, lc.critique, fb.meta["first_error"])
    assert text == (f"1: 'She gets 305 more.' 120+305=425 ok. 2: 'She gives 211 to Bo.' {lc.critique}")
    assert named_step(text) == 2 == fb.meta["first_error"]  # the worked steps do not say "step"
    right = JUDGE.judge(ex.prompt, ex.reference, ASPECTS, ex)
    assert worked_critique(ex.reference, ex, right.aspects[0].critique, None) == (
        "1: 'She gets 305 more.' 120+305=425 ok. 2: 'She gives 211 to Bo.' 425-211=214 ok. "
        + right.aspects[0].critique)
    recs = records(3)
    plain = teacher_rows(recs, RUBRICS, held_out_share=0.0)["train"]
    worked = teacher_rows(recs, RUBRICS, held_out_share=0.0, examples={r["example_id"]: example(
        int(r["example_id"][1:]), 3 + int(r["example_id"][1:]), 4) for r in recs})["train"]
    for p, w in zip(plain, worked):  # the same scores and teacher; only the logic critique shows its working
        pj, wj = json.loads(p["completion"][0]["content"]), json.loads(w["completion"][0]["content"])
        assert pj["completeness"] == wj["completeness"] and p["teacher"] == w["teacher"]
        assert pj["logical_correctness"]["score"] == wj["logical_correctness"]["score"]
        assert wj["logical_correctness"]["critique"].endswith(pj["logical_correctness"]["critique"])
        assert wj["logical_correctness"]["critique"].startswith("1: 'She gets 4 more.'")


def test_served_judge_ids_name_the_weights_and_sampled_votes_are_seeded(tmp_path):
    from rlrf_nb.judge_model import served_judge, weights_id

    for name, text in (("config.json", "{}"), ("model.safetensors", "w1"), ("tokenizer.json", "t")):
        (tmp_path / name).write_text(text)
    first = weights_id(tmp_path)
    greedy = served_judge(tmp_path, "http://127.0.0.1:1/v1", RUBRICS)
    three = served_judge(tmp_path, "http://127.0.0.1:2/v1", RUBRICS, consensus_k=3)
    assert greedy.id == f"learned:{first}/cap768" and three.id == f"learned:{first}/cap768/k3"  # no port in it
    assert served_judge(tmp_path, "http://127.0.0.1:1/v1", RUBRICS, max_new_tokens=64, max_repairs=1).id == \
        f"learned:{first}/cap64/repairs1"  # a lower cap truncates replies: other records
    seeds = [j.transport.seed for j in three.judges]
    assert seeds == [0, 1, 2] and greedy.transport.seed is None and greedy.transport.temperature == 0.0
    msgs = [{"role": "user", "content": "judge this"}]
    t0, t1 = three.judges[0].transport, three.judges[1].transport
    assert t0.request_seed(msgs) == t0.request_seed(list(msgs)) != t1.request_seed(msgs)
    assert t0.request_seed(msgs) != t0.request_seed([{"role": "user", "content": "judge that"}])
    assert 0 <= t0.request_seed(msgs) < 2 ** 31
    (tmp_path / "model.safetensors").write_text("w2")  # retrained: a new id, so no stored judgement is reused
    assert weights_id(tmp_path) != first
    with pytest.raises(ValueError, match="consensus_k"):
        served_judge(tmp_path, "http://127.0.0.1:1/v1", RUBRICS, consensus_k=0)


def test_report_table_calibration_pairs_and_reading():
    from rlrf_nb import plots, readings
    from rlrf_nb.judge_model import as_teacher_rows, report_table, score_pairs

    recs = records(4)
    held = [dict(r, judge_id="learned") for r in recs]
    held[1] = dict(held[1], feedback={**held[1]["feedback"], "aspects": [
        dict(a, score=5) for a in held[1]["feedback"]["aspects"]]})  # the judge calls a wrong response right
    by_id = {r["response_id"]: r for r in recs}
    rep = judge_report([Feedback.from_dict(r["feedback"]) for r in held], as_teacher_rows(held, by_id))
    table = report_table({"greedy": rep})
    assert list(table["aspect"]) == ASPECTS and table.loc[0, "parse"].startswith("1.00 [")
    pairs = score_pairs(held, by_id)
    assert len(pairs["logical_correctness"]) == len(recs) and (1, 5) in pairs["logical_correctness"]
    fig = plots.judge_calibration(pairs)
    assert len(fig.data) == 2 and fig.data[0].text[4][0] == 1  # judge 5 on a teacher 1: one response
    text = readings.learned_judge({"greedy": rep})
    assert "α" in text and "bar" in text and "first wrong step" in text
    assert "No learned judge" in readings.learned_judge({})


def test_model_server_names_the_model_and_log_when_serve_fails(tmp_path):
    from rlrf_nb.serve import ModelServer

    srv = ModelServer(tmp_path / "no-such-model", tmp_path / "serve")
    with pytest.raises(RuntimeError, match=r"no-such-model.*serve-1\.log"):
        srv.start(timeout=60)
    assert srv.base_url.startswith("http://127.0.0.1:") and not srv.healthy()


@pytest.mark.timeout(300)
def test_train_judge_command_on_the_tiny_world(tmp_path):
    """``rlrf-nb train-judge`` on a run whose feedback.jsonl holds the verifier's judgements: rows, phrases, a few
    steps, the saved judge served and measured; a second call reuses the trained judge and the stored judgements;
    a missing teacher file and a mix of judges are errors that say what to set."""
    if not (M0 / "config.json").exists():
        pytest.skip(f"{M0} has no model yet")
    from rlrf_nb.cli import main
    from rlrf_nb.jsonl import read_jsonl

    run = tmp_path / "runs" / "j"
    run.mkdir(parents=True)
    recs = [dict(r, judge_id="verifier/v2") for r in records(6)]
    (run / "feedback.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    args = ["train-judge", "--recipe", "recipes/tiny-smoke.yaml", "--name", "j", "--set",
            f"run.runs_dir={tmp_path / 'runs'}", "--set", f"judge_train.base={M0}", "--set", "judge_train.phrases=true",
            "--set", "judge_train.batch_size=4", "--set", "judge_train.held_out_share=0.34", "--set",
            "judge_train.n_eval=2", "--set", "judge_train.eval_balance=1", "--set", "judge_train.max_new_tokens=16",
            "--set", "judge_train.logging_steps=1"]
    assert main(args) == 0
    res = json.loads((run / "results.json").read_text())["judge_train"]
    assert res["reused"] is False and res["steps"] >= 2 and res["phrases"] > 10 and res["report"]["n"] == 2
    assert res["report"]["stratified"]["n"] == 2  # one row per (task, teacher score) group: logic 1 and 5
    assert res["teacher"] == "verifier/v2" and len(list(read_jsonl(run / "judge_eval.jsonl"))) <= 4
    assert main(args) == 0
    again = json.loads((run / "results.json").read_text())["judge_train"]
    assert again["reused"] is True and again["path"] == res["path"] and again["report"] == res["report"]
    (run / "feedback.jsonl").write_text("".join(json.dumps(dict(r, judge_id=f"j{i % 2}")) + "\n"
                                                for i, r in enumerate(recs)))
    with pytest.raises(ValueError, match="teacher_judge"):
        main(args)
    with pytest.raises(FileNotFoundError, match="nothing.jsonl"):
        main(args + ["--set", "judge_train.teacher_artifacts=[nothing.jsonl]"])
