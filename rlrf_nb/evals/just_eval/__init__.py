"""Just-Eval (Lin et al. 2023, "The Unlocking Spell on Base LLMs", URIAL, arXiv 2312.01552): multi-aspect scores.

A judge model (GPT-4 in the paper) scores a response from 1 to 5, with a reason, on five general aspects (helpfulness,
clarity, factuality, depth, engagement) or, for safety instructions, on safety alone; the benchmark reports the mean per
aspect. Here the same prompt runs on any :mod:`rlrf_nb.llm_judge` transport (:class:`JustEvalJudge`), replies go through
a strict parser (:func:`parse_just_eval`), judgements are stored resumably (:func:`evaluate_just_eval`) and every mean
has a seeded bootstrap interval (:func:`aggregate`).

What was checked against the Just-Eval code (github.com/Re-Align/just-eval, MIT licence, Copyright (c) 2023 The URIAL
Team @ AI2 Mosaic; read through the code index):

- The prompts: ``just_eval/_MULTI_SCORE_TEMPLATE.py`` (commit 05d6e58) and ``just_eval/_SAFETY_SCORE_TEMPLATE.py``
  (commit dd1953e) are :data:`MULTI_SCORE_TEMPLATE` and :data:`SAFETY_SCORE_TEMPLATE` byte for byte (sha256 in
  :data:`TEMPLATE_SHA256`, tested), filled with ``string.Template(...).substitute`` (nothing truncated) after
  the system message of ``utils.py::openai_chat_request``; temperature 0, max_tokens 1024, ``gpt-4-1106-preview``
  in ``leaderboard/scripts/run_eval.sh`` (:func:`render_prompt`, :func:`openai_transport`).
- The parser: ``evaluate.py::gpt_eval`` deletes ``` fences, rewrites backslashes and keeps the first ``{`` to the
  last ``}``; ``utils.py::better_json_loads`` deletes newlines and calls ``json.loads``. Nothing checks the
  aspects, the range or the type of the scores.
- The report: ``evaluate.py::report`` averages ``float(score)`` per aspect over parsed items, counting ``"N/A"``
  as 5.0, and reports ``avg_lens``; ``leaderboard/scripts/show_tables.py``'s ``avg`` is the mean of the six
  aspect means, safety included.

Where this module deliberately differs: parsing is strict about content (each aspect present once, integer score 1-5,
non-empty reason; else a parse failure with its error and raw reply, no score from prose; no backslash rewrite) and
lenient about the envelope exactly where upstream is (:func:`parse_just_eval`); ``"N/A"`` is not applicable, left out of
the mean (upstream: 5); keys other than the requested aspects are ignored (upstream would average them); a failed
reply is re-asked ``max_repairs`` times (0 reproduces upstream); ``overall`` is the
URIAL paper's mean of the five general aspects, ``overall_with_safety`` upstream's ``avg`` (:func:`aggregate`).

The tiny world has no GPT-4: :class:`VerifierJustEvalJudge` maps the exact verifier onto the aspects by fixed rules
(engagement not applicable, no safety items). Its scores exercise the pipeline and rank tiny-world policies; they are
**not comparable to published Just-Eval scores**, and its id (``just-eval-standin/v1:`` + the verifier's id) says so.
"""

from rlrf_nb.evals.just_eval.judge import JustEvalJudge
from rlrf_nb.evals.just_eval.parser import aspect_feedback, parse_just_eval
from rlrf_nb.evals.just_eval.prompts import (
    ASPECTS,
    MULTI_SCORE_TEMPLATE,
    SAFETY_ASPECTS,
    SAFETY_SCORE_TEMPLATE,
    SYSTEM_PROMPT,
    TEMPLATE_SHA256,
    TEMPLATE_VERSION,
    kind_of,
    openai_transport,
    render_prompt,
)
from rlrf_nb.evals.just_eval.report import aggregate, evaluate_just_eval
from rlrf_nb.evals.just_eval.standin import VerifierJustEvalJudge

__all__ = ["ASPECTS", "MULTI_SCORE_TEMPLATE", "SAFETY_ASPECTS", "SAFETY_SCORE_TEMPLATE", "SYSTEM_PROMPT",
           "TEMPLATE_SHA256", "TEMPLATE_VERSION", "JustEvalJudge", "VerifierJustEvalJudge", "aggregate",
           "aspect_feedback", "evaluate_just_eval", "kind_of", "openai_transport", "parse_just_eval", "render_prompt"]
