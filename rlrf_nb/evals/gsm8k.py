"""GSM8K (Cobbe et al. 2021, arXiv 2110.14168) graded the way lm-evaluation-harness grades it, with our extractor.

The kit grades math at training time with :func:`rlrf_nb.tasks.math.extract_answer`; this module evaluates with the
*same* function, so a policy is never rewarded for a format the benchmark rejects (or the other way round). Tiny-world
problems and real GSM8K rows (:func:`rlrf_nb.tasks.loaders.load_gsm8k`) are graded alike, both ending their
``reference`` in ``#### N``: greedy k-shot chain of thought cut at the first stop sequence, with two grades side by
side (issue 15): **the kit's** (``strict``: the first ``#### N``; ``flexible``: the last number; looser than lm-eval
where :data:`LM_EVAL_DIFFERENCES` says) and **lm-eval's** (``gsm8k.yaml`` version 3.0 exactly, against the full
reference solution: the numbers to set beside published ones). ``strict_flexible_gap`` measures right answers not
written in the required format.

**A retracted answer** ("The answer is 7. Wait, actually it's 9.") grades 7 under the kit's strict, on purpose: strict
takes the *first* stated answer, as lm-eval's strict-match takes the first ``#### N``; the last one would reward hedging
("The answer is 7. The answer is 9."). Flexible reads 9; lm-eval's strict-match finds nothing.

What was checked against lm-evaluation-harness (``lm_eval/tasks/gsm8k/gsm8k.yaml`` version 3.0, ``gsm8k-cot.yaml``,
``RegexFilter`` in ``lm_eval/filters/extraction.py``; read through the code index):

- strict-match: ``re.findall(r"#### (\\-?[0-9\\.\\,]+)")``, then ``take_first``; gsm8k-cot's uses
  ``The answer is (\\-?[0-9\\.\\,]+).`` instead.
- flexible-extract: ``re.findall(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")`` with ``group_select: -1`` (the last match, its
  non-empty group), stripped; no match gives ``"[invalid]"``.
- ``exact_match`` with ``ignore_case: true``, ``ignore_punctuation: false`` and ``regexes_to_ignore``
  ``[",", "\\$", "(?s).*#### ", "\\.$"]`` applied in that order to prediction and gold, compared as strings.
- ``until: ["Question:", "</s>", "<|im_end|>"]``, ``do_sample: false``; prompt ``"Question: {question}\\nAnswer:"``,
  shots joined by ``"\\n\\n"``, the target after a space; ``num_fewshot`` 5 (gsm8k) or 8 (gsm8k-cot).

``tests/test_gsm8k.py`` runs every extraction case through a re-implementation of this pipeline (and lm-eval's own
``RegexFilter`` when installed) and allows a mismatch only under a name in :data:`LM_EVAL_DIFFERENCES`.

Where the protocol differs: :data:`DEFAULT_STOP` adds ``"\\n\\n\\n"`` (a rambling small model stops there);
``style="multiturn"`` puts the bare question in the user turn (``style="single"`` is lm-eval's text prompt exactly);
exemplars are the first ``k`` given (a stable store key; lm-eval draws them at random with a fixed seed); generation
runs to ``max_new_tokens`` or EOS and is cut afterwards (greedy: the same kept prefix).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from rlrf_nb import generation
from rlrf_nb.prompts import chat
from rlrf_nb.stats import rate
from rlrf_nb.store import RunStore, content_key
from rlrf_nb.tasks.math import check_solution, extract_answer, is_correct
from rlrf_nb.tasks.schema import Example

log = logging.getLogger(__name__)

DEFAULT_STOP: tuple[str, ...] = ("Question:", "</s>", "<|im_end|>", "\n\n\n")
STYLES = ("multiturn", "single")

# lm-evaluation-harness, lm_eval/tasks/gsm8k/gsm8k.yaml (metadata version 3.0; the same in lm-eval 0.4.13):
# generation_kwargs.until, the two filter_list regexes, and exact_match's settings, verbatim.
LM_EVAL_UNTIL: tuple[str, ...] = ("Question:", "</s>", "<|im_end|>")
LM_EVAL_STRICT_REGEX = r"#### (\-?[0-9\.\,]+)"  # strict-match: regex (group_select 0), take_first
LM_EVAL_FLEXIBLE_REGEX = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"  # flexible-extract: regex, group_select -1, take_first
LM_EVAL_IGNORE: tuple[str, ...] = (",", "\\$", "(?s).*#### ", "\\.$")  # regexes_to_ignore, applied in order
LM_EVAL_INVALID = "[invalid]"  # RegexFilter's fallback when nothing matches
_LM_EVAL = {"strict": (re.compile(LM_EVAL_STRICT_REGEX), 0), "flexible": (re.compile(LM_EVAL_FLEXIBLE_REGEX), -1)}


def lm_eval_filter(text: str, mode: str) -> str:
    """lm-eval's ``RegexFilter`` on one response: ``findall``, the match at ``group_select`` (the first for
    strict-match, the last for flexible-extract), the first non-empty group of a tuple, stripped; ``"[invalid]"``
    when nothing matches. (``take_first`` then keeps the first of the repeats; there is one.)"""
    if mode not in _LM_EVAL:
        raise ValueError(f"mode must be 'strict' or 'flexible', got {mode!r}")
    regex, group_select = _LM_EVAL[mode]
    matches = regex.findall(text)
    if not matches:
        return LM_EVAL_INVALID
    match = matches[group_select]
    if isinstance(match, tuple):
        match = next((g for g in match if g), LM_EVAL_INVALID)
    return match.strip()


def lm_eval_normalize(s: str) -> str:
    """What lm-eval's ``exact_match`` compares: ``regexes_to_ignore`` removed in order, then lower-cased
    (``ignore_case: true``; ``ignore_punctuation: false``)."""
    for pattern in LM_EVAL_IGNORE:
        s = re.sub(pattern, "", s)
    return s.lower()


def lm_eval_exact_match(prediction: str, target: str) -> bool:
    """lm-eval's gsm8k ``exact_match`` of a filtered ``prediction`` against ``target`` (lm-eval's
    ``doc_to_target``: the full reference answer, ``...#### N``): string equality after
    :func:`lm_eval_normalize` of both. ``3.50`` against a gold of 3.5 is wrong here, as in lm-eval."""
    return lm_eval_normalize(prediction) == lm_eval_normalize(target)


def lm_eval_target(example: Example) -> str:
    """lm-eval's target for an example: its reference solution when that ends in ``#### N`` (GSM8K's ``answer``
    field, the tiny world's solutions), else ``#### <gold>``."""
    ref = example.reference or ""
    return ref if "#### " in ref else f"#### {example.answer}"

