"""World v2 (recipes/tiny-v2.yaml): three-digit chains with a column scratchpad, place-value digit tokens, a
popularity tail of web documents, and refinement drafts with a miscopied operand."""

import json
import random
import re
from pathlib import Path

import pytest

from rlrf_nb import models
from rlrf_nb.config import ConfigError, WorldConfig, load_recipe
from rlrf_nb.tasks import math as M
from rlrf_nb.tiny_world import _wrong_operand_draft, build_world, m0_config_hash, math_refinement_example

ROOT = Path(__file__).resolve().parents[1]
V2 = dict(min_value=100, max_value=999, max_operand=899, ops="+-", scratchpad=True)
SMALL = WorldConfig(math_test=20, math_dev=20, math_rl=10, math_train=60, n_people=220, docs_per_person=30,
                    min_docs_per_person=1, **V2)


def test_v2_problems_stay_in_range_and_their_solutions_check_perfect():
    rng = random.Random(0)
    for _ in range(300):
        p = M.make_problem(rng, **V2)
        values = [p["steps"][0][0]] + [v for x, op, b, y in p["steps"] for v in (b, y)]
        assert all(100 <= v <= 999 for v in values)
        assert M.check_solution(p["solution"], p["steps"], p["answer"]).perfect
        for line, (_x, _op, _b, y) in zip(p["solution"].split("\n"), p["steps"]):
            # the scratchpad's result digits, read most significant first, are the step's result
            digits = re.findall(r"=(\d) (?:carry|borrow)", line)
            assert int("".join(reversed(digits))) == y, line


def test_columns_carry_and_borrow():
    assert M.columns(347, "+", 285) == "ones 7+5+0=2 carry 1, tens 4+8+1=3 carry 1, hundreds 3+2+1=6 carry 0"
    assert M.columns(632, "-", 285) == "ones 2-5-0=7 borrow 1, tens 3-8-1=4 borrow 1, hundreds 6-2-1=3 borrow 0"
    assert M.columns(123, "*", 3) == "ones 3*3+0=9 carry 0, tens 2*3+0=6 carry 0, hundreds 1*3+0=3 carry 0"


def test_v2_drafts_name_the_first_wrong_step():
    w = build_world(SMALL)
    rng = random.Random(1)
    for ex in w.math["train"][:40]:
        j = rng.randrange(len(ex.meta["steps"]))
        x, op, b, y = ex.meta["steps"][j]
        draft = M.rewrite_from_step(ex, j, operand=b + 1)
        check = M.check_solution(draft, ex.meta["steps"], ex.answer)
        assert check.first_error == j + 1 and check.error_kind == "wrong_step"
        assert f"should be {x}{op}{b}={y}" in check.critique
        assert draft.split("\n")[:j] == ex.reference.split("\n")[:j]
        miscopied = _wrong_operand_draft(random.Random(j), ex)
        assert not M.check_solution(miscopied, ex.meta["steps"], ex.answer).perfect
        corrupt, first = M.corrupt_solution(rng, ex)
        assert M.check_solution(corrupt, ex.meta["steps"], ex.answer).first_error == first


def test_critique_quotes_name_the_sentence_the_wrong_step_should_follow(tmp_path):
    import dataclasses

    plain, quoted = build_world(SMALL), build_world(dataclasses.replace(SMALL, critique_quotes=True))
    for ex, qx in zip(plain.math["test"][:10], quoted.math["test"][:10]):
        assert "quotes" not in ex.meta and qx.meta["quotes"] == M.step_sentences(ex)
        assert [s in ex.prompt for s in qx.meta["quotes"]] == [True] * len(ex.meta["steps"])
        x, op, b, y = ex.meta["steps"][1]
        draft = M.rewrite_from_step(ex, 1, operand=b + 1)
        said = f"but the problem says '{qx.meta['quotes'][1]}', so this step should be {x}{op}{b}={y}."
        assert said in M.check_example(draft, qx).critique
        assert M.check_example(draft, ex).critique == M.check_solution(draft, ex.meta["steps"], ex.answer).critique
        assert "problem says" not in M.check_example(draft, ex).critique
        missing = M.check_example(ex.reference.split("\n")[0], qx)
        assert missing.error_kind == "missing_step" and f"'{qx.meta['quotes'][1]}'" in missing.critique
    from rlrf_nb.feedback import judge_responses
    from rlrf_nb.rubrics import load_rubric_set
    from rlrf_nb.store import RunStore
    from rlrf_nb.verifier import VerifierJudge

    rubrics, store = load_rubric_set(), RunStore(str(tmp_path))
    draft = M.rewrite_from_step(plain.math["test"][0], 0, operand=plain.math["test"][0].meta["steps"][0][2] + 1)
    for world in (plain, quoted):  # one store, both worlds: each gets its own critique, none served from the other
        rows = [{"example": world.math["test"][0], "response_id": "r0", "response": draft}]
        fb = judge_responses(store, "feedback", VerifierJudge(rubrics, {}), rows, rubrics)[0]
        assert ("problem says" in json.dumps(fb)) == (world is quoted)
    m0 = load_recipe(ROOT / "recipes/tiny-v2.yaml").m0  # quoting critiques change M0's mix, so its cache key
    assert m0_config_hash(SMALL, m0) != m0_config_hash(dataclasses.replace(SMALL, critique_quotes=True), m0)


