"""The pre-flight check of notebook 03 (and every DPO run): the pairs tokenized exactly as TRL's DPO processing
tokenizes them, checked before any step (:func:`preflight`); :func:`describe_preflight` says what it means.
"""

from __future__ import annotations

from collections.abc import Mapping

from rlrf_nb.tasks import math


class PreflightError(ValueError):
    """The tokenized pairs are not what DPO should train on; the message lists each problem with its pair id."""


def _ids(out) -> list[int]:
    ids = out["input_ids"] if isinstance(out, Mapping) else out  # a BatchEncoding, or the ids
    return list(ids)


def tokenize_pair(tokenizer, pair: dict) -> dict:
    """Token ids of a conversational pair as TRL's DPO processing builds them: the prompt rendered with the
    generation prompt, and each completion as the rest of the rendered full conversation."""
    prompt = _ids(tokenizer.apply_chat_template(pair["prompt"], add_generation_prompt=True, tokenize=True))
    out = {"prompt_ids": prompt}
    for side in ("chosen", "rejected"):
        full = _ids(tokenizer.apply_chat_template(pair["prompt"] + pair[side], tokenize=True))
        out[f"{side}_prefix_ok"] = full[: len(prompt)] == prompt
        out[f"{side}_ids"] = full[len(prompt):]
    return out


_SENTINEL = "\u2063rlrf-end-of-turn-probe\u2063"


def end_of_turn_ids(tokenizer) -> list[int]:
    """The token ids the chat template writes after an assistant message's content, read by rendering a probe, never
    assumed (``<|end|>`` for M0, ``<|im_end|>`` then ``"\\n"`` for ChatML, so a completion's last token need not be
    EOS). Raises ValueError when the template drops or
    rewrites the assistant content."""
    probe = [{"role": "user", "content": "x"}, {"role": "assistant", "content": _SENTINEL}]
    text = tokenizer.apply_chat_template(probe, tokenize=False)
    if text.count(_SENTINEL) != 1:
        raise ValueError(f"the chat template of '{tokenizer.name_or_path}' does not render the assistant's content "
                         "once and unchanged; cannot tell where a completion ends")
    tail = text.split(_SENTINEL, 1)[1]
    return list(tokenizer(tail, add_special_tokens=False)["input_ids"]) if tail else []


def preflight(pairs: list[dict], tokenizer, max_length: int, n_show: int = 2) -> dict:
    """Check every pair's tokenization before training; raise :class:`PreflightError` listing the problems by pair id.

    Problems: a prompt that is not a prefix of the rendered conversation; more than one BOS; a completion that does not
    end with the template's own end of turn (:func:`end_of_turn_ids`) or holds more EOS or end-of-turn tokens than that
    ending (a doubled EOS, e.g. an end token typed into the text); a pair
    longer than ``max_length`` (TRL cuts the end: the final answer is lost), and chosen == rejected after that cut.
    Returns token-length statistics, the end-of-turn text and ``n_show`` decoded pairs.
    """
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    eot = end_of_turn_ids(tokenizer)
    specials = set(tokenizer.all_special_ids)
    # the special tokens that may appear in a completion, and how often: those of the ending (and EOS, once there)
    allowed = {t: eot.count(t) for t in set(eot) & specials}
    if eos is not None:
        allowed.setdefault(eos, eot.count(eos))
    problems, lengths, shown = [], [], []
    for p in pairs:
        pid = p.get("pair_id", "?")
        t = tokenize_pair(tokenizer, p)
        if not (t["chosen_prefix_ok"] and t["rejected_prefix_ok"]):
            problems.append(f"pair {pid}: the prompt's tokens are not a prefix of the full conversation "
                            "(chat template renders the prompt differently alone)")
        if bos is not None and t["prompt_ids"].count(bos) > 1:
            problems.append(f"pair {pid}: doubled BOS ({t['prompt_ids'].count(bos)} BOS tokens in the prompt)")
        for side in ("chosen", "rejected"):
            ids = t[f"{side}_ids"]
            extra = [tok for tok, n in allowed.items() if ids.count(tok) > n]
            if extra:
                kind = "doubled EOS" if eos in extra else "doubled end-of-turn token"
                problems.append(f"pair {pid}: {kind} in {side} ({ids.count(extra[0])} x "
                                f"{tokenizer.convert_ids_to_tokens(extra[0])!r}, the template's turn end is "
                                f"{tokenizer.decode(eot)!r}): {tokenizer.decode(ids[-12:])!r}")
            elif eot and ids[-len(eot):] != eot:
                problems.append(f"pair {pid}: {side} does not end with the template's end of turn "
                                f"{tokenizer.decode(eot)!r} (missing EOS): {tokenizer.decode(ids[-12:])!r}")
        total = {s: len(t["prompt_ids"]) + len(t[f"{s}_ids"]) for s in ("chosen", "rejected")}
        lengths.append(max(total.values()))
        if max(total.values()) > max_length:
            keep = max_length - len(t["prompt_ids"])
            cut = {s: t[f"{s}_ids"][: max(0, keep)] for s in ("chosen", "rejected")}
            what = []
            for s in ("chosen", "rejected"):
                text = p[s][-1]["content"] if isinstance(p[s], list) else p[s]
                final = math.extract_answer(text, "strict")
                if total[s] > max_length and final is not None and \
                        math.extract_answer(tokenizer.decode(cut[s], skip_special_tokens=True), "strict") != final:
                    what.append(f"truncated final answer in {s}")
            if cut["chosen"] == cut["rejected"]:
                what.append("chosen == rejected after truncation")
            problems.append(f"pair {pid}: {max(total.values())} tokens > max_length={max_length}"
                            + (f" ({'; '.join(what)})" if what else " (the completion end would be cut)"))
        if len(shown) < n_show:
            shown.append({s: tokenizer.decode(t["prompt_ids"] + t[f"{s}_ids"]) for s in ("chosen", "rejected")})
    if problems:
        head = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise PreflightError(f"pre-flight check failed on {len(problems)} problem(s) in {len(pairs)} pairs:\n  "
                             f"{head}{more}")
    s = sorted(lengths)
    return {"pairs": len(pairs), "max_tokens": s[-1] if s else 0,
            "p95_tokens": s[int(0.95 * (len(s) - 1))] if s else 0, "max_length": max_length,
            "end_of_turn": tokenizer.decode(eot), "decoded": shown}


def describe_preflight(report: dict) -> str:
    """Notebook 03's account of a :func:`preflight` report: the longest pair against ``max_length``, the template's
    turn end, and one decoded pair with its special tokens; or, with no pairs, that there is nothing to check."""
    if not report["pairs"]:
        return ("no pairs to check: nothing will be trained (every candidate tied, failed to parse, or was "
                "rejected; see the judge's parse rate in notebooks 01 and 02)")
    lines = [f"{report['pairs']} pairs; longest {report['max_tokens']} tokens (95th percentile {report['p95_tokens']});"
             f" max_length {report['max_length']}: no pair is truncated",
             f"each completion ends with the template's end of turn {report['end_of_turn']!r}",
             "one tokenized pair, decoded with its special tokens:", "", report["decoded"][0]["chosen"]]
    return "\n".join(lines)
