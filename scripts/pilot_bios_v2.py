"""Issue 16, world v2 bios: a feasibility pilot. Can a small Llama, trained from scratch on one CPU thread within a
wall budget, *know* the biography facts of held-out people, i.e. people it saw only in noisy web documents and never
in bio SFT?

The design follows the knowledge-storage results of Allen-Zhu & Li ("Physics of Language Models 3.1"): many
exposures per fact, each in a different document with its own subset, order and wording of the facts, the full name
in every sentence, and *mixed training*: the bio SFT people's bios ("Tell me a bio of X." -> canonical bio) are part
of the pre-training mix, so the model learns to extract a stored fact for a person whose bio it never saw.

People, web documents (``web_documents``: random subset of 3-6 attributes, random order, 3 paraphrases per attribute,
each mention wrong with probability ``--noise``), bio prompts, reference bios and the claim checker all come from
``rlrf_nb.tasks.bios``; the tokenizer (digits one per token), the model (``LlamaForCausalLM``) from
``rlrf_nb.models``; sampling from ``rlrf_nb.generation``; the facts statistics from ``rlrf_nb.diagnose.bio_facts``
(the same definitions ``rlrf-nb diagnose`` prints). Training is a plain PyTorch loop: batches of whole items
(no packing across items), AdamW, linear warm-up and a cosine schedule over the *wall* budget (the pilot asks what a
budget buys; it is therefore not bit-reproducible under a different load, unlike M0's step schedule).

Measured on ``--n-test`` test people (only in web documents), with 95% Wilson intervals:
- greedy bios: claims supported, claims per bio, chance (a uniform guess per attribute; the claims checked against a
  shuffled person), the share of claims that miscopy the person's name;
- ``--k`` samples at T = 1.0 and T = 0.7: claims supported, and the share of (person, attribute) facts greedy misses
  that some sample gets right, against the same for a shuffled person;
- storage probes (teacher-forced, greedy argmax of every value token after "X works for", etc.): whether the fact is
  stored at all, for test people and for SFT people;
- greedy bios of SFT people (memorised format and facts), for comparison.

The two runs of docs/tiny_world.md ("World v2: what was tried"; results in benchmarks/pilot_bios_v2/):

    OMP_NUM_THREADS=1 .venv/bin/python scripts/pilot_bios_v2.py --budget-min 30 --out runs/pilot_bios_v2/run1
    OMP_NUM_THREADS=1 .venv/bin/python scripts/pilot_bios_v2.py --n-people 600 --docs-min 1 --docs-per-person 30 \
        --sft-repeat 1 --budget-min 25 --probe-every-min 2.5 --out runs/pilot_bios_v2/run2
    OMP_NUM_THREADS=1 .venv/bin/python scripts/pilot_bios_v2.py --smoke        # seconds: the code path only

Stop 49's four runs (docs/tiny_world.md, "More facts per person"; benchmarks/pilot_bios_v2/run3-run6), all with
``--n-people 600 --docs-min 1 --docs-per-person 30 --sft-repeat 1 --probe-every-min 5 --context 256
--max-new-tokens 200``:

    run 3: --n-test 60 --attributes 6 --budget-min 25
    run 4: --n-test 60 --attributes 12 --budget-min 50
    run 5: --n-test 220 --attributes 12 --budget-min 25       # world v2's test, dev and rl people held out
    run 6: --n-test 220 --attributes 12 --budget-min 25 --sft-min-facts 8

Stop 50's four (docs/tiny_world.md, "Leaving facts out, and a weaker M0"; benchmarks/pilot_bios_v2/run7-run10), the
same flags with ``--attributes 12 --budget-min 25``; fewer SFT people (``--n-people`` minus ``--n-test``):

    run 7: --n-people 320 --n-test 220        # 100 SFT bios
    run 8: --n-people 270 --n-test 220        # 50
    run 9: --n-people 720 --n-test 620        # 100, and a 500-person rl pool for pilot_bios_rs.py --rl-people 500
    run 10: --n-people 670 --n-test 620       # 50
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from rlrf_nb import generation, models  # noqa: E402
from rlrf_nb.diagnose import _attr_values, _stated, bio_facts, fact_headroom  # noqa: E402
from rlrf_nb.prompts import chat  # noqa: E402
from rlrf_nb.stats import format_rate, rate  # noqa: E402
from rlrf_nb.tasks import bios  # noqa: E402
from rlrf_nb.tiny_world import World  # noqa: E402

# ----------------------------------------------------------------------------------------------------------- data

def docs_counts(a) -> list[int]:
    """Documents per person: ``--docs-per-person`` each, or (``--docs-min`` below it) a popularity tail, log-uniform
    between ``--docs-min`` and ``--docs-per-person`` (FactScore's rare and frequent entities)."""
    if a.docs_min is None or a.docs_min >= a.docs_per_person:
        return [a.docs_per_person] * a.n_people
    rng = random.Random(f"popularity:{a.seed}")
    lo, hi = math.log(a.docs_min), math.log(a.docs_per_person + 1)
    return [min(a.docs_per_person, int(math.exp(rng.uniform(lo, hi)))) for _ in range(a.n_people)]


def sft_bio(person: dict, rng: random.Random, min_facts: int | None = None, true_mentions: dict | None = None,
            known_min: int | None = None, omit_p: float = 1.0) -> str:
    """An SFT person's bio: the reference bio; or (``min_facts``) a random subset of at least ``min_facts`` of its
    facts in canonical order, one subset per person: bios that do not always state every fact; or (``known_min``)
    the facts its documents support: a fact whose true value is mentioned in fewer than ``known_min`` of the person's
    web documents is left out with probability ``omit_p`` (bios whose length follows what can be known; at least one
    fact, the most mentioned)."""
    attrs = bios.attributes_of(person)
    if known_min is not None:
        keep = [at for at in attrs if true_mentions[at] >= known_min or rng.random() >= omit_p]
        keep = keep or [max(attrs, key=lambda at: true_mentions[at])]
        return " ".join(bios.fact_sentence(person["name"], at, person[at]) for at in keep)
    if min_facts is None or min_facts >= len(attrs):
        return bios.reference_bio(person)
    keep = set(rng.sample(attrs, rng.randint(min_facts, len(attrs))))
    return " ".join(bios.fact_sentence(person["name"], at, person[at]) for at in attrs if at in keep)


def build_data(a) -> dict:
    """People (test first, then SFT), web documents for everyone, SFT bios for the SFT people only."""
    people = bios.make_people(a.seed, a.n_people, a.attributes)
    test, sft = people[: a.n_test], people[a.n_test:]
    counts = docs_counts(a)
    if len(set(counts)) == 1:  # one call: the corpus of the first pilot run
        docs = bios.web_documents(people, a.seed, counts[0], a.noise)
        seeds = None
    else:  # one seeded stream per person, so each person's documents do not depend on the others' counts
        seeds = [f"{a.seed}:{i}" for i in range(len(people))]
        docs = [d for p, sd, n in zip(people, seeds, counts) for d in bios.web_documents([p], sd, n, a.noise)]
        random.Random(f"docs:{a.seed}").shuffle(docs)
    data = {"people": people, "test": test, "sft": sft, "docs": docs, "docs_counts": counts, "doc_seeds": seeds}
    known_min = getattr(a, "sft_known_mentions", None)
    true = count_mentions(data, a)["true"] if known_min is not None else [None] * len(people)
    rng = random.Random(f"sft-facts:{a.seed}")
    data["sft_items"] = [{"kind": "bio", "messages": chat(bios.bio_prompt(p["name"]), sft_bio(
        p, rng, a.sft_min_facts, t, known_min, getattr(a, "sft_omit_p", 1.0)))}
        for p, t in zip(sft, true[len(test):])]
    return data


def tokenize_items(data: dict, tok, a) -> tuple[list[list[int]], list[str]]:
    """One corpus epoch: every web document once and every SFT bio ``--sft-repeat`` times, as token ids (BOS ... EOS
    for documents, the chat template for bios). Loss is on every token (pre-training style, as M0)."""
    seqs, kinds = [], []
    for d in data["docs"]:
        seqs.append([tok.bos_token_id] + tok(d, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
        kinds.append("web")
    for it in data["sft_items"]:
        ids = tok.apply_chat_template(it["messages"], tokenize=True, return_dict=True)["input_ids"]
        for _ in range(a.sft_repeat):
            seqs.append(list(ids))
            kinds.append("bio")
    too_long = sum(len(s) > a.context for s in seqs)
    if too_long:
        raise ValueError(f"{too_long} items are longer than --context {a.context}")
    return seqs, kinds


def batches_for_epoch(seqs: list[list[int]], rng: random.Random, batch_size: int) -> list[list[int]]:
    """Indices of the epoch's batches: shuffled, then sorted by length within chunks of 50 batches (little padding),
    and the batches shuffled again."""
    idx = list(range(len(seqs)))
    rng.shuffle(idx)
    chunk = 50 * batch_size
    out = []
    for s in range(0, len(idx), chunk):
        part = sorted(idx[s:s + chunk], key=lambda i: len(seqs[i]))
        out += [part[j:j + batch_size] for j in range(0, len(part), batch_size)]
    rng.shuffle(out)
    return out


def collate(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    att = torch.zeros((len(seqs), n), dtype=torch.long)
    lab = torch.full((len(seqs), n), -100, dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = torch.tensor(s)
        att[r, : len(s)] = 1
        lab[r, : len(s)] = torch.tensor(s)
    return ids, att, lab


# ------------------------------------------------------------------------------------------------- storage probe

PROBE_TEMPLATE = {a: t.split("{v}")[0] for a, t in bios.CANONICAL.items()}  # "{N} works for " ...


def storage_probe(model, tok, people: list[dict]) -> dict:
    """Per (person, attribute): is the true value the greedy continuation of the canonical sentence's prefix
    ("<bos>X works for" -> "Norveth Labs")? Teacher-forced: every value token must be the argmax."""
    model.eval()
    rows = []
    for p in people:
        for a in bios.attributes_of(p):
            full = bios.fact_sentence(p["name"], a, p[a])
            prefix = PROBE_TEMPLATE[a].format(N=p["name"], a=bios._article(p[a])).rstrip()
            pre = [tok.bos_token_id] + tok(prefix, add_special_tokens=False)["input_ids"]
            ids = [tok.bos_token_id] + tok(full.rstrip("."), add_special_tokens=False)["input_ids"]
            if ids[: len(pre)] != pre:  # tokenisation of the prefix differs inside the sentence: skip
                continue
            rows.append((ids, len(pre), a))
    ok_by_attr: dict[str, list[int]] = {a: [0, 0] for a in bios.attributes_of(people[0] if people else None)}
    hits = 0
    with torch.no_grad():
        for s in range(0, len(rows), 64):
            chunk = rows[s:s + 64]
            ids, att, _ = collate([r[0] for r in chunk], tok.pad_token_id)
            pred = model(input_ids=ids, attention_mask=att).logits.argmax(-1)
            for r, (seq, npre, a) in enumerate(chunk):
                good = all(int(pred[r, j - 1]) == seq[j] for j in range(npre, len(seq)))
                hits += good
                ok_by_attr[a][0] += good
                ok_by_attr[a][1] += 1
    model.train()
    return {"all": rate(hits, len(rows)), "by_attribute": {a: rate(k, n) for a, (k, n) in ok_by_attr.items()}}


# ---------------------------------------------------------------------------------------------------------- train

def train(model, tok, seqs, kinds, a, probe_people: dict[str, list[dict]]) -> dict:
    torch.manual_seed(a.seed)
    rng = random.Random(f"order:{a.seed}")
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.weight_decay, betas=(0.9, 0.98))
    budget = a.budget_min * 60
    model.train()
    step = epoch = tokens = 0
    history, probes = [], []
    t0 = time.monotonic()
    next_probe = a.probe_every_min * 60
    loss_acc, n_acc = 0.0, 0
    done = False
    while not done:
        for b in batches_for_epoch(seqs, rng, a.batch_size):
            elapsed = time.monotonic() - t0
            if elapsed >= budget or (a.max_steps and step >= a.max_steps):
                done = True
                break
            frac = elapsed / budget
            lr = a.lr * min(1.0, (step + 1) / a.warmup) * (a.min_lr_frac + (1 - a.min_lr_frac)
                                                             * 0.5 * (1 + math.cos(math.pi * frac)))
            for g in opt.param_groups:
                g["lr"] = lr
            ids, att, lab = collate([seqs[i] for i in b], tok.pad_token_id)
            loss = model(input_ids=ids, attention_mask=att, labels=lab).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            tokens += int(att.sum())
            loss_acc += loss.item()
            n_acc += 1
            if step % a.log_every == 0:
                h = {"step": step, "epoch": round(epoch + 0, 2), "s": round(time.monotonic() - t0, 1),
                     "tokens": tokens, "lr": lr, "loss": round(loss_acc / n_acc, 4)}
                history.append(h)
                print(f"step {step:6d}  epoch {epoch:3d}  {h['s']:7.1f}s  {tokens/1e6:6.2f}M tok  "
                      f"lr {lr:.2e}  loss {h['loss']:.4f}", flush=True)
                loss_acc, n_acc = 0.0, 0
            if time.monotonic() - t0 >= next_probe:
                pr = {"s": round(time.monotonic() - t0, 1), "step": step, "epoch": epoch}
                for name, ppl in probe_people.items():
                    pr[f"stored_{name}"] = storage_probe(model, tok, ppl)["all"]
                pr["greedy_bio_test"] = greedy_supported(model, tok, probe_people["test"], a.max_new_tokens)
                probes.append(pr)
                print("  probe: stored " + "  ".join(f"{n} {format_rate(pr['stored_' + n])}" for n in probe_people)
                      + f"  | test greedy bios supported {format_rate(pr['greedy_bio_test'])}", flush=True)
                model.train()
                next_probe += a.probe_every_min * 60
        else:
            epoch += 1
    seconds = time.monotonic() - t0
    model.eval()
    return {"seconds": round(seconds, 1), "steps": step, "epochs_completed": epoch,
            "epochs_seen": round(tokens / max(1, sum(len(s) for s in seqs)), 2), "tokens": tokens,
            "tokens_per_s": round(tokens / seconds, 1), "history": history, "probes": probes,
            }


# ------------------------------------------------------------------------------------------------------ evaluate

def greedy_supported(model, tok, people: list[dict], max_new_tokens: int) -> dict:
    """Greedy bios of ``people``: supported claims / claims."""
    model.eval()
    outs = generation.generate(model, tok, [chat(bios.bio_prompt(p["name"])) for p in people], do_sample=False,
                               max_new_tokens=max_new_tokens, batch_size=64, progress=False)
    n = sup = 0
    for p, o in zip(people, outs):
        cs = bios.check_bio(o[0], p)
        n += len(cs)
        sup += sum(c.status == "supported" for c in cs)
    return rate(sup, n)


def by_mentions(people: list[dict], texts: list[str], true: list[dict[str, int]]) -> dict:
    """The tie between what a bio states and what can be known: per (person, attribute), bucketed by the true mentions
    of the attribute's value in the person's web documents (``count_mentions``' ``test_true``; 4 = 4 or more), how
    often the bio states it (claims that name the person, the first per attribute, as ``rlrf-nb diagnose``) and how
    often it is right when stated."""
    by_m: dict[str, list[int]] = {}
    for person, text, t in zip(people, texts, true):
        st = _stated(text, person)
        for at, n in t.items():
            c = by_m.setdefault(str(min(n, 4)), [0, 0, 0])
            c[0] += 1
            c[1] += at in st
            c[2] += st.get(at) == person[at]
    return {b: {"facts": n, "stated": rate(s, n), "right_when_stated": rate(r, s)}
            for b, (n, s, r) in sorted(by_m.items())}


def kb_world(people: list[dict]) -> World:
    """The KB alone (what ``diagnose.bio_facts`` and the FactScore verifier read: ``world.person(name)``)."""
    return World(people, {}, {}, [])


def name_miscopy(texts: dict[str, str], people: dict[str, dict]) -> dict:
    """Share of parsed claims whose name is not the prompt's person."""
    bad = n = 0
    for eid, t in texts.items():
        for c in bios.check_bio(t, people[eid]):
            if c.attribute is not None:
                n += 1
                bad += c.status == "unsupported"
    return rate(bad, n)


def evaluate(model, tok, data, a) -> dict:
    exs = bios.split_people(data["test"], {"test": len(data["test"])})["test"]
    world = kb_world(data["people"])
    convs = [chat(e.prompt) for e in exs]
    kw = {"max_new_tokens": a.max_new_tokens, "batch_size": 64, "progress": False}
    t0 = time.monotonic()
    greedy = {e.id: o[0] for e, o in zip(exs, generation.generate(model, tok, convs, do_sample=False, **kw))}
    out = {"n_test_people": len(exs), "k": a.k}
    by_id = {e.id: world.person(e.meta["entity"]) for e in exs}
    out["greedy_name_miscopied"] = name_miscopy(greedy, by_id)
    out["examples"] = [{"person": by_id[e.id], "greedy": greedy[e.id]} for e in exs[:3]]
    # by popularity: greedy claims supported for test people with few / some / many web documents
    buckets: dict[str, list[int]] = {}
    for e, nd in zip(exs, data["docs_counts"][: len(exs)]):
        b = "1-3 docs" if nd <= 3 else ("4-10 docs" if nd <= 10 else "11+ docs")
        cs = bios.check_bio(greedy[e.id], by_id[e.id])
        k_n = buckets.setdefault(b, [0, 0, 0])
        k_n[0] += sum(c.status == "supported" for c in cs)
        k_n[1] += len(cs)
        k_n[2] += 1
    out["greedy_by_docs"] = {b: {**rate(k, n), "people": m} for b, (k, n, m) in sorted(buckets.items())}
    # the tie between what greedy states and what it can know: per (test person, attribute), by the true mentions
    # of the attribute's value in the person's web documents (one corpus epoch), stated and right when stated
    out["greedy_by_mentions"] = by_mentions([by_id[e.id] for e in exs], [greedy[e.id] for e in exs],
                                            count_mentions(data, a)["test_true"])
    for temp in (1.0, 0.7):
        outs = generation.generate(model, tok, convs, do_sample=True, temperature=temp, num_return_sequences=a.k,
                                   seed=a.seed, max_new_tokens=a.max_new_tokens, batch_size=8, progress=False)
        samples = {e.id: o for e, o in zip(exs, outs)}
        f = bio_facts(exs, world, greedy, samples, seed=a.seed)
        f["factscore_headroom"] = fact_headroom(exs, world, greedy, samples)
        out[f"T={temp}"] = f
        out["examples"][0][f"sample_T={temp}"] = samples[exs[0].id][0]
    # greedy bios of SFT people (bios seen in training): the format and memorised facts
    out["sft_people_greedy_supported"] = greedy_supported(model, tok, data["sft"][: len(data["test"])],
                                                          a.max_new_tokens)
    out["storage_probe_test"] = storage_probe(model, tok, data["test"])
    out["storage_probe_sft"] = storage_probe(model, tok, data["sft"][: len(data["test"])])
    out["eval_seconds"] = round(time.monotonic() - t0, 1)
    return out


def count_mentions(data, a) -> dict:
    """Mentions per (person, attribute) in one corpus epoch, true and wrong, replaying ``web_documents``' seeded
    generator; averaged over all people, and per test person (true mentions of each attribute)."""
    def replay(rng, person, n):
        own = bios.attributes_of(person)
        c = {at: [0, 0] for at in own}
        for _ in range(n):
            attrs = rng.sample(own, rng.randint(3, len(own)))
            for at in attrs:
                if rng.random() >= a.noise:
                    c[at][0] += 1
                else:
                    c[at][1] += 1
                    bios._wrong_value(rng, at, person[at])
                rng.choice(bios.WEB[at])
        return c

    counts = data["docs_counts"]
    if data["doc_seeds"] is None:
        rng = random.Random(f"web:{a.seed}")
        per = [replay(rng, p, n) for p, n in zip(data["people"], counts)]
    else:
        per = [replay(random.Random(f"web:{sd}"), p, n) for p, sd, n in zip(data["people"], data["doc_seeds"], counts)]
    n = sum(len(c) for c in per)
    return {"true": [{at: c[at][0] for at in c} for c in per],
            "true_per_fact": sum(c[at][0] for c in per for at in c) / n,
            "wrong_per_fact": sum(c[at][1] for c in per for at in c) / n,
            "test_true": [{at: c[at][0] for at in c} for c in per[: a.n_test]],
            "test_docs": counts[: a.n_test]}


# ----------------------------------------------------------------------------------------------------------- main

def fmt(r):
    return format_rate(r)


def report(res: dict) -> str:
    e, tr, cfg = res["eval"], res["train"], res["config"]
    g = e["T=1.0"]
    docs = cfg["docs_per_person"] if cfg.get("docs_min") is None else f"{cfg['docs_min']}-{cfg['docs_per_person']}"
    lines = [
        "=" * 100,
        f"pilot_bios_v2: {cfg['n_people']} people with {cfg.get('attributes', 6)} facts ({cfg['n_test']} test, "
        f"only in web docs; {res['n_sft']} SFT), "
        f"{docs} docs/person (mean {res['docs_mean']:.1f}), noise {cfg['noise']}, "
        f"SFT bios x{cfg['sft_repeat']} per epoch",
        f"model: hidden {cfg['hidden']} x {cfg['layers']} layers, MLP {cfg['mlp']}, vocab {res['vocab']}, "
        f"{res['n_params'] / 1e6:.2f}M params, context {cfg['context']}",
        f"train: {tr['seconds'] / 60:.1f} min on {torch.get_num_threads()} thread, {tr['steps']} steps, "
        f"{tr['tokens'] / 1e6:.2f}M tokens ({tr['tokens_per_s']:.0f}/s), {tr['epochs_seen']} corpus epochs, "
        f"final loss {tr['history'][-1]['loss'] if tr['history'] else float('nan')}",
        f"exposures per (person, attribute): {res['mentions']['true_per_fact'] * tr['epochs_seen']:.0f} true + "
        f"{res['mentions']['wrong_per_fact'] * tr['epochs_seen']:.0f} wrong mentions",
        "-" * 100,
        f"test greedy claims supported   {fmt(g['greedy_supported'])}   claims/bio {g['claims_per_bio']:.2f}",
        f"chance: uniform guess {100 * g['chance_uniform']:.1f}%; claims vs shuffled person "
        f"{fmt(g['chance_shuffled'])}; above chance {100 * g['above_chance']:+.1f} points",
        f"greedy claims with a miscopied name {fmt(e['greedy_name_miscopied'])}",
    ]
    for t in ("1.0", "0.7"):
        f = e[f"T={t}"]
        lines += [f"T={t}: sampled claims supported {fmt(f['sampled_supported'])}",
                  f"       facts greedy misses that one of {e['k']} samples gets right {fmt(f['samples_add_facts'])}"
                  f"; shuffled person {fmt(f['samples_add_facts_chance'])}; difference "
                  f"{100 * f['samples_add_above_chance']:+.1f} points"]
        if "factscore_headroom" in f:
            h = f["factscore_headroom"]
            lines.append("       FactScore (gamma 10): " + "; ".join(
                f"{k} {h[k]['score']:.3f} [{h[k]['ci_low']:.3f}, {h[k]['ci_high']:.3f}] "
                f"({100 * h[k]['init_score']:.1f}% supported, {h[k]['facts_per_response']:.1f} facts)"
                for k in ("greedy", "canonical", "majority", "oracle", "omit_wrong", "all_right") if k in h)
                + f"; oracle - greedy {h['oracle']['score'] - h['greedy']['score']:+.3f}")
    if len(e["greedy_by_docs"]) > 1:
        lines.append("test greedy by web documents per person: " + "; ".join(
            f"{b} ({r['people']} people) {fmt(r)}" for b, r in e["greedy_by_docs"].items()))
    if "greedy_by_mentions" in e:
        lines.append("test greedy by true mentions of a fact per corpus epoch (4 = 4+): " + "; ".join(
            f"{b}: {r['facts']} facts, stated {100 * r['stated']['rate']:.0f}%, right when stated "
            f"{100 * r['right_when_stated']['rate']:.0f}%" for b, r in e["greedy_by_mentions"].items()))
    lines += [f"storage probe (greedy value after the canonical prefix): test {fmt(e['storage_probe_test']['all'])}"
              f"; SFT {fmt(e['storage_probe_sft']['all'])}",
              "  test by attribute: " + ", ".join(f"{a} {100 * r['rate']:.0f}%" for a, r in
                                                  e["storage_probe_test"]["by_attribute"].items()),
              f"SFT people greedy claims supported {fmt(e['sft_people_greedy_supported'])}",
              f"targets: greedy >= 40%: {'PASS' if g['greedy_supported']['rate'] >= 0.40 else 'FAIL'}; "
              f">= 25 points above chance: {'PASS' if g['above_chance'] >= 0.25 else 'FAIL'}; samples add facts "
              f"beyond chance (T=1.0 / 0.7): "
              + " / ".join("PASS" if e[f'T={t}']['samples_add_facts']['ci_low']
                           > e[f'T={t}']['samples_add_facts_chance']['ci_high'] else
                           ("weak" if e[f'T={t}']['samples_add_above_chance'] > 0 else "FAIL") for t in ("1.0", "0.7")),
              "=" * 100]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-people", type=int, default=200)
    p.add_argument("--n-test", type=int, default=40, help="held-out people: web documents only, no SFT bio")
    p.add_argument("--docs-per-person", type=int, default=30)
    p.add_argument("--docs-min", type=int, default=None,
                   help="popularity tail: docs per person log-uniform in [docs-min, docs-per-person]")
    p.add_argument("--noise", type=float, default=0.1, help="probability that a fact mention is wrong")
    p.add_argument("--attributes", type=int, default=len(bios.ATTRIBUTES),
                   help=f"facts per person, {len(bios.ATTRIBUTES)}-{len(bios.ALL_ATTRIBUTES)} (bios.make_people)")
    p.add_argument("--sft-repeat", type=int, default=4, help="copies of each SFT person's bio per corpus epoch")
    p.add_argument("--sft-min-facts", type=int, default=None,
                   help="SFT bios state a random subset of at least this many facts (default: every fact)")
    p.add_argument("--sft-known-mentions", type=int, default=None,
                   help="SFT bios leave out (with probability --sft-omit-p) a fact whose true value is mentioned in "
                        "fewer than this many of the person's web documents: length tied to what can be known")
    p.add_argument("--sft-omit-p", type=float, default=1.0)
    p.add_argument("--vocab", type=int, default=1024)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--mlp", type=int, default=512)
    p.add_argument("--context", type=int, default=160)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--min-lr-frac", type=float, default=0.05)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--budget-min", type=float, default=30.0, help="wall-clock training budget (minutes)")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: the budget decides)")
    p.add_argument("--probe-every-min", type=float, default=5.0)
    p.add_argument("--log-every", type=int, default=200)
    p.add_argument("--k", type=int, default=16, help="samples per person at each temperature")
    p.add_argument("--max-new-tokens", type=int, default=120)
    p.add_argument("--out", default="runs/pilot_bios_v2/run")
    p.add_argument("--smoke", action="store_true", help="tiny everything (seconds): the code path only")
    a = p.parse_args(argv)
    if a.smoke:
        a.n_people, a.n_test, a.docs_per_person, a.budget_min, a.k = 30, 8, 4, 0.15, 4
        a.hidden, a.mlp, a.log_every, a.probe_every_min, a.max_new_tokens = 32, 64, 10, 0.05, 80
    torch.set_num_threads(1)
    random.seed(a.seed)
    torch.manual_seed(a.seed)

    data = build_data(a)
    texts = data["docs"] + [m["content"] for it in data["sft_items"] for m in it["messages"]]
    tok = models.build_tokenizer(texts, a.vocab)
    mcfg = argparse.Namespace(hidden_size=a.hidden, intermediate_size=a.mlp, num_layers=a.layers,
                              num_heads=a.heads, max_length=a.context, seed=a.seed)
    model = models.build_model(tok, mcfg)
    seqs, kinds = tokenize_items(data, tok, a)
    epoch_tokens = sum(len(s) for s in seqs)
    print(f"{len(data['people'])} people, {len(data['docs'])} docs, {len(seqs)} items/epoch, {epoch_tokens} tokens/"
          f"epoch (web {sum(len(s) for s, k in zip(seqs, kinds) if k == 'web')}), vocab {len(tok)}, "
          f"{models.n_params(model) / 1e6:.3f}M params, threads {torch.get_num_threads()}", flush=True)
    mentions = count_mentions(data, a)
    tr = train(model, tok, seqs, kinds, a, {"test": data["test"], "sft": data["sft"][: a.n_test]})
    ev = evaluate(model, tok, data, a)
    res = {"config": vars(a), "n_params": models.n_params(model), "vocab": len(tok), "n_sft": len(data["sft"]),
           "epoch_tokens": epoch_tokens, "mentions": mentions,
           "docs_mean": sum(data["docs_counts"]) / len(data["docs_counts"]), "train": tr, "eval": ev,
           "attr_values": _attr_values(), "threads": torch.get_num_threads()}
    text = report(res)
    print(text, flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(res, indent=1, default=str))
    (out / "report.txt").write_text(text + "\n")
    if not a.smoke:
        models.save_policy(model, tok, out / "model", {k: v for k, v in tr.items() if k != "probes"})
    print(f"wrote {out / 'result.json'}")


if __name__ == "__main__":
    main()