def test_own_draft_examples_train_from_the_first_line_the_gold_solution_changes(tmp_path):
    """``m0.own_drafts``: the drafts M0's recipe writes with ``draft_model`` are refinement examples whose loss starts
    at the first line where the gold solution and the draft differ; the fields enter M0's key only when set."""
    import dataclasses

    from rlrf_nb.tiny_world import own_draft_examples, training_mix

    w = build_world(SMALL)
    tok = models.load_policy(ROOT / "data/tiny_world_v2/m0")[1]
    m0 = load_recipe(ROOT / "recipes/tiny-v2-phase4.yaml").m0  # no own drafts
    own_cfg = dataclasses.replace(m0, own_drafts=[0, 6], draft_model="data/tiny_world_v2/m0")
    own = own_draft_examples(w, own_cfg)
    by_prompt = {e.prompt: e for e in w.math["train"][:6]}
    assert 0 < len(own) <= 12
    for r in own:
        ex = by_prompt[r["messages"][0]["content"].split("\n\nDraft:\n")[0]]
        assert not M.check_example(r["draft"], ex).perfect and r["messages"][1]["content"] == ex.reference
        row = models.tokenize_item(r, tok, 1024)
        plain = models.tokenize_item({k: v for k, v in r.items() if k != "draft"}, tok, 1024)
        assert row["input_ids"] == plain["input_ids"]
        trained = [t for t, lab in zip(row["input_ids"], row["labels"]) if lab != -100]
        target, draft = r["messages"][1]["content"].split("\n"), r["draft"].split("\n")
        k = next((i for i, (a, b) in enumerate(zip(target, draft)) if a != b), min(len(target), len(draft)))
        assert "\n".join(target[k:]) in tok.decode(trained)
        assert (len(trained) < sum(lab != -100 for lab in plain["labels"])) == (k > 0)
    mix = training_mix(w, dataclasses.replace(m0, n_math=5, n_math_refine=5, n_drills=2, n_bio_refine=2), 0, own)
    assert sum("draft" in it for it in mix) == len(own)
    assert m0_config_hash(SMALL, own_cfg) != m0_config_hash(SMALL, m0)
    other_writer = dataclasses.replace(own_cfg, draft_model="data/tiny_world_v2/m0-phase4")
    assert m0_config_hash(SMALL, other_writer) not in (m0_config_hash(SMALL, own_cfg), m0_config_hash(SMALL, m0))
    with pytest.raises(ConfigError, match="m0.own_drafts"):
        load_recipe(ROOT / "recipes/tiny-v2.yaml", {"m0.own_drafts": [5, 2]})


