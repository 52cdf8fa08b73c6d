"""Pair policies on hand-made pools: ties, margins, the verifiable override, and TRL's DPO data processing."""

import copy
import dataclasses
from pathlib import Path

import pytest

from rlrf_nb.pairs import POLICIES, Candidate, build_pairs, pair_yield, to_dataset, wrong_above_right

ROOT = Path(__file__).resolve().parents[1]
Q = "Ava has 3 apples. She buys 2 more apples. How many apples does Ava have now?"


def c(cid, reward, kind="sample", parent=None, correct=None, overall=None, text=None, pid="p1"):
    return Candidate(cid, pid, Q, text or f"answer {cid}\n#### {cid}", kind, reward, {"logical_correctness": 3},
                     parent_id=parent, correct=correct, overall=overall)


POOL = [c("s0", 0.2), c("s1", 0.5), c("s2", 0.9),
        c("r0", 1.0, "refinement", "s0"), c("r1", 0.4, "refinement", "s1"), c("bad", None)]


def ids(pairs):
    return [(p["chosen_id"], p["rejected_id"]) for p in pairs]


def test_policies_on_a_hand_made_pool(trl_tokenize):
    assert ids(trl_tokenize(build_pairs(POOL, "best_vs_worst"))) == [("r0", "s0")]
    assert ids(trl_tokenize(build_pairs(POOL, "no_reflection"))) == [("s2", "s0")]
    assert ids(trl_tokenize(build_pairs(POOL, "best_refined_vs_worst_sample"))) == [("r0", "s0")]
    # each refinement against its parent; the better one is chosen
    assert ids(trl_tokenize(build_pairs(POOL, "refined_vs_original"))) == [("r0", "s0"), ("s1", "r1")]


def test_parse_failures_never_enter_a_pair(trl_tokenize):
    pairs = trl_tokenize(build_pairs(POOL + [c("bad2", None, "refinement", "s2")], "best_vs_worst"))
    assert pairs and all("bad" not in i for pair in ids(pairs) for i in pair)


def test_ties_are_dropped_and_the_margin_applies(trl_tokenize):
    assert build_pairs([c("a", 0.5), c("b", 0.5)], "best_vs_worst") == []
    same_text = [c("a", 0.9, text="same"), c("b", 0.1, text="same")]
    assert build_pairs(same_text, "best_vs_worst") == []
    pool = [c("a", 0.6), c("b", 0.5)]
    assert build_pairs(pool, "best_vs_worst", min_margin=0.2) == []
    assert len(trl_tokenize(build_pairs(pool, "best_vs_worst", min_margin=0.05))) == 1


def test_verifiable_override_never_prefers_a_wrong_answer(trl_tokenize):
    pool = [c("wrong", 0.9, correct=False), c("right", 0.3, correct=True)]
    (p,) = trl_tokenize(build_pairs(pool, "best_vs_worst", min_margin=0.5))
    assert (p["chosen_id"], p["rejected_id"]) == ("right", "wrong")  # kept despite the reward gap
    assert p["chosen_correct"] is True and p["rejected_correct"] is False and p["margin"] < 0
    refined = [c("s", 0.9, correct=False), c("r", 0.2, "refinement", "s", correct=True)]
    assert ids(trl_tokenize(build_pairs(refined, "refined_vs_original"))) == [("r", "s")]
    for policy in POLICIES:  # under every policy, on a pool with right and wrong answers
        mixed = [dataclasses.replace(k, overall=k.reward) for k in pool + refined]
        assert all(p["rejected_correct"] is not True or p["chosen_correct"] is True
                   for p in trl_tokenize(build_pairs(mixed, policy)))


