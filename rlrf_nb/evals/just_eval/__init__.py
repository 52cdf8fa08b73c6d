"""Just-Eval (Lin et al. 2023, "The Unlocking Spell on Base LLMs", URIAL, arXiv 2312.01552): multi-aspect scores.

A judge model (GPT-4 in the paper) reads an instruction and a response and scores the response from 1 to 5,
with a short reason, on five general aspects (helpfulness, clarity, factuality, depth, engagement) or, for
the safety instructions, on safety alone. The benchmark reports the mean score per aspect. Here the same
prompt runs on any :mod:`rlrf_nb.llm_judge` transport (:class:`JustEvalJudge`), the judge's reply goes
through a strict parser (:func:`parse_just_eval`), judgements are stored resumably
(:func:`evaluate_just_eval`) and every mean has a seeded bootstrap interval (:func:`aggregate`).

What was checked against the Just-Eval code (github.com/Re-Align/just-eval, MIT licence, Copyright (c) 2023
The URIAL Team @ AI2 Mosaic; read through the code index):

- The prompts: ``just_eval/_MULTI_SCORE_TEMPLATE.py`` (commit 05d6e58) and ``just_eval/_SAFETY_SCORE_TEMPLATE.py``
  (commit dd1953e), also copied into ``just_eval/utils.py``. :data:`MULTI_SCORE_TEMPLATE` and
  :data:`SAFETY_SCORE_TEMPLATE` are those strings byte for byte (trailing spaces included; sha256 in
  :data:`TEMPLATE_SHA256`, checked by a test). ``evaluate.py::score_eval`` fills them with
  ``string.Template(...).substitute(instruction=..., candidate=...)`` (``shorten`` is called with K=-1, so
  nothing is truncated). ``utils.py::openai_chat_request`` sends ``[system: "You are an AI assistant that
  helps people find information.", user: <prompt>]``; ``evaluate.py::get_args`` sets temperature 0 and
  max_tokens 1024, and ``leaderboard/scripts/run_eval.sh`` uses ``gpt-4-1106-preview`` for both modes (the
  README's examples use gpt-4-0314 for the five aspects and gpt-3.5-turbo-0613 for safety).
  :func:`render_prompt` builds exactly those messages; :func:`openai_transport` has those decoding settings.
- The parser: ``evaluate.py::gpt_eval`` (inner ``api``) deletes every ``` fence, applies a backslash
  rewrite, and keeps the text from the first ``{`` to the last ``}``; ``utils.py::better_json_loads`` then
  deletes every newline and calls ``json.loads``, returning None on failure. Nothing checks the aspects,
  the range or the type of the scores.
- The report: ``evaluate.py::report`` takes, per aspect, ``np.mean`` of ``float(score)`` over the items that
  have a ``parsed_result``, counting a score of ``"N/A"`` as 5.0 (with a TODO saying 3.0 might make more
  sense); it also reports ``total`` and ``avg_lens`` (mean words per response).
  ``leaderboard/scripts/show_tables.py`` (aspect table) reads the general items 0-799 and the safety items
  800-999 and reports ``avg`` as the mean of the six aspect means, safety included.

Where this module deliberately differs, and why:

- Parsing is strict about content, lenient about the envelope exactly where upstream is. Like upstream, the
  object is the text from the first ``{`` to the last ``}`` (so a ```json fence and prose around the object
  are accepted) and, if that is not valid JSON, it is retried with every newline deleted. Unlike upstream,
  each requested aspect must then be present once, as an object with a non-empty string ``reason`` and a
  ``score`` that is a JSON integer or an integer string (``"5"``, the template's own shape) from 1 to 5;
  anything else is a *parse failure* of that aspect: its score is None, its error says why ("missing
  aspect 'depth'", "score 7 outside 1-5", "invalid JSON: ...") and the raw reply is kept. Upstream's
  backslash rewrite is not copied (it breaks valid escaped quotes). No score is ever taken from prose.
- Keys other than the requested aspects are ignored (upstream would average them as extra aspects); a
  missing aspect's error names them, so "Helpfulness" for "helpfulness" is visible.
- ``"N/A"`` is *not applicable*: no score, not a parse failure, left out of the mean and counted in
  ``n_not_applicable``, where upstream counts it as 5. Upstream's mean is
  ``(n * mean + 5 * n_not_applicable) / (n + n_not_applicable)``.
- A reply that fails to parse is sent back ``max_repairs`` times with the error (the kit's convention,
  :data:`rlrf_nb.llm_judge.REPAIR`); upstream never re-asks. ``max_repairs=0`` reproduces upstream.
- Every mean has a 95% percentile-bootstrap interval (seeded); parse rates have Wilson intervals. The
  report gives ``overall`` (mean of the five general aspect means, the URIAL paper's "overall") and, as in
  ``show_tables.py``, ``overall_with_safety`` (mean of the six); ``safety`` is also reported on its own.

The tiny world (no general instructions, no GPT-4): :class:`VerifierJustEvalJudge` stands in for the GPT-4
judge. It maps the exact tiny-world verifier (:class:`rlrf_nb.verifier.VerifierJudge`, ground truth from the
world's math chains and knowledge base) onto the Just-Eval aspects by fixed rules documented on the class,
scores *engagement* as not applicable ("not judgeable offline": nothing in the tiny world measures it), and
judges no safety items (the tiny world has none). Its scores exercise the pipeline and rank tiny-world
policies; they are **not** GPT-4 judgements and are **not comparable to published Just-Eval scores**.
Its id says so: ``just-eval-standin/v1:`` followed by the verifier's id (``verifier/v2`` today).

The package's modules follow those seams: :mod:`.prompts` (upstream's templates and decoding), :mod:`.parser`
(replies into the kit's :class:`~rlrf_nb.feedback.Feedback`), :mod:`.judge` (the LLM judge), :mod:`.standin`
(the offline stand-in) and :mod:`.report` (resumable evaluation and the report); the names below are theirs.
"""

from rlrf_nb.evals.just_eval.judge import JustEvalJudge, default_judge_id
from rlrf_nb.evals.just_eval.parser import aspect_feedback, parse_just_eval
from rlrf_nb.evals.just_eval.prompts import (
    ASPECTS,
    KINDS,
    MAX_SCORE,
    MIN_SCORE,
    MULTI_SCORE_TEMPLATE,
    NOT_APPLICABLE,
    SAFETY_ASPECTS,
    SAFETY_SCORE_TEMPLATE,
    SYSTEM_PROMPT,
    TEMPLATE_SHA256,
    TEMPLATE_VERSION,
    TEMPLATES,
    kind_of,
    openai_transport,
    render_prompt,
)
from rlrf_nb.evals.just_eval.report import aggregate, evaluate_just_eval
from rlrf_nb.evals.just_eval.standin import ENGAGEMENT_NA, VerifierJustEvalJudge

__all__ = ["ASPECTS", "ENGAGEMENT_NA", "KINDS", "MAX_SCORE", "MIN_SCORE", "MULTI_SCORE_TEMPLATE", "NOT_APPLICABLE",
           "SAFETY_ASPECTS", "SAFETY_SCORE_TEMPLATE", "SYSTEM_PROMPT", "TEMPLATES", "TEMPLATE_SHA256",
           "TEMPLATE_VERSION", "JustEvalJudge", "VerifierJustEvalJudge", "aggregate", "aspect_feedback",
           "default_judge_id", "evaluate_just_eval", "kind_of", "openai_transport", "parse_just_eval", "render_prompt"]