def test_math_steps_mix_adds_solutions_by_number_of_steps():
    """``m0.math_steps_mix`` (phase 7): extra gold solutions per number of steps, never from ``train[:n_math]`` or the
    own-draft range; unset, the mix and M0's key are what they were; asking for more than the split has is an error
    that names the field."""
    import dataclasses

    from rlrf_nb.tiny_world import steps_mix, training_mix

    w = build_world(SMALL)
    m0 = dataclasses.replace(load_recipe(ROOT / "recipes/tiny-v2-phase4.yaml").m0, n_math=5, n_math_refine=5,
                             n_drills=2, n_bio_refine=2)
    cfg = dataclasses.replace(m0, math_steps_mix=[2, 3, 1], own_drafts=[10, 20], draft_model="x")
    extra = steps_mix(w, cfg, 0)
    assert [len(e.meta["steps"]) for e in extra] == [2, 2, 3, 3, 3, 4]
    index = {e.prompt: i for i, e in enumerate(w.math["train"])}
    assert all(i >= 5 and not 10 <= i < 20 for i in (index[e.prompt] for e in extra))
    assert extra == steps_mix(w, cfg, 0) and extra != steps_mix(w, cfg, 1)
    base = training_mix(w, m0, 0)
    assert training_mix(w, dataclasses.replace(m0, math_steps_mix=[]), 0) == base
    mixed = training_mix(w, dataclasses.replace(m0, math_steps_mix=[2, 3, 1]), 0)
    assert sum(it["kind"] == "math" for it in mixed) == sum(it["kind"] == "math" for it in base) + 6
    assert m0_config_hash(SMALL, dataclasses.replace(m0, math_steps_mix=[])) == m0_config_hash(SMALL, m0)
    assert m0_config_hash(SMALL, dataclasses.replace(m0, math_steps_mix=[2, 3, 1])) != m0_config_hash(SMALL, m0)
    with pytest.raises(ValueError, match="math_steps_mix asks for 1000 2-step"):
        steps_mix(w, dataclasses.replace(m0, math_steps_mix=[1000]), 0)
    with pytest.raises(ConfigError, match="m0.math_steps_mix"):
        load_recipe(ROOT / "recipes/tiny-v2.yaml", {"m0.math_steps_mix": [1, -1]})


def test_critique_source_examples_hold_the_right_number_only_in_the_critique():
    """``m0.n_critique_source``: the problem's sentence and the draft carry one miscopied operand, the critique
    (against the true problem) states the right expression, the target is the gold solution; unset, the mix and M0's
    key are unchanged; a negative count is a config error that names the field."""
    import dataclasses

    from rlrf_nb.tiny_world import critique_source_example, training_mix

    w = build_world(SMALL)
    rng = random.Random(0)
    made = [it for it in (critique_source_example(rng, ex) for ex in w.math["train"][:20]) if it]
    assert len(made) >= 15
    for it in made:
        prompt, target = it["messages"][0]["content"], it["messages"][1]["content"]
        draft = prompt.split("Draft:\n")[1].split("\n\nFeedback:")[0]
        problem = prompt.split("\n\nDraft:")[0]
        critique = re.search(r"should be (\d+[-+]\d+=\d+)", prompt).group(1)
        expr = critique.split("=")[0]
        assert expr in target and expr not in draft and critique.split("=")[0].split("+")[-1].split("-")[-1] \
            not in problem  # the right operand is in the critique and the target only
        assert draft == it["draft"] and draft != target and M.check_example(target, _example(w, target)).perfect
    m0 = dataclasses.replace(load_recipe(ROOT / "recipes/tiny-v2-phase4.yaml").m0, n_math=5, n_math_refine=5,
                             n_drills=2, n_bio_refine=2)
    base = training_mix(w, m0, 0)
    assert training_mix(w, dataclasses.replace(m0, n_critique_source=0), 0) == base
    assert m0_config_hash(SMALL, dataclasses.replace(m0, n_critique_source=0)) == m0_config_hash(SMALL, m0)
    mixed = training_mix(w, dataclasses.replace(m0, n_critique_source=7), 0)
    assert sum(it["kind"] == "math_refine_critique_source" for it in mixed) == 7 and len(mixed) == len(base) + 7
    with pytest.raises(ConfigError, match="m0.n_critique_source"):
        load_recipe(ROOT / "recipes/tiny-v2.yaml", {"m0.n_critique_source": -1})
    # "far": the wrong operand differs in at least two digits, and the whole target is trained (no draft key)
    far = [it for it in (critique_source_example(random.Random(i), ex, "far")
                         for i, ex in enumerate(w.math["train"][:20])) if it]
    assert len(far) >= 10 and not any("draft" in it for it in far)
    for it in far:
        prompt = it["messages"][0]["content"]
        right = re.search(r"should be \d+[-+](\d+)=", prompt).group(1)
        wrong = re.search(r"computes \d+[-+](\d+)=", prompt).group(1)
        assert sum(a != b for a, b in zip(right, wrong)) >= 2
    # "far_from_step": the same far operands (same random draws), trained from the named step (the draft key)
    train = list(enumerate(w.math["train"][:20]))
    from_step = [critique_source_example(random.Random(i), ex, "far_from_step") for i, ex in train]
    assert [it and {k: v for k, v in it.items() if k != "draft"} for it in from_step] == \
        [critique_source_example(random.Random(i), ex, "far") for i, ex in train]
    assert all(it["draft"] in it["messages"][0]["content"] for it in from_step if it)
    assert m0_config_hash(SMALL, dataclasses.replace(m0, n_critique_source=7, critique_source_operand="digit")) == \
        m0_config_hash(SMALL, dataclasses.replace(m0, n_critique_source=7))
    with pytest.raises(ConfigError, match="m0.critique_source_operand"):
        load_recipe(ROOT / "recipes/tiny-v2.yaml", {"m0.critique_source_operand": "near"})


