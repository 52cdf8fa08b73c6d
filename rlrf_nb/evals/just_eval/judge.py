"""Just-Eval's LLM judge: upstream's prompt on any of the kit's transports, the reply parsed strictly."""

from __future__ import annotations

import os
from collections.abc import Sequence

from rlrf_nb.evals.just_eval.parser import parse_just_eval
from rlrf_nb.evals.just_eval.prompts import KINDS, TEMPLATE_VERSION, kind_of, render_prompt
from rlrf_nb.feedback import Feedback
from rlrf_nb.llm_judge import ask_with_repairs


def default_judge_id(transport) -> str:
    """``just-eval:<model>@<endpoint>`` from ``transport.describe()``: names the model and where it runs, so two
    judges never share stored judgements; the API key is never part of it (only its variable's name exists)."""
    d = transport.describe()
    where = f"@{d['base_url']}" if d.get("base_url") else ""
    return f"just-eval:{d.get('model', type(transport).__name__)}{where}"


class JustEvalJudge:
    """Just-Eval's prompt on any transport (``complete(messages) -> str`` and ``describe() -> dict``), parsed by
    :func:`~rlrf_nb.evals.just_eval.parser.parse_just_eval`. A failed reply is re-asked at most ``max_repairs`` times (0
    reproduces upstream), the conversation being the prompt, the last reply and the kit's repair request; a failure
    that survives stays one, with the raw text. Transport errors propagate: an unreachable judge is not a parse failure.
    """

    def __init__(self, transport, judge_id: str | None = None, max_repairs: int = 1):
        if max_repairs < 0:
            raise ValueError(f"max_repairs must be >= 0, got {max_repairs}")
        self.transport, self.max_repairs = transport, max_repairs
        self.id = judge_id or default_judge_id(transport)
        key = os.environ.get(transport.describe().get("api_key_env") or "", "")  # only an HTTP transport has one
        if len(key) >= 8 and key in self.id:
            raise ValueError("judge_id contains the API key; name the model and endpoint instead")

    def describe(self) -> dict:
        return {**self.transport.describe(), "judge_id": self.id, "max_repairs": self.max_repairs}

    def judge(self, instruction: str, response: str, aspects: Sequence[str], example=None) -> Feedback:
        """Scores of ``response`` on ``aspects`` (all five general ones, or safety); ``example`` is ignored (an
        LLM judge has no ground truth). ``meta`` holds every attempt's raw text and parse error."""
        kind = kind_of(aspects)
        names = list(KINDS[kind])
        results, raw, raws, errors = ask_with_repairs(
            self.transport, render_prompt(instruction, response, names), lambda text: parse_just_eval(text, names),
            self.max_repairs, self.id)
        return Feedback(self.id, TEMPLATE_VERSION[kind], results, raw=raw, attempts=len(raws),
                        meta={"raw_attempts": raws, "parse_errors": errors, "judge": self.describe()})
