"""The paper's trained feedback model (issue 19): a judge LM distilled from a teacher's fine-grained feedback.

In the paper the feedback model is a language model fine-tuned to write per-aspect critiques and scores. Here a
teacher's stored judgements of the policy's own samples and refinements (the verifier in the tiny world; with real
models any judge behind an OpenAI-compatible URL, stored by the same :func:`rlrf_nb.feedback.judge_responses`) become
TRL SFT rows whose prompt is exactly what :class:`rlrf_nb.llm_judge.LLMJudge` sends
(:func:`~rlrf_nb.llm_judge.render_judge_prompt`) and whose completion is exactly the JSON it parses. The judge is
trained with TRL's ``SFTTrainer`` (loss on the completion only, :func:`rlrf_nb.training.train_rs_sft`), saved with
``save_pretrained`` in safetensors, served by ``transformers serve`` and asked through ``LLMJudge``'s HTTP
transport: no new client. :func:`judge_report` measures it against the teacher on prompts it never saw.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from pathlib import Path

from rlrf_nb.feedback import Feedback, agreement, calibrate
from rlrf_nb.llm_judge import render_judge_prompt
from rlrf_nb.rubrics import aspect_specs
from rlrf_nb.stats import bootstrap, percentile_ci, rate

_STEP = re.compile(r"\bstep (\d+)\b", re.IGNORECASE)


def judgement_text(aspects: list[dict]) -> str:
    """The judge's reply for stored aspect feedback (``Feedback.to_dict()["aspects"]``): one JSON object, aspect ->
    ``{"critique", "score"}``, in the shape :func:`rlrf_nb.llm_judge.parse_judgement` accepts."""
    return json.dumps({a["aspect"]: {"critique": a["critique"], "score": a["score"]} for a in aspects},
                      ensure_ascii=False)


def teacher_rows(records: list[dict], rubrics, held_out_share: float = 0.2, seed: int = 0) -> dict[str, list[dict]]:
    """TRL prompt-completion rows from a teacher's judgement records (:func:`rlrf_nb.feedback.judge_responses`), split
    by prompt: ``held_out`` gets ``held_out_share`` of the prompts (a seeded shuffle), so the judge is measured on
    responses to questions it never saw. Records with a parse failure or an unscored aspect are left out, and each
    (prompt, response) appears once. Each row keeps ``example_id``, ``response_id`` and the ``teacher`` feedback."""
    if not 0 <= held_out_share < 1:
        raise ValueError(f"held_out_share must be in [0, 1), got {held_out_share}")
    seen, usable = set(), []
    for r in records:
        aspects = r["feedback"]["aspects"]
        if not r["parse_ok"] or any(a["score"] is None for a in aspects) or (r["prompt"], r["response"]) in seen:
            continue
        seen.add((r["prompt"], r["response"]))
        usable.append(r)
    prompts = sorted({r["example_id"] for r in usable})
    random.Random(seed).shuffle(prompts)
    held = set(prompts[:round(len(prompts) * held_out_share)])
    out: dict[str, list[dict]] = {"train": [], "held_out": []}
    for r in usable:
        aspects = r["feedback"]["aspects"]
        specs = aspect_specs(rubrics, [a["aspect"] for a in aspects])
        out["held_out" if r["example_id"] in held else "train"].append({
            "prompt": render_judge_prompt(r["prompt"], r["response"], specs),
            "completion": [{"role": "assistant", "content": judgement_text(aspects)}],
            "example_id": r["example_id"], "response_id": r["response_id"], "task": r["task"],
            "question": r["prompt"], "response": r["response"], "teacher": r["feedback"]})
    return out


def balanced(rows: list[dict], per_group: int, seed: int = 0) -> list[dict]:
    """``per_group`` rows from each group of (task, the teacher's first aspect score), drawn with replacement where a
    group is smaller (seeded). The teacher's scores are skewed (in world v2's search 89% of math candidates score 1 on
    logical correctness): on the natural mix a judge learns the majority score."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["teacher"]["aspects"][0]["score"]), []).append(r)
    rng = random.Random(seed)
    out = []
    for key in sorted(groups):
        g = groups[key]
        out += rng.sample(g, per_group) if len(g) >= per_group else [rng.choice(g) for _ in range(per_group)]
    rng.shuffle(out)
    return out


def prompt_phrases(rubrics, aspect_sets: list[list[str]], min_chars: int = 8) -> list[str]:
    """The fixed lines of the judge prompt for each aspect set: the system text, the rubrics and the output format,
    i.e. every line two renderings with different questions and responses share (``min_chars`` or longer).
    :func:`train_judge` gives each one token, so a small judge's context holds the whole prompt."""
    out: set[str] = set()
    for names in aspect_sets:
        specs = aspect_specs(rubrics, list(names))
        a, b = ({line for m in render_judge_prompt(q, r, specs) for line in m["content"].split("\n")}
                for q, r in (("Q one?", "R one."), ("Q two?", "R two.")))
        out |= {line for line in a & b if len(line) >= min_chars}
    return sorted(out)