def _example(world, reference: str):
    return next(e for e in world.math["train"] if e.reference == reference)


def test_scalar_share_gives_scalar_only_refinement_examples():
    w = build_world(SMALL)
    rng = random.Random(0)
    users = [math_refinement_example(rng, ex, 0.5)["messages"][0]["content"] for ex in w.math["train"]]
    scalar = sum("overall quality" in u for u in users)
    assert 0.3 * len(users) < scalar < 0.7 * len(users)
    assert all("Step" in u or "Every step" in u for u in users if "overall quality" not in u)


def test_popularity_tail_gives_each_person_1_to_30_documents():
    w = build_world(SMALL)
    counts = {p["name"]: 0 for p in w.people}
    for d in w.web_docs:
        for name in counts:
            if d.startswith(name) or f" {name} " in d:
                counts[name] += 1
                break
    assert min(counts.values()) >= 1 and max(counts.values()) <= 30 * 1.0
    assert len(set(counts.values())) > 10  # a tail, not one count for everybody
    assert build_world(SMALL).web_docs == w.web_docs


@pytest.mark.parametrize("text", ["347+285=632", "5", "Ava has 1204 apples, 10.5 and 7.", " 999\n#### 100"])
def test_place_tag_tokenizer_round_trips_and_gives_one_token_per_digit(text, tmp_path):
    rng = random.Random(0)
    texts = [M.make_problem(rng, **V2)["solution"] for _ in range(200)]
    tok = models.build_tokenizer(texts, 400, place_tags=True)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    pieces = tok.convert_ids_to_tokens(tok("347", add_special_tokens=False)["input_ids"])
    assert len(pieces) == 3 and pieces == sorted(pieces, reverse=True)  # hundreds, tens, ones marks, one per digit
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(text, add_special_tokens=False)["input_ids"] == ids


def test_v2_recipe_loads_and_v2_fields_are_checked():
    r = load_recipe(ROOT / "recipes/tiny-v2.yaml")
    assert r.world.min_value == 100 and r.m0.place_tags and r.m0.max_length == 1024
    with pytest.raises(ConfigError, match="world.min_value"):
        WorldConfig(min_value=500, max_value=999)
    with pytest.raises(ConfigError, match="world.ops"):
        WorldConfig(ops="+/", **{k: v for k, v in V2.items() if k != "ops"})
    with pytest.raises(ConfigError, match="world.min_docs_per_person"):
        WorldConfig(min_docs_per_person=7, docs_per_person=6)


def test_each_committed_m0_v2_phase_is_what_its_recipe_trains():
    """Every phase of M0 v2 is committed with the config hash of the recipe that trains it, and each phase continues
    the weights of the one before (the key holds their fingerprint), so notebook 00's retrain=True on any phase
    recipe retrains exactly the committed checkpoint's config."""
    every = list((ROOT / "recipes").glob("tiny-v2-phase*.yaml"))
    phases = sorted((p for p in every if p.stem.split("phase")[1].isdigit()),
                    key=lambda p: int(p.stem.split("phase")[1]))
    default = ROOT / "recipes/tiny-v2.yaml"  # phase 6; later phases continue it
    recipes = [p for p in phases if int(p.stem.split("phase")[1]) < 6] + [default] + \
        [p for p in phases if int(p.stem.split("phase")[1]) > 6]
    branches = [p for p in every if p not in phases]  # candidates such as phase 7b: they continue a committed phase
    assert {p.stem for p in branches} >= {"tiny-v2-phase7b", "tiny-v2-phase7c"}
    previous, committed = "", set()
    for path in recipes + branches:
        r = load_recipe(path)
        done = json.loads((ROOT / r.m0.pretrained / "COMPLETE.json").read_text())
        assert done["config_hash"] == m0_config_hash(r.world, r.m0), path.name
        if path in branches:
            assert r.m0.init_from in committed, path.name
        else:
            assert r.m0.init_from == previous, path.name
            previous = r.m0.pretrained
            committed.add(previous)


