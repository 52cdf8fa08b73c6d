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
import hashlib
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


def worked_critique(response: str, example, critique: str, first_error: int | None) -> str:
    """The verifier's logical-correctness ``critique`` of a math ``response`` with its working shown: each step before
    ``first_error`` as "i: '<the problem's sentence>' <expr>=<value> ok.", then the first wrong step's sentence and the
    critique itself. A judge that writes this checks the steps in order, quoting what each should follow, before it
    scores; the score and the sentence naming the wrong step are the teacher's."""
    from rlrf_nb.tasks.math import ANNOTATION, step_sentences

    sentences, found = step_sentences(example), ANNOTATION.findall(response)
    stop = len(found) if first_error is None else first_error - 1
    parts = [f"{i}: '{s}' {expr}={value} ok." for i, (s, (expr, value)) in enumerate(zip(sentences, found[:stop]), 1)]
    if first_error is not None and first_error <= len(sentences):
        parts.append(f"{first_error}: '{sentences[first_error - 1]}'")
    return " ".join(parts + [critique])


def teacher_rows(records: list[dict], rubrics, held_out_share: float = 0.2, seed: int = 0,
                 examples: dict | None = None) -> dict[str, list[dict]]:
    """TRL prompt-completion rows from a teacher's judgement records (:func:`rlrf_nb.feedback.judge_responses`), split
    by prompt: ``held_out`` gets ``held_out_share`` of the prompts (a seeded shuffle), so the judge is measured on
    responses to questions it never saw. Records with a parse failure or an unscored aspect are left out, and each
    (prompt, response) appears once. Each row keeps ``example_id``, ``response_id`` and the ``teacher`` feedback.
    With ``examples`` (id -> :class:`~rlrf_nb.tasks.Example` with ``meta["steps"]``) a math response's
    logical-correctness critique in the completion shows its working (:func:`worked_critique`); scores are unchanged."""
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
        ex = (examples or {}).get(r["example_id"])
        if ex is not None and "steps" in ex.meta:
            aspects = [{**a, "critique": worked_critique(r["response"], ex, a["critique"],
                                                         r["feedback"]["meta"].get("first_error"))}
                       if a["aspect"] == "logical_correctness" else a for a in aspects]
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
    # `transformers serve` sets a request's temperature but never do_sample: with the base's default (greedy) a
    # consensus of k "samples" would be k copies of the greedy judgement. Temperature-0 requests still decode greedily.
    out["model"].generation_config.do_sample = True
    path = save_checkpoint(out["model"], tok, Path(out_dir) / "judge",
                           {"base": str(base), "rows": len(rows), "max_length": cfg.max_length, "phrases": len(phrases),
                            "learning_rate": cfg.learning_rate, "epochs": cfg.epochs})
    return {**out, "path": path}


def weights_id(path: str | Path) -> str:
    """A content hash (12 hex) of a saved judge's weights, configs and tokenizer: the learned judge's id in stored
    judgements, so they are reused across server starts (the port is not part of it) and not after a retrain."""
    h = hashlib.sha256()
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                 "tokenizer_config.json", "chat_template.jinja"):
        f = Path(path) / name
        if f.exists():
            h.update(name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:12]


def served_judge(path: str | Path, base_url: str, rubrics, *, consensus_k: int = 1, max_new_tokens: int = 768,
                 timeout: float = 600.0, max_repairs: int = 0, concurrency: int = 1):
    """The learned judge saved at ``path`` and served at ``base_url`` (:class:`rlrf_nb.serve.ModelServer`) as the
    kit's own :class:`~rlrf_nb.llm_judge.LLMJudge` over :class:`~rlrf_nb.llm_judge.OpenAITransport`: greedy with
    ``consensus_k`` 1, else a :class:`~rlrf_nb.feedback.ConsensusJudge` of ``consensus_k`` samples at temperature 1
    (median score per aspect), sample i seeded from i and the prompt (``OpenAITransport.request_seed``), so a rerun
    draws the same votes. Its id, which keys stored judgements, names what decides them: ``learned:<weights_id>``,
    the output cap (a lower cap truncates replies into parse failures), re-asks if any, and ``/k<k>``. It is asked
    ``concurrency`` requests at a time."""
    from rlrf_nb.config import FeedbackConfig
    from rlrf_nb.llm_judge import make_llm_judge

    jid = f"learned:{weights_id(path)}/cap{max_new_tokens}" + (f"/repairs{max_repairs}" if max_repairs else "")
    cfg = FeedbackConfig(judge="llm", judge_url=base_url, judge_model=str(path), consensus_k=consensus_k,
                         max_new_tokens=max_new_tokens, max_repairs=max_repairs, timeout=timeout, max_retries=2,
                         concurrency=concurrency)  # FeedbackConfig checks consensus_k >= 1
    return make_llm_judge(cfg, rubrics, judge_id=jid)


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


