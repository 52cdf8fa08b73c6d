"""Stage 00 (notebook 00): the tiny world, and M0 with the checks the later stages rely on.

:func:`build_world` generates the world from a ``WorldConfig``, deterministically from its seed (evaluation splits drawn
first, so a training size never changes them); :func:`save_world` / :func:`load_split` / :func:`load_kb` write and read
its splits under ``data/tiny_world/``; :func:`training_mix` is M0's pre-training mix. :func:`get_m0` loads or pre-trains
M0; its checks are held-out greedy math accuracy (strict ``#### N``), refinement success (the share of wrong drafts M0
fixes given the verifier's critique, on its own wrong answers and on drafts with one injected error) and bio precision
(the share of its bios' atomic claims the KB supports), each with a 95% Wilson interval. Every generation is a run-store
record keyed by model fingerprint, prompt and decoding, so a rerun recomputes nothing. See docs/tiny_world.md.
"""

from __future__ import annotations

import dataclasses
import logging
import math as pymath
import random
import re
from dataclasses import dataclass
from pathlib import Path

from rlrf_nb import generation, models
from rlrf_nb.jsonl import iter_jsonl, write_jsonl
from rlrf_nb.models import model_fingerprint
from rlrf_nb.paths import resolve_path
from rlrf_nb.prompts import AspectNote, chat, refinement_prompt, scalar_notes
from rlrf_nb.stats import rate
from rlrf_nb.store import RunStore, content_key, is_complete, mark_complete
from rlrf_nb.tasks import bios, math
from rlrf_nb.tasks.schema import Example

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------
# The world
# ---------------------------------------------------------------------------


@dataclass
class World:
    """People (the KB), web documents and the prompt splits of both tasks."""

    people: list[dict]
    math: dict[str, list[Example]]  # test, dev, rl, train
    bios: dict[str, list[Example]]  # test, dev, rl, sft
    web_docs: list[str]
    config: object = None  # the WorldConfig it was built from

    def person(self, name: str) -> dict | None:
        return self._by_name.get(name)

    def __post_init__(self):
        self._by_name = {p["name"]: p for p in self.people}

    def examples(self, task: str, split: str) -> list[Example]:
        return {"math": self.math, "bios": self.bios}[task][split]


def build_world(cfg) -> World:
    """Generate the tiny world from a ``WorldConfig``."""
    kw = math_kwargs(cfg)
    math_splits = math.generate_splits(cfg.seed, {"test": cfg.math_test, "dev": cfg.math_dev, "rl": cfg.math_rl,
                                                  "train": cfg.math_train}, **kw)
    if cfg.critique_quotes:
        for ex in (e for split in math_splits.values() for e in split):
            ex.meta["quotes"] = math.step_sentences(ex)
    people = bios.make_people(cfg.seed, cfg.n_people, cfg.facts_per_person)
    bio_splits = bios.split_people(people, {"test": cfg.people_test, "dev": cfg.people_dev, "rl": cfg.people_rl,
                                            "sft": -1})
    if cfg.min_docs_per_person:  # world v2: a popularity tail, as FactScore's rare and frequent entities
        rng = random.Random(f"popularity:{cfg.seed}")
        lo, hi = pymath.log(cfg.min_docs_per_person), pymath.log(cfg.docs_per_person + 1)
        docs = [d for i, p in enumerate(people) for d in bios.web_documents(
            [p], f"{cfg.seed}:{i}", int(pymath.exp(rng.uniform(lo, hi))), cfg.bio_error_rate)]
    else:
        docs = bios.web_documents(people, cfg.seed, cfg.docs_per_person, cfg.bio_error_rate)
    return World(people, math_splits, bio_splits, docs, cfg)


def math_kwargs(cfg) -> dict:
    """The ``WorldConfig`` fields that shape a math problem, as :func:`rlrf_nb.tasks.math.make_problem` takes them."""
    kw = {"min_steps": cfg.min_steps, "max_steps": cfg.max_steps, "max_value": cfg.max_value,
          "max_factor": cfg.max_factor, "max_operand": cfg.max_operand}
    if cfg.min_value:  # world v1's calls stay as they were
        kw.update(min_value=cfg.min_value, ops=cfg.ops, scratchpad=cfg.scratchpad)
    return kw