def test_train_world_keys_m0_by_the_world_it_was_trained_on():
    """``m0.train_world``: world v2-short evaluates phase 7b, trained on world v2's 2-4-step problems, on problems of
    2-3 steps; its M0 key is the committed checkpoint's (a retrain trains that config), and the field must name world
    fields."""
    import dataclasses

    from rlrf_nb.tiny_world import training_world_config

    short = load_recipe(ROOT / "recipes/tiny-v2-short.yaml")
    phase7b = load_recipe(ROOT / "recipes/tiny-v2-phase7b.yaml")
    assert short.world.max_steps == 3 and training_world_config(short.world, short.m0) == phase7b.world
    assert m0_config_hash(short.world, short.m0) == m0_config_hash(phase7b.world, phase7b.m0)
    done = json.loads((ROOT / short.m0.pretrained / "COMPLETE.json").read_text())
    assert done["config_hash"] == m0_config_hash(short.world, short.m0)
    assert m0_config_hash(short.world, dataclasses.replace(short.m0, train_world={})) != done["config_hash"]
    with pytest.raises(ConfigError, match="m0.train_world"):
        load_recipe(ROOT / "recipes/tiny-v2-short.yaml", {"m0.train_world": {"max_step": 4}})
    with pytest.raises(ConfigError, match="m0.train_world.*gives no valid world.*max_steps"):
        load_recipe(ROOT / "recipes/tiny-v2-short.yaml", {"m0.train_world": {"max_steps": 1}})


def test_slip_draft_miscopies_the_sentence_and_computes_on_from_it():
    """``tiny_world.slip_draft``: M0 v2's own slip made on purpose. The named step restates its sentence with the
    wrong number, its expression uses it, the verifier's first error is that step, and the problem is untouched;
    ``step_sentence`` refuses a step whose sentence is not unique."""
    import dataclasses

    from rlrf_nb.tiny_world import slip_draft, step_sentence

    w = build_world(SMALL)
    made = 0
    for ex in w.math["train"][:20]:
        for j, (x, op, b, _) in enumerate(ex.meta["steps"]):
            sentence = step_sentence(ex, j)
            if sentence is None:
                continue
            wrong = b + 100 if b < 800 else b - 100
            draft = slip_draft(ex, j, wrong)
            line = draft.split("\n")[j]
            assert line.startswith(sentence.replace(str(b), str(wrong))) and f"{x}{op}{wrong}=" in line
            assert draft.split("\n")[:j] == ex.reference.split("\n")[:j]
            assert M.check_example(draft, ex).first_error == j + 1
            made += 1
    assert made >= 20
    ex = w.math["train"][0]
    twice = dataclasses.replace(ex, prompt=ex.prompt + " " + step_sentence(ex, 0))
    assert step_sentence(twice, 0) is None


def test_facts_per_person_builds_people_with_more_facts_and_keeps_committed_m0_keys():
    """``world.facts_per_person``: 6 is world v2 (the same people and the same M0 key as before the field existed);
    12 gives every person 12 facts in the KB, the reference bios and the web documents."""
    import dataclasses

    from rlrf_nb.tasks import bios

    m0 = load_recipe(ROOT / "recipes/tiny-v2.yaml").m0
    wide = dataclasses.replace(SMALL, facts_per_person=12)
    assert m0_config_hash(dataclasses.replace(SMALL, facts_per_person=6), m0) == m0_config_hash(SMALL, m0)
    assert m0_config_hash(wide, m0) != m0_config_hash(SMALL, m0)
    w6, w12 = build_world(SMALL), build_world(wide)
    assert w6.people == bios.make_people(SMALL.seed, SMALL.n_people)
    assert all(len(bios.attributes_of(p)) == 12 for p in w12.people)
    ex = w12.bios["test"][0]
    assert len(bios.split_claims(ex.reference)) == 12
    assert any(" plays the " in d for d in w12.web_docs) and not any(" plays the " in d for d in w6.web_docs)
    with pytest.raises(ConfigError, match="facts_per_person"):
        dataclasses.replace(SMALL, facts_per_person=13)
