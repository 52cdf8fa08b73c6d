"""Notebook 00's stage: get M0 (load it, or pre-train it from scratch and cache it) and check what it can do.

The checks are the ones the later stages rely on:
- held-out greedy math accuracy (strict ``#### N`` extraction, the GSM8K grader);
- refinement success: the fraction of wrong drafts M0 fixes when given the verifier's
  critique, both on its own wrong answers and on drafts with one injected error;
- bio precision: the fraction of atomic claims in its bios that the KB supports.
Every rate carries a 95% Wilson interval. Every generation is a record in the run store,
keyed by model fingerprint, prompt and decoding settings, so a rerun recomputes nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from pathlib import Path

from rlrf_nb import generation, models
from rlrf_nb.models import model_fingerprint  # one fingerprint for local dirs and Hub ids; also imported from here
from rlrf_nb.paths import resolve_path
from rlrf_nb.prompts import chat, refinement_prompt
from rlrf_nb.stats import rate
from rlrf_nb.store import RunStore, content_key, is_complete, mark_complete
from rlrf_nb.task_data import search_examples  # noqa: F401  (moved there with the other recipe -> examples choices)
from rlrf_nb.tasks import bios, math
from rlrf_nb.tasks.world import World, bio_notes, build_world, math_notes, training_mix

log = logging.getLogger(__name__)



def m0_config_hash(world_cfg, m0_cfg) -> str:
    """What determines a retrained M0: the world and the M0 training fields (not where to load from)."""
    m0 = {k: v for k, v in dataclasses.asdict(m0_cfg).items() if k not in ("pretrained", "retrain", "max_seconds")}
    return content_key({"world": dataclasses.asdict(world_cfg), "m0": m0})


def get_m0(recipe, store: RunStore, world: World | None = None):
    """``(model, tokenizer, info)``. With ``m0.retrain`` the model is pre-trained from scratch into
    ``<run>/checkpoints/M0-<config hash>`` (a rerun with the same config loads it); otherwise it is
    loaded from ``m0.pretrained`` (a local path or a Hub id). It is placed on the run's device and precision
    (:func:`rlrf_nb.models.placement`); ``info["fingerprint"]`` is :func:`rlrf_nb.models.model_fingerprint`."""
    cfg = recipe.m0
    if cfg.retrain:
        path = store.checkpoint_dir(f"M0-{m0_config_hash(recipe.world, cfg)}")
        if not is_complete(path):
            world = world or build_world(recipe.world)
            items = training_mix(world, cfg, cfg.seed)
            texts = [it.get("text") or "\n".join(m["content"] for m in it["messages"]) for it in items]
            tokenizer = models.build_tokenizer(texts, cfg.vocab_size)
            model = models.build_model(tokenizer, cfg)
            summary = models.pretrain(model, tokenizer, items, cfg, store.path("trainer_tmp"))
            summary["n_params"] = models.n_params(model)
            models.save_policy(model, tokenizer, path, summary)
            mark_complete(path, {"config_hash": m0_config_hash(recipe.world, cfg), "seconds": summary["seconds"]})
            source = "trained now"
        else:
            source = "cached retrain"
    else:
        local = resolve_path(cfg.pretrained)
        path = local if local.exists() else cfg.pretrained  # else a Hub id; load_policy says if it is neither
        source = "pretrained"
    place = models.placement(recipe.run)
    model, tokenizer = models.load_policy(path, place=place)
    info = {"path": str(path), "source": source, "n_params": models.n_params(model),
            "fingerprint": model_fingerprint(path), "placement": place.describe(),
            "training": models.training_log(path) if Path(str(path)).is_dir() else None}
    return model, tokenizer, info


# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------


def _gen_records(store, name, model, tok, fingerprint, items, prompt_fn, ecfg, extra_fn):
    """Greedy generations for ``items`` through the store: one record per item, keyed by its inputs."""
    decode = {"max_new_tokens": ecfg.max_new_tokens, "do_sample": False}

    def key(it):
        return content_key({"model": fingerprint, "prompt": prompt_fn(it), "decode": decode})

    def run(batch):
        outs = generation.generate(model, tok, [chat(prompt_fn(it)) for it in batch], batch_size=len(batch),
                                   progress=False, **decode)
        return [{"id": it_id(it), "prompt": prompt_fn(it), "response": o[0], **extra_fn(it, o[0])}
                for it, o in zip(batch, outs)]

    return store.map_batches(name, items, key, run, batch_size=ecfg.batch_size, desc=name)


def it_id(it) -> str:
    return it["id"] if isinstance(it, dict) else it.id


def evaluate_math(model, tok, fingerprint, world: World | None, ecfg, store: RunStore, policy_id: str = "M0",
                  refine: bool = True, examples: list | None = None) -> dict:
    """Accuracy on held-out problems (``examples``, default the first ``ecfg.n_math`` of the world's ``ecfg.split``),
    and (``refine``, tiny world only) refinement success on own and injected wrong drafts. A problem without the
    tiny world's step data (real GSM8K) is graded on its final answer alone. Records go to ``eval/<policy_id>/...``."""
    examples = world.math[ecfg.split][: ecfg.n_math] if examples is None else examples

    def grade(ex, text):
        if "steps" not in ex.meta:  # a real task's problem: the final answer (strict, as everywhere in the kit)
            return {"gold": ex.answer, "pred": math.extract_answer(text, "strict"),
                    "correct": math.is_correct(text, ex.answer), "first_error": None, "error_kind": None,
                    "critique": None}
        c = math.check_solution(text, ex.meta["steps"], ex.answer)
        return {"gold": ex.answer, "pred": math.extract_answer(text, "strict"), "correct": c.correct,
                "first_error": c.first_error, "error_kind": c.error_kind, "critique": c.critique}

    recs = _gen_records(store, f"eval/{policy_id}/math_{ecfg.split}", model, tok, fingerprint, examples,
                        lambda ex: ex.prompt, ecfg, grade)
    by_id = {ex.id: ex for ex in examples}
    if not refine:
        return {"accuracy": rate(sum(r["correct"] for r in recs), len(recs)), "records": recs}

    # Refinement of M0's own wrong answers, given the verifier's critique.
    wrong = [{"id": r["id"], "ex": by_id[r["id"]], "draft": r["response"],
              "check": math.check_solution(r["response"], by_id[r["id"]].meta["steps"], by_id[r["id"]].answer)}
             for r in recs if not r["correct"]]
    own = _refine(store, f"eval/{policy_id}/refine_own", model, tok, fingerprint, wrong, ecfg)

    # Refinement of drafts with one injected error (the wrong step is known exactly).
    rng = random.Random(f"inject:{ecfg.split}")
    injected = []
    for ex in examples:
        draft, _ = math.corrupt_solution(rng, ex)
        injected.append({"id": ex.id, "ex": ex, "draft": draft,
                         "check": math.check_solution(draft, ex.meta["steps"], ex.answer)})
    inj = _refine(store, f"eval/{policy_id}/refine_injected", model, tok, fingerprint, injected, ecfg)
    kinds: dict[str, int] = {}
    for r in recs:
        if not r["correct"]:
            kinds[r["error_kind"] or "wrong_answer"] = kinds.get(r["error_kind"] or "wrong_answer", 0) + 1
    return {
        "accuracy": rate(sum(r["correct"] for r in recs), len(recs)),
        "refine_own": rate(sum(r["fixed"] for r in own), len(own)),
        "refine_injected": rate(sum(r["fixed"] for r in inj), len(inj)),
        "refine_injected_kept_prefix": rate(sum(r["kept_prefix"] for r in inj), len(inj)),
        "error_kinds": kinds, "records": recs, "refine_own_records": own, "refine_injected_records": inj,
    }


def _refine(store, name, model, tok, fingerprint, drafts: list[dict], ecfg) -> list[dict]:
    def prompt(d):
        return refinement_prompt(d["ex"].prompt, d["draft"], math_notes(d["check"]))

    def grade(d, text):
        first = d["check"].first_error or 1
        prefix = d["draft"].split("\n")[: first - 1]
        return {"draft": d["draft"], "critique": d["check"].critique,
                "fixed": math.is_correct(text, d["ex"].answer),
                "kept_prefix": text.split("\n")[: first - 1] == prefix}

    return _gen_records(store, name, model, tok, fingerprint, drafts, prompt, ecfg, grade)


def evaluate_bios(model, tok, fingerprint, world: World, ecfg, store: RunStore, policy_id: str = "M0") -> dict:
    """Per-bio precision (supported claims / claims), averaged; plus claim counts by verdict."""
    examples = world.bios[ecfg.split][: ecfg.n_bios]

    def grade(ex, text):
        claims = bios.check_bio(text, world.person(ex.meta["entity"]))
        n_sup = sum(c.status == "supported" for c in claims)
        return {"entity": ex.meta["entity"], "n_claims": len(claims), "n_supported": n_sup,
                "n_contradicted": sum(c.status == "contradicted" for c in claims),
                "precision": n_sup / len(claims) if claims else 0.0}

    recs = _gen_records(store, f"eval/{policy_id}/bios_{ecfg.split}", model, tok, fingerprint, examples,
                        lambda ex: ex.prompt, ecfg, grade)
    n_claims = sum(r["n_claims"] for r in recs)
    n = len(recs)
    return {"precision_mean": sum(r["precision"] for r in recs) / n if n else float("nan"),
            "claims": rate(sum(r["n_supported"] for r in recs), n_claims),
            "claims_per_bio": n_claims / n if n else float("nan"), "records": recs}


def refinement_demo(model, tok, world: World, seed: int = 0) -> dict:
    """One bio draft with an injected wrong fact, its critique, and M0's refinement (for display)."""
    rng = random.Random(seed)
    person = world.person(world.bios["dev"][0].meta["entity"])
    draft, _ = bios.corrupt_bio(rng, person)
    notes = bio_notes(bios.check_bio(draft, person), person["name"])
    prompt = refinement_prompt(bios.bio_prompt(person["name"]), draft, notes)
    out = generation.generate(model, tok, [chat(prompt)], max_new_tokens=160, progress=False)[0][0]
    return {"prompt": prompt, "refinement": out}


def summary_row(math_res: dict, bio_res: dict) -> dict:
    """The flat numbers that go into ``results.json``."""
    return {
        "m0_math_accuracy": math_res["accuracy"], "m0_refine_own_success": math_res["refine_own"],
        "m0_refine_injected_success": math_res["refine_injected"],
        "m0_refine_injected_kept_prefix": math_res["refine_injected_kept_prefix"],
        "m0_math_error_kinds": math_res["error_kinds"],
        "m0_bio_precision_mean": bio_res["precision_mean"], "m0_bio_claims_supported": bio_res["claims"],
        "m0_bio_claims_per_bio": bio_res["claims_per_bio"],
    }


# ---------------------------------------------------------------------------
# Tables for the notebook
# ---------------------------------------------------------------------------


def split_sizes(world: World):
    """A DataFrame: rows are tasks, columns are splits, cells are prompt counts."""
    import pandas as pd

    rows = [{"task": t, "split": s, "prompts": len(exs)}
            for t in ("math", "bios") for s, exs in getattr(world, t).items()]
    return pd.DataFrame(rows).pivot(index="task", columns="split", values="prompts").fillna(0).astype(int)


def kb_table(world: World, n: int = 5):
    import pandas as pd

    return pd.DataFrame(world.people[:n]).set_index("name")


def records_table(records: list[dict], columns: list[str], n: int = 8):
    """The first ``n`` eval records, selected columns, for display."""
    import pandas as pd

    return pd.DataFrame(records[:n])[columns]


def load_run(recipe_path: str | Path, run_name: str, overrides: dict | None = None):
    """Load the recipe with ``run.name`` set, open ``runs/<name>/`` and record config, seed, versions, git SHA."""
    from rlrf_nb.config import load_recipe, recipe_to_dict
    from rlrf_nb.llm_judge import redact_url

    recipe = load_recipe(resolve_path(recipe_path), {"run.name": run_name, **(overrides or {})})
    store = RunStore(resolve_path(recipe.run.runs_dir) / recipe.run.name)
    config = recipe_to_dict(recipe)
    config["feedback"]["judge_url"] = redact_url(config["feedback"]["judge_url"])  # no credentials in a file
    store.write_metadata(config, recipe.run.seed)
    return recipe, store


def write_results(store: RunStore, row: dict, info: dict) -> dict:
    """Merge ``row`` and which M0 was used into ``<run>/results.json``; returns the merged results."""
    m0 = {k: info[k] for k in ("path", "source", "n_params", "fingerprint")}
    if info.get("training"):
        m0["train_seconds"] = info["training"]["seconds"]
    return store.update_results({**row, "m0": m0})