# Splits written to data/tiny_world/ (the train split is regenerated on demand; it is large and only feeds M0).
SAVED = {"math": ("test", "dev", "rl"), "bios": ("test", "dev", "rl", "sft")}


def save_world(world: World, directory: str | Path) -> list[Path]:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths = [d / "kb.jsonl"]
    write_jsonl(paths[0], world.people)
    for task, splits in SAVED.items():
        for split in splits:
            p = d / f"{task}_{split}.jsonl"
            write_jsonl(p, (e.to_dict() for e in world.examples(task, split)))
            paths.append(p)
    return paths


def load_split(directory: str | Path, task: str, split: str) -> list[Example]:
    """A saved split as Examples; a bad line raises naming the file and line."""
    p = Path(directory) / f"{task}_{split}.jsonl"
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such split file (expected one of {SAVED[task]} for task '{task}')")
    rows = []
    for lineno, row in iter_jsonl(p):
        rows.append(Example.from_dict(row, where=f"{p}:{lineno}"))
    return rows


def load_kb(directory: str | Path) -> dict[str, dict]:
    p = Path(directory) / "kb.jsonl"
    kb = {}
    for lineno, row in iter_jsonl(p):
        missing = [a for a in ("name", *bios.ATTRIBUTES) if a not in row]
        if missing:
            raise ValueError(f"{p}:{lineno}: missing field(s) {missing}")
        kb[row["name"]] = row
    return kb


# ---------------------------------------------------------------------------
# M0's training mix
# ---------------------------------------------------------------------------


def math_refinement_example(rng: random.Random, ex: Example, scalar_share: float = 0.0) -> dict:
    """Problem + flawed draft + verifier critique -> corrected solution (or an untouched correct draft); with
    probability ``scalar_share`` the feedback is the scalar-only message (a score, no words)."""
    if rng.random() < 0.2:
        draft = ex.reference
    elif rng.random() < 0.3:
        draft = _wrong_operand_draft(rng, ex)
    else:
        draft, _ = math.corrupt_solution(rng, ex)
    return math_refinement_from_draft(rng, ex, draft, scalar_share)


def math_refinement_from_draft(rng: random.Random, ex: Example, draft: str, scalar_share: float = 0.0) -> dict:
    """``draft`` + the verifier's critique (or, with probability ``scalar_share``, the scalar-only message) -> the
    gold solution: one refinement example of M0's mix."""
    check = math.check_example(draft, ex)
    notes = math_notes(check, rng)
    if scalar_share and rng.random() < scalar_share:
        notes = scalar_notes(notes[0].score)
    return {"kind": "math_refine", "mask_prompt": True,
            "messages": chat(refinement_prompt(ex.prompt, draft, notes), ex.reference)}


def math_notes(check: math.MathCheck, rng: random.Random | None = None) -> list[AspectNote]:
    """Feedback notes in the verifier's words; scores vary a little so M0 keys on the critique, not the number."""
    if check.perfect:
        return [AspectNote("logical correctness", 5, 5, check.critique),
                AspectNote("completeness", 5, 5, "Every step is shown and the solution ends with '#### N'.")]
    low = rng.randint(1, 3) if rng else 2
    return [AspectNote("logical correctness", low, 5, check.critique),
            AspectNote("completeness", 4 if check.error_kind != "missing_step" else 2, 5,
                       "The steps after the wrong one build on the wrong value.")]


def _miscopy_digit(rng: random.Random, b: int) -> int:
    """A three-digit ``b`` with one digit changed (never to a leading 0)."""
    k = rng.randrange(3)
    digits = [int(c) for c in str(b)]
    digits[k] = rng.choice([d for d in range(1 if k == 0 else 0, 10) if d != digits[k]])
    return int("".join(map(str, digits)))