def test_without_the_gold_override_the_judge_alone_ranks(trl_tokenize):
    """pairs.gold_override=false (a loop that measures a learned judge): the reward alone decides, and a
    right-over-wrong pair gets no exemption from ties or the margin."""
    pool = [c("wrong", 0.9, correct=False), c("right", 0.3, correct=True)]
    (p,) = trl_tokenize(build_pairs(pool, "best_vs_worst", gold_override=False))
    assert (p["chosen_id"], p["rejected_id"]) == ("wrong", "right") and p["margin"] > 0
    assert p["chosen_correct"] is False  # the lineage still records what the gold answer says
    assert build_pairs(pool, "best_vs_worst", min_margin=0.7, gold_override=False) == []
    assert build_pairs([c("a", 0.5, correct=True), c("b", 0.5, correct=False)], "best_vs_worst",
                       gold_override=False) == []  # a tie by the judge is a tie
    refined = [c("s", 0.9, correct=False), c("r", 0.2, "refinement", "s", correct=True)]
    assert ids(trl_tokenize(build_pairs(refined, "refined_vs_original", gold_override=False))) == [("s", "r")]


def test_scalar_ablation_ranks_by_the_overall_score(trl_tokenize):
    pool = [c("a", 0.9, overall=0.1), c("b", 0.1, overall=0.8)]
    assert ids(trl_tokenize(build_pairs(pool, "scalar"))) == [("b", "a")]
    assert ids(trl_tokenize(build_pairs(pool, "best_vs_worst"))) == [("a", "b")]
    assert build_pairs([c("a", 0.9), c("b", 0.1)], "scalar") == []  # no overall score, no scalar pair


def test_format_lineage_and_yield(trl_tokenize):
    (p,) = trl_tokenize(build_pairs(POOL, "best_vs_worst", round_=2))
    assert p["prompt"] == [{"role": "user", "content": Q}]
    assert p["chosen"] == [{"role": "assistant", "content": "answer r0\n#### r0"}]
    assert p["pair_policy"] == "best_vs_worst" and p["round"] == 2 and p["chosen_kind"] == "refinement"
    (s,) = build_pairs(POOL, "best_vs_worst", conversational=False)
    assert s["prompt"] == Q and s["chosen"] == "answer r0\n#### r0"
    y = pair_yield(build_pairs(POOL, "refined_vs_original"), 1)
    assert y["pairs"] == 2 and y["pairs_per_prompt"] == 2.0
    with pytest.raises(ValueError, match="unknown pair policy"):
        build_pairs(POOL, "best")


@pytest.mark.timeout(300)
def test_every_policy_output_goes_through_trl_dpo_data_processing(tmp_path):
    """TRL's DPOTrainer tokenizes our pairs (conversational, with M0's chat template) without error, and the
    completions end with exactly one EOS (no doubled end-of-turn; trl#4481)."""
    from trl import DPOConfig, DPOTrainer

    from rlrf_nb.models import load_policy

    model, tok = load_policy(ROOT / "data/tiny_world/m0")
    pool = POOL + [c("x", 0.1, correct=False, pid="p2"), c("y", 0.7, correct=True, pid="p2"),
                   c("z", 0.8, "refinement", "x", correct=True, pid="p2", overall=0.9)]
    pool = [dataclasses.replace(k, overall=k.overall if k.overall is not None else k.reward) for k in pool]
    rows = [p for policy in POLICIES for p in build_pairs(pool, policy)]
    assert {p["pair_policy"] for p in rows} == set(POLICIES)
    # lineage columns of mixed type (dicts, None) stay out of the Arrow table handed to TRL
    ds = to_dataset(rows)
    args = DPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", max_length=384,
                     per_device_train_batch_size=2)
    trainer = DPOTrainer(model=model, ref_model=copy.deepcopy(model), args=args, train_dataset=ds,
                         processing_class=tok)
    out = trainer.train_dataset
    assert len(out) == len(rows)
    for row, pair in zip(out, rows):
        chosen = tok.decode(row["chosen_ids"])
        assert chosen == pair["chosen"][0]["content"] + "<|end|>"
        assert tok.decode(row["rejected_ids"]).count("<|end|>") == 1
        assert tok.decode(row["prompt_ids"]).endswith("<|assistant|>")


