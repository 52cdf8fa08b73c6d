"""Which examples each stage reads, from the recipe: the tiny world's splits, or the recipe's own task (GSM8K).

A recipe is **real** (:func:`is_real`) when ``reflection.prompt_source`` or ``eval.gsm8k_source`` names GSM8K data (a
local ``openai/gsm8k``-format JSONL or a Hub id); then no stage reads the tiny world (:func:`load_world` is None) and
every split comes from the task:

- search prompts (02, 04): ``reflection.prompt_source``'s train split or file (rounds take disjoint slices after
  02's), where the tiny world uses its math ``rl`` split;
- held-out dev (01, 03, 04): the *last* rows of the train pool (:func:`task_pool`), disjoint from every search
  slice and few-shot exemplar (checked), where the tiny world uses its ``dev`` splits;
- benchmark test (05): ``eval.gsm8k_source`` (a file is the test set; a Hub id gives its ``test`` split), where the
  tiny world uses its math ``test`` split;
- few-shot exemplars (05): ``eval.gsm8k_train_source`` (a train file, or a Hub id's ``train`` split), default
  gsm8k_source's ``train`` split for a Hub id, where the tiny world uses its math ``train`` split;
- bios: none (the tiny world's people are not the task).

GSM8K has no dev split, so selecting on the tail of train keeps "select on dev, claim on test": only notebook 05 reads
the test set.
"""

from __future__ import annotations

import functools
import logging

from rlrf_nb.tasks.loaders import is_hub_dataset, load_gsm8k
from rlrf_nb.tasks.schema import Example

log = logging.getLogger(__name__)

_gsm8k = functools.cache(load_gsm8k)  # (source, split) -> its examples, each loaded once per process


def is_real(recipe) -> bool:
    """Whether the recipe runs on a real task (GSM8K) instead of the tiny world."""
    return recipe.reflection.prompt_source is not None or recipe.eval.gsm8k_source is not None


def load_world(recipe):
    """The tiny world of ``recipe.world``, or None for a real recipe (no stage may read it then)."""
    if is_real(recipe):
        return None
    from rlrf_nb.tiny_world import build_world

    return build_world(recipe.world)


def kb(world) -> dict[str, dict]:
    """The knowledge base by name for the verifier's bio checks ({} without a tiny world)."""
    return {} if world is None else {p["name"]: p for p in world.people}


def exemplar_source(recipe) -> str | None:
    """Where GSM8K few-shot exemplars come from: ``eval.gsm8k_train_source``, else ``eval.gsm8k_source`` when it
    is a Hub id (its train split); None when neither applies."""
    ev = recipe.eval
    if ev.gsm8k_train_source is not None:
        return ev.gsm8k_train_source
    if ev.gsm8k_source is not None and is_hub_dataset(ev.gsm8k_source):
        return ev.gsm8k_source
    return None


def task_pool(recipe) -> tuple[list[Example], str]:
    """The real task's training pool and its description: ``reflection.prompt_source`` (train split or file),
    else the exemplar source. Search prompts are its head, the held-out dev slice its tail."""
    src = recipe.reflection.prompt_source
    field = "reflection.prompt_source"
    if src is None:
        src, field = exemplar_source(recipe), "eval.gsm8k_train_source"
    if src is None:
        raise ValueError("a real recipe needs GSM8K training data for its search prompts and held-out dev slice: "
                         "set reflection.prompt_source or eval.gsm8k_train_source")
    return _gsm8k(src, "train"), f"{field} {src!r} (train split)"