def _wrong_operand_draft(rng: random.Random, ex: Example) -> str:
    """A draft that copies a wrong number into one step but computes consistently from there."""
    steps = ex.meta["steps"]
    j = rng.randrange(len(steps))
    _, op, b, _ = steps[j]
    if b >= 100:  # world v2: one digit of the operand miscopied, M0 v2's commonest slip
        return math.rewrite_from_step(ex, j, operand=_miscopy_digit(rng, b))
    new_b = b + rng.choice([1, 2, 3]) if op in "+-" else b
    if new_b == b:  # * and / keep their factor; perturb the carried value instead
        return math.corrupt_solution(rng, ex)[0]
    return math.rewrite_from_step(ex, j, operand=new_b)


def far_operand(rng: random.Random, b: int) -> int:
    """A three-digit number within 300 of ``b`` that differs from it in at least two digits (no "change one digit"
    shortcut from the right operand)."""
    return rng.choice([v for v in range(max(100, b - 300), min(999, b + 300) + 1)
                       if sum(p != q for p, q in zip(str(v), str(b))) >= 2])


def goes_below_zero(draft: str) -> bool:
    """A draft whose recomputed steps reach a negative value (the world's quantities never do)."""
    return any(int(v) < 0 for v in re.findall(r">>(-?\d+)", draft))


def step_sentence(ex: Example, j: int) -> str | None:
    """The problem's sentence that step ``j`` (0-based) of a world-v2 solution restates ("He gives 276 coins to a
    neighbor."), or None when the step has no usable sentence: v1's small operands, a sentence that occurs twice in
    the problem, or one whose operand is written twice in it."""
    x, op, b, _ = ex.meta["steps"][j]
    line = ex.reference.split("\n")[j]
    if b < 100 or f" {x}{op}{b}: " not in line:
        return None
    sentence = line[: line.index(f" {x}{op}{b}: ")]
    if ex.prompt.count(sentence) != 1 or sentence.count(str(b)) != 1:
        return None
    return sentence


def slip_draft(ex: Example, j: int, wrong_b: int) -> str:
    """M0 v2's own commonest slip, made on purpose: step ``j`` restates its sentence with the operand miscopied as
    ``wrong_b`` and computes on with it, every later step right from the wrong value (the problem is unchanged)."""
    sentence = step_sentence(ex, j)
    b = ex.meta["steps"][j][2]
    lines = math.rewrite_from_step(ex, j, operand=wrong_b).split("\n")
    lines[j] = lines[j].replace(sentence, sentence.replace(str(b), str(wrong_b)), 1)
    return "\n".join(lines)


def critique_source_example(rng: random.Random, ex: Example, operand: str = "digit") -> dict | None:
    """``m0.n_critique_source``: one operand of a world-v2 problem miscopied both in the problem's sentence and in the
    draft, which computes on with it; the verifier's critique, checked against the *true* problem,
    names the step and states its right expression; the target is the gold solution. Only the critique holds the right
    number, so the example rewards reading it. ``operand="digit"``: one digit miscopied, and the ``draft`` key trains
    from the first line the target changes; ``"far"``: a number that differs in at least two digits (no "change one
    digit of the draft" shortcut), and the whole target is trained (the kept prefix too); ``"far_from_step"``: a far
    number, trained from the named step (the ``draft`` key, as ``"digit"``). None when the problem has no usable step
    (a sentence that occurs twice, v1's small operands, or a draft that would go below 0)."""
    j = rng.randrange(len(ex.meta["steps"]))
    sentence = step_sentence(ex, j)
    if sentence is None:
        return None
    b = ex.meta["steps"][j][2]
    wrong_b = far_operand(rng, b) if operand.startswith("far") else _miscopy_digit(rng, b)
    draft = slip_draft(ex, j, wrong_b)
    if operand.startswith("far") and goes_below_zero(draft):
        return None
    notes = math_notes(math.check_example(draft, ex), rng)
    prompt = refinement_prompt(ex.prompt.replace(sentence, sentence.replace(str(b), str(wrong_b))), draft, notes)
    return {"kind": "math_refine_critique_source", "mask_prompt": True, "messages": chat(prompt, ex.reference),
            **({"draft": draft} if operand != "far" else {})}


