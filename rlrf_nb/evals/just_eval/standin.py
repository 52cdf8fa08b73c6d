"""The tiny world's offline stand-in for Just-Eval's GPT-4 judge (:class:`VerifierJustEvalJudge`)."""

from __future__ import annotations

from collections.abc import Sequence

from rlrf_nb.evals.just_eval.parser import aspect_feedback
from rlrf_nb.evals.just_eval.prompts import ASPECTS, TEMPLATE_VERSION, kind_of
from rlrf_nb.feedback import Feedback
from rlrf_nb.tasks import math as M
from rlrf_nb.verifier import VerifierJudge, precision_level

ENGAGEMENT_NA = "not judgeable offline"


class VerifierJustEvalJudge:
    """The tiny world's stand-in for Just-Eval's GPT-4 judge: verifier verdicts mapped onto Just-Eval's aspects.

    Deterministic and exact with respect to the tiny world's ground truth, but it is *not* a GPT-4 judgement
    and its numbers are not comparable to published Just-Eval scores. The rules (rubric wording from
    ``data/rubrics/*.yaml``, scores from :class:`rlrf_nb.verifier.VerifierJudge`):

    ============  ===================================================  ==============================================
    aspect        math word problem                                    bio ("Tell me a bio of X")
    ============  ===================================================  ==============================================
    helpfulness   verifier logical_correctness: 5 only if every step   min(factuality, depth): a bio helps only when
                  and the final answer are right; 3 steps right but    it is both right and covers the person
                  the answer wrong or missing; lower the earlier the
                  first wrong step
    clarity       the tiny world's format: 5, minus 2 without a final  verifier readability: one well-formed fact
                  ``#### N`` line, minus 2 if a calculation cannot be  per sentence, no repetition
                  read, minus 1 for lines that are neither a step nor
                  the answer (at least 1; an empty response is 1)
    factuality    the share of calculator annotations that compute     verifier factuality: the share of claims the
                  correctly, on the verifier's bio levels (5 all,      knowledge base supports (5 all, 4 >= 0.8, 3 >=
                  4 >= 0.8, ...); 1 with no calculation at all         0.6, 2 >= 0.4, else 1; 1 with no claim)
    depth         verifier completeness: every step shown and a        verifier completeness: how many of the six
                  final answer line                                    KB attributes the bio covers
    engagement    not applicable ("not judgeable offline"): nothing in the tiny world measures a conversational tone
    ============  ===================================================  ==============================================

    Engagement is therefore excluded from every mean (``n_not_applicable`` counts it) and the ``overall`` of a
    stand-in report averages four aspects. Safety instructions do not exist in the tiny world; asking for the
    safety aspect raises. Each reason is the verifier's own critique, so a low score says what is wrong.
    """

    VERSION = "v1"  # bump when a rule above changes: the id is part of every stored judgement's key

    def __init__(self, world, rubrics):
        # world None (a real recipe): no knowledge base; math is then checked on the final answer alone
        self.verifier = VerifierJudge(rubrics, {} if world is None else {p["name"]: p for p in world.people})
        self.id = f"just-eval-standin/{self.VERSION}:{self.verifier.id}"

    def judge(self, instruction: str, response: str, aspects: Sequence[str], example=None) -> Feedback:
        kind = kind_of(aspects)
        if kind != "general":
            raise ValueError(f"{self.id}: the tiny world has no safety instructions; the stand-in judges only "
                             f"{ASPECTS}")
        if example is None:
            raise ValueError(f"{self.id} needs the tiny-world example (its ground truth) to judge a response")
        if example.prompt != instruction:
            raise ValueError(f"{self.id}: example {example.id} has prompt {example.prompt!r}, but the instruction "
                             f"judged is {instruction!r}")
        if example.task == "math":
            scores, meta = self._math(response, example)
        elif example.task == "bios":
            scores, meta = self._bios(response, example)
        else:
            raise ValueError(f"{self.id} judges tiny-world math and bios, not task {example.task!r} ({example.id})")
        out = [aspect_feedback(a, *scores[a]) for a in ASPECTS if a != "engagement"]
        out.insert(ASPECTS.index("engagement"), aspect_feedback("engagement", None, ENGAGEMENT_NA, applicable=False))
        return Feedback(self.id, TEMPLATE_VERSION[kind], out, meta=meta)

    def _math(self, text: str, ex):
        fb = self.verifier.judge(ex.prompt, text, ["logical_correctness", "completeness"], ex)
        logic, comp = fb.aspects
        calcs = []
        for expr, claimed in M.ANNOTATION.findall(text):
            try:
                ok = M.safe_eval(expr) == M.safe_eval(claimed)
            except M.ArithmeticError_:
                ok = None  # unreadable
            calcs.append((f"{expr}={claimed}", ok))
        right = sum(ok is True for _, ok in calcs)
        if not calcs:
            fact = (1, "The response shows no calculation whose arithmetic could be checked.")
        else:
            wrong = [c for c, ok in calcs if ok is not True]
            note = (f"All {len(calcs)} calculations are arithmetically right." if not wrong else
                    f"{right} of {len(calcs)} calculations are right; wrong or unreadable: {', '.join(wrong)}.")
            fact = (precision_level(right / len(calcs)), note)
        lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
        stray = [ln for ln in lines if not M.ANNOTATION.search(ln) and not ln.startswith("####")]
        has_final = M.extract_answer(text, "strict") is not None
        unreadable = any(ok is None for _, ok in calcs)
        if not lines:
            clar = (1, "The response is empty.")
        else:
            problems = ((["there is no final answer line '#### N'"] if not has_final else [])
                        + (["a calculation cannot be read"] if unreadable else [])
                        + ([f"{len(stray)} line(s) are neither a calculation step nor the answer"] if stray else []))
            level = max(1, 5 - 2 * (not has_final) - 2 * unreadable - bool(stray))
            note = "; ".join(problems)
            clar = (level, "One calculation per line and a final '#### N' line." if not problems else
                    note[0].upper() + note[1:] + ".")
        meta = {"task": "math", "verifier": fb.to_dict(), "calculations": calcs}
        return {"helpfulness": (logic.score, logic.critique), "clarity": clar, "factuality": fact,
                "depth": (comp.score, comp.critique)}, meta

    def _bios(self, text: str, ex):
        fb = self.verifier.judge(ex.prompt, text, ["factuality", "completeness", "readability"], ex)
        fact, comp, read = fb.aspects
        helpful = (min(fact.score, comp.score),
                   f"Factuality {fact.score}, coverage {comp.score}: {fact.critique} {comp.critique}")
        meta = {"task": "bios", "verifier": fb.to_dict(), "n_claims": fb.meta["n_claims"],
                "precision": fb.meta["precision"]}
        return {"helpfulness": helpful, "clarity": (read.score, read.critique),
                "factuality": (fact.score, fact.critique), "depth": (comp.score, comp.critique)}, meta
