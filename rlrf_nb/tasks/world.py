"""The tiny world as a whole: build it from a seed, save and load its fixed splits, and make M0's training mix.

Everything is deterministic from ``WorldConfig.seed``. The evaluation splits are
drawn first from each seeded stream, so changing a training size never changes
what M0 is evaluated on.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

from rlrf_nb.jsonl import iter_jsonl, write_jsonl
from rlrf_nb.prompts import AspectNote, chat, refinement_prompt
from rlrf_nb.tasks import bios, math
from rlrf_nb.tasks.schema import Example

log = logging.getLogger(__name__)

MATH_ASPECTS = ("logical correctness", "completeness")
BIO_ASPECTS = ("factuality", "completeness")


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
        return getattr(self, task)[split]


def build_world(cfg) -> World:
    """Generate the tiny world from a ``WorldConfig``."""
    kw = {"min_steps": cfg.min_steps, "max_steps": cfg.max_steps, "max_value": cfg.max_value,
          "max_factor": cfg.max_factor, "max_operand": cfg.max_operand}
    math_splits = math.generate_splits(cfg.seed, {"test": cfg.math_test, "dev": cfg.math_dev, "rl": cfg.math_rl,
                                                  "train": cfg.math_train}, **kw)
    people = bios.make_people(cfg.seed, cfg.n_people)
    bio_splits = bios.split_people(people, {"test": cfg.people_test, "dev": cfg.people_dev, "rl": cfg.people_rl,
                                            "sft": -1})
    docs = bios.web_documents(people, cfg.seed, cfg.docs_per_person, cfg.bio_error_rate)
    return World(people, math_splits, bio_splits, docs, cfg)


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


def math_refinement_example(rng: random.Random, ex: Example) -> dict:
    """Problem + flawed draft + verifier critique -> corrected solution (or an untouched correct draft)."""
    if rng.random() < 0.2:
        draft = ex.reference
    elif rng.random() < 0.3:
        draft = _wrong_operand_draft(rng, ex)
    else:
        draft, _ = math.corrupt_solution(rng, ex)
    check = math.check_solution(draft, ex.meta["steps"], ex.answer)
    notes = math_notes(check, rng)
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


def _wrong_operand_draft(rng: random.Random, ex: Example) -> str:
    """A draft that copies a wrong number into one step but computes consistently from there."""
    steps = ex.meta["steps"]
    j = rng.randrange(len(steps))
    _, op, b, _ = steps[j]
    new_b = b + rng.choice([1, 2, 3]) if op in "+-" else b
    if new_b == b:  # * and / keep their factor; perturb the carried value instead
        return math.corrupt_solution(rng, ex)[0]
    return math.rewrite_from_step(ex, j, operand=new_b)


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


def training_mix(world: World, cfg, seed: int) -> list[dict]:
    """M0's SFT mix (an ``M0Config``): web documents (plain text, the noisy knowledge source),
    math solutions, bio answers for the SFT people, and refinement examples for both tasks."""
    rng = random.Random(f"mix:{seed}")
    items = [{"kind": "web", "text": d} for d in world.web_docs for _ in range(cfg.web_epochs)]
    wc = world.config
    items += [{"kind": "drill",
               "text": math.arithmetic_drill(rng, cfg.drill_lines, wc.max_value, wc.max_factor, wc.max_operand)}
              for _ in range(cfg.n_drills)]
    train = world.math["train"]
    items += [{"kind": "math", "messages": chat(e.prompt, e.reference)} for e in train[: cfg.n_math]]
    items += [math_refinement_example(rng, rng.choice(train)) for _ in range(cfg.n_math_refine)]
    sft_people = [world.person(e.meta["entity"]) for e in world.bios["sft"]]
    items += [{"kind": "bio", "messages": chat(bios.bio_prompt(p["name"]), bios.reference_bio(p))}
              for p in sft_people for _ in range(cfg.bio_sft_epochs)]
    items += [bio_refinement_example(rng, rng.choice(sft_people)) for _ in range(cfg.n_bio_refine)]
    rng.shuffle(items)
    counts = {}
    for it in items:
        counts[it["kind"]] = counts.get(it["kind"], 0) + 1
    log.info("training mix: %s", counts)
    return items