def bio_notes(claims: list[bios.Claim], name: str) -> list[AspectNote]:
    bad = [c for c in claims if c.status != "supported"]
    if not bad:
        return [AspectNote("factuality", 5, 5, "Every claim is supported by the knowledge base.")]
    score = max(1, 5 - 2 * len(bad))
    return [AspectNote("factuality", score, 5, " ".join(bios.claim_critique(c, name) for c in bad))]


def bio_refinement_example(rng: random.Random, person: dict) -> dict:
    draft, _ = bios.corrupt_bio(rng, person, n_wrong=rng.choice([1, 1, 2]))
    notes = bio_notes(bios.check_bio(draft, person), person["name"])
    prompt = refinement_prompt(bios.bio_prompt(person["name"]), draft, notes)
    return {"kind": "bio_refine", "mask_prompt": True, "messages": chat(prompt, bios.reference_bio(person))}


#: Longest own draft (``m0.own_drafts``) in tokens: world v2's longest solutions fit in 400.
DRAFT_MAX_NEW_TOKENS = 400


def own_draft_examples(world: World, cfg) -> list[dict]:
    """``m0.own_drafts``: ``cfg.draft_model`` (else ``init_from``) writes a greedy and a T = 1 solution (seed 16) for
    each problem of ``train[start:stop]``; each wrong one, with the verifier's critique (the scalar-only message at
    ``scalar_refine_share``), becomes a refinement example with the gold solution as its target. Its ``draft`` key
    makes :func:`rlrf_nb.models.tokenize_item` train only from the first line the gold solution changes."""
    if not cfg.own_drafts:
        return []
    start, stop = cfg.own_drafts
    exs = world.math["train"][start:stop]
    model, tok = models.load_policy(resolve_path(cfg.draft_model or cfg.init_from))
    model.eval()
    convs = [chat(e.prompt) for e in exs]
    kw = {"max_new_tokens": DRAFT_MAX_NEW_TOKENS, "batch_size": 128}
    greedy = generation.generate(model, tok, convs, **kw)
    sampled = generation.generate(model, tok, convs, do_sample=True, temperature=1.0, seed=16, **kw)
    rng = random.Random("onpolicy")
    return [math_refinement_from_draft(rng, e, text, cfg.scalar_refine_share) | {"draft": text}
            for e, g, s in zip(exs, greedy, sampled) for text in (g[0], s[0])
            if not math.check_example(text, e).perfect]


def steps_mix(world: World, cfg, seed: int) -> list[Example]:
    """``m0.math_steps_mix``: ``[n2, n3, ...]`` train problems with ``world.min_steps``, ``min_steps + 1``, ...
    steps, a seeded sample of ``train[n_math:]`` without the ``own_drafts`` range (their own random stream, so a mix
    without them is unchanged)."""
    if not cfg.math_steps_mix:
        return []
    lo, hi = cfg.own_drafts or (0, 0)
    pool = [e for i, e in enumerate(world.math["train"]) if i >= cfg.n_math and not lo <= i < hi]
    rng, out = random.Random(f"steps-mix:{seed}"), []
    for n_steps, n in enumerate(cfg.math_steps_mix, start=world.config.min_steps):
        group = [e for e in pool if len(e.meta["steps"]) == n_steps]
        if n > len(group):
            raise ValueError(f"m0.math_steps_mix asks for {n} {n_steps}-step problems; the train split has "
                             f"{len(group)} beyond n_math and own_drafts")
        out += rng.sample(group, n)
    return out


