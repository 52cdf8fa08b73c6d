"""FactScore benchmark: the length penalty and aggregation (checked by hand), abstentions, the tiny-world
decomposer and KB verifier, BM25 passage retrieval, strict LLM parsing, and the end-to-end tiny-world eval."""

import json
import math
import random
from pathlib import Path

import pytest

from rlrf_nb.evals import factscore as F
from rlrf_nb.jsonl import JsonlError
from rlrf_nb.tasks import bios

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world():
    from rlrf_nb.config import load_recipe
    from rlrf_nb.tiny_world import build_world

    return build_world(load_recipe(ROOT / "recipes/tiny-smoke.yaml").world)


class FixedDecomposer:
    """Facts given by hand per response text (so the aggregate can be computed by hand)."""

    def __init__(self, facts: dict[str, list[str]]):
        self.facts = facts

    def decompose(self, text):
        return F.Decomposition(self.facts[text])


class PrefixVerifier:
    """A fact is supported when it starts with 'T'."""

    def verify(self, topic, facts):
        return [F.Verdict(f, "supported" if f.startswith("T") else "unsupported", f.startswith("T")) for f in facts]


class StubTransport:
    """Returns canned replies in order; used only to test parsing of LLM output."""

    def __init__(self, replies):
        self.replies, self.seen = list(replies), []

    def complete(self, messages):
        self.seen.append(messages)
        return self.replies.pop(0)


def test_length_penalty_known_values():
    assert F.length_penalty(10) == 1.0
    assert F.length_penalty(20) == 1.0
    assert F.length_penalty(5) == pytest.approx(math.exp(-1))
    assert F.length_penalty(1) == pytest.approx(math.exp(-9))
    assert F.length_penalty(3, gamma=None) == 1.0 and F.length_penalty(3, gamma=0) == 1.0
    with pytest.raises(ValueError, match="n_facts must be >= 1"):
        F.length_penalty(0)


def test_aggregate_by_hand():
    # a: 10 facts, 7 supported -> 0.7, penalty 1; b: 5 facts, 4 supported -> 0.8, penalty exp(-1);
    # c: 20 facts, 5 supported -> 0.25, penalty 1.
    facts = {"a": ["T"] * 7 + ["F"] * 3, "b": ["T"] * 4 + ["F"], "c": ["T"] * 5 + ["F"] * 15}
    res = F.factscore(["a", "b", "c"], ["x", "y", "z"], FixedDecomposer(facts), PrefixVerifier())
    assert res["init_score"] == pytest.approx((0.7 + 0.8 + 0.25) / 3)
    assert res["score"] == pytest.approx((0.7 + 0.8 * math.exp(-1) + 0.25) / 3)
    assert res["facts_per_response"] == pytest.approx(35 / 3)
    assert res["respond_ratio"] == 1.0 and res["n"] == res["n_responding"] == 3
    assert [r["penalty"] for r in res["rows"]] == pytest.approx([1.0, math.exp(-1), 1.0])
    assert res["facts_supported"]["k"] == 16 and res["facts_supported"]["n"] == 35
    assert res["ci_low"] <= res["score"] <= res["ci_high"]
    again = F.factscore(["a", "b", "c"], ["x", "y", "z"], FixedDecomposer(facts), PrefixVerifier())
    assert (again["ci_low"], again["ci_high"]) == (res["ci_low"], res["ci_high"])  # seeded bootstrap
    # gamma=None: no penalty, score == init_score (upstream's `if gamma:`)
    flat = F.factscore(["a", "b", "c"], ["x", "y", "z"], FixedDecomposer(facts), PrefixVerifier(), gamma=None)
    assert flat["score"] == pytest.approx(flat["init_score"])
    with pytest.raises(ValueError, match="3 responses but 2 topics"):
        F.factscore(["a", "b", "c"], ["x", "y"], FixedDecomposer(facts), PrefixVerifier())


