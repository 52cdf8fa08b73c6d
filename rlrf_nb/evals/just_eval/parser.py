"""Just-Eval's judge replies parsed strictly into the kit's judgement type (:class:`rlrf_nb.feedback.Feedback`).

The envelope is upstream's (first ``{`` to last ``}``, newlines deleted on a second try); each aspect is then
checked by the kit judge's own checker (:func:`rlrf_nb.judge_json.check_aspect`) with Just-Eval's field name.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from rlrf_nb.evals.just_eval.prompts import MAX_SCORE, MIN_SCORE, NOT_APPLICABLE
from rlrf_nb.feedback import AspectFeedback
from rlrf_nb.judge_json import DECODER, JsonObject, check_aspects
from rlrf_nb.rubrics import AspectSpec


def aspect_feedback(aspect: str, score: int | None, reason: str, parse_ok: bool = True, error: str | None = None,
                    applicable: bool = True) -> AspectFeedback:
    """One Just-Eval aspect's judgement: an :class:`AspectFeedback` on Just-Eval's 1-5 scale, the reason as its
    critique."""
    return AspectFeedback(aspect, score, MIN_SCORE, MAX_SCORE, reason, parse_ok, error, applicable)


def _load_object(raw: str) -> tuple[JsonObject | None, str | None]:
    """The JSON object in ``raw`` the way upstream finds it (first ``{`` to last ``}``, newlines deleted on a
    second try), or (None, why not). Decoded by the kit's duplicate-key-aware :data:`rlrf_nb.judge_json.DECODER`
    (json.loads silently keeps the last repeated key)."""
    text = raw.strip()
    if not text:
        return None, "empty output"
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        return None, "invalid JSON: no JSON object in the output"
    body, errors = text[start:end + 1], []
    # as is, then as upstream's better_json_loads retries: every newline deleted (raw newlines inside strings)
    for candidate in dict.fromkeys((body, body.replace("\n", ""))):
        try:
            return DECODER.decode(candidate), None
        except json.JSONDecodeError as e:
            errors.append(e)
    return None, f"invalid JSON: {errors[0]}"


def parse_just_eval(raw: str, aspects: Sequence[str]) -> tuple[list[AspectFeedback], str | None]:
    """One :class:`AspectFeedback` per name in ``aspects`` (same order) from a judge reply, and an overall error (None
    exactly when every aspect parsed; "N/A" parses, as not applicable).

    The envelope is upstream's (first ``{`` to last ``}``: a fence or prose around it is fine; two objects, a truncated
    one or none fail every aspect). Each aspect is then checked by :func:`rlrf_nb.judge_json.check_aspect` with field
    "reason" and a score that is a JSON integer or integer string from 1 to 5 (``5`` or ``"5"``; not ``4.5``, ``true``
    or ``"[score from 1 to 5]"``), or ``"N/A"``; present once; other keys are ignored. A failed aspect has score None
    and an error saying why ("missing aspect 'depth'", "score 7 outside 1-5", "invalid JSON: ...").
    """
    names = list(aspects)
    obj, error = _load_object(raw)
    if obj is None:
        return [aspect_feedback(n, None, "", parse_ok=False, error=error) for n in names], error
    return check_aspects(obj, [AspectSpec(n, n, MIN_SCORE, MAX_SCORE, "") for n in names], text_field="reason",
                         int_strings=True, not_applicable=NOT_APPLICABLE)