def as_teacher_rows(records: list[dict], teacher_by_response: dict[str, dict]) -> list[dict]:
    """Rows for :func:`judge_report` from stored judgement records (``judge_responses``) and the teacher's record of
    each response (by ``response_id``), e.g. the verifier's in notebook 01."""
    return [{"task": r["task"], "teacher": teacher_by_response[r["response_id"]]["feedback"]} for r in records]


def report_table(reports: dict[str, dict]):
    """One row per (judge, aspect) of :func:`judge_report` results (``{label: report}``): parse rate, exact
    agreement, Krippendorff's alpha, each with its 95% interval, quadratic kappa and mean signed difference."""
    import pandas as pd

    def ci(r: dict) -> str:
        return f"{r['rate']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}] (n {r['n']})"

    rows = []
    for label, rep in reports.items():
        for name, a in rep["aspects"].items():
            lo, hi = a["alpha_ci"]
            rows.append({"judge": label, "aspect": name, "parse": ci(a["parse"]), "exact": ci(a["exact_rate"]),
                         "alpha [95% CI]": f"{a['alpha']:.2f} [{lo:.2f}, {hi:.2f}]",
                         "kappa (quadratic)": round(a.get("kappa_quadratic", float("nan")), 2),
                         "mean judge - teacher": round(a.get("mean_diff", float("nan")), 2)})
    return pd.DataFrame(rows)


def score_pairs(records: list[dict], teacher_by_response: dict[str, dict]) -> dict[str, list[tuple[int, int]]]:
    """Per aspect, the (teacher score, judge score) of every response both scored: what a calibration heatmap
    counts (:func:`rlrf_nb.plots.judge_calibration`)."""
    out: dict[str, list[tuple[int, int]]] = {}
    for r in records:
        teacher = {a["aspect"]: a["score"] for a in teacher_by_response[r["response_id"]]["feedback"]["aspects"]}
        for a in r["feedback"]["aspects"]:
            if a["parse_ok"] and teacher.get(a["aspect"]) is not None:
                out.setdefault(a["aspect"], []).append((teacher[a["aspect"]], a["score"]))
    return out


def read_teacher(recipe, store) -> list[dict]:
    """The teacher's judgement records that ``judge_train`` names (``teacher_artifacts`` in ``teacher_run``, default
    this run), only ``teacher_judge``'s when set. Errors name the missing file, or the judges to choose from."""
    from rlrf_nb.jsonl import read_jsonl
    from rlrf_nb.paths import resolve_path

    jc = recipe.judge_train
    where = resolve_path(jc.teacher_run) if jc.teacher_run else store.run_dir
    recs = []
    for name in jc.teacher_artifacts:
        path = where / name
        if not path.exists():
            raise FileNotFoundError(f"judge_train: no teacher judgements at {path} (judge_train.teacher_run "
                                    f"{jc.teacher_run!r}, teacher_artifacts {jc.teacher_artifacts}); run notebook 02 "
                                    "there first, judged by the teacher")
        recs += list(read_jsonl(path))
    if jc.teacher_judge:
        recs = [r for r in recs if r["judge_id"].startswith(jc.teacher_judge)]
    judges = sorted({r["judge_id"] for r in recs})
    if len(judges) != 1:
        raise ValueError(f"judge_train: the teacher artifacts in {where} hold {len(judges)} judges {judges}; set "
                         "judge_train.teacher_judge to the prefix of the teacher's judge_id")
    return recs


def measured_ids(recipe, world) -> set[str]:
    """Ids of the prompts the kit measures judges and policies on (notebook 01's dev prompts, and the tiny world's dev
    and test splits): teacher records on them never become training rows."""
    from rlrf_nb import task_data

    out = {e.id for e in task_data.dev_math(recipe, world, recipe.feedback.n_math)
           + task_data.dev_bios(recipe, world, recipe.feedback.n_bios)}
    if world is not None:
        out |= {e.id for task in (world.math, world.bios) for split in ("dev", "test") for e in task[split]}
    return out


