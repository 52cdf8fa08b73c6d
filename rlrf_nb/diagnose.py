"""The tiny world as a model organism (notebook 00, ``rlrf-nb diagnose``): measure the properties RLRF needs.

A null result of a method means nothing until the world is shown able to reward it. For any policy and world this
measures, each with a 95% interval: math ability (greedy, pass@1, pass@k, maj@k; final answer and *every step right*), a
chance control (samples scored against another problem's gold: a small answer space that lets guesses pass shows up
high), reflection against resampling at equal budget on the problems greedy gets wrong (m refinements from the
verifier's critique against m fresh samples, and against m refinements from a scalar-only message), facts known with
uncertainty (KB-supported bio claims, greedy and sampled, against chance; and the FactScore that picking among the
policy's own samples could reach, :func:`fact_headroom`), and context coverage (every prompt the loop
builds plus the response cap, against the policy's context length).

Every generation goes through the run store (``diagnose/...`` artifacts keyed by model fingerprint, prompt and
decoding), so a rerun recomputes nothing. :data:`TARGETS` are the tiny world's design targets (docs/tiny_world.md);
:func:`verdicts` checks against them.
"""

from __future__ import annotations

import logging
import random
from collections import Counter

from rlrf_nb import generation
from rlrf_nb.analysis import paired_test
from rlrf_nb.prompts import chat, refinement_prompt, scalar_notes
from rlrf_nb.stats import bootstrap_ci, rate
from rlrf_nb.store import content_key
from rlrf_nb.tasks import bios, math

log = logging.getLogger(__name__)

#: The organism's design targets (issue 16; docs/tiny_world.md), measured on test.
TARGETS = {
    "chance_pass_k": ("<=", 0.02, "chance pass@k (shuffled problems) at most 2%"),
    "headroom": (">=", 0.20, "perfect pass@k minus greedy perfect at least 20 points"),
    "critique_vs_fresh": (">=", 1.5, "refinement from the critique fixes >= 1.5x as many greedy-wrong problems "
                                     "as fresh samples (>= 1 perfect of m)"),
    "critique_minus_scalar_low": (">", 0.0, "the critique beats a scalar-only message (interval above 0)"),
    "bio_greedy_supported": (">=", 0.40, "greedy bios: at least 40% of claims supported"),
    "bio_above_chance": (">=", 0.25, "greedy bios: at least 25 points above chance"),
    "bio_samples_add_facts": (">", 0.0, "samples supply right facts that greedy misses, beyond what guessing supplies "
                                       "(points above the shuffled-person rate)"),
    "context_fits": (">=", 1.0, "every prompt the loop builds fits the context"),
}


def _signature(text: str) -> tuple:
    """A solution's calculator steps and final answer: two samples with the same signature are the same solution
    for majority voting over whole solutions."""
    return tuple(math.ANNOTATION.findall(text)) + (math.extract_answer(text, "strict"),)


def grade_math(text: str, ex) -> dict:
    c = math.check_example(text, ex)
    return {"correct": c.correct, "perfect": c.perfect, "first_error": c.first_error,
            "answer": math.extract_answer(text, "strict")}


def _greedy(store, name, model, tok, fp, prompts: list[tuple[str, str]], max_new_tokens: int, batch_size: int,
            workers=None):
    """Greedy responses for ``(id, user message)`` pairs, through the store (in ``workers`` when given)."""
    decode = {"max_new_tokens": max_new_tokens, "do_sample": False}

    def key(it):
        return content_key({"model": fp, "prompt": it[1], "decode": decode})

    def job(batch):
        return [chat(p) for _, p in batch], {"batch_size": len(batch), "progress": False, **decode}

    def records(batch, outs):
        return [{"id": i, "prompt": p, "response": o[0]} for (i, p), o in zip(batch, outs)]

    return store.map_batches(name, prompts, key, records, batch_size=batch_size, desc=name,
                             imap=generation.store_imap(model, tok, job, workers))


