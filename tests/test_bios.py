"""Tiny-world bios: KB generation, disjoint people splits, noisy web text, the claim checker."""

import random

from rlrf_nb.tasks import bios as B


def test_people_are_deterministic_and_unique():
    a, b = B.make_people(3, 250), B.make_people(3, 250)
    assert a == b and len({p["name"] for p in a}) == 250
    assert B.make_people(4, 10) != a[:10]
    assert all(set(B.ATTRIBUTES) <= set(p) for p in a)


def test_people_splits_are_disjoint_and_cover_everyone():
    people = B.make_people(0, 300)
    s = B.split_people(people, {"test": 60, "dev": 40, "rl": 60, "sft": -1})
    ents = {k: {e.meta["entity"] for e in v} for k, v in s.items()}
    assert sum(map(len, ents.values())) == 300
    assert not (ents["test"] & ents["rl"]) and not (ents["test"] & ents["sft"]) and not (ents["dev"] & ents["rl"])
    assert s["test"][0].prompt == f"Tell me a bio of {s['test'][0].meta['entity']}."


def test_web_documents_have_the_configured_error_rate():
    people = B.make_people(0, 200)
    docs = B.web_documents(people, 0, 4, 0.2)
    kb = {p["name"]: p for p in people}
    # Web docs use paraphrases; check the canonical-template sentences among them against the KB.
    sup = con = 0
    for d in docs:
        for sent in B.split_claims(d):
            for c in B.check_bio(sent, kb.get(sent.split(" was ")[0].split(" works ")[0].split(" is ")[0]
                                              .split(" studied ")[0])):
                sup += c.status == "supported"
                con += c.status == "contradicted"
    assert sup + con > 300
    assert 0.12 < con / (sup + con) < 0.28


def test_check_bio_verdicts():
    p = B.make_people(0, 1)[0]
    ref = B.reference_bio(p)
    assert [c.status for c in B.check_bio(ref, p)] == ["supported"] * len(B.ATTRIBUTES)
    draft, wrong = B.corrupt_bio(random.Random(1), p, n_wrong=2)
    claims = B.check_bio(draft + " It rains a lot.", p)
    assert sorted(c.attribute for c in claims if c.status == "contradicted") == sorted(wrong)
    assert claims[-1].status == "unsupported"
    bad = next(c for c in claims if c.status == "contradicted")
    assert p[bad.attribute] in B.claim_critique(bad, p["name"])
    # A claim about a person not in the KB is unsupported, never supported.
    assert {c.status for c in B.check_bio(ref, None)} == {"unsupported"}
