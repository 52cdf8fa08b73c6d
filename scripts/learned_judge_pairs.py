"""The learned judge inside the loop (issue 19; docs/feedback_model.md, "The learned judge inside the loop"): on the
search samples that a learned-judge run and a verifier-fed run share (same M0, same recipe and seed, so the same
samples), the learned judge's agreement with the verifier, and the preference pairs each judge builds from them
(``no_reflection``: best against worst of a prompt's samples), with and without the gold-answer override
(``pairs.gold_override``), read by the verifier. Written as JSON.

    rlrf-nb run --recipe recipes/tiny-v2.yaml --name ver-r500-s0 --stages 02 -p reflection.n_prompts=500 \\
        -p reflection.overall_score=false
    rlrf-nb run --recipe recipes/tiny-v2.yaml --name lj-r500-s0 --stages 02 -p reflection.n_prompts=500 \\
        -p reflection.overall_score=false -p feedback.judge=learned        # its samples need only be judged
    python scripts/learned_judge_pairs.py --learned runs/lj-r500-s0 --verifier runs/ver-r500-s0 \\
        --out benchmarks/world_v2/learned_judge_pairs.json
"""

import argparse
import json
from pathlib import Path

from rlrf_nb.feedback import Feedback
from rlrf_nb.jsonl import read_jsonl
from rlrf_nb.judge_model import judge_report
from rlrf_nb.pairs import Candidate, build_pairs
from rlrf_nb.stats import rate


def samples(run: Path) -> dict[str, dict]:
    """The run's judgement records of search samples (not refinements), by response id."""
    return {r["response_id"]: r for r in read_jsonl(run / "feedback.jsonl") if "/r" not in r["response_id"]}


def read_pairs(pairs: list[dict], reward: dict, perfect: dict) -> dict:
    """How the verifier reads ``pairs``: its reward for the chosen side above, equal to or below the rejected one's,
    and how often either side has every step right."""
    def count(test):
        return rate(sum(test(p["chosen_id"], p["rejected_id"]) for p in pairs), len(pairs))

    def known(c, r):
        return reward[c] is not None and reward[r] is not None

    return {"verifier_prefers_chosen": count(lambda c, r: known(c, r) and reward[c] > reward[r]),
            "verifier_ties": count(lambda c, r: known(c, r) and reward[c] == reward[r]),
            "verifier_prefers_rejected": count(lambda c, r: known(c, r) and reward[c] < reward[r]),
            "chosen_every_step_right": count(lambda c, r: perfect[c]),
            "rejected_every_step_right": count(lambda c, r: perfect[r])}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--learned", type=Path, required=True)
    ap.add_argument("--verifier", type=Path, required=True)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    lj, ver = samples(args.learned), samples(args.verifier)
    ids = [i for i in lj if i in ver]
    if any(lj[i]["response"] != ver[i]["response"] for i in ids):
        raise SystemExit("the two runs' samples differ: they need the same M0, recipe and seed")
    report = judge_report([Feedback.from_dict(lj[i]["feedback"]) for i in ids],
                          [{"task": ver[i]["task"], "teacher": ver[i]["feedback"]} for i in ids])
    reward = {i: ver[i]["reward"] for i in ids}  # the verifier's reward
    perfect = {i: bool(ver[i]["feedback"]["meta"].get("correct")) and ver[i]["feedback"]["meta"].get(
        "first_error") is None for i in ids}
    out = {"samples": len(ids), "prompts": len({lj[i]["example_id"] for i in ids}),
           "agreement": {a: {k: v for k, v in r.items() if k in ("n", "exact", "alpha", "alpha_ci", "parse")}
                         for a, r in report["aspects"].items()}, "pairs": {}}
    # the final answer against the gold one, as the search's pool has it (rlrf_nb.reflection)
    correct = {i: bool(ver[i]["feedback"]["meta"].get("correct")) for i in ids}
    for name, recs, override in (("verifier", ver, True), ("learned", lj, True), ("verifier, no gold override", ver,
                                 False), ("learned, no gold override", lj, False)):
        pool = [Candidate(i, recs[i]["example_id"], recs[i]["prompt"], recs[i]["response"], "sample",
                          recs[i]["reward"], {}, correct=correct[i]) for i in ids]
        pairs = build_pairs(pool, "no_reflection", gold_override=override)
        out["pairs"][name] = {"pairs": len(pairs), **read_pairs(pairs, reward, perfect)}
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
