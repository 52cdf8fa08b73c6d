"""Judge replies as strict JSON: one decoder and one aspect checker for every judge format (paper §3.1).

The kit's LLM judge and Just-Eval read replies with :data:`DECODER` (duplicate keys remembered; hostile nesting or
numbers are invalid JSON, never a crash) and check each aspect with :func:`check_aspect`: a score only when the reply
says so exactly, else a parse failure that says why. No digit is ever pulled out of prose.
"""

from __future__ import annotations

import json
import re

from rlrf_nb.feedback import AspectFeedback
from rlrf_nb.rubrics import AspectSpec

_FENCE = re.compile(r"\A```(?:json)?[ \t]*\n(.*?)\n?```\Z", re.DOTALL | re.IGNORECASE)


class JsonObject(dict):
    """A JSON object that remembers which keys appeared more than once (json.loads keeps the last)."""

    duplicates: list[str]


def _pairs_hook(pairs: list[tuple]) -> JsonObject:
    obj = JsonObject()
    obj.duplicates = []
    for k, v in pairs:
        if k in obj:  # seen before
            obj.duplicates.append(k)
        obj[k] = v
    return obj


class _Decoder(json.JSONDecoder):
    """Nesting too deep or an integer over 4300 digits (a broken or hostile reply) is a :class:`json.JSONDecodeError`
    like any invalid JSON, never an error that would stop a judging run."""

    def raw_decode(self, s: str, idx: int = 0):
        try:
            return super().raw_decode(s, idx)
        except json.JSONDecodeError:
            raise
        except RecursionError:
            raise json.JSONDecodeError("nested too deeply", s, idx) from None
        except ValueError as e:  # int('1' * 5000): "Exceeds the limit (4300 digits) for integer string conversion"
            raise json.JSONDecodeError(f"number too long ({e})", s, idx) from None


# The one JSON decoder of every judge reply (the kit's judge and Just-Eval): objects are :class:`JsonObject`.
DECODER = _Decoder(object_pairs_hook=_pairs_hook)
_INT_STRING = re.compile(r"\s*[0-9]{1,9}\s*")  # bounded: int() of a 5,000-digit string raises


def load_json_object(text: str) -> tuple[dict | None, str | None]:
    """The single JSON object that ``text`` consists of (whitespace and one ```` ```json ```` fence allowed around it),
    or (None, why not): prose around it, a second object, invalid or truncated JSON, a top-level non-object.
    """
    body = text.strip()
    m = _FENCE.match(body)
    if m:
        body = m.group(1).strip()
    if not body:
        return None, "empty output"
    try:
        obj, end = DECODER.raw_decode(body)
    except json.JSONDecodeError as e:
        start = body.find("{")
        if start <= 0:
            return None, f"invalid JSON: {e}"
        try:  # prose before an object: say so rather than "Expecting value: char 0"
            DECODER.raw_decode(body, start)
        except json.JSONDecodeError as e2:
            return None, f"invalid JSON: {e2}"
        return None, "extra text outside the JSON object"
    if body[end:].strip():
        return None, "extra text outside the JSON object"
    if not isinstance(obj, dict):
        return None, f"expected a JSON object, got {type(obj).__name__}"
    return obj, None


def check_aspect(spec: AspectSpec, obj: JsonObject, unknown: list[str], text_field: str = "critique",
                 int_strings: bool = False, not_applicable: str | None = None) -> AspectFeedback:
    """``spec``'s judgement in the decoded reply ``obj``, checked strictly: a scored :class:`AspectFeedback`, or a parse
    failure saying why (a score is never guessed). Formats differ only in ``text_field`` (the kit's ``"critique"``,
    Just-Eval's ``"reason"``), ``int_strings`` (whether ``"5"`` is a score) and ``not_applicable`` (a score value,
    Just-Eval's ``"N/A"``, meaning *not applicable*); ``unknown``: the reply's other keys, named when an aspect is
    missing."""
    def fail(error: str, text: str = "") -> AspectFeedback:
        return AspectFeedback(spec.name, None, spec.min_score, spec.max_score, text, parse_ok=False, error=error)

    if spec.name not in obj:
        hint = f" (other keys: {', '.join(map(repr, unknown))})" if unknown else ""
        return fail(f"missing aspect {spec.name!r}{hint}")
    if spec.name in obj.duplicates:
        return fail(f"aspect {spec.name!r} appears more than once")
    value = obj[spec.name]
    if not isinstance(value, dict):
        return fail(f"expected an object with '{text_field}' and 'score', got {type(value).__name__}")
    text = value.get(text_field)
    shown_text = text if isinstance(text, str) else ""
    if value.duplicates:
        return fail(f"duplicate key {value.duplicates[0]!r}", shown_text)
    if text_field not in value:
        return fail(f"missing field {text_field!r}")
    if not isinstance(text, str) or not text.strip():
        return fail(f"field {text_field!r} must be a non-empty string", shown_text)
    if "score" not in value:
        return fail("missing field 'score'", text)
    score = value["score"]
    if not_applicable and isinstance(score, str) and score.strip().upper() == not_applicable:
        return AspectFeedback(spec.name, None, spec.min_score, spec.max_score, text, applicable=False)
    if type(score) is int:  # rejects bool (a subclass of int), float 4.0/4.5, null
        n = score
    elif int_strings and isinstance(score, str) and _INT_STRING.fullmatch(score):
        n = int(score)
    else:
        shape = 'a JSON integer or a string like "5"' if int_strings else "a JSON integer"
        shown = json.dumps(score)  # cut to 60 characters for the message; the raw reply keeps all of it
        shown = shown if len(shown) <= 60 else f"{shown[:60]}... ({len(shown)} characters)"
        return fail(f"field 'score' must be an integer from {spec.min_score} to {spec.max_score} ({shape}), "
                    f"got {shown}", text)
    if not spec.min_score <= n <= spec.max_score:
        return fail(f"score {n} outside {spec.min_score}-{spec.max_score}", text)
    return AspectFeedback(spec.name, n, spec.min_score, spec.max_score, text)


def check_aspects(obj: JsonObject, specs: list[AspectSpec], **fmt) -> tuple[list[AspectFeedback], str | None]:
    """:func:`check_aspect` for each spec (same order), and the overall error: None exactly when every aspect
    parsed, else each failure as ``"<aspect>: <error>"``. ``fmt``: :func:`check_aspect`'s format options."""
    names = {s.name for s in specs}
    unknown = [k for k in obj if k not in names]
    results = [check_aspect(s, obj, unknown, **fmt) for s in specs]
    errors = [f"{a.aspect}: {a.error}" for a in results if not a.parse_ok]
    return results, ("; ".join(errors) or None)
