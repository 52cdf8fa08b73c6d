"""Tiny-world math: generator determinism, disjoint splits, safe arithmetic, extraction, the step checker."""

import random
from fractions import Fraction

import pytest

from rlrf_nb.tasks import math as M


def test_generate_splits_is_deterministic_per_seed():
    a = M.generate_splits(7, {"test": 50, "train": 50})
    b = M.generate_splits(7, {"test": 50, "train": 50})
    c = M.generate_splits(8, {"test": 50, "train": 50})
    assert [e.to_dict() for e in a["test"]] == [e.to_dict() for e in b["test"]]
    assert [e.prompt for e in a["test"]] != [e.prompt for e in c["test"]]


def test_splits_are_disjoint_and_eval_splits_do_not_depend_on_train_size():
    small = M.generate_splits(0, {"test": 200, "dev": 50, "train": 100})
    big = M.generate_splits(0, {"test": 200, "dev": 50, "train": 2000})
    assert [e.prompt for e in small["test"]] == [e.prompt for e in big["test"]]
    qs = {s: {e.prompt for e in exs} for s, exs in big.items()}
    assert not qs["test"] & qs["dev"] and not qs["test"] & qs["train"] and not qs["dev"] & qs["train"]
    assert len(qs["train"]) == 2000


def test_problems_are_gsm8k_format_with_2_to_4_correct_steps():
    for ex in M.generate_splits(1, {"test": 300})["test"]:
        lines = ex.reference.split("\n")
        assert lines[-1] == f"#### {ex.answer}"
        assert 2 <= len(ex.meta["steps"]) <= 4
        assert 2 <= len(lines) - 1 <= 4
        check = M.check_solution(ex.reference, ex.meta["steps"], ex.answer)
        assert check.correct and check.first_error is None, (ex.reference, check)
        for x, op, b, y in ex.meta["steps"]:
            assert M.safe_eval(f"{x}{op}{b}") == y and 0 < y <= 20


@pytest.mark.parametrize("expr,val", [("48/2", 24), ("7*8", 56), ("1.5+2", Fraction(7, 2)), ("-(3-5)*2", 4),
                                      ("1,000+5", 1005)])
def test_safe_eval(expr, val):
    assert M.safe_eval(expr) == val


@pytest.mark.parametrize("expr", ["__import__('os')", "2**100", "a+1", "1/0", "9" * 20, "x" * 300, ""])
def test_safe_eval_refuses(expr):
    with pytest.raises(M.ArithmeticError_):
        M.safe_eval(expr)


@pytest.mark.parametrize("text,strict,flexible", [
    ("so 3+4=<<3+4=7>>7\n#### 7", "7", "7"),
    ("#### 1,234.", "1234", "1234"),
    ("#### $5.0", "5", "5"),
    ("The answer is 12. Then 13", "12", "13"),
    ("no final line, last number 42", None, "42"),
    ("#### 3\n#### 4", "3", "4"),  # strict takes the first match, like lm-eval
])
def test_extract_answer(text, strict, flexible):
    assert M.extract_answer(text, "strict") == strict
    assert M.extract_answer(text, "flexible") == flexible


def test_normalize_number():
    assert M.normalize_number("$1,000.") == "1000" and M.normalize_number("5.0") == "5"
    assert M.normalize_number("2.50") == "2.5" and M.normalize_number("abc") == "abc"


def test_check_solution_names_the_first_wrong_step_with_the_true_value():
    ex = M.generate_splits(0, {"test": 5})["test"][1]
    draft, j = M.corrupt_solution(random.Random(0), ex)
    c = M.check_solution(draft, ex.meta["steps"], ex.answer)
    assert not c.correct and c.first_error == j and c.error_kind == "arithmetic"
    x, op, b, y = ex.meta["steps"][j - 1]
    assert c.critique.startswith(f"Step {j} computes {x}{op}{b}=") and c.critique.endswith(f"is {y}.")


def test_check_solution_error_kinds():
    steps = [[8, "-", 5, 3], [3, "*", 3, 9]]
    ok = "A 8-5=<<8-5=3>>3 x.\nB 3*3=<<3*3=9>>9 x.\n#### 9"
    assert M.check_solution(ok, steps, "9").correct
    wrong_step = "A 8-4=<<8-4=4>>4 x.\nB 4*3=<<4*3=12>>12 x.\n#### 12"
    c = M.check_solution(wrong_step, steps, "9")
    assert (c.first_error, c.error_kind) == (1, "wrong_step") and "should be 8-5=3" in c.critique
    assert M.check_solution("A 8-5=<<8-5=3>>3 x.\n#### 3", steps, "9").error_kind == "missing_step"
    assert M.check_solution(ok.replace("#### 9", ""), steps, "9").error_kind == "no_answer"
    assert M.check_solution(ok.replace("#### 9", "#### 10"), steps, "9").error_kind == "wrong_answer"
    assert M.check_solution("A <<8-x=3>>3\n#### 9", steps, "9").error_kind == "unparseable"


@pytest.mark.parametrize("text,strict,flexible", [
    ("#### .5", "0.5", "0.5"),  # a bare decimal is 0.5, not 5
    ("half of it is .5", None, "0.5"),
    ("so...5", None, "5"),  # an ellipsis before a number is not a decimal point
    ("version 1.2.3", None, "3"),
    ("#### -$5", "-5", "-5"),  # the sign before the dollar sign is kept
    ("short by -$5", None, "-5"),
    ("####\n42", None, "42"),  # the strict answer must be on the '####' line
    ("####\t42", "42", "42"),
    ("The answer is:\n7", None, "7"),
    ("I am not sure...", None, None),  # punctuation alone is never a number
])
def test_extract_answer_number_shapes(text, strict, flexible):
    assert M.extract_answer(text, "strict") == strict
    assert M.extract_answer(text, "flexible") == flexible


def test_normalize_number_is_exact():
    # Equal numbers compare equal; different numbers never do, however many digits they share.
    assert M.normalize_number("1234567.5") == "1234567.5" != M.normalize_number("1234567.9")
    assert M.normalize_number("5.0000001") == "5.0000001" != M.normalize_number("5")
    assert M.normalize_number("007") == "7" and M.normalize_number("-0.50") == "-0.5"
    assert M.normalize_number("3/4") == "0.75"
    assert not M.is_correct("#### 5.0000001", "5") and M.is_correct("#### 5.00", "5")