def test_per_prompt_pairs_take_best_and_worst_inward_without_repeats(trl_tokenize):
    from rlrf_nb.pairs import Candidate, build_pairs

    def cand(i, reward, correct):
        return Candidate(prompt_id="p", candidate_id=f"p/s{i}", kind="sample", prompt="What is 2+2?",
                         text=f"answer {i}", reward=reward, scores={"logical_correctness": 3}, correct=correct)

    pool = [cand(i, r, r > 0.5) for i, r in enumerate([0.9, 0.8, 0.7, 0.6, 0.2, 0.1])]
    one = build_pairs(pool, "best_vs_worst")
    assert [(p["chosen_id"], p["rejected_id"]) for p in one] == [("p/s0", "p/s5")]
    three = build_pairs(pool, "best_vs_worst", per_prompt=3)
    assert [(p["chosen_id"], p["rejected_id"]) for p in three] == [("p/s0", "p/s5"), ("p/s1", "p/s4"),
                                                                    ("p/s2", "p/s3")]
    assert len(build_pairs(pool, "best_vs_worst", per_prompt=10)) == 3  # never reuses a candidate
    trl_tokenize(three)


def test_a_saved_pool_loads_back_equal_and_a_missing_one_names_notebook_02(tmp_path):
    from rlrf_nb.pairs import load_pool, save_pool
    from rlrf_nb.store import RunStore

    store = RunStore(tmp_path)
    pool = POOL + [c("w", 0.3, correct=False, overall=0.25), c("r", 0.7, "refinement", "w", correct=True)]
    save_pool(store, pool)
    assert load_pool(store) == pool  # same candidates, fields and order
    with pytest.raises(FileNotFoundError, match=r"other\.jsonl: no candidate pool.*notebook 02"):
        load_pool(store, "other")


def test_wrong_above_right_counts_flips_and_right_answers_reached_through_a_wrong_step():
    """Notebook 05 §4: a wrong answer with a higher fine-grained reward than a right one is a flip; it is *lucky*
    when the right answer's steps were wrong (logical correctness < 5). Ungraded or unscored candidates stay out."""
    def m(cid, reward, correct, logic, pid):
        return Candidate(cid, pid, Q, cid, "sample", reward, {"logical_correctness": logic}, correct=correct)

    pool = [m("right-lucky", 0.6, True, 4, "a"), m("right", 0.9, True, 5, "a"), m("wrong", 0.7, False, 2, "a"),
            m("wrong-low", 0.2, False, 1, "a"), m("unscored", None, False, 1, "a"), m("bio", 0.95, None, 5, "a"),
            m("right-b", 0.5, True, 5, "b"), m("wrong-b", 0.8, False, 3, "b"),
            m("right-c", 0.5, True, 5, "c")]  # no wrong candidate: no pair
    assert wrong_above_right(pool) == {"flipped": 2, "lucky": 1}
    assert wrong_above_right([]) == {"flipped": 0, "lucky": 0}


def test_right_chosen_only_drops_pairs_whose_chosen_is_wrong_and_the_recipe_reaches_every_build():
    """``pairs.right_chosen_only``: a pair whose chosen answer is graded wrong (both wrong, the judge prefers one) is
    dropped, an ungraded chosen (a bio) is kept; ``PairsConfig.build_kwargs`` is what every pair build in the loop
    passes, and it names only arguments ``build_pairs`` takes (``per_prompt`` was a recipe field no build read)."""
    import inspect

    from rlrf_nb.config import PairsConfig
    from rlrf_nb.pairs import build_pairs

    pool = [c("a1", 0.6, correct=False, pid="both-wrong"), c("a2", 0.2, correct=False, pid="both-wrong"),
            c("b1", 0.9, correct=True, pid="right-wrong"), c("b2", 0.1, correct=False, pid="right-wrong"),
            c("u1", 0.8, pid="bio"), c("u2", 0.3, pid="bio")]
    assert sorted(p["prompt_id"] for p in build_pairs(pool, "best_vs_worst")) == ["bio", "both-wrong", "right-wrong"]
    kept = build_pairs(pool, "best_vs_worst", **PairsConfig(right_chosen_only=True).build_kwargs())
    assert sorted(p["prompt_id"] for p in kept) == ["bio", "right-wrong"]
    kwargs = PairsConfig(per_prompt=3).build_kwargs()
    assert set(kwargs) <= set(inspect.signature(build_pairs).parameters) and kwargs["per_prompt"] == 3