def training_mix(world: World, cfg, seed: int, own: list[dict] = ()) -> list[dict]:
    """M0's SFT mix (an ``M0Config``): web documents (plain text, the noisy knowledge source),
    math solutions, bio answers for the SFT people, and refinement examples for both tasks; ``own``
    (:func:`own_draft_examples`) join after a first shuffle, and the whole is shuffled again."""
    rng = random.Random(f"mix:{seed}")
    items = [{"kind": "web", "text": d} for d in world.web_docs for _ in range(cfg.web_epochs)]
    wc = world.config
    drill_kw = {k: v for k, v in math_kwargs(wc).items() if k not in ("min_steps", "max_steps")}
    items += [{"kind": "drill", "text": math.arithmetic_drill(rng, cfg.drill_lines, **drill_kw)}
              for _ in range(cfg.n_drills)]
    train = world.math["train"]
    items += [{"kind": "math", "messages": chat(e.prompt, e.reference)}
              for e in [*train[: cfg.n_math], *steps_mix(world, cfg, seed)]]
    items += [math_refinement_example(rng, rng.choice(train), cfg.scalar_refine_share)
              for _ in range(cfg.n_math_refine)]
    if cfg.n_critique_source:  # their own random stream: a mix without them is unchanged
        src_rng, found = random.Random(f"critique-source:{seed}"), []
        while len(found) < cfg.n_critique_source:
            found += [it for it in [critique_source_example(src_rng, src_rng.choice(train),
                                                            cfg.critique_source_operand)] if it]
        items += found
    sft_people = [world.person(e.meta["entity"]) for e in world.bios["sft"]]
    items += [{"kind": "bio", "messages": chat(bios.bio_prompt(p["name"]), bios.reference_bio(p))}
              for p in sft_people for _ in range(cfg.bio_sft_epochs)]
    items += [bio_refinement_example(rng, rng.choice(sft_people)) for _ in range(cfg.n_bio_refine)]
    rng.shuffle(items)
    if own:
        items += own
        random.Random(f"onpolicy-mix:{seed}").shuffle(items)
    counts = {}
    for it in items:
        counts[it["kind"]] = counts.get(it["kind"], 0) + 1
    log.info("training mix: %s", counts)
    return items


# ---------------------------------------------------------------------------
# M0
# ---------------------------------------------------------------------------


#: Fields added after M0s were committed: at these values (off: the mix those M0s were trained on) they stay out of
#: M0's key, so the committed M0s keep theirs.
LATER_FIELDS = {"world": {"critique_quotes": False, "facts_per_person": 6},
                "m0": {"own_drafts": [], "draft_model": "", "math_steps_mix": [], "n_critique_source": 0,
                       "critique_source_operand": "digit"}}


def training_world_config(world_cfg, m0_cfg):
    """The world M0 is trained on: the recipe's, with ``m0.train_world``'s fields replaced."""
    return dataclasses.replace(world_cfg, **m0_cfg.train_world) if m0_cfg.train_world else world_cfg


def m0_config_hash(world_cfg, m0_cfg) -> str:
    """What determines a retrained M0: the world it is trained on (:func:`training_world_config`) and the M0 training
    fields (not where to load from)."""
    world_cfg = training_world_config(world_cfg, m0_cfg)
    m0 = {k: v for k, v in dataclasses.asdict(m0_cfg).items()
          if k not in ("pretrained", "retrain", "max_seconds", "train_world")}
    if m0_cfg.init_from:  # the weights it continues from, not only their path
        m0["init_from"] = model_fingerprint(resolve_path(m0_cfg.init_from))
    if m0_cfg.own_drafts:  # the weights that write them
        m0["draft_model"] = model_fingerprint(resolve_path(m0_cfg.draft_model or m0_cfg.init_from))
    key = {"world": dataclasses.asdict(world_cfg), "m0": m0}
    for part, defaults in LATER_FIELDS.items():
        for name, default in defaults.items():
            if key[part][name] == default:
                del key[part][name]
    return content_key(key)