def judge_stage(recipe, store, log=print) -> dict:
    """``rlrf-nb train-judge``: train the judge LM of ``recipe.judge_train`` on its teacher's stored judgements, save
    it (``<run>/judge/judge-<key>/``, reused when the key matches: base, rows, settings), serve it with ``transformers
    serve`` on 127.0.0.1, judge ``n_eval`` held-out rows (and ``eval_balance`` per score group) through ``LLMJudge``
    (stored in ``judge_eval.jsonl``, keyed by the weights' hash) and write :func:`judge_report` to ``results.json``
    under ``judge_train`` (``report``, and ``report["stratified"]``)."""
    from rlrf_nb import task_data
    from rlrf_nb.models import load_policy, model_fingerprint, placement
    from rlrf_nb.paths import resolve_path
    from rlrf_nb.rubrics import load_rubric_set
    from rlrf_nb.serve import ModelServer
    from rlrf_nb.store import content_key, is_complete

    jc = recipe.judge_train
    rubrics = load_rubric_set()
    world = task_data.load_world(recipe)
    examples = ({e.id: e for split in world.math.values() for e in split} if jc.worked and world is not None
                else None)
    recs = read_teacher(recipe, store)
    skip = measured_ids(recipe, world)
    recs = [r for r in recs if r["example_id"] not in skip]
    rows = teacher_rows(recs, rubrics, jc.held_out_share, seed=recipe.run.seed, examples=examples)
    if not rows["train"]:
        raise ValueError(f"judge_train: none of the {len(recs)} teacher records is a usable training row (parsed, "
                         "every aspect scored, prompts not held out)")
    if jc.balance:
        train = balanced(rows["train"], jc.balance, seed=jc.seed)
    else:
        train = random.Random(jc.seed).sample(rows["train"], min(jc.rows or len(rows["train"]), len(rows["train"])))
    phrases = prompt_phrases(rubrics, sorted({tuple(a["aspect"] for a in r["teacher"]["aspects"])
                                              for r in rows["train"]})) if jc.phrases else []
    base = resolve_path(jc.base) if resolve_path(jc.base).exists() else jc.base
    _, tok = load_policy(str(base))
    lengths = token_lengths(judge_tokenizer(tok, phrases) if phrases else tok, train)
    cfg = dataclasses.replace(jc.stage(), max_length=jc.max_length or max(lengths))
    log(f"teacher: {len(recs)} records of {recs[0]['judge_id']}; rows: train {len(rows['train'])}, held out "
        f"{len(rows['held_out'])}; training on {len(train)} (tokens per row: median "
        f"{sorted(lengths)[len(lengths) // 2]}, max {max(lengths)}; max_length {cfg.max_length})")
    key = content_key({"base": model_fingerprint(base), "rows": [(r["prompt"], r["completion"]) for r in train],
                       "phrases": phrases, "cfg": dataclasses.asdict(cfg)})
    out_dir = store.run_dir / "judge" / f"judge-{key}"
    if is_complete(out_dir / "judge"):
        path, trained = out_dir / "judge", {"steps": None, "seconds": 0.0, "reused": True}
        log(f"judge {path} is already trained (same base, rows and settings)")
    else:
        res = train_judge(base, train, cfg, out_dir, phrases=phrases, place=placement(recipe.run))
        path = res["path"]
        trained = {"steps": res["steps"], "seconds": round(res["seconds"], 1), "reused": False}
        log(f"trained {res['steps']} steps in {res['seconds']:.0f} s; saved {path}")
    held = random.Random(jc.seed).sample(rows["held_out"], min(jc.n_eval, len(rows["held_out"])))
    strata = list({r["response_id"]: r for r in balanced(rows["held_out"], jc.eval_balance, seed=jc.seed + 1)}.values()
                  ) if jc.eval_balance and rows["held_out"] else []
    with ModelServer(path, out_dir / "serve") as srv:
        judge = served_judge(path, srv.base_url, rubrics, max_new_tokens=jc.max_new_tokens)
        log(f"transformers serve {path} on {srv.base_url}; judging {len(held)} held-out responses")
        def aspects(r):
            return [a["aspect"] for a in r["teacher"]["aspects"]]

        judged = store.map("judge_eval", held + strata, lambda r: content_key(
            {"judge": judge.id, "rubrics": rubrics.version, "prompt": r["question"], "response": r["response"],
             "aspects": aspects(r)}), lambda r: {
            "example_id": r["example_id"], "response_id": r["response_id"], "task": r["task"],
            "judge_id": judge.id, "teacher": r["teacher"],
            "feedback": judge.judge(r["question"], r["response"], aspects(r)).to_dict()}, desc="judge held-out")
    fbs = [Feedback.from_dict(j["feedback"]) for j in judged]
    report = judge_report(fbs[:len(held)], held)
    if strata:
        report["stratified"] = judge_report(fbs[len(held):], strata)
    summary = {"path": str(path), "judge_id": judge.id, "teacher": recs[0]["judge_id"], "train_rows": len(train),
               "max_length": cfg.max_length, "phrases": len(phrases), **trained, "report": report}
    store.update_results({"judge_train": summary})
    for name, a in report["aspects"].items():
        lo, hi = a["alpha_ci"]
        log(f"{name}: parse {a['parse']['rate']:.2f}, exact {a['exact_rate']['rate']:.2f}, alpha {a['alpha']:.2f} "
            f"[{lo:.2f}, {hi:.2f}] (n {a['n']})")
    return summary