# Name -> what our grading does and what lm-eval's does instead. Each name is exercised by a case in
# tests/test_gsm8k.py; a case may disagree with lm-eval only under a name listed here.
LM_EVAL_DIFFERENCES: dict[str, str] = {
    "numeric_equality": (
        "Predictions and gold are compared as numbers: 5.0 == 5, 3.50 == 3.5, 007 == 7, .5 == 0.5, "
        "1,234.50 == 1234.5. lm-eval compares strings after removing ',', '$' and one trailing '.', so a "
        "model that writes '#### 5.0' for gold 5 is marked wrong there and right here."),
    "answer_is_fallback": (
        "With no '#### N', strict takes 'The answer is N' (also 'the final answer is', 'The answer is: $N'): "
        "the union of lm-eval's gsm8k strict-match ('####' only) and gsm8k-cot strict-match ('The answer is' "
        "only, case-sensitive, and needing one more character after the number, so 'The answer is 12' at the "
        "very end of the text reads as 1 there). '#### N' wins when both are present."),
    "hash_format": (
        "'####' may be followed by no space, several spaces or tabs and a '$' ('####42', '####  42', '#### $5', "
        "'#### -$5'), on the same line. lm-eval's strict regex needs exactly '#### ' and then one of -0-9., "
        "so it finds no answer in these."),
    "digitless_match": (
        "A run of punctuation with no digit ('...', '$$') is never an answer. lm-eval's flexible regex "
        "[$0-9.,]{2,} matches one, so a trailing '...' or '$$' becomes the 'last number' ('5 apples...' reads "
        "as '..', '5...' as '5..'), and strict reads '#### ...' as '..'."),
}


