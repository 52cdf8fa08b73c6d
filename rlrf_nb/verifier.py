"""The verifier judge: the tiny world's fine-grained feedback model, exact by construction.

Math: every calculator annotation and the final answer are recomputed with the safe parser, and the critique names the
first wrong step and its true value ("Step 2 computes 7*8=54; 7*8 is 56."); a real task's problem (GSM8K, no step data)
has only its final answer checked. Bios: each atomic claim is checked against the knowledge base, and the critique names
every unsupported or contradicted claim with the true value. Scores follow the rubrics in ``data/rubrics/`` (levels
1-5), so the feedback has exactly the shape of an LLM judge's.
"""

from __future__ import annotations

from pathlib import Path

from rlrf_nb.feedback import AspectFeedback, Feedback
from rlrf_nb.paths import resolve_path
from rlrf_nb.tasks import bios, math
from rlrf_nb.tasks.schema import Example


def _fb(rubrics, name: str, score: int, critique: str) -> AspectFeedback:
    r = rubrics[name]
    return AspectFeedback(r.name, score, r.min_score, r.max_score, critique)


def precision_level(precision: float) -> int:
    """The factuality level of a share of correct statements: 5 only when all are, 4 >= 0.8, 3 >= 0.6, 2 >= 0.4,
    else 1 (the factuality rubric's levels; Just-Eval's stand-in uses them for calculations too)."""
    return 5 if precision >= 1 else 4 if precision >= 0.8 else 3 if precision >= 0.6 else 2 if precision >= 0.4 else 1


class VerifierJudge:
    """Judges tiny-world math and bio responses against ground truth (``rubrics``: a ``RubricSet``; ``kb``: name -> KB
    record); ``example`` is required: the verifier judges against its ground truth.
    """

    # The id is part of every judgement's store key: bump the version whenever scoring changes, so a rerun
    # re-judges instead of serving scores computed by older rules.
    id = "verifier/v2"

    def __init__(self, rubrics, kb: dict[str, dict]):
        self.rubrics, self.kb = rubrics, kb

    def truth_key(self, example: Example) -> dict:
        """What a judgement depends on beyond the prompt and response, for the store key: a bio is judged against the
        person's KB record, which the prompt names but does not fix (two worlds can give one person other facts)."""
        return {"kb": self.kb.get(example.meta.get("entity"))} if example.task == "bios" else {}

    def judge(self, prompt: str, response: str, aspects: list[str], example: Example | None = None) -> Feedback:
        if example is None:
            raise ValueError("VerifierJudge needs the example (its ground truth) to judge a response")
        if example.task == "math":
            scores, meta = self._math(response, example)
        elif example.task == "bios":
            scores, meta = self._bios(response, example)
        else:
            raise ValueError(f"VerifierJudge judges math and bios, not task {example.task!r} ({example.id})")
        unknown = [a for a in aspects if a not in scores]
        if unknown:
            raise ValueError(f"VerifierJudge cannot judge aspect(s) {unknown} on {example.task}; "
                             f"it judges {sorted(scores)}")
        return Feedback(self.id, self.rubrics.version, [_fb(self.rubrics, a, *scores[a]) for a in aspects], meta=meta)

    def _math(self, text: str, ex: Example):
        if "steps" not in ex.meta:
            return self._math_answer_only(text, ex)
        steps = ex.meta["steps"]
        c = math.check_example(text, ex)
        n = len(steps)
        # logical correctness (rubric levels): 5 all right; 3 steps right but the final line wrong or
        # missing; otherwise the earlier the first wrong step, the lower (1 at step 1, up to 3 at the last).
        if c.perfect:
            logic = 5
        elif c.first_error is None:
            logic = 3
        elif c.error_kind == "unparseable":
            logic = 1
        else:
            logic = 1 + round(2 * (c.first_error - 1) / n)
        # completeness: every step shown and a '#### N' line.
        final = math.extract_answer(text, "strict")
        shown = min(c.n_steps, n)
        if c.error_kind == "missing_step" or shown < n:
            comp = 1 + round(2 * shown / n)
            comp_note = f"Only {shown} of the {n} needed steps are shown."
        elif final is None:
            comp, comp_note = 3, "The solution does not end with a final answer line '#### N'."
        elif c.n_steps > n:
            comp, comp_note = 4, f"The solution has {c.n_steps} steps; the problem needs {n}."
        else:
            comp, comp_note = 5, "Every step is shown and the solution ends with '#### N'."
        meta = {"correct": c.correct, "first_error": c.first_error, "error_kind": c.error_kind}
        overall = (5, f"The final answer {final} is right.") if c.correct else \
            (2, f"The final answer {final} is wrong.") if final is not None else (1, "There is no final answer.")
        return {"logical_correctness": (logic, c.critique), "completeness": (comp, comp_note),
                "overall_quality": overall}, meta

    def _math_answer_only(self, text: str, ex: Example):
        """A real task's problem (GSM8K) carries its gold answer but not the tiny world's step data, so only the
        final answer is checked: logical correctness 5 when it is right, 2 when wrong, 1 when there is none."""
        final = math.extract_answer(text, "strict")
        correct = math.is_correct(text, ex.answer)
        if correct:
            logic = (5, f"The final answer {final} is right (only the final answer can be checked here).")
        elif final is not None:
            logic = (2, f"The final answer {final} is wrong.")
        else:
            logic = (1, "There is no final answer '#### N' to check.")
        comp = (5, "The solution ends with a final answer line '#### N'.") if final is not None else \
            (3, "The solution does not end with a final answer line '#### N'.")
        meta = {"correct": correct, "first_error": None, "answer_only": True,
                "error_kind": None if correct else "wrong_answer" if final is not None else "no_answer"}
        return {"logical_correctness": logic, "completeness": comp, "overall_quality": logic}, meta

    def _bios(self, text: str, ex: Example):
        name = ex.meta["entity"]
        person = self.kb.get(name)
        claims = bios.check_bio(text, person)
        n = len(claims)
        bad = [c for c in claims if c.status != "supported"]
        precision = (n - len(bad)) / n if n else 0.0
        # factuality: 5 all claims supported; then by the supported fraction.
        if n == 0:
            fact, fact_note = 1, "The response makes no checkable claim."
        elif not bad:
            fact, fact_note = 5, "Every claim is supported by the knowledge base."
        else:
            fact = precision_level(precision)
            fact_note = " ".join(bios.claim_critique(c, name) for c in bad)
        covered = {c.attribute for c in claims if c.attribute and c.status != "unsupported"}
        known = bios.attributes_of(person)
        missing = [a for a in known if a not in covered]
        comp = 1 + round(4 * (len(known) - len(missing)) / len(known))
        comp_note = ("The bio covers every known attribute." if not missing else
                     "The bio does not mention: " + ", ".join(a.replace("_", " ") for a in missing) + ".")
        sents = bios.split_claims(text)
        repeats = len(sents) - len(set(sents))
        unreadable = [c.text for c in claims if c.attribute is None]
        read = max(1, 5 - repeats - len(unreadable))
        if not sents:
            read, read_note = 1, "The response is empty."
        elif read == 5:
            read_note = "Clear, one fact per sentence, no repetition."
        else:
            parts = []
            if repeats:
                parts.append(f"{repeats} sentence(s) are repeated")
            if unreadable:
                parts.append("these sentences are not well-formed facts: " + "; ".join(repr(u) for u in unreadable[:3]))
            note = "; ".join(parts)
            read_note = note[0].upper() + note[1:] + "."
        meta = {"n_claims": n, "n_supported": n - len(bad), "precision": precision,
                "claims": [[c.text, c.status, c.truth] for c in claims]}
        overall = (1 + round(4 * precision), f"{n - len(bad)} of {n} claims are supported.")
        return {"factuality": (fact, fact_note), "completeness": (comp, comp_note),
                "readability": (read, read_note), "overall_quality": overall}, meta