def test_step_prefix_pairs_part_at_the_first_mistake_and_move_the_shared_prefix_into_the_prompt(trl_tokenize, caplog):
    """``pairs.policy: step_prefix`` (issue 16's step-level pairs): the search marks each tiny-world solution's first
    wrong line; a wrong candidate is paired with a perfect one that shares its right lines, its own refinement first,
    in the verifier's order even when the judge prefers the wrong one; a bio falls back to best_vs_worst, a prompt
    without a perfect candidate or a shared prefix gives none. ``dpo.pair_cut: shared_prefix`` then moves the shared
    tokens into the prompt."""
    from rlrf_nb.reflection import first_wrong_line
    from rlrf_nb.tasks import math
    from rlrf_nb.training import move_shared_prefix

    (ex,) = math.generate_splits(0, {"test": 1}, min_value=100, max_value=999, max_operand=899, ops="+-",
                                 scratchpad=True, min_steps=3, max_steps=3)["test"]
    y = [s[3] for s in ex.meta["steps"]]
    right = ex.reference
    slip2 = math.rewrite_from_step(ex, 1, result=y[1] + 1)  # step 2 wrong, step 1 right
    slip1 = math.rewrite_from_step(ex, 0, result=y[0] + 10)  # step 1 wrong
    bad_answer = right.rsplit("#### ", 1)[0] + f"#### {y[2] + 1}"  # every step right, the answer line wrong
    assert [first_wrong_line(t, ex) for t in (right, slip2, slip1, bad_answer)] == [0, 2, 1, 4]
    assert first_wrong_line("#### 5", dataclasses.replace(ex, meta={})) is None  # no step chain: unchecked

    def m(cid, text, reward, kind="sample", parent=None, pid=ex.id):
        return Candidate(cid, pid, ex.prompt, text, kind, reward, {}, parent_id=parent,
                         correct=math.is_correct(text, ex.answer), first_error=first_wrong_line(text, ex))

    pool = [m("d", slip2, 0.9), m("s1", slip1, 0.1), m("a", bad_answer, 0.95), m("ok", right, 0.5),
            m("r", right + " ", 0.3, "refinement", "d"), m("r2", right + "  ", 0.4, "refinement", "s1")]
    (p,) = trl_tokenize(build_pairs(pool[:4], "step_prefix"))
    assert (p["chosen_id"], p["rejected_id"], p["step"]) == ("ok", "a", 4)  # the deepest mistake; kept, margin < 0
    assert p["margin"] < 0
    three = build_pairs(pool, "step_prefix", per_prompt=3)
    assert ids(three) == [("r2", "a"), ("r", "d"), ("r2", "s1")]  # a refinement first, a draft's own before others
    assert [q["step"] for q in three] == [4, 2, 1]
    # a bio falls back to best_vs_worst; no perfect candidate, or no shared right prefix: no pair
    bio = [c("u1", 0.8, pid="bio"), c("u2", 0.3, pid="bio")]
    other = right.replace("\n", " \n", 1)  # right, but its first line differs from slip2's
    assert ids(build_pairs(bio + pool[:3], "step_prefix")) == [("u1", "u2")]
    unmarked = [dataclasses.replace(k, first_error=None) for k in pool[:4]]  # GSM8K, or a pool saved before steps
    with caplog.at_level("WARNING", logger="rlrf_nb.pairs"):
        assert ids(build_pairs(unmarked, "step_prefix")) == [("ok", "s1")]  # best_vs_worst, said in the log
    assert "no graded candidate carries first_error" in caplog.text
    assert build_pairs([m("d", slip2, 0.9), m("o", other, 0.2)], "step_prefix") == []
    assert ids(build_pairs([m("s1", slip1, 0.9), m("o", other, 0.2)], "step_prefix")) == [("o", "s1")]

    row = {"prompt_ids": [1, 2], "chosen_ids": [3, 4, 5, 9], "rejected_ids": [3, 4, 6, 9]}
    assert move_shared_prefix(row) == {"prompt_ids": [1, 2, 3, 4], "chosen_ids": [5, 9], "rejected_ids": [6, 9]}
    same = {"prompt_ids": [1], "chosen_ids": [3, 4], "rejected_ids": [3, 4, 5]}  # one side is the other's prefix
    assert move_shared_prefix(same) == {"prompt_ids": [1, 3], "chosen_ids": [4], "rejected_ids": [4, 5]}
