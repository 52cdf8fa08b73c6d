"""Issue 16, the FactScore bar: is *leaving facts out* a route to it? Measured on a ``scripts/pilot_bios_v2.py`` model.

FactTune-style tuning raises FActScore on real models mostly by having them state fewer facts they are unsure of.
In the tiny world every person has a fixed set of attributes, and FActScore's length penalty (gamma 10) charges every
fact a bio states below 10. This script asks how much omission can be worth there, on the pilot's held-out people:

- the tie between what greedy states and what can be known: per (person, attribute), the true mentions of the value
  in the person's web documents (one corpus epoch, replayed by ``pilot_bios_v2.count_mentions``), how often greedy
  states the attribute and how often it is right when it does;
- FactScore (notebook 05's scorer, gamma 10) of greedy's bios, and of the same bios with a rule applied:
  - ``canonical``: greedy's facts about the person (claims naming them, the first per attribute) rewritten one
    canonical sentence each: the baseline of the rules below, which rewrite the same way (a miscopied name, an
    unparsed wording and a repeat are gone before any rule applies);
  - ``mentions >= M``: the canonical bio without every fact whose true value is mentioned in fewer than ``M`` of the
    person's documents (omission tied to what the documents give; at least one fact kept, the most mentioned);
  - ``omit_wrong``: greedy's own sentences with its unsupported ones deleted, as many as raise the person's score
    (:func:`rlrf_nb.diagnose.fact_headroom`'s entry: omission with perfect knowledge of its own errors, nothing
    reworded).

Greedy decoding is deterministic, so a rerun gives the same numbers. About a minute for 220 people on one thread.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bios_omission.py runs/s49/pilot_d12
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pilot_bios_v2 as pilot  # noqa: E402

from rlrf_nb import generation, models  # noqa: E402
from rlrf_nb.diagnose import _stated, fact_headroom  # noqa: E402
from rlrf_nb.evals.factscore import KBVerifier, SentenceDecomposer, factscore  # noqa: E402
from rlrf_nb.prompts import chat  # noqa: E402
from rlrf_nb.stats import format_rate  # noqa: E402
from rlrf_nb.tasks import bios  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a pilot_bios_v2.py --out directory (result.json and model/)")
    p.add_argument("--out", default=None, help="where to write the JSON (default: RUN/omission.json)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    run = Path(a.run)
    cfg = argparse.Namespace(**{"sft_min_facts": None, **json.loads((run / "result.json").read_text())["config"]})
    data = pilot.build_data(cfg)
    true = pilot.count_mentions(data, cfg)["test_true"]
    test = data["test"]
    model, tok = models.load_policy(run / "model")
    model.eval()
    outs = generation.generate(model, tok, [chat(bios.bio_prompt(q["name"])) for q in test], do_sample=False,
                               max_new_tokens=cfg.max_new_tokens, batch_size=64, progress=False)
    greedy = [o[0] for o in outs]

    res = {"run": str(run), "people": len(test), "by_mentions": pilot.by_mentions(test, greedy, true)}

    world = pilot.kb_world(data["people"])
    names = [q["name"] for q in test]

    def fs(texts):
        r = factscore(texts, names, SentenceDecomposer(), KBVerifier(world))
        return {k: r[k] for k in ("score", "ci_low", "ci_high", "init_score", "facts_per_response")}

    rules = {"greedy": greedy}
    for m in (0, 1, 2, 3):  # 0: every stated fact, rewritten canonically (the rules' own baseline)
        texts = []
        for q, text, t in zip(test, greedy, true):
            st = _stated(text, q)
            keep = [at for at in bios.attributes_of(q) if at in st and t[at] >= m]
            keep = keep or ([max(st, key=lambda at: t[at])] if st else [])
            texts.append(" ".join(bios.fact_sentence(q["name"], at, st[at]) for at in keep) or text)
        rules["canonical" if m == 0 else f"mentions >= {m}"] = texts
    res["factscore"] = {name: fs(texts) for name, texts in rules.items()}
    exs = bios.split_people(test, {"test": len(test)})["test"]
    h = fact_headroom(exs, world, {e.id: g for e, g in zip(exs, greedy)}, {})
    res["factscore"]["omit_wrong"] = h["omit_wrong"]
    assert abs(h["canonical"]["score"] - res["factscore"]["canonical"]["score"]) < 1e-9, "two canonical rewrites"

    print(f"{run}: {len(test)} held-out people")
    for b, r in res["by_mentions"].items():
        print(f"  true mentions {b}{'+' if b == '4' else ''}: {r['facts']:>5} facts, stated "
              f"{format_rate(r['stated'])}, right when stated {format_rate(r['right_when_stated'])}")
    g = res["factscore"]["greedy"]["score"]
    for name, r in res["factscore"].items():
        print(f"  FactScore {name:<14} {r['score']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] "
              f"({100 * r['init_score']:.1f}% supported, {r['facts_per_response']:.1f} facts)  {r['score'] - g:+.3f}")
    out = Path(a.out) if a.out else run / "omission.json"
    out.write_text(json.dumps(res, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
