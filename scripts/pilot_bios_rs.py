"""Issue 16, the FactScore bar: does the RS loop's fine-tuning step move FactScore on held-out people when the world
lets it? A bios-only pilot on a model from ``scripts/pilot_bios_v2.py``.

The question. In world v2 a person has 6 facts, so FActScore's length penalty caps every bio at 0.513 and an oracle
over M0's own samples reaches only +0.073 (stop 47). With 12 facts per person (``bios.make_people(n_attributes=12)``)
the penalty is 1 and the ceilings move (``scripts/pilot_bios_v2.py --attributes 12``). This script runs the loop's
fine-tuning step of ``make reproduce-rs`` on bios alone and measures FactScore on test:

- M0: a ``pilot_bios_v2.py`` model trained with ``--n-test 220``, so the world's test (60), dev (60) and rl (100)
  people (``WorldConfig``'s splits, in that order) are known only from web documents, as in world v2 (a larger rl
  pool, ``--rl-people``, needs a model that holds out ``120 + --rl-people``);
- each round: ``--k`` samples at ``--temperature`` for ``--people-per-round`` fresh rl people (notebook 04's
  ``rounds.bios_per_round``), judged by the kit's verifier (factuality, completeness, readability; the recipe's
  weights, or ``--weights``), then RS-SFT on the best sample per person with reward >= ``--min-reward``
  (:func:`rlrf_nb.training.rs_sft_rows`' rule: 1.0, every aspect at its top) with the RS recipe's settings (TRL's
  ``SFTTrainer`` through :func:`rlrf_nb.training.train_rs_sft`, lr 3e-4, 4 epochs);
- no reflection: the pilot model was never trained on refinement prompts. What is measured is selection alone;
- ``--gold``: the positive control, the same step on the rl people's reference bios (every fact right, the name
  right): what other people's bios, however good, can carry to the test people.

Test and dev: greedy bios, FactScore (notebook 05's scorer, gamma 10) and its paired difference against M0 per person
(bootstrap 95% interval), and the supported share and facts per bio.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/pilot_bios_rs.py --model runs/s49/pilot_d12/model --attributes 12 \\
        --seed 0 --out runs/s49/bios_rs_d12_s0

Stop 50's best run (run 10's M0: 50 SFT bios, 620 held out; the best sample of every rl person, chosen on dev):

    OMP_NUM_THREADS=1 .venv/bin/python scripts/pilot_bios_rs.py --model runs/s50/pilot_rl500_sft50/model \
        --n-people 670 --rl-people 500 --people-per-round 250 --attributes 12 --min-reward 0.0 --seed 0 \
        --out runs/s50/rs500_sft50_s0_any_v2
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from rlrf_nb import generation, models  # noqa: E402
from rlrf_nb.analysis import paired_test  # noqa: E402
from rlrf_nb.config import load_recipe  # noqa: E402
from rlrf_nb.evals.factscore import KBVerifier, SentenceDecomposer, factscore  # noqa: E402
from rlrf_nb.feedback import scalar_reward  # noqa: E402
from rlrf_nb.prompts import chat  # noqa: E402
from rlrf_nb.rubrics import aspects_for_tags, load_rubric_set  # noqa: E402
from rlrf_nb.stats import format_rate, rate  # noqa: E402
from rlrf_nb.tasks import bios  # noqa: E402
from rlrf_nb.tiny_world import World  # noqa: E402
from rlrf_nb.training import train_rs_sft  # noqa: E402
from rlrf_nb.verifier import VerifierJudge  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def greedy_bios(model, tok, people: list[dict], max_new_tokens: int) -> list[str]:
    outs = generation.generate(model, tok, [chat(bios.bio_prompt(p["name"])) for p in people], do_sample=False,
                               max_new_tokens=max_new_tokens, batch_size=64, progress=False)
    return [o[0] for o in outs]


def score(texts: list[str], people: list[dict], world) -> dict:
    """FactScore, and where its errors are, as shares of all sentences: claims that miscopy the person's name, and
    sentences the claim checker cannot read (a web wording, a broken sentence; FactScore counts them unsupported),
    both habits that any person's bios can teach; and the supported share of the claims that do name the person
    (what the policy knows about them)."""
    fs = factscore(texts, [p["name"] for p in people], SentenceDecomposer(), KBVerifier(world))
    every = [c for t, q in zip(texts, people) for c in bios.check_bio(t, q)]
    claims = [c for c in every if c.attribute is not None]
    named = [c for c in claims if c.status != "unsupported"]
    return {"score": fs["score"], "ci_low": fs["ci_low"], "ci_high": fs["ci_high"], "init_score": fs["init_score"],
            "facts_per_response": fs["facts_per_response"], "n_scored": fs["n_scored"],
            "name_miscopied": rate(len(claims) - len(named), len(every)),
            "unparsed": rate(len(every) - len(claims), len(every)),
            "supported_when_named": rate(sum(c.status == "supported" for c in named), len(named)),
            "per_person": [r["score"] if r["score"] is not None else 0.0 for r in fs["rows"]]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a pilot_bios_v2.py model (its --out/model)")
    p.add_argument("--attributes", type=int, default=12)
    p.add_argument("--world-seed", type=int, default=0, help="pilot_bios_v2.py's --seed (the people)")
    p.add_argument("--n-people", type=int, default=600)
    p.add_argument("--seed", type=int, default=0, help="sampling and training seed (the loop's run.seed)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--people-per-round", type=int, default=50)
    p.add_argument("--rl-people", type=int, default=100,
                   help="the rl pool after test (60) and dev (60); the pilot model must hold out 120 + this many "
                        "people (its --n-test)")
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--min-reward", type=float, default=1.0)
    p.add_argument("--weights", default="", help="aspect weights of the reward, e.g. 'completeness=0' (default: the "
                                                "recipe's feedback.weights)")
    p.add_argument("--gold", action="store_true",
                   help="positive control: fine-tune on the rl people's reference bios instead of the best samples")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    pilot = Path(a.model).parent / "result.json"  # the pilot that trained M0: who it held out
    if pilot.exists():
        pc = json.loads(pilot.read_text())["config"]
        held, want = pc["n_test"], 120 + a.rl_people
        if held < want or pc["seed"] != a.world_seed or pc.get("attributes", 6) != a.attributes \
                or pc["n_people"] != a.n_people:
            raise SystemExit(f"{pilot}: the model held out {held} of {pc['n_people']} people (seed {pc['seed']}, "
                             f"{pc.get('attributes', 6)} facts); this run needs {want} held out of {a.n_people} "
                             f"(--world-seed {a.world_seed}, --attributes {a.attributes}): the rl people would "
                             f"include SFT people, or the KB would not be the model's")
    people = bios.make_people(a.world_seed, a.n_people, a.attributes)
    test, dev, rl = people[:60], people[60:120], people[120:120 + a.rl_people]
    if a.rounds * a.people_per_round > len(rl):
        raise SystemExit(f"{a.rounds} rounds x {a.people_per_round} people need more than the {len(rl)} rl people")
    world = World(people, {}, {}, [])  # the KB alone: what KBVerifier reads
    recipe = load_recipe(ROOT / "recipes/tiny-v2.yaml", overrides={
        "dpo.method": "rs_sft", "dpo.learning_rate": a.lr, "dpo.epochs": a.epochs, "run.seed": a.seed})
    rubrics = load_rubric_set()
    judge = VerifierJudge(rubrics, {q["name"]: q for q in people})
    weights = dict(recipe.feedback.weights)
    for item in filter(None, a.weights.split(",")):
        name, _, value = item.partition("=")
        weights[name.strip()] = float(value)
    aspects = aspects_for_tags(["bios"])

    model, tok = models.load_policy(a.model)
    res = {"config": vars(a), "rounds": [], "models": {}}

    def evaluate(label):
        t0 = time.monotonic()
        r = {}
        for split, ppl in (("test", test), ("dev", dev)):
            r[split] = score(greedy_bios(model, tok, ppl, a.max_new_tokens), ppl, world)
        r["seconds"] = round(time.monotonic() - t0, 1)
        res["models"][label] = r
        print(f"{label}: test FactScore {r['test']['score']:.3f} [{r['test']['ci_low']:.3f}, "
              f"{r['test']['ci_high']:.3f}] ({100 * r['test']['init_score']:.1f}% supported, "
              f"{r['test']['facts_per_response']:.1f} facts; of all sentences, name miscopied "
              f"{format_rate(r['test']['name_miscopied'])}, unparsed {format_rate(r['test']['unparsed'])}; "
              f"supported when named "
              f"{format_rate(r['test']['supported_when_named'])}); dev {r['dev']['score']:.3f}", flush=True)

    evaluate("M0")
    for t in range(1, a.rounds + 1):
        t0 = time.monotonic()
        ppl = rl[(t - 1) * a.people_per_round: t * a.people_per_round]
        model.eval()
        samples = generation.generate(model, tok, [chat(bios.bio_prompt(q["name"])) for q in ppl], do_sample=True,
                                      temperature=a.temperature, num_return_sequences=a.k, seed=a.seed * 1000 + t,
                                      max_new_tokens=a.max_new_tokens, batch_size=8, progress=False)
        rows, rewards, best_rewards = [], [], []
        for q, outs in zip(ppl, samples):
            ex = bios.split_people([q], {"rl": 1})["rl"][0]
            scored = [(scalar_reward(judge.judge(ex.prompt, o, aspects, ex), weights), o) for o in outs]
            rewards += [r for r, _ in scored]
            best_r, best = max(scored, key=lambda x: x[0])  # the first of ties, as rs_sft_rows
            best_rewards.append(best_r)
            if a.gold:  # the positive control: the person's reference bio, whatever the samples were
                rows.append({"prompt": [{"role": "user", "content": ex.prompt}],
                             "completion": [{"role": "assistant", "content": bios.reference_bio(q)}]})
            elif best_r >= a.min_reward:
                rows.append({"prompt": [{"role": "user", "content": ex.prompt}],
                             "completion": [{"role": "assistant", "content": best}]})
        search_s = time.monotonic() - t0
        tr = train_rs_sft(model, tok, rows, recipe.dpo, out / f"trainer_round{t}") if rows else {"skipped": True}
        model.eval()
        rd = {"round": t, "people": len(ppl), "rows": len(rows), "mean_reward": sum(rewards) / len(rewards),
              "mean_best_reward": sum(best_rewards) / len(best_rewards), "search_seconds": round(search_s, 1),
              "train": {k: v for k, v in tr.items() if k in ("seconds", "steps", "train_loss", "skipped")}}
        res["rounds"].append(rd)
        rule = "reference bios" if a.gold else f"best reward >= {a.min_reward}"
        print(f"round {t}: {len(ppl)} people x {a.k} samples, {len(rows)} RS rows ({rule}),"
              f" mean reward {rd['mean_reward']:.3f}, best {rd['mean_best_reward']:.3f}; {rd['train']}", flush=True)
        evaluate(f"M{t}")

    base = res["models"]["M0"]
    for label, r in res["models"].items():
        if label != "M0":
            for split in ("test", "dev"):
                d = paired_test(base[split]["per_person"], r[split]["per_person"], seed=a.seed)
                r[split]["minus_M0"] = {k: d[k] for k in ("diff", "ci_low", "ci_high", "n", "p_bootstrap")}
    last = res["models"][f"M{a.rounds}"]
    print(f"M{a.rounds} - M0 FactScore, test: {last['test']['minus_M0']}; dev: {last['dev']['minus_M0']}")
    (out / "result.json").write_text(json.dumps(res, indent=1, default=str))
    print(f"wrote {out / 'result.json'}")


if __name__ == "__main__":
    main()