def few_shot_messages(question: str, exemplars: Sequence[Example] = (), k: int = 8,
                      style: str = "multiturn") -> list[dict]:
    """The k-shot chain-of-thought conversation for ``question``, from the first ``k`` exemplars whose prompt is not
    ``question`` itself (evaluating on the exemplars' own split never shows a problem its answer). ``multiturn``: a
    user/assistant pair per shot, then the question (k=0 is exactly what the kit's policies train on); ``single``:
    lm-eval's ``Question: ...\\nAnswer:`` text prompt, for base models. ``k`` is a parameter because context is: the
    tiny M0 has 384 positions and is evaluated zero-shot.
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    shots = select_shots(question, exemplars, k)
    if style == "multiturn":
        return [m for ex in shots for m in chat(ex.prompt, ex.reference)] + chat(question)
    blocks = [f"Question: {ex.prompt}\nAnswer: {ex.reference}" for ex in shots]
    return [{"role": "user", "content": "\n\n".join(blocks + [f"Question: {question}\nAnswer:"])}]


def select_shots(question: str, exemplars: Sequence[Example], k: int) -> list[Example]:
    """The first ``k`` exemplars whose prompt is not ``question``; an error if there are fewer."""
    if not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    shots = [ex for ex in exemplars if ex.prompt != question][:k]
    if len(shots) < k:
        raise ValueError(f"k={k} shots requested but only {len(shots)} exemplar(s) given (other than the "
                         f"question itself); pass more train-split examples or a smaller k")
    for ex in shots:
        if not ex.reference or not ex.reference.strip():
            raise ValueError(f"exemplar {ex.id!r}: field 'reference' is empty; a shot needs a worked solution")
    return shots


def truncate_at_stop(text: str, stop: Sequence[str] = DEFAULT_STOP) -> tuple[str, str | None]:
    """``text`` cut just before the earliest stop sequence, and that sequence (None when none occurs); as lm-eval's
    ``until`` (earliest in the text, not first in ``stop``). Without the cut, flexible extraction would read the number
    of a question the model goes on to invent.
    """
    if isinstance(stop, str):
        raise TypeError(f"stop must be a sequence of strings, got the single string {stop!r}; wrap it in a list")
    cut, hit = len(text), None
    for s in stop:
        if not isinstance(s, str) or not s:
            raise ValueError(f"stop sequences must be non-empty strings, got {s!r} in {list(stop)!r}")
        i = text.find(s)
        if i != -1 and i < cut:
            cut, hit = i, s
    return text[:cut], hit


def grade_output(output: str, gold: str, stop: Sequence[str] = DEFAULT_STOP, target: str | None = None) -> dict:
    """Cut ``output`` at the stop sequences and grade it both ways against ``gold`` (the kit's grade), and with
    lm-eval's filters and exact match against ``target`` (default ``#### <gold>``), on the output cut at
    lm-eval's own :data:`LM_EVAL_UNTIL`."""
    response, hit = truncate_at_stop(output, stop)
    lm_response, _ = truncate_at_stop(output, LM_EVAL_UNTIL)
    target = f"#### {gold}" if target is None else target
    lm = {mode: lm_eval_filter(lm_response, mode) for mode in ("strict", "flexible")}
    return {"response": response, "truncated": hit is not None, "stop_hit": hit,
            "strict_pred": extract_answer(response, "strict"), "flexible_pred": extract_answer(response, "flexible"),
            "strict_correct": is_correct(response, gold, "strict"),
            "flexible_correct": is_correct(response, gold, "flexible"),
            "lm_eval_strict_pred": lm["strict"], "lm_eval_flexible_pred": lm["flexible"],
            "lm_eval_strict_correct": lm_eval_exact_match(lm["strict"], target),
            "lm_eval_flexible_correct": lm_eval_exact_match(lm["flexible"], target)}


def _check_context(model, tokenizer, examples: list[Example], convs: list[list[dict]], max_new_tokens: int,
                   k: int) -> None:
    """Refuse a prompt longer than the model's context; warn when prompt + max_new_tokens does not fit (a RoPE model
    generates garbage past ``max_position_embeddings`` without an error, which would look like a real 0%).
    """
    ctx = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if not ctx or tokenizer is None:
        return
    too_long = 0
    for ex, text in zip(examples, generation.render_prompts(tokenizer, convs)):
        n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if n >= ctx:
            raise ValueError(f"example {ex.id!r}: the prompt is {n} tokens but the model's context is {ctx} "
                             f"(config.max_position_embeddings); use fewer shots than k={k}")
        too_long += n + max_new_tokens > ctx
    if too_long:
        log.warning("%d of %d prompts leave fewer than max_new_tokens=%d positions of the %d-token context; "
                    "long answers will be cut", too_long, len(examples), max_new_tokens, ctx)


def evaluate_gsm8k(model, tokenizer, fingerprint: str, examples: Sequence[Example], store: RunStore,
                   policy_id: str, *, exemplars: Sequence[Example] = (), k: int = 0, style: str = "multiturn",
                   max_new_tokens: int = 256, batch_size: int = 32, stop: Sequence[str] = DEFAULT_STOP,
                   workers=None) -> dict:
    """Greedy k-shot accuracy on ``examples``, strict and flexible side by side, each with a 95% interval.

    One record per example (``eval/<policy_id>/gsm8k``: ``id``, ``question``, ``gold``, shot ids, raw ``output``, cut
    ``response``, ``truncated``, ``stop_hit``, and both grades' predictions and correctness from :func:`grade_output`),
    keyed by fingerprint, full prompt and decoding, so a rerun generates nothing. Cutting and grading are redone from
    the raw output on every call, so a new ``stop`` or extractor applies to old records (a warning counts those that
    then grade differently). Returns the ``strict``, ``flexible``, ``lm_eval_strict``, ``lm_eval_flexible`` and
    ``truncated`` rates (:func:`rlrf_nb.stats.rate`), ``n``, ``strict_flexible_gap`` (flexible minus strict) and the
    ``records`` in example order. A prompt longer than the model's context is a ``ValueError``. With ``workers``
    (:func:`rlrf_nb.generation.sampling_processes`) the batches run in those processes, with the same outputs.
    """
    truncate_at_stop("", stop)  # a malformed stop list fails here, before any generation
    examples = list(examples)
    for ex in examples:
        if ex.answer is None or not str(ex.answer).strip():
            raise ValueError(f"example {ex.id!r}: field 'answer' is empty; GSM8K grading needs the gold number")
    # (example, conversation, shot ids) per example; identical inputs give identical keys.
    items = [(ex, few_shot_messages(ex.prompt, exemplars, k, style),
              [s.id for s in select_shots(ex.prompt, exemplars, k)]) for ex in examples]
    decode = {"max_new_tokens": max_new_tokens, "do_sample": False}

    def key(item) -> str:
        return content_key({"model": fingerprint, "prompt": item[1], "decode": decode})

    def job(batch: list) -> tuple[list, dict]:
        exs, convs = [it[0] for it in batch], [it[1] for it in batch]
        _check_context(model, tokenizer, exs, convs, max_new_tokens, k)
        return convs, {"batch_size": len(batch), "progress": False, **decode}

    def run(batch: list, outs: list) -> list[dict]:
        return [{"id": ex.id, "question": ex.prompt, "gold": ex.answer, "policy": policy_id, "k": k,
                 "style": style, "shots": shots, "decode": decode, "output": o[0],
                 **grade_output(o[0], ex.answer, stop, lm_eval_target(ex))}
                for (ex, _, shots), o in zip(batch, outs)]

    name = f"eval/{policy_id}/gsm8k"
    stored = store.map_batches(name, items, key, run, batch_size=batch_size, desc=f"gsm8k ({policy_id})",
                               imap=generation.store_imap(model, tokenizer, job, workers))
    records, regraded = [], 0
    for ex, rec in zip(examples, stored):
        fresh = grade_output(rec["output"], ex.answer, stop, lm_eval_target(ex))
        regraded += any(rec.get(f) != v for f, v in fresh.items())
        # Identical prompts share one stored record; the example's own id and gold are what it is graded as.
        row = {**rec, "id": ex.id, "question": ex.prompt, "gold": ex.answer, **fresh}
        if "steps" in ex.meta:  # the tiny world: also "every step right", the measure chance cannot pass
            row["perfect"] = check_solution(row["response"], ex.meta["steps"], ex.answer).perfect
        records.append(row)
    if regraded:
        log.warning("%s: %d of %d stored records grade differently now (stop sequences or the extractor "
                    "changed since they were written); returning the current grading", name, regraded, len(records))
    n = len(records)
    rates = {m: rate(sum(r[f"{m}_correct"] for r in records), n)
             for m in ("strict", "flexible", "lm_eval_strict", "lm_eval_flexible")}
    return {**rates, "n": n, "strict_flexible_gap": rates["flexible"]["rate"] - rates["strict"]["rate"],
            "truncated": rate(sum(r["truncated"] for r in records), n), "records": records,
            **({"perfect": rate(sum(r["perfect"] for r in records), n)} if records and "perfect" in records[0]
               else {})}