_SERVERS: dict = {}  # learned judge path -> its ModelServer, one per process
# Continuous batching's KV cache takes a share of the device's memory; on a CPU the default share took 13.8 GB of a
# 23 GB machine for the 4 x 128 judge. A tenth (2.3 GB there) holds 32 requests of 1,800 tokens many times over.
CONTINUOUS_BATCHING = ["--continuous-batching", "--cb-max-memory-percent", "0.1"]


def learned_judge_server(path, continuous_batching: bool = False):
    """The process's ``transformers serve`` of the trained judge at ``path`` (with ``--continuous-batching`` when
    asked: several requests decoded together), started at the first call and stopped when the process exits. Its log
    goes to a temporary directory (never beside a committed judge); a failed start raises with the log's tail."""
    import atexit
    import tempfile

    from rlrf_nb.serve import ModelServer

    key = (str(path), continuous_batching)
    srv = _SERVERS.get(key)
    if srv is None or srv.proc is None or srv.proc.poll() is not None:
        srv = ModelServer(path, Path(tempfile.mkdtemp(prefix="rlrf-serve-")),
                          extra=CONTINUOUS_BATCHING if continuous_batching else [])
        srv.start(timeout=300)
        atexit.register(srv.stop)
        _SERVERS[key] = srv
    return srv


def make_learned_judge(cfg, rubrics):
    """``feedback.judge: learned``: the trained judge at ``feedback.learned_judge``, served on 127.0.0.1
    (:func:`learned_judge_server`) and asked through ``LLMJudge`` (:func:`rlrf_nb.judge_model.served_judge`), greedy,
    or a consensus of ``feedback.consensus_k`` seeded samples; its id hashes the judge's weights. With
    ``feedback.concurrency`` > 1 it is asked that many requests at a time, served with continuous batching."""
    from rlrf_nb.judge_model import served_judge

    path = resolve_path(cfg.learned_judge)
    return served_judge(path, learned_judge_server(path, cfg.concurrency > 1).base_url, rubrics,
                        consensus_k=cfg.consensus_k, max_new_tokens=cfg.learned_max_new_tokens,
                        max_repairs=cfg.max_repairs, concurrency=cfg.concurrency)


def make_judge(cfg, rubrics, kb: dict[str, dict]):
    """The main judge of a ``FeedbackConfig``: the verifier (tiny world), the LLM judge, or the learned judge."""
    from rlrf_nb.llm_judge import make_llm_judge

    if cfg.judge == "learned":
        return make_learned_judge(cfg, rubrics)
    return VerifierJudge(rubrics, kb) if cfg.judge == "verifier" else make_llm_judge(cfg, rubrics)