def test_abstentions_excluded_and_respond_ratio():
    texts = ["a", "I'm sorry, I have no information about this person.", "b",
             "There is no information available on X.", "c"]
    facts = {"a": ["T"] * 10, "b": ["T"] * 5 + ["F"] * 5, "c": ["F"] * 10}
    res = F.factscore(texts, list("vwxyz"), FixedDecomposer(facts), PrefixVerifier())
    assert res["respond_ratio"] == pytest.approx(0.6) and res["respond"]["k"] == 3 and res["respond"]["n"] == 5
    assert res["n_abstained"] == 2 and res["n_responding"] == 3
    assert res["score"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert [r["abstained"] for r in res["rows"]] == [False, True, False, True, False]
    assert res["rows"][1]["score"] is None and res["rows"][1]["facts"] == []
    assert res["rows"][1]["abstain_reason"] == "starts with \"I'm sorry\""
    # The bool detector works as the abstain hook too.
    same = F.factscore(texts, list("vwxyz"), FixedDecomposer(facts), PrefixVerifier(), abstain=F.abstained)
    assert same["respond_ratio"] == pytest.approx(0.6) and same["score"] == res["score"]
    # A response that decomposes into no facts is not responding either (upstream: facts is None).
    empty = F.factscore(["a", "d"], ["v", "w"], FixedDecomposer({**facts, "d": []}), PrefixVerifier())
    assert empty["respond_ratio"] == 0.5 and empty["n_no_facts"] == 1 and empty["score"] == 1.0


def test_abstained_phrases():
    assert F.abstained("I'm sorry, but I don't know who that is.")
    assert F.abstained("I\u2019m sorry, I don\u2019t know.")
    assert F.abstained("I don't have information about Kalo Renmi.")
    assert F.abstained("I cannot find anything.")
    assert F.abstained("There is no information about him [1].")
    assert F.abstained("   ")
    assert F.abstained("Kalo Renmi is a painter.\n\nI could not find any information on her work.") is False
    assert F.abstained("I could not find any information on her.\n\nShe may be a painter.")
    assert not F.abstained("Kalo Renmi cannot swim. She was born in 1950.")
    assert not F.abstained(bios.reference_bio(bios.make_people(0, 1)[0]))


def test_tiny_world_decomposer_and_kb_verifier(world):
    people = [world.person(ex.meta["entity"]) for ex in world.bios["dev"][:3]]
    correct = bios.reference_bio(people[0])
    wrong_bio, wrong = bios.corrupt_bio(random.Random(0), people[1], n_wrong=1)
    extra = bios.reference_bio(people[2]) + " It rains a lot."
    dec = F.SentenceDecomposer()
    assert len(dec.decompose(extra).facts) == len(bios.ATTRIBUTES) + 1
    res = F.factscore([correct, wrong_bio, extra], [p["name"] for p in people], dec, F.KBVerifier(world))
    counts = [{s: sum(f["status"] == s for f in r["facts"]) for s in ("supported", "contradicted", "unsupported")}
              for r in res["rows"]]
    assert counts == [{"supported": 6, "contradicted": 0, "unsupported": 0},
                      {"supported": 5, "contradicted": 1, "unsupported": 0},
                      {"supported": 6, "contradicted": 0, "unsupported": 1}]
    bad = next(f for f in res["rows"][1]["facts"] if f["status"] == "contradicted")
    assert bad["truth"] == people[1][wrong[0]]
    assert res["init_score"] == pytest.approx((1 + 5 / 6 + 6 / 7) / 3)
    assert res["score"] == pytest.approx((math.exp(1 - 10 / 6) * (1 + 5 / 6) + math.exp(1 - 10 / 7) * 6 / 7) / 3)
    assert res["parse_failures"]["n_verify"] == 0
    # Facts about someone else, or about a person the KB lacks, are unsupported.
    other = F.KBVerifier(F.KBSource(world)).verify(people[1]["name"], bios.split_claims(correct))
    assert {v.status for v in other} == {"unsupported"}
    assert {v.status for v in F.KBVerifier(world).verify("Nobody Known", ["Nobody Known works for X."])} == {
        "unsupported"}


def _write_passages(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_passage_source_bm25(tmp_path):
    path = _write_passages(tmp_path / "kb.jsonl", [
        {"title": "Ada Lovelace", "text": "Ada Lovelace was born in London in 1815 to Lord Byron."},
        {"title": "Ada Lovelace", "text": "Lovelace wrote the first algorithm intended for the Analytical Engine."},
        {"title": "Ada Lovelace", "text": ["She died of cancer in 1852.", "She was buried at Hucknall."]},
        "",
        {"title": "Charles Babbage", "text": "Babbage designed the Analytical Engine, a mechanical computer."},
    ])
    src = F.PassageSource(path)
    top = src.retrieve("Ada Lovelace", "Ada Lovelace wrote an algorithm for a computing engine.", k=5)
    assert top[0]["id"] == "kb.jsonl:2" and "first algorithm" in top[0]["text"]
    assert len(top) == 4 and {p["title"] for p in top} == {"Ada Lovelace"}  # only the topic's passages
    assert src.retrieve("Ada Lovelace", "She died of cancer in 1852.", k=1)[0]["id"] == "kb.jsonl:3#0"
    assert F.PassageSource(path, restrict_to_topic=False).retrieve(
        "Engine", "a mechanical computer", k=1)[0]["title"] == "Charles Babbage"
    with pytest.raises(KeyError, match="kb.jsonl: no passage has the title 'Alan Turing'"):
        src.retrieve("Alan Turing", "Turing was born in 1912.")


def test_passage_source_errors_name_file_and_line(tmp_path):
    good = {"title": "A", "text": "a"}
    with pytest.raises(JsonlError, match=r"bad\.jsonl:3: invalid JSON"):
        F.PassageSource(_write_passages(tmp_path / "bad.jsonl", [good, good, '{"title": "B", "text":']))
    with pytest.raises(JsonlError, match=r"nofield\.jsonl:2: field 'text'"):
        F.PassageSource(_write_passages(tmp_path / "nofield.jsonl", [good, {"title": "B"}]))
    with pytest.raises(JsonlError, match=r"notitle\.jsonl:3: field 'title'"):
        F.PassageSource(_write_passages(tmp_path / "notitle.jsonl", [good, "", {"title": "", "text": "b"}]))
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        F.PassageSource(tmp_path / "missing.jsonl")


def test_parse_true_false():
    assert F.parse_true_false("True") == (True, None)
    assert F.parse_true_false("False.") == (False, None)
    assert F.parse_true_false("Output: true") == (True, None)
    assert F.parse_true_false(" TRUE, the context says so.") == (True, None)
    for garbage in ("", "Maybe", "It is not clear.", "True or False?", "Trueish", "The answer is True."):
        ok, error = F.parse_true_false(garbage)
        assert ok is None and error, garbage


def test_llm_verifier_parse_failures_are_counted_not_scored(world):
    p = world.person(world.bios["dev"][0].meta["entity"])
    facts = bios.split_claims(bios.reference_bio(p))[:4]
    transport = StubTransport(["True", "False.", "Output: true", "I think the context is unclear"])
    verifier = F.LLMVerifier(transport, F.KBSource(world))
    res = F.factscore([" ".join(facts)], [p["name"]], F.SentenceDecomposer(), verifier)
    row = res["rows"][0]
    assert [f["supported"] for f in row["facts"]] == [True, False, True, None]
    assert row["n_facts"] == 4 and row["n_verified"] == 3 and row["supported_fraction"] == pytest.approx(2 / 3)
    assert res["init_score"] == pytest.approx(2 / 3)
    assert res["parse_failures"]["n_verify"] == 1
    fail = res["parse_failures"]["verify"][0]
    assert fail["raw"] == "I think the context is unclear" and fail["fact"] == facts[3]
    prompt = transport.seen[0][0]["content"]
    assert prompt.startswith(f"Answer the question about {p['name']} based on the given context.\n\nTitle: ")
    assert prompt.endswith(f"\n\nInput: {facts[0]} True or False?\nOutput:")
    assert row["facts"][0]["evidence"] == [f"kb:{p['name']}"]
    # All verdicts unparseable: the response responds but has no score.
    res = F.factscore(["A b. C d."], [p["name"]], F.SentenceDecomposer(),
                      F.LLMVerifier(StubTransport(["?", "??"]), F.KBSource(world)))
    assert res["n_responding"] == 1 and res["n_scored"] == 0 and math.isnan(res["score"])


def test_llm_decomposer_parse_handling():
    dec = F.LLMDecomposer(StubTransport(["- Kalo is a painter\n- Kalo lives in Oslo.", "No facts."]))
    out = dec.decompose("Kalo is a painter who lives in Oslo. Hope this helps!")
    assert out.facts == ["Kalo is a painter.", "Kalo lives in Oslo."] and out.failures == []
    out = F.LLMDecomposer(StubTransport(["Sure! Kalo is a painter.", ""])).decompose("A b. C d.")
    assert out.facts == [] and [f["raw"] for f in out.failures] == ["Sure! Kalo is a painter.", ""]
    assert out.failures[0]["sentence"] == "A b." and out.failures[1]["error"] == "empty output"
    # A response whose decomposition failed is left out of the score and of the respond-ratio denominator.
    res = F.factscore(["A b. C d.", "X y."], ["t", "u"],
                      F.LLMDecomposer(StubTransport(["garbage", "- A b.", "- T fact."])), PrefixVerifier())
    assert res["n_decompose_failed"] == 1 and res["parse_failures"]["n_decompose"] == 1
    assert res["respond_ratio"] == 1.0 and res["n_scored"] == 1 and res["init_score"] == 1.0


def test_evaluate_factscore_end_to_end(world, tmp_path):
    from rlrf_nb.models import load_policy, model_fingerprint
    from rlrf_nb.store import RunStore

    path = ROOT / "data/tiny_world/m0"
    model, tok = load_policy(path)
    store = RunStore(tmp_path / "run")
    examples = world.bios["dev"][:4]
    res = F.evaluate_factscore(model, tok, model_fingerprint(path), examples, world, store, "M0",
                               max_new_tokens=64, batch_size=4)
    art = store.path("eval/M0/factscore.jsonl")
    lines = art.read_text().splitlines()
    assert len(lines) == 4 and res["n"] == 4 and len(res["records"]) == 4
    assert [r["topic"] for r in res["rows"]] == [ex.meta["entity"] for ex in examples]
    assert 0.0 <= res["respond_ratio"] <= 1.0
    if res["n_scored"]:
        assert 0.0 <= res["score"] <= res["init_score"] <= 1.0
    again = F.evaluate_factscore(model, tok, model_fingerprint(path), examples, world, RunStore(tmp_path / "run"),
                                 "M0", max_new_tokens=64, batch_size=4)
    assert art.read_text().splitlines() == lines  # nothing regenerated
    assert again["score"] == res["score"] or (math.isnan(again["score"]) and math.isnan(res["score"]))
