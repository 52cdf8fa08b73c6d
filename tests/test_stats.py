"""Statistics: one mean and one bootstrap (issue 17). Known answers, and every table's interval equals
``stats``' interval on the same data: the results table, the claims, FactScore and Just-Eval."""

import math
import random

import pytest

from rlrf_nb import stats
from rlrf_nb.analysis import headline_claims, results_table


def test_mean_and_percentile_ci_known_answers():
    assert stats.mean([1, 2, 3, 6]) == 3 and math.isnan(stats.mean([]))
    samples = list(range(101))  # ranks floor(0.025 * 100) = 2 and ceil(0.975 * 100) = 98
    assert stats.percentile_ci(samples) == (2, 98)
    assert stats.percentile_ci([math.nan, 1.0, math.nan]) == (1.0, 1.0)  # undefined resamples are left out
    assert all(math.isnan(x) for x in stats.percentile_ci([math.nan]))


def test_resamples_are_seeded_and_shared_by_every_statistic():
    a = list(stats.resamples(5, 3, seed=1))
    assert a == list(stats.resamples(5, 3, seed=1)) != list(stats.resamples(5, 3, seed=2))
    assert all(len(idx) == 5 and all(0 <= i < 5 for i in idx) for idx in a)
    xs = [1.0, 2.0, 4.0, 8.0, 16.0]
    assert stats.bootstrap(xs, max, 3, seed=1) == [max(xs[i] for i in idx) for idx in a]
    assert stats.bootstrap([], n_boot=3) == []


def test_bootstrap_ci_is_the_percentile_interval_of_the_bootstrap():
    xs = [random.Random(0).random() for _ in range(40)]
    ci = stats.bootstrap_ci(xs + [None], n_boot=300, seed=7)
    assert (ci["ci_low"], ci["ci_high"]) == stats.percentile_ci(stats.bootstrap(xs, stats.mean, 300, 7))
    assert ci["value"] == stats.mean(xs) and ci["n"] == 40


def test_results_table_and_claims_intervals_equal_stats_intervals():
    rng = random.Random(3)
    m0 = [float(rng.random() < 0.4) for _ in range(60)]
    m2 = [float(rng.random() < 0.6) for _ in range(60)]
    _, long = results_table({"M0": {"gsm8k_strict": m0}, "M2": {"gsm8k_strict": m2}}, n_boot=400, seed=5)
    for model, values in (("M0", m0), ("M2", m2)):
        row = long[long["model"] == model].iloc[0]
        ci = stats.bootstrap_ci(values, n_boot=400, seed=5)
        assert (row["value"], row["ci_low"], row["ci_high"]) == (ci["value"], ci["ci_low"], ci["ci_high"])
    (claim,) = headline_claims({"M0": {"gsm8k_strict": m0}, "M2": {"gsm8k_strict": m2}},
                               metrics=("gsm8k_strict",), n_boot=400, seed=5)
    diff = stats.bootstrap_ci([b - a for a, b in zip(m0, m2)], n_boot=400, seed=5)
    assert (claim["diff"], claim["ci_low"], claim["ci_high"]) == (diff["value"], diff["ci_low"], diff["ci_high"])


def test_factscore_interval_equals_stats_interval():
    from test_factscore import FixedDecomposer, PrefixVerifier

    from rlrf_nb.evals import factscore as F

    facts = {"a": ["T"] * 7 + ["F"] * 3, "b": ["T"] * 4 + ["F"], "c": ["T"] * 5 + ["F"] * 15, "d": ["T"] * 12}
    res = F.factscore(list(facts), ["w", "x", "y", "z"], FixedDecomposer(facts), PrefixVerifier(), n_boot=500,
                      seed=4)
    ci = stats.bootstrap_ci([r["score"] for r in res["rows"]], n_boot=500, seed=4)
    assert (res["score"], res["ci_low"], res["ci_high"]) == (ci["value"], ci["ci_low"], ci["ci_high"])


def test_just_eval_intervals_equal_stats_intervals():
    from test_just_eval import RECORDS

    from rlrf_nb.evals.just_eval import ASPECTS, SAFETY_ASPECTS, aggregate

    r = aggregate(RECORDS, n_boot=300, seed=2)
    for name in ("helpfulness", "safety"):
        scored = [a["score"] for rec in RECORDS for a in rec["judgement"]["aspects"]
                  if a["aspect"] == name and a["score"] is not None]
        ci = stats.bootstrap_ci(scored, n_boot=300, seed=2 + 10 + (ASPECTS + SAFETY_ASPECTS).index(name))
        got = r["aspects"][name]
        assert (got["mean"], got["ci_low"], got["ci_high"]) == (ci["value"], ci["ci_low"], ci["ci_high"])
    assert r["overall"]["ci_low"] <= r["overall"]["mean"] <= r["overall"]["ci_high"]
    with pytest.raises(ValueError, match="at least one"):
        aggregate([])


def test_bootstraps_fast_mean_is_bit_for_bit_the_pure_python_one():
    """The mean's fast path (numpy gather, cumsum left to right) gives exactly ``sum(xs) / len(xs)`` of every
    resample, on 0/1, fractional and negative values, whatever the item count."""
    rng = random.Random(3)
    for n in (1, 2, 9, 500):
        for xs in ([float(rng.random() < 0.4) for _ in range(n)], [rng.random() * 0.37 for _ in range(n)],
                   [rng.choice([-1.0, 0.1, 0.7, 2]) for _ in range(n)]):
            slow = [sum(xs[i] for i in idx) / n for idx in stats.resamples(n, 300, 11)]
            assert stats.bootstrap(xs, stats.mean, 300, 11) == slow