def get_m0(recipe, store: RunStore, world: World | None = None):
    """``(model, tokenizer, info)``: M0 pre-trained into ``<run>/checkpoints/M0-<config hash>`` with ``m0.retrain``
    (a rerun with the same config loads it), else loaded from ``m0.pretrained`` (a local path or a Hub id), on the run's
    device and precision (:func:`rlrf_nb.models.placement`); ``info["fingerprint"]`` is
    :func:`rlrf_nb.models.model_fingerprint`."""
    cfg = recipe.m0
    if cfg.retrain:
        path = store.checkpoint_dir(f"M0-{m0_config_hash(recipe.world, cfg)}")
        if not is_complete(path):
            if cfg.train_world:  # M0's own training world, not the one the recipe evaluates on
                world = build_world(training_world_config(recipe.world, cfg))
            world = world or build_world(recipe.world)
            items = training_mix(world, cfg, cfg.seed, own_draft_examples(world, cfg))
            if cfg.init_from:
                model, tokenizer = models.load_policy(resolve_path(cfg.init_from))
                model.train()
            else:
                texts = [it.get("text") or "\n".join(m["content"] for m in it["messages"]) for it in items]
                tokenizer = models.build_tokenizer(texts, cfg.vocab_size, cfg.place_tags)
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
    """Greedy generations for ``items`` through the store: one record per item, keyed by its inputs; with
    ``ecfg.processes`` > 1 the batches run in that many one-thread processes (the same answers)."""
    decode = {"max_new_tokens": ecfg.max_new_tokens, "do_sample": False}

    def key(it):
        return content_key({"model": fingerprint, "prompt": prompt_fn(it), "decode": decode})

    def job(batch):
        return [chat(prompt_fn(it)) for it in batch], {"batch_size": len(batch), "progress": False, **decode}

    def records(batch, outs):
        return [{"id": it_id(it), "prompt": prompt_fn(it), "response": o[0], **extra_fn(it, o[0])}
                for it, o in zip(batch, outs)]

    with generation.sampling_processes(model, tok, ecfg.processes) as workers:
        return store.map_batches(name, items, key, records, batch_size=ecfg.batch_size, desc=name,
                                 imap=generation.store_imap(model, tok, job, workers))


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
        c = math.check_example(text, ex)
        return {"gold": ex.answer, "pred": math.extract_answer(text, "strict"), "correct": c.correct,
                "first_error": c.first_error, "error_kind": c.error_kind, "critique": c.critique}

    recs = _gen_records(store, f"eval/{policy_id}/math_{ecfg.split}", model, tok, fingerprint, examples,
                        lambda ex: ex.prompt, ecfg, grade)
    by_id = {ex.id: ex for ex in examples}
    if not refine:
        return {"accuracy": rate(sum(r["correct"] for r in recs), len(recs)), "records": recs}

    # Refinement of M0's own wrong answers, given the verifier's critique.
    wrong = [{"id": r["id"], "ex": by_id[r["id"]], "draft": r["response"],
              "check": math.check_example(r["response"], by_id[r["id"]])}
             for r in recs if not r["correct"]]
    n_refine = ecfg.n_refine
    own = _refine(store, f"eval/{policy_id}/refine_own", model, tok, fingerprint, wrong[:n_refine], ecfg)

    # Refinement of drafts with one injected error (the wrong step is known exactly).
    rng = random.Random(f"inject:{ecfg.split}")
    injected = []
    for ex in examples[:n_refine]:
        draft, _ = math.corrupt_solution(rng, ex)
        injected.append({"id": ex.id, "ex": ex, "draft": draft,
                         "check": math.check_example(draft, ex)})
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
            for t, splits in (("math", world.math), ("bios", world.bios)) for s, exs in splits.items()]
    return pd.DataFrame(rows).pivot(index="task", columns="split", values="prompts").fillna(0).astype(int)


def kb_table(world: World, n: int = 5):
    import pandas as pd

    return pd.DataFrame(world.people[:n]).set_index("name")


def records_table(records: list[dict], columns: list[str], n: int = 8):
    """The first ``n`` eval records, selected columns, for display."""
    import pandas as pd

    return pd.DataFrame(records[:n])[columns]


def write_results(store: RunStore, row: dict, info: dict) -> dict:
    """Merge ``row`` and which M0 was used into ``<run>/results.json``; returns the merged results."""
    m0 = {k: info[k] for k in ("path", "source", "n_params", "fingerprint")}
    if info.get("training"):
        m0["train_seconds"] = info["training"]["seconds"]
    return store.update_results({**row, "m0": m0})

