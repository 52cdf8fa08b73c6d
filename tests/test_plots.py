"""Every figure of the notebooks: its title, axis titles and legend names, and a width that fits the notebook
(responsive, or at most 900 px), built from small data as the notebooks build them."""

import pytest

from rlrf_nb import plots
from rlrf_nb.analysis import shift_summary
from rlrf_nb.feedback import AspectFeedback, Feedback, feedback_frame
from rlrf_nb.pairs import Candidate, build_pairs
from rlrf_nb.reflection import budget_comparison, sample_rewards
from rlrf_nb.stats import rate
from rlrf_nb.widgets import refinement_frame, refinement_rows

MODELS = ["M0", "M1", "M2", "no reflection M2", "scalar reward M2", "RS-SFT M2", "RLRF 1 round", "no reflection",
          "scalar reward", "RS baseline"]


def _cand(cid, pid, kind, reward, correct, parent=None, text=None):
    return Candidate(cid, pid, "Q?", text or f"{cid} works it out\n#### {5 if correct else 4}", kind, reward,
                     {"logical_correctness": 5 if correct else 2, "completeness": 4}, parent, correct, reward)


POOL = [c for p in ("p1", "p2", "p3") for c in (
    _cand(f"{p}/s0", p, "sample", 0.3, False), _cand(f"{p}/s1", p, "sample", 0.5, False, text="a much longer "
                                                                                              "wrong draft\n#### 4"),
    _cand(f"{p}/s0/r1.0", p, "refinement", 0.9, True, f"{p}/s0"),
    _cand(f"{p}/s0/r1.1", p, "refinement", 0.2, False, f"{p}/s0"))]
BY_POLICY = {k: build_pairs(POOL, k) for k in ("best_vs_worst", "refined_vs_original", "best_refined_vs_worst_sample",
                                               "no_reflection", "scalar")}


def _records():
    recs = []
    for i, (task, aspects) in enumerate((("math", {"logical_correctness": 5, "completeness": 4}),
                                         ("bios", {"factuality": 2, "completeness": 3, "readability": 5}))):
        fb = Feedback("verifier/v2", "v1", [AspectFeedback(a, s, 1, 5, "ok") for a, s in aspects.items()])
        recs.append({"response_id": f"r{i}", "example_id": f"e{i}", "task": task, "judge_id": "verifier/v2",
                     "round": 0, "reward": 0.5, "feedback": fb.to_dict(), "prompt": "Q?", "response": "A"})
    return recs


def _refinement_records():
    recs = []
    for c in POOL:
        fb = Feedback("verifier/v2", "v1", [AspectFeedback(a, s, 1, 5, "ok") for a, s in c.scores.items()])
        recs.append({"response_id": c.candidate_id, "example_id": c.prompt_id, "round": 1 if c.parent_id else 0,
                     "prompt": c.prompt, "response": c.text, "reward": c.reward, "feedback": fb.to_dict()})
    return recs


def _rows(n=2):
    return [{"policy": f"M{t}", "round": t, "math_accuracy": rate(40 + t, 100), "bio_claims_supported": rate(5, 50)}
            for t in range(n + 1)]


