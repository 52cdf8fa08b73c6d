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


def test_more_facts_per_person_extend_world_v2s_people_and_parse_back():
    """``n_attributes`` adds EXTRA_ATTRIBUTES after the six; 6 (the default) is world v2's people, value for value."""
    six, twelve = B.make_people(0, 50), B.make_people(0, 50, 12)
    assert all(tuple(k for k in p if k != "name") == B.ATTRIBUTES for p in six)
    assert all(B.attributes_of(p) == B.ALL_ATTRIBUTES for p in twelve) and len(B.ALL_ATTRIBUTES) == 12
    assert [{a: p[a] for a in ("name", *B.ATTRIBUTES)} for p in twelve] == six  # the same people, facts added
    assert B.attributes_of(B.make_people(0, 1, 8)[0]) == B.ATTRIBUTES + B.EXTRA_ATTRIBUTES[:2]
    assert B.attributes_of(None) == B.ATTRIBUTES
    for bad in (5, 13):
        try:
            B.make_people(0, 5, bad)
        except ValueError as e:
            assert "n_attributes must be 6-12" in str(e)
        else:
            raise AssertionError(f"n_attributes={bad} accepted")
    p = twelve[0]
    assert [c.status for c in B.check_bio(B.reference_bio(p), p)] == ["supported"] * 12
    draft, wrong = B.corrupt_bio(random.Random(1), p, 4)
    verdicts = {c.attribute: c.status for c in B.check_bio(draft, p)}
    assert len(verdicts) == 12 and {a for a, s in verdicts.items() if s == "contradicted"} == set(wrong)
    # a six-fact person's KB has no residence: the claim parses, and is not supported
    claim = B.check_bio(f"{six[0]['name']} lives in Lowmoor.", six[0])[0]
    assert (claim.attribute, claim.status) == ("residence", "unsupported")
    # every web paraphrase of a new fact is either the canonical sentence or parses as no claim, never another fact
    for a in B.EXTRA_ATTRIBUTES:
        for t in B.WEB[a]:
            s = B.fact_sentence(p["name"], a, p[a], t)
            c = B.check_bio(s[0].upper() + s[1:], p)[0]
            assert c.attribute in (None, a), s
    docs = B.web_documents(twelve[:5], 0, 20, 0.0)
    assert max(len(B.split_claims(d)) for d in docs) == 12 and min(len(B.split_claims(d)) for d in docs) >= 3