def search_examples(recipe, world, *, n_math: int | None = None, n_bios: int | None = None,
                    offset_math: int = 0, offset_bios: int = 0, budget: str | None = None) -> list[Example]:
    """The prompts a reflection search runs on: ``n_math`` math prompts from ``reflection.prompt_source`` (tiny world's
    rl split, or a GSM8K train split) from ``offset_math``, then ``n_bios`` tiny-world bio prompts from ``offset_bios``
    (defaults: ``reflection.n_prompts`` and ``reflection.n_bios``). Raises naming the source when it has too few
    prompts (``budget``: the field that set ``n_math``, when it is not the search's own), and when a real recipe asks
    for bios (they would be tiny-world prompts)."""
    cfg = recipe.reflection
    n_math = cfg.n_prompts if n_math is None else n_math
    n_bios = cfg.n_bios if n_bios is None else n_bios
    if cfg.prompt_source is None:
        if world is None:
            raise ValueError("reflection.prompt_source is None: the search runs on the tiny world's rl split, but "
                             "this recipe names real GSM8K data (eval.gsm8k_source); set reflection.prompt_source")
        pool, where = world.math["rl"], "the tiny world's math rl split (world.math_rl)"
    else:
        pool = _gsm8k(cfg.prompt_source, "train")
        where = f"reflection.prompt_source {cfg.prompt_source!r} (train split)"
    if offset_math + n_math > len(pool):
        need = f"need math prompts {offset_math}..{offset_math + n_math} but {where} has {len(pool)}"
        raise ValueError(f"{need}: lower reflection.n_prompts / rounds.prompts_per_round" if budget is None
                         else f"{budget} = {n_math}: {need}; lower {budget}")
    if n_bios and world is None:
        raise ValueError(f"reflection.n_bios / rounds.bios_per_round = {n_bios}, but the bio prompts are the tiny "
                         "world's and this is a real recipe: set them to 0")
    bios_rl = world.bios["rl"] if n_bios else []
    if offset_bios + n_bios > len(bios_rl):
        raise ValueError(f"need bio prompts {offset_bios}..{offset_bios + n_bios} but the tiny world's bio rl split "
                         f"has {len(bios_rl)}: lower reflection.n_bios / rounds.bios_per_round")
    return pool[offset_math:offset_math + n_math] + bios_rl[offset_bios:offset_bios + n_bios]


def dev_math(recipe, world, n: int) -> list[Example]:
    """The first ``n`` held-out dev math problems: the tiny world's dev split, or the tail of the real task's
    training pool (as many rows as any stage evaluates; an error when that tail would overlap the search prompts or
    the few-shot exemplars)."""
    if world is not None:
        return world.math["dev"][:n]
    pool, where = task_pool(recipe)
    size = max(recipe.feedback.n_math, recipe.rounds.eval_n_math)  # notebook 01's samples, the rounds' evaluation
    source = recipe.reflection.prompt_source or exemplar_source(recipe)
    used = 0
    if recipe.reflection.prompt_source is not None:  # the search's head rows
        used = max(recipe.reflection.n_prompts, recipe.rounds.n_rounds * recipe.rounds.prompts_per_round)
    if exemplar_source(recipe) == source:
        used = max(used, recipe.eval.gsm8k_k)  # the few-shot exemplars are the first k rows
    if len(pool) - size < used:
        raise ValueError(f"{where} has {len(pool)} rows: the held-out dev slice (its last {size}, "
                         f"max(feedback.n_math, rounds.eval_n_math)) would overlap the {used} rows the search and "
                         "the few-shot exemplars use; lower them or use a larger train file")
    return pool[len(pool) - size:][:n]


def dev_bios(recipe, world, n: int) -> list[Example]:
    """The first ``n`` held-out dev bio prompts of the tiny world ([] in a real recipe: no real bio task)."""
    return [] if world is None else world.bios["dev"][:n]


def test_bios(recipe, world, n: int) -> list[Example]:
    """Notebook 05's FactScore items: the first ``n`` test bios of the tiny world ([] in a real recipe)."""
    return [] if world is None else world.bios["test"][:n]


def gsm8k_test(recipe, world, n: int, source: str | None = None) -> list[Example]:
    """Notebook 05's math benchmark items: the first ``n`` of the tiny world's test split, or of GSM8K test
    (``source``, default ``eval.gsm8k_source``: a local file is the test set, a Hub id gives its test split)."""
    source = source or recipe.eval.gsm8k_source
    if source is None:
        return world.math["test"][:n]
    return _gsm8k(source, "test")[:n]


def gsm8k_exemplars(recipe, world, source: str | None = None) -> list[Example]:
    """Few-shot exemplars for notebook 05, always from a train split: the tiny world's, or
    :func:`exemplar_source`'s (``source`` overrides ``eval.gsm8k_source`` the way notebook 05's parameter does).
    Raises when a real recipe with ``eval.gsm8k_k > 0`` has no train source (a local test file is not one)."""
    if (source or recipe.eval.gsm8k_source) is None:
        return world.math["train"]
    if recipe.eval.gsm8k_train_source is not None:
        return _gsm8k(recipe.eval.gsm8k_train_source, "train")
    src = source or recipe.eval.gsm8k_source
    if is_hub_dataset(src):
        return _gsm8k(src, "train")
    if recipe.eval.gsm8k_k:
        raise ValueError(f"eval.gsm8k_source {src!r} is a local file, the test set: set eval.gsm8k_train_source to "
                         f"the train file the {recipe.eval.gsm8k_k} few-shot exemplars come from")
    return []