FIGURES = {
    "loss_curve": (lambda: plots.loss_curve([{"step": s, "loss": 3.0 / s} for s in range(1, 30)]),
                   "M0 pre-training loss", "optimizer step", "cross-entropy (nats/token, log scale)",
                   ["logged loss", "moving average (10 logs)"]),
    "rates_with_ci": (lambda: plots.rates_with_ci({m: rate(40 + i, 100) for i, m in enumerate(MODELS[:3])},
                                                  "Dev math"), "Dev math", "model", "% (bars: 95% Wilson CI)", []),
    "score_distribution": (lambda: plots.score_distribution(feedback_frame(_records()), "Verifier scores"),
                           "Verifier scores", "score", "count", ["bios", "math"]),
    "reward_distribution": (lambda: plots.reward_distribution(POOL), "Reward of samples and refinements",
                            "scalar reward (mean normalised aspect score)", "% of candidates in the group",
                            ["samples (n=6, mean 0.40, 0 parse failures)",
                             "refined drafts (n=3, mean 0.30, 0 parse failures)",
                             "refinements (n=6, mean 0.55, 0 parse failures)"]),
    "refinement_success": (lambda: plots.refinement_success(refinement_frame(refinement_rows(_refinement_records(),
                                                                                              POOL))),
                           "Does a refinement beat its draft? Per aspect", "aspect",
                           "% of refinements (error bar: 95% CI of higher)", ["higher", "same", "lower"]),
    "pair_counts_and_margins": (lambda: plots.pair_counts_and_margins(BY_POLICY, 3), "Preference pairs per pair policy",
                                "pairs", "pair policy",
                                ["all pairs", "right over wrong (math)", *[k for k, v in BY_POLICY.items() if v]]),
    "length_bias": (lambda: plots.length_bias(BY_POLICY), "Length bias of the pairs",
                    "pair policy (share of pairs whose chosen is longer, 95% CI)",
                    "words in chosen − words in rejected", []),
    "budget_curves": (lambda: plots.budget_curves(budget_comparison(POOL, sample_rewards(POOL), n_random=3)),
                      "What each refinement budget buys", "refinement generations spent",
                      "right over wrong pairs (best_vs_worst)", None),
    "training_curves": (lambda: plots.training_curves([{"step": s, "loss": 0.7 - s / 100, "rewards/margins": s / 10,
                                                        "rewards/accuracies": 0.5, "logps/chosen": -3.0,
                                                        "logps/rejected": -3.5} for s in range(1, 5)]),
                        "DPO training", "step", "DPO loss",
                        ["loss", "reward margin", "reward accuracy", "log p(chosen)", "log p(rejected)"]),
    "round_metrics": (lambda: plots.round_metrics(_rows()), "Held-out dev metrics after each RLRF round",
                      "policy after each round", "% (95% Wilson CI; 100 dev math prompts)",
                      ["math exact match", "bio claims supported (FactScore-style)"]),
    "variant_rounds": (lambda: plots.variant_rounds({v: _rows() for v in ("rlrf", "no_reflection", "scalar",
                                                                          "rs_sft")}),
                       "Dev math exact match per round: RLRF and its ablations", "policy after each round",
                       "% (95% Wilson CI; n = 100)", ["rlrf", "no_reflection", "scalar", "rs_sft"]),
    "aspect_bars": (lambda: plots.aspect_bars({m: {"helpfulness": {"mean": 3.0 + i / 10, "ci_low": 2.9,
                                                                   "ci_high": 3.5}} for i, m in enumerate(MODELS)}),
                    "Just-Eval aspects per model", "Just-Eval aspect", "mean score (1-5; bars: 95% bootstrap CI)",
                    MODELS),
    "shift_by_kind": (lambda: plots.shift_by_kind(shift_summary([{"kind": k, "class": c} for k in ("digit", "word")
                                                                 for c in ("unshifted", "shifted")])),
                      "Token distribution shift from M0, by token kind", "token kind",
                      "% of the aligned model's tokens", ["unshifted", "marginal", "shifted"]),
}


def _legend(fig) -> list[str]:
    return [t.name for t in fig.data if t.showlegend is not False and fig.layout.showlegend is not False]


@pytest.mark.parametrize("name", FIGURES)
def test_figure_titles_legend_and_width(name):
    build, title, xtitle, ytitle, legend = FIGURES[name]
    fig = build()
    assert fig.layout.title.text == title
    assert fig.layout.xaxis.title.text == xtitle and fig.layout.yaxis.title.text == ytitle
    if legend is not None:
        assert _legend(fig) == legend
    assert fig.layout.width is None or fig.layout.width <= 900  # responsive: no horizontal scrollbar, no cut legend
    assert fig.layout.legend.orientation == "h"  # below the plot, where long names wrap instead of being cut
    assert fig.layout.legend.yref == "container"  # at the figure's bottom edge, below the x title, not across it


def test_budget_curve_legend_names_each_order():
    fig = FIGURES["budget_curves"][0]()
    names = _legend(fig)
    assert [n.split(":")[0] for n in names] == ["most varied rewards first", "lowest best sample first",
                                                 "random order (one shuffle drawn)"]
    assert all("to target" in n for n in names) and names[-1].endswith("mean of the shuffles")


def test_palette_has_one_colour_per_model():
    assert len(set(plots.PALETTE)) == len(plots.PALETTE) >= len(MODELS)
    fig = FIGURES["aspect_bars"][0]()
    assert len({t.marker.color for t in fig.data}) == len(MODELS)  # M0 and "RLRF 1 round" no longer share a blue


def test_every_subplot_axis_has_a_title():
    for name in ("score_distribution", "pair_counts_and_margins", "training_curves"):
        fig = FIGURES[name][0]()
        xs = [fig.layout[k].title.text for k in fig.layout if k.startswith("xaxis")]
        assert all(xs), (name, xs)
        assert fig.layout.yaxis.title.text