def _samples(store, name, model, tok, fp, prompts: list[tuple[str, str]], n: int, temperature: float,
             max_new_tokens: int, seed: int, batch_size: int, workers=None) -> dict[str, list[str]]:
    recs = generation.generate_to_store(store, name, model, tok, fp, [{"id": i, "prompt": p} for i, p in prompts],
                                        n=n, temperature=temperature, top_p=1.0, max_new_tokens=max_new_tokens,
                                        seed=seed, batch_size=max(1, batch_size // n), policy_id="diagnose",
                                        workers=workers)
    out: dict[str, list[str]] = {}
    for r in recs:
        out.setdefault(r["source_id"], []).append(r["text"])
    return out


def _rate_ci(flags: list[bool]) -> dict:
    return rate(sum(flags), len(flags))


def _mean_ci(values: list[float], seed: int = 0) -> dict:
    b = bootstrap_ci(values, n_boot=1000, seed=seed)
    return {"rate": b["value"], "ci_low": b["ci_low"], "ci_high": b["ci_high"], "n": b["n"], "k": None}


def derangement(n: int, seed: int = 0) -> list[int]:
    """A seeded permutation with no fixed point (item i is scored against item ``perm[i] != i``)."""
    if n < 2:
        return list(range(n))
    rng = random.Random(f"derange:{seed}")
    perm = list(range(n))
    while any(i == p for i, p in enumerate(perm)):
        rng.shuffle(perm)
    return perm


def majority_right(texts: list[str], ex, kind: str) -> bool:
    """maj@k of one problem: the most common final answer is right (``kind`` "correct"), or the most common whole
    solution (:func:`_signature`) is right at every step ("perfect")."""
    if kind == "correct":
        answers = Counter(a for a in (math.extract_answer(t, "strict") for t in texts) if a is not None)
        return bool(answers) and answers.most_common(1)[0][0] == math.normalize_number(ex.answer)
    sig = Counter(_signature(t) for t in texts).most_common(1)[0][0]
    return grade_math(next(t for t in texts if _signature(t) == sig), ex)["perfect"]


def by_steps(examples: list) -> dict[str, list]:
    """The problems grouped by their number of steps, shortest first ("2 steps", "3 steps", ...)."""
    groups: dict[str, list] = {}
    for ex in sorted(examples, key=lambda e: len(e.meta["steps"])):
        groups.setdefault(f"{len(ex.meta['steps'])} steps", []).append(ex)
    return groups


def math_sampling(examples: list, greedy: dict[str, str], samples: dict[str, list[str]], k: int, seed: int = 0) -> dict:
    """Greedy, pass@1, pass@k, maj@k (final answer and perfect), overall and per number of steps, and the chance
    control (samples scored against a shuffled problem's gold answer)."""
    groups = {"all": list(examples), **by_steps(examples)}
    out = {}
    for gname, exs in groups.items():
        row = {}
        for kind in ("correct", "perfect"):
            g = [grade_math(greedy[ex.id], ex)[kind] for ex in exs]
            s = [[grade_math(t, ex)[kind] for t in samples[ex.id][:k]] for ex in exs]
            maj = [majority_right(samples[ex.id][:k], ex, kind) for ex in exs]
            row[kind] = {"greedy": _rate_ci(g), "pass@1": _mean_ci([sum(x) / len(x) for x in s], seed),
                         f"pass@{k}": _rate_ci([any(x) for x in s]), f"maj@{k}": _rate_ci(maj)}
            if gname == "all" and kind == "perfect":  # the headroom target, paired over problems
                headroom = paired_test([float(x) for x in g], [float(any(x)) for x in s], seed=seed)
        out[gname] = row
    perm = derangement(len(examples), seed)
    chance = [any(math.is_correct(t, examples[perm[i]].answer) for t in samples[ex.id][:k])
              for i, ex in enumerate(examples)]
    chance1 = [sum(math.is_correct(t, examples[perm[i]].answer) for t in samples[ex.id][:k]) / k
               for i, ex in enumerate(examples)]
    return {"by_steps": out, "chance": {f"pass@{k}": _rate_ci(chance), "pass@1": _mean_ci(chance1, seed)},
            "headroom": headroom}


def refinement_items(examples: list, greedy: dict[str, str], judge, rubrics, kind: str) -> list[dict]:
    """Refinement prompts for the problems greedy gets wrong: the draft is the greedy answer, the feedback the
    verifier's per-aspect critiques (``kind="critique"``, exactly as the reflection search renders them) or only
    its overall score (``kind="scalar"``)."""
    from rlrf_nb.reflection import notes_from_feedback
    from rlrf_nb.rubrics import OVERALL, aspects_for_tags

    items = []
    for ex in examples:
        draft = greedy[ex.id]
        if grade_math(draft, ex)["perfect"]:
            continue
        if kind == "critique":
            fb = judge.judge(ex.prompt, draft, aspects_for_tags(list(ex.tags)), example=ex).to_dict()
            notes = notes_from_feedback(fb, rubrics)
        else:
            fb = judge.judge(ex.prompt, draft, [OVERALL], example=ex)
            notes = scalar_notes(fb.aspects[0].score, fb.aspects[0].max_score)
        items.append({"id": ex.id, "prompt": refinement_prompt(ex.prompt, draft, notes)})
    return items


def _step_annotation(text: str, j: int) -> tuple[str, str] | None:
    """The (expression, value) of the calculator annotation of step ``j`` (0-based), or None."""
    found = math.ANNOTATION.findall(text)
    return (found[j][0].replace(" ", ""), found[j][1]) if len(found) > j else None


def _where_wrong(text: str, ex, j: int) -> str:
    """Where ``text`` first goes wrong against step ``j`` (0-based): perfect, before, at or after it."""
    c = math.check_example(text, ex)
    if c.perfect:
        return "perfect"
    first = (c.first_error or len(ex.meta["steps"]) + 1) - 1  # a wrong final line alone counts as after every step
    return "before" if first < j else "at" if first == j else "after"


def refinement_by_steps(examples: list, greedy: dict[str, str], samples: dict[str, list[str]],
                        refined: dict[str, dict[str, list[str]]], m: int, seed: int = 0) -> dict:
    """:func:`refinement_vs_fresh` per number of steps: where in the difficulty range the critique is worth more than
    resampling (at stop 41, 3.3x on the 3-step problems M0 v2 cannot yet solve; less than resampling on the 4-step
    problems that hold phases 7-10's headroom)."""
    return {g: refinement_vs_fresh(exs, greedy, samples, refined, m, seed) for g, exs in by_steps(examples).items()}


def critique_used(examples: list, greedy: dict[str, str], refined: dict[str, dict[str, list[str]]], m: int,
                  seed: int = 0) -> dict:
    """Does the policy read the critique? On the greedy-wrong problems whose critique names a wrong or missing step
    and states its right expression, the per-problem share of the m refinements that write that step as stated
    (its annotation), for each kind of message, and how often they repeat the draft's wrong step. A scalar-only
    message does not state the step, so critique minus scalar is what the critique's words are worth.

    ``<kind>_first_error``: where each refinement goes wrong, against the named step, as shares of the m refinements
    averaged over the problems: ``perfect``, ``before`` (a step the draft had right: the kept prefix is broken),
    ``at`` (the named step is still wrong) and ``after`` (the named step is fixed and a later one is not)."""
    named = []  # (problem id, step index, the right annotation, the draft's annotation of that step)
    by_id = {ex.id: ex for ex in examples}
    for ex in examples:
        c = math.check_example(greedy[ex.id], ex)
        if c.error_kind in ("wrong_step", "missing_step"):
            j = c.first_error - 1
            x, op, b, y = ex.meta["steps"][j]
            named.append((ex.id, j, (f"{x}{op}{b}", str(y)), _step_annotation(greedy[ex.id], j)))
    out, per = {"problems": len(named)}, {}
    for kind, texts in refined.items():
        per[kind] = [sum(_step_annotation(t, j) == right for t in texts[i][:m]) / m for i, j, right, _ in named]
        out[kind] = _mean_ci(per[kind], seed)
        out[f"{kind}_repeats_draft"] = _mean_ci(
            [sum(drafted is not None and _step_annotation(t, j) == drafted for t in texts[i][:m]) / m
             for i, j, _, drafted in named], seed)
        where = [[_where_wrong(t, by_id[i], j) for t in texts[i][:m]] for i, j, _, _ in named]
        out[f"{kind}_first_error"] = {w: _mean_ci([ws.count(w) / m for ws in where], seed)
                                      for w in ("perfect", "before", "at", "after")}
    if "critique" in per and "scalar" in per:
        out["critique_minus_scalar"] = paired_test(per["scalar"], per["critique"], seed=seed)
    return out


def refinement_vs_fresh(examples: list, greedy: dict[str, str], samples: dict[str, list[str]],
                        refined: dict[str, dict[str, list[str]]], m: int, seed: int = 0) -> dict:
    """On the problems greedy gets wrong (not perfect): the share with at least one perfect solution among m
    fresh samples, m refinements from the critique, and m from a scalar-only message; the ratio critique/fresh
    (bootstrap interval over problems) and the paired differences."""
    by_id = {ex.id: ex for ex in examples}
    wrong = [ex.id for ex in examples if not grade_math(greedy[ex.id], ex)["perfect"]]
    hit = {"fresh": [any(grade_math(t, by_id[i])["perfect"] for t in samples[i][:m]) for i in wrong]}
    for kind, texts in refined.items():
        hit[kind] = [any(grade_math(t, by_id[i])["perfect"] for t in texts[i][:m]) for i in wrong]
    out = {"greedy_wrong": len(wrong), **{kind: _rate_ci(v) for kind, v in hit.items()}}
    if "critique" in hit:
        rng = random.Random(seed)
        n, ratios = len(wrong), []
        for _ in range(1000 if n else 0):
            idx = [rng.randrange(n) for _ in range(n)]
            f, c = sum(hit["fresh"][j] for j in idx), sum(hit["critique"][j] for j in idx)
            ratios.append(c / f if f else float("inf") if c else float("nan"))
        ratios.sort(key=lambda r: (r != r, r))  # NaN (nothing fixed either way) last
        f, c = sum(hit["fresh"]), sum(hit["critique"])
        # 0/0 is no evidence either way (NaN fails the target), c/0 with c > 0 is infinitely better
        out["critique_vs_fresh"] = {"ratio": c / f if f else float("inf") if c else float("nan"),
                                    "ci_low": ratios[25] if ratios else float("nan"),
                                    "ci_high": ratios[974] if ratios else float("nan")}
        out["critique_minus_fresh"] = paired_test([float(x) for x in hit["fresh"]],
                                                  [float(x) for x in hit["critique"]], seed=seed)
        if "scalar" in hit:
            out["critique_minus_scalar"] = paired_test([float(x) for x in hit["scalar"]],
                                                       [float(x) for x in hit["critique"]], seed=seed)
    return out


def _attr_values() -> dict[str, int]:
    """How many values each bio attribute can take (the uniform-guess chance is 1/count)."""
    counts = {a: len(v) for a, v in bios._VALUES.items()}
    counts["birth_year"] = bios.YEAR_RANGE[1] - bios.YEAR_RANGE[0] + 1
    return counts


def bio_facts(examples: list, world, greedy: dict[str, str], samples: dict[str, list[str]], seed: int = 0) -> dict:
    """Share of claims supported (greedy, sampled), against chance, and right facts that only samples have."""
    def check(text, person):
        return bios.check_bio(text, person)

    people = [world.person(ex.meta["entity"]) for ex in examples]
    g_claims = [check(greedy[ex.id], p) for ex, p in zip(examples, people)]
    n_claims = sum(len(c) for c in g_claims)
    g_sup = sum(c.status == "supported" for cs in g_claims for c in cs)
    s_claims = [[check(t, p) for t in samples[ex.id]] for ex, p in zip(examples, people)]
    s_n = sum(len(c) for cs in s_claims for c in cs)
    s_sup = sum(c.status == "supported" for cs in s_claims for c2 in cs for c in c2)
    # chance: the values the policy wrote, checked against a shuffled person's KB record
    perm = derangement(len(examples), seed)
    shuffled = sum(c.attribute is not None and c.value == people[perm[i]][c.attribute]
                   for i, cs in enumerate(g_claims) for c in cs)
    counts = _attr_values()
    attrs = bios.attributes_of(people[0] if people else None)
    uniform = sum(1 / counts[a] for a in attrs) / len(attrs)
    # facts samples supply that greedy misses, per (person, attribute); the same count against a shuffled person's
    # record is what guessing alone supplies (16 samples of a 10-value attribute hit often by luck)
    def right(claims, person) -> set:
        return {c.attribute for c in claims if c.attribute is not None and c.value == person[c.attribute]}

    missed = added = missed_chance = added_chance = 0
    for i, (cs, scs) in enumerate(zip(g_claims, s_claims)):
        for person, counts_to in ((people[i], "true"), (people[perm[i]], "chance")):
            g_ok = right(cs, person)
            s_ok = set().union(*(right(c2, person) for c2 in scs)) if scs else set()
            if counts_to == "true":
                missed += len(bios.attributes_of(person)) - len(g_ok)
                added += len(s_ok - g_ok)
            else:
                missed_chance += len(bios.attributes_of(person)) - len(g_ok)
                added_chance += len(s_ok - g_ok)
    sup = rate(g_sup, n_claims)
    add, add_chance = rate(added, missed), rate(added_chance, missed_chance)
    return {"greedy_supported": sup, "sampled_supported": rate(s_sup, s_n),
            "claims_per_bio": n_claims / len(examples) if examples else float("nan"),
            "chance_uniform": uniform, "chance_shuffled": rate(shuffled, n_claims),
            "above_chance": sup["rate"] - max(uniform, shuffled / n_claims if n_claims else 0.0),
            "samples_add_facts": add, "samples_add_facts_chance": add_chance,
            "samples_add_above_chance": add["rate"] - add_chance["rate"]}


def _stated(text: str, person: dict) -> dict[str, str]:
    """attribute -> the value ``text`` states about ``person`` (sentences naming them; the first per attribute)."""
    out: dict[str, str] = {}
    for c in bios.check_bio(text, person):
        if c.attribute is not None and c.status != "unsupported":
            out.setdefault(c.attribute, c.value)
    return out


def fact_headroom(examples: list, world, greedy: dict[str, str], samples: dict[str, list[str]]) -> dict:
    """How far FactScore (notebook 05's scorer: :func:`rlrf_nb.evals.factscore.factscore`, exact decomposer and KB
    verifier, gamma 10) can move if a policy only picks among what it already writes, per test person:

    - ``greedy``: its greedy bios;
    - ``majority``: per attribute, the value most of its samples state (a tie keeps greedy's value if tied, else the
      first met; greedy's value where no sample states one; greedy's whole bio where neither states anything about
      the person, so it scores as greedy does instead of dropping out as an abstention): a policy sharpened onto its
      own modes;
    - ``oracle``: per attribute, the true value if any sample states it, else greedy's: picking right among its own
      samples, an upper bound for people it is not trained on (fine-tuning on other people's bios reaches it only if
      the policy learns which of its own facts are wrong; the stop-49 bios pilots stayed at the mode);
    - ``canonical``: greedy's facts about the person (claims that name them, the first per attribute) rewritten as
      one canonical sentence each: what ``majority`` and ``oracle`` get from their rebuilding alone (a miscopied
      name, an unparsed wording and a repeated sentence are gone before any value is picked);
    - ``omit_wrong``: greedy's own sentences with its unsupported ones deleted, as many as raise the person's score
      (FActScore's length penalty charges every sentence dropped below 10; none dropped is greedy itself): the most a
      policy gains by *leaving out* what it gets wrong, with nothing put right or reworded (the FactTune-style
      lever; stop 50);
    - ``all_right``: every attribute true, the world's ceiling (a world v2 person has ``len(bios.ATTRIBUTES)`` = 6
      facts, so the length penalty caps it at ``length_penalty(6)`` = 0.513; 10 or more facts, at 1).

    Each entry holds ``score`` with its interval, ``init_score`` (supported fraction) and ``facts_per_response``."""
    from rlrf_nb.evals.factscore import KBVerifier, SentenceDecomposer, factscore, length_penalty

    people = [world.person(ex.meta["entity"]) for ex in examples]
    verifier = KBVerifier(world)
    bios_of: dict[str, list[str]] = {"greedy": [], "canonical": [], "majority": [], "oracle": [], "omit_wrong": [],
                                     "all_right": []}
    for ex, person in zip(examples, people):
        g = _stated(greedy[ex.id], person)
        stated = [_stated(t, person) for t in samples.get(ex.id, [])]
        maj, orc = {}, {}
        attrs = bios.attributes_of(person)
        for a in attrs:
            votes = Counter(s[a] for s in stated if a in s)
            if votes:
                top = max(votes.values())
                modes = [v for v, n in votes.items() if n == top]
                maj[a] = g[a] if g.get(a) in modes else modes[0]
            elif a in g:
                maj[a] = g[a]
            if any(s.get(a) == person[a] for s in stated):
                orc[a] = person[a]
            elif a in g:
                orc[a] = g[a]
        sents = bios.split_claims(greedy[ex.id])
        ok = [v.supported for v in verifier.verify(person["name"], sents)] if sents else []
        n, right = len(sents), sum(bool(v) for v in ok)
        drops = max(range(n - right + 1), key=lambda j: right / (n - j) * length_penalty(n - j) if n - j else 0.0)
        bad = [i for i, v in enumerate(ok) if not v][:drops]  # the first of ties above: the fewest dropped
        bios_of["omit_wrong"].append(" ".join(t for i, t in enumerate(sents) if i not in bad) or greedy[ex.id])
        bios_of["greedy"].append(greedy[ex.id])
        for name, vals in (("canonical", g), ("majority", maj), ("oracle", orc), ("all_right", dict(person))):
            text = " ".join(bios.fact_sentence(person["name"], a, vals[a]) for a in attrs if a in vals)
            bios_of[name].append(text or greedy[ex.id])  # nothing stated about them: greedy's bio, scored as it is
    topics = [p["name"] for p in people]
    out = {}
    for name, texts in bios_of.items():
        fs = factscore(texts, topics, SentenceDecomposer(), verifier)
        out[name] = {k: fs[k] for k in ("score", "ci_low", "ci_high", "init_score", "facts_per_response")}
    return out


def context_coverage(tokenizer, prompts: dict[str, list[str]], max_new_tokens: int, context: int) -> dict:
    """Per prompt kind: how many prompts, the longest in tokens, and the share whose prompt plus the response cap
    fits the context."""
    out = {}
    for kind, texts in prompts.items():
        lens = [len(tokenizer.apply_chat_template(chat(t), add_generation_prompt=True, tokenize=True,
                                                  return_dict=True)["input_ids"]) for t in texts]
        fits = [n + max_new_tokens <= context for n in lens]
        out[kind] = {"prompts": len(lens), "max_tokens": max(lens, default=0), "fits": _rate_ci(fits)}
    return out


def context_length(model) -> int:
    cfg = model.config.get_text_config()
    return cfg.max_position_embeddings


def diagnose(model, tokenizer, fingerprint: str, world, store, cfg, *, judge, rubrics, seed: int = 0) -> dict:
    """Every property of the organism for one policy (a ``DiagnoseConfig``); see the module docstring. With
    ``cfg.processes`` > 1 on a CPU, the generations run in that many one-thread processes (the same texts)."""
    with generation.sampling_processes(model, tokenizer, cfg.processes) as workers:
        return _diagnose(model, tokenizer, fingerprint, world, store, cfg, judge=judge, rubrics=rubrics, seed=seed,
                         workers=workers)


def _diagnose(model, tokenizer, fingerprint: str, world, store, cfg, *, judge, rubrics, seed: int, workers) -> dict:
    exs = world.math[cfg.split][: cfg.n_math]
    bio_exs = world.bios[cfg.split][: cfg.n_bios]
    pre = f"diagnose/{cfg.split}"
    greedy = {r["id"]: r["response"] for r in _greedy(store, f"{pre}/math_greedy", model, tokenizer, fingerprint,
                                                      [(ex.id, ex.prompt) for ex in exs], cfg.max_new_tokens,
                                                      cfg.batch_size, workers)}
    out = {"split": cfg.split, "n_math": len(exs), "n_bios": len(bio_exs), "k": cfg.k, "m": cfg.m,
           "fingerprint": fingerprint, "math": {}, "reflection": {}}
    all_refine_prompts = []
    for temp in cfg.temperatures:
        tag = f"T{temp:g}"
        samples = _samples(store, f"{pre}/math_samples_{tag}", model, tokenizer, fingerprint,
                           [(ex.id, ex.prompt) for ex in exs], cfg.k, temp, cfg.max_new_tokens, seed, cfg.batch_size,
                           workers)
        out["math"][tag] = math_sampling(exs, greedy, samples, cfg.k, seed)
        refined = {}
        for kind in ("critique", "scalar"):
            items = refinement_items(exs, greedy, judge, rubrics, kind)
            all_refine_prompts += [it["prompt"] for it in items]
            recs = _samples(store, f"{pre}/refine_{kind}_{tag}", model, tokenizer, fingerprint,
                            [(it["id"], it["prompt"]) for it in items], cfg.m, temp, cfg.max_new_tokens, seed + 1,
                            cfg.batch_size, workers)
            refined[kind] = recs
        out["reflection"][tag] = refinement_vs_fresh(exs, greedy, samples, refined, cfg.m, seed)
        out["reflection"][tag]["named_step"] = critique_used(exs, greedy, refined, cfg.m, seed)
        out["reflection"][tag]["by_steps"] = refinement_by_steps(exs, greedy, samples, refined, cfg.m, seed)
    if bio_exs:
        bgreedy = {r["id"]: r["response"] for r in _greedy(store, f"{pre}/bio_greedy", model, tokenizer, fingerprint,
                                                           [(ex.id, ex.prompt) for ex in bio_exs],
                                                           cfg.max_new_tokens, cfg.batch_size, workers)}
        bsamples = _samples(store, f"{pre}/bio_samples_T{cfg.temperatures[0]:g}", model, tokenizer, fingerprint,
                            [(ex.id, ex.prompt) for ex in bio_exs], cfg.k, cfg.temperatures[0], cfg.max_new_tokens,
                            seed, cfg.batch_size, workers)
        out["bios"] = bio_facts(bio_exs, world, bgreedy, bsamples, seed)
        out["bios"]["factscore_headroom"] = fact_headroom(bio_exs, world, bgreedy, bsamples)
    prompts = loop_prompts(world, judge, rubrics, greedy_drafts=greedy, examples=exs)
    prompts["math refinement (diagnosed drafts)"] = all_refine_prompts
    out["context"] = context_coverage(tokenizer, prompts, cfg.max_new_tokens, context_length(model))
    out["dev_problems"] = len(world.math["dev"])
    return out


def loop_prompts(world, judge, rubrics, *, greedy_drafts: dict[str, str], examples: list) -> dict[str, list[str]]:
    """The user messages the loop builds: every math and bio question of every split, and the refinement prompts
    of the longest bio drafts (a reference bio with every fact wrong, the longest critique the verifier writes)."""
    from rlrf_nb.reflection import notes_from_feedback
    from rlrf_nb.rubrics import aspects_for_tags

    questions = [ex.prompt for split in world.math.values() for ex in split]
    bio_q = [ex.prompt for split in world.bios.values() for ex in split]
    bio_ref = []
    rng = random.Random(0)
    for ex in [e for split in world.bios.values() for e in split][:200]:
        person = world.person(ex.meta["entity"])
        draft, _ = bios.corrupt_bio(rng, person, n_wrong=len(bios.attributes_of(person)))
        fb = judge.judge(ex.prompt, draft, aspects_for_tags(list(ex.tags)), example=ex).to_dict()
        bio_ref.append(refinement_prompt(ex.prompt, draft, notes_from_feedback(fb, rubrics)))
    return {"math question": questions, "bio question": bio_q, "bio refinement (all facts wrong)": bio_ref}


# ---------------------------------------------------------------------------------------------------------------
# Reading a diagnosis
# ---------------------------------------------------------------------------------------------------------------


def headline(d: dict) -> dict[str, float]:
    """The numbers :data:`TARGETS` are stated on (first temperature for sampling-based ones)."""
    tag = next(iter(d["math"]))
    k = d["k"]
    allp = d["math"][tag]["by_steps"]["all"]["perfect"]
    refl = d["reflection"][tag]
    out = {
        "chance_pass_k": d["math"][tag]["chance"][f"pass@{k}"]["rate"],
        "headroom": allp[f"pass@{k}"]["rate"] - allp["greedy"]["rate"],
        "critique_vs_fresh": refl.get("critique_vs_fresh", {}).get("ratio", float("nan")),
        "critique_minus_scalar_low": refl.get("critique_minus_scalar", {}).get("ci_low", float("nan")),
        "context_fits": min(v["fits"]["rate"] for v in d["context"].values() if v["prompts"]),
    }
    if "bios" in d:
        b = d["bios"]
        out.update(bio_greedy_supported=b["greedy_supported"]["rate"], bio_above_chance=b["above_chance"],
                   bio_samples_add_facts=b["samples_add_above_chance"])
    return out


def verdicts(d: dict) -> list[dict]:
    """Each target of :data:`TARGETS` with the measured value and whether it holds."""
    h = headline(d)
    rows = []
    for name, (op, bar, text) in TARGETS.items():
        if name not in h:
            continue
        v = h[name]
        ok = v <= bar if op == "<=" else v >= bar if op == ">=" else v > bar
        rows.append({"property": text, "value": v, "bar": f"{op} {bar:g}", "holds": bool(ok)})
    return rows


def _fmt(r: dict) -> str:
    if r.get("k") is None:
        return f"{100 * r['rate']:.1f} [{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}]"
    return f"{100 * r['rate']:.1f} [{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}] ({r['k']}/{r['n']})"


def report_lines(d: dict) -> list[str]:
    """A plain-text report of a diagnosis (what ``rlrf-nb diagnose`` prints): percentages with 95% intervals."""
    k, m = d["k"], d["m"]
    lines = [f"organism on {d['split']}: {d['n_math']} math problems, {d['n_bios']} bios; k={k} samples, "
             f"m={m} refinements; {d['dev_problems']} dev problems"]
    for tag, res in d["math"].items():
        lines.append(f"math, sampling at {tag} (%, 95% CI):")
        for group, row in res["by_steps"].items():
            for kind in ("correct", "perfect"):
                cells = "  ".join(f"{name} {_fmt(r)}" for name, r in row[kind].items())
                lines.append(f"  {group:<8} {'final answer' if kind == 'correct' else 'every step':<12} {cells}")
        lines.append(f"  chance (samples vs a shuffled problem's answer): pass@{k} {_fmt(res['chance'][f'pass@{k}'])}"
                     f"  pass@1 {_fmt(res['chance']['pass@1'])}")
        if "headroom" in res:  # diagnoses written before stop 51 lack it
            h = res["headroom"]
            lines.append(f"  headroom (pass@{k} minus greedy, every step right, paired over problems): "
                         f"{100 * h['diff']:+.1f} [{100 * h['ci_low']:+.1f}, {100 * h['ci_high']:+.1f}] points")
        r = d["reflection"][tag]
        lines.append(f"  greedy-wrong problems ({r['greedy_wrong']}) with >= 1 perfect of {m}: fresh samples "
                     f"{_fmt(r['fresh'])}, refinements from the critique {_fmt(r['critique'])}, from a scalar-only "
                     f"message {_fmt(r['scalar'])}")
        if "critique_vs_fresh" in r:
            c = r["critique_vs_fresh"]
            cs = r["critique_minus_scalar"]
            lines.append(f"  critique / fresh = {c['ratio']:.2f} [{c['ci_low']:.2f}, {c['ci_high']:.2f}];  critique "
                         f"- scalar = {100 * cs['diff']:+.1f} [{100 * cs['ci_low']:+.1f}, {100 * cs['ci_high']:+.1f}] "
                         "points")
        for group, g in r.get("by_steps", {}).items():
            if g["greedy_wrong"] and "critique_vs_fresh" in g:
                c = g["critique_vs_fresh"]
                lines.append(f"    {group}: greedy-wrong {g['greedy_wrong']}, fresh {_fmt(g['fresh'])}, critique "
                             f"{_fmt(g['critique'])}, scalar-only {_fmt(g['scalar'])}; critique / fresh "
                             f"{c['ratio']:.2f} [{c['ci_low']:.2f}, {c['ci_high']:.2f}]")
        if "named_step" in r and "critique_minus_scalar" in r["named_step"]:
            u, cs = r["named_step"], r["named_step"]["critique_minus_scalar"]
            lines.append(f"  is the critique read? of {u['problems']} greedy-wrong problems whose critique states the "
                         f"wrong step's right expression, refinements that write it so: from the critique "
                         f"{_fmt(u['critique'])}, from a scalar-only message {_fmt(u['scalar'])}, difference "
                         f"{100 * cs['diff']:+.1f} [{100 * cs['ci_low']:+.1f}, {100 * cs['ci_high']:+.1f}] points; "
                         f"they repeat the draft's wrong step {_fmt(u['critique_repeats_draft'])} and "
                         f"{_fmt(u['scalar_repeats_draft'])}")
            for kind, said in (("critique", "the critique"), ("scalar", "a scalar-only message")):
                if f"{kind}_first_error" in u:
                    f = u[f"{kind}_first_error"]
                    lines.append(f"  where the refinements from {said} first go wrong: before the named step (the "
                                 f"kept prefix broken) {_fmt(f['before'])}, at it {_fmt(f['at'])}, after it "
                                 f"{_fmt(f['after'])}; perfect {_fmt(f['perfect'])}")
    if "bios" in d:
        b = d["bios"]
        lines.append(f"bios: greedy claims supported {_fmt(b['greedy_supported'])}; sampled "
                     f"{_fmt(b['sampled_supported'])}; {b['claims_per_bio']:.1f} claims per bio")
        lines.append(f"  chance: uniform guess {100 * b['chance_uniform']:.1f}, shuffled person "
                     f"{_fmt(b['chance_shuffled'])}; greedy above chance by {100 * b['above_chance']:.1f} points")
        lines.append("  (person, attribute) facts greedy misses that a sample gets right: "
                     f"{_fmt(b['samples_add_facts'])}; against a shuffled person (guessing) "
                     f"{_fmt(b['samples_add_facts_chance'])}")
        if "factscore_headroom" in b:
            h = b["factscore_headroom"]
            cells = ", ".join(f"{name.replace('_', ' ')} {h[name]['score']:.3f} [{h[name]['ci_low']:.3f}, "
                              f"{h[name]['ci_high']:.3f}] ({100 * h[name]['init_score']:.1f}% supported)"
                              for name in ("greedy", "canonical", "majority", "oracle", "omit_wrong", "all_right")
                              if name in h)
            lines.append(f"  FactScore of bios that pick among the policy's own: {cells}")
    lines.append("context coverage (prompt + response cap within the context):")
    for kind, c in d["context"].items():
        lines.append(f"  {kind:<36} {c['prompts']:>6} prompts, longest {c['max_tokens']:>4} tokens, fits "
                     f"{_fmt(c['fits'])}")
    lines.append("design targets:")
    for v in verdicts(d):
        lines.append(f"  {'PASS' if v['holds'] else 'FAIL'}  {v['property']}: {v['value']:.3f} ({v['bar']})")
    return lines