def token_lengths(tokenizer, rows: list[dict]) -> list[int]:
    """Prompt + completion tokens of each row under ``tokenizer``'s chat template: what the judge's context and
    ``max_length`` must hold."""
    ids = [tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=True, return_dict=True)["input_ids"]
           for r in rows]
    return [len(x) for x in ids]


def judge_tokenizer(tokenizer, phrases: list[str]):
    """``tokenizer`` with each of ``phrases`` (:func:`prompt_phrases`) as one added token, matched on the raw text."""
    from tokenizers import AddedToken

    tokenizer.add_tokens([AddedToken(p, normalized=False) for p in phrases])
    return tokenizer


def train_judge(base: str | Path, rows: list[dict], cfg, out_dir: str | Path, *, phrases: list[str] = (),
                place=None) -> dict:
    """Fine-tune the judge LM from ``base`` on ``rows`` (:func:`teacher_rows`) with TRL's ``SFTTrainer`` (``cfg``: a
    :class:`rlrf_nb.config.DPOStageConfig` whose optimiser fields and ``max_length`` apply) and save it in
    safetensors under ``out_dir/judge``. ``phrases`` become one token each (:func:`judge_tokenizer`; their embeddings
    start at the mean of the others and are learnt). A ``max_length`` beyond the base's positions raises them (RoPE
    has no position weights; the fine-tune adapts). Returns :func:`rlrf_nb.training.fit`'s result and ``path``."""
    from rlrf_nb.models import load_policy
    from rlrf_nb.training import save_checkpoint, train_rs_sft

    model, tok = load_policy(str(base))
    if phrases:
        judge_tokenizer(tok, list(phrases))
        model.resize_token_embeddings(len(tok))
    if cfg.max_length > getattr(model.config, "max_position_embeddings", cfg.max_length):
        model.config.max_position_embeddings = cfg.max_length
    tok.model_max_length = max(cfg.max_length, getattr(tok, "model_max_length", 0) or 0)
    out = train_rs_sft(model, tok, rows, dataclasses.replace(cfg, method="rs_sft"), Path(out_dir) / "trainer",
                       place=place)
    path = save_checkpoint(out["model"], tok, Path(out_dir) / "judge",
                           {"base": str(base), "rows": len(rows), "max_length": cfg.max_length, "phrases": len(phrases),
                            "learning_rate": cfg.learning_rate, "epochs": cfg.epochs})
    return {**out, "path": path}


def named_step(critique: str) -> int | None:
    """The first step number a critique names ("Step 2 computes ..."), or None."""
    m = _STEP.search(critique or "")
    return int(m.group(1)) if m else None


def judge_report(judged: list[Feedback], rows: list[dict]) -> dict:
    """The learned judge against its teacher on the same held-out ``rows`` (:func:`teacher_rows`), per aspect: parse
    rate, exact and within-1 agreement, mean signed difference and quadratic kappa (:func:`calibrate`), Krippendorff's
    alpha (interval) of the two as raters (:func:`agreement`) with a bootstrap 95% interval over responses, and on
    math responses the teacher marks wrong, how often the critique names the teacher's first wrong step. Every rate
    has a 95% interval."""
    if len(judged) != len(rows):
        raise ValueError(f"judge_report needs one judgement per row, got {len(judged)} and {len(rows)}")
    teacher = [Feedback.from_dict(r["teacher"]) for r in rows]
    table = calibrate(judged, teacher)
    aspects = {}
    for row in table.to_dict("records"):
        name = row["aspect"]
        votes = [[t.score(name), j.score(name)] for j, t in zip(judged, teacher) if t.score(name) is not None]
        parsed = [v for v in votes if v[1] is not None]
        lo, hi = percentile_ci(bootstrap(parsed, lambda vs: agreement(vs)["alpha"], n_boot=1000, seed=0))
        aspects[name] = {**row, "parse": rate(row["parsed"], row["n"]),
                         "exact_rate": rate(sum(a == b for a, b in parsed), len(parsed)),
                         "alpha": agreement(votes)["alpha"] if parsed else float("nan"),
                         "alpha_ci": [lo, hi]}
    wrong = [(j, r) for j, r in zip(judged, rows)
             if r["task"] == "math" and r["teacher"]["meta"].get("first_error") is not None]
    steps = [named_step(next((a.critique for a in j.aspects if a.aspect == "logical_correctness"), ""))
             == r["teacher"]["meta"]["first_error"] for j, r in wrong]
    return {"n": len(rows), "aspects": aspects, "names_first_wrong_step": rate(sum(steps), len(steps)),
            "parse_all_aspects": rate(sum(j.parse_ok for j in judged), len(judged))}
