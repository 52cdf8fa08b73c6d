"""GSM8K benchmark: our extractor against a re-implementation of lm-eval-harness's pipeline, prompts, stop
sequences, and end-to-end evaluation with the committed tiny M0 (tiny-world problems and a GSM8K-format file).

The lm-eval reference below is ``lm_eval/tasks/gsm8k/gsm8k.yaml`` (version 3.0) and ``gsm8k-cot.yaml``:
``RegexFilter`` (``findall``, pick ``group_select``, the non-empty group of a tuple, ``strip``, else
``"[invalid]"``) and ``exact_match`` with ``ignore_case`` and ``regexes_to_ignore``. Every case states what
we extract and what lm-eval extracts; they must agree unless the case names a difference from
``LM_EVAL_DIFFERENCES`` for that mode, and then they must really differ.
"""

import json
import math
import re
from pathlib import Path

import pytest

from rlrf_nb.evals import gsm8k as G
from rlrf_nb.tasks.math import extract_answer, is_correct
from rlrf_nb.tasks.schema import Example

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------
# lm-eval-harness, re-implemented from its task yaml and RegexFilter
# ---------------------------------------------------------------------------

LM_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")  # gsm8k strict-match, take_first
LM_STRICT_COT = re.compile(r"The answer is (\-?[0-9\.\,]+).")  # gsm8k-cot strict-match, take_first
LM_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")  # flexible-extract, group_select -1
LM_IGNORE = [",", "\\$", "(?s).*#### ", "\\.$"]  # exact_match regexes_to_ignore, in order
LM_INVALID = "[invalid]"


def lm_filter(text: str, mode: str) -> str:
    regex, group_select = {"strict": (LM_STRICT, 0), "cot": (LM_STRICT_COT, 0), "flexible": (LM_FLEXIBLE, -1)}[mode]
    matches = regex.findall(text)
    if not matches:
        return LM_INVALID
    m = matches[group_select]
    if isinstance(m, tuple):
        m = [g for g in m if g][0]
    return m.strip()


def lm_clean(s: str) -> str:
    """exact_match's preprocessing: regexes_to_ignore, then ignore_case (ignore_punctuation is false)."""
    for r in LM_IGNORE:
        s = re.sub(r, "", s)
    return s.lower()


def lm_pred(text: str, mode: str) -> str | None:
    """lm-eval's prediction as exact_match compares it; None where the filter found nothing."""
    raw = lm_filter(text, mode)
    return None if raw == LM_INVALID else lm_clean(raw)


def lm_correct(text: str, gold_target: str, mode: str) -> bool:
    return lm_clean(lm_filter(text, mode)) == lm_clean(gold_target)


# ---------------------------------------------------------------------------
# Hand-made model outputs: ours (strict, flexible), lm-eval (strict, flexible), named differences
# ---------------------------------------------------------------------------

NUM, ANS, HASH, DIGITLESS = "numeric_equality", "answer_is_fallback", "hash_format", "digitless_match"


def case(name, text, gold, ours, lm, diff=None):
    return pytest.param(text, gold, ours, lm, diff or {}, id=name)


CASES = [
    case("plain", "So she has 7 apples.\n#### 7", "7", ("7", "7"), ("7", "7")),
    case("comma_thousands", "Total: 1,000 + 234 = 1,234\n#### 1,234", "1234", ("1234", "1234"), ("1234", "1234")),
    case("comma_millions", "#### 1,234,567", "1234567", ("1234567", "1234567"), ("1234567", "1234567")),
    case("dollar_flexible", "Each costs $5.", "5", (None, "5"), (None, "5")),
    case("dollar_after_hash", "#### $5", "5", ("5", "5"), (None, "5"), {"strict": HASH}),
    case("trailing_period", "#### 42.", "42", ("42", "42"), ("42", "42")),
    case("negative", "It drops to -5 degrees.\n#### -5", "-5", ("-5", "-5"), ("-5", "-5")),
    case("negative_dollar", "He is short by -$5.", "-5", (None, "-5"), (None, "-5")),
    case("negative_dollar_hash", "#### -$5", "-5", ("-5", "-5"), (None, "-5"), {"strict": HASH}),
    case("negative_decimal", "#### -0.5", "-0.5", ("-0.5", "-0.5"), ("-0.5", "-0.5")),
    case("decimal_exact", "#### 2.25", "2.25", ("2.25", "2.25"), ("2.25", "2.25")),
    case("decimal_trailing_zero", "#### 3.50", "3.5", ("3.5", "3.5"), ("3.50", "3.50"),
         {"strict": NUM, "flexible": NUM}),
    case("decimal_five_point_zero", "#### 5.0", "5", ("5", "5"), ("5.0", "5.0"), {"strict": NUM, "flexible": NUM}),
    case("decimal_with_commas", "#### 1,234.50", "1234.5", ("1234.5", "1234.5"), ("1234.50", "1234.50"),
         {"strict": NUM, "flexible": NUM}),
    case("decimal_dollars_in_text", "They cost $3.50 each", "3.5", (None, "3.5"), (None, "3.50"), {"flexible": NUM}),
    case("leading_zero", "#### 007", "7", ("7", "7"), ("007", "007"), {"strict": NUM, "flexible": NUM}),
    case("bare_decimal", "Half of one is .5", "0.5", (None, "0.5"), (None, ".5"), {"flexible": NUM}),
    case("big_decimal_exact", "#### 1234567.5", "1234567.9", ("1234567.5", "1234567.5"), ("1234567.5", "1234567.5")),
    case("several_numbers", "3 + 4 = 7, then 7 * 2 = 14.\n#### 14", "14", ("14", "14"), ("14", "14")),
    case("strict_first_flexible_last", "#### 12\nWait, I made an error: 12 + 3 = 15.", "15", ("12", "15"),
         ("12", "15")),
    case("multiple_hash_lines", "#### 3\n#### 4", "4", ("3", "4"), ("3", "4")),
    case("hash_without_number_then_hash", "#### \n#### 8", "8", ("8", "8"), ("8", "8")),
    case("hash_word", "#### unknown", "3", (None, None), (None, None)),
    case("hash_only", "####", "3", (None, None), (None, None)),
    case("no_answer", "I am not sure how to solve this.", "3", (None, None), (None, None)),
    case("word_number", "The answer is five.", "5", (None, None), (None, None)),
    case("ellipsis_only", "Let me think...", "3", (None, None), (None, ".."), {"flexible": DIGITLESS}),
    case("ellipsis_after_number", "It might be 5...", "5", (None, "5"), (None, "5.."), {"flexible": DIGITLESS}),
    case("ellipsis_after_words", "So 5 apples...", "5", (None, "5"), (None, ".."), {"flexible": DIGITLESS}),
    case("hash_ellipsis", "#### ...", "3", (None, None), ("..", ".."), {"strict": DIGITLESS, "flexible": DIGITLESS}),
    case("latex_trailing_dollars", "So $x = 5$ and we are done $$", "5", (None, "5"), (None, ""),
         {"flexible": DIGITLESS}),
    case("answer_is", "Adding them gives 8. The answer is 8.", "8", ("8", "8"), (None, "8"), {"strict": ANS}),
    case("answer_is_colon", "The answer is: 9", "9", ("9", "9"), (None, "9"), {"strict": ANS}),
    case("final_answer_is_dollars", "the final answer is $12", "12", ("12", "12"), (None, "12"), {"strict": ANS}),
    case("answer_is_then_hash", "The answer is 3.\n#### 4", "4", ("4", "4"), ("4", "4")),
    case("answer_is_no_number", "The answer is unknown.", "3", (None, None), (None, None)),
    case("number_inside_word", "Use the code abc123def for a discount.", "123", (None, "123"), (None, "123")),
    case("number_inside_word_last", "The total is 42, see form W2", "42", (None, "2"), (None, "2")),
    case("text_after_answer", "#### 42\n\nQuestion: Tom has 7 cats. How many legs?", "42", ("42", "7"), ("42", "7")),
    case("percentage", "The discount is 25%.\n#### 25", "25", ("25", "25"), ("25", "25")),
    case("percentage_decimal", "It grew by 12.5%", "12.5", (None, "12.5"), (None, "12.5")),
    case("range_reads_negative", "It takes 3-4 hours.", "4", (None, "-4"), (None, "-4")),
    case("leading_plus", "The change is +5", "5", (None, "5"), (None, "5")),
    case("leading_plus_hash", "#### +5", "5", (None, "5"), (None, "5")),
    case("units", "#### 5 apples", "5", ("5", "5"), ("5", "5")),
    case("list_with_spaces", "The multiples are 2, 4, 6", "6", (None, "6"), (None, "6")),
    case("list_without_spaces", "Numbers: 2,4,6", "6", (None, "246"), (None, "246")),
    case("boxed", "\\boxed{5}", "5", (None, "5"), (None, "5")),
    case("boxed_inline_math", "$\\boxed{5}$", "5", (None, "5"), (None, "5")),
    case("display_math", "$$x = 5$$", "5", (None, "5"), (None, "5")),
    case("whitespace_tab", "####\t42", "42", ("42", "42"), (None, "42"), {"strict": HASH}),
    case("whitespace_none", "####42", "42", ("42", "42"), (None, "42"), {"strict": HASH}),
    case("whitespace_double", "####  42", "42", ("42", "42"), (None, "42"), {"strict": HASH}),
    case("whitespace_newline", "####\n42", "42", (None, "42"), (None, "42")),
    case("whitespace_around", "  #### 42  \n", "42", ("42", "42"), ("42", "42")),
    case("crlf_newlines", "7 + 1 = 8\r\n#### 8\r\n", "8", ("8", "8"), ("8", "8")),
    # issue 15, item 15: a retraction after "The answer is N" is not followed by strict (the first stated answer)
    case("retracted_answer", "The answer is 7. Wait, actually it's 9.", "9", ("7", "9"), (None, "9"),
         {"strict": ANS}),
    case("dollar_after_hash_18", "He pays $18 in all.\n#### $18", "18", ("18", "18"), (None, "18"), {"strict": HASH}),
    case("answer_is_42", "So the total is 42. The answer is 42.", "42", ("42", "42"), (None, "42"), {"strict": ANS}),
]


@pytest.mark.parametrize("text, gold, ours, lm, diff", CASES)
def test_extraction_against_lm_eval(text, gold, ours, lm, diff):
    assert set(diff) <= {"strict", "flexible"} and set(diff.values()) <= set(G.LM_EVAL_DIFFERENCES)
    target = f"The worked solution.\n#### {gold}"  # what lm-eval's gsm8k doc_to_target gives
    graded = G.grade_output(text, gold, target=target)
    for i, mode in enumerate(("strict", "flexible")):
        assert extract_answer(text, mode) == ours[i], mode
        assert lm_pred(text, mode) == lm[i], f"reference lm-eval, {mode}"
        # the kit's report of lm-eval's grade is the reference one, on the output cut at lm-eval's `until`
        cut = G.truncate_at_stop(text, G.LM_EVAL_UNTIL)[0]
        filtered = graded[f"lm_eval_{mode}_pred"]
        assert (None if filtered == G.LM_EVAL_INVALID else G.lm_eval_normalize(filtered)) == lm_pred(cut, mode)
        assert graded[f"lm_eval_{mode}_correct"] == lm_correct(cut, target, mode), mode
        if mode in diff:  # a listed difference must be real, or the list is lying
            assert ours[i] != lm[i], f"{mode}: {diff[mode]} listed but ours == lm-eval"
        else:
            assert ours[i] == lm[i], mode
            assert is_correct(text, gold, mode) == lm_correct(text, target, mode), mode


def test_every_listed_difference_is_exercised():
    used = {name for p in CASES for name in p.values[4].values()}
    assert used == set(G.LM_EVAL_DIFFERENCES)


@pytest.mark.parametrize("text, ours, cot", [
    ("Adding them gives 8. The answer is 8.", "8", "8"),
    ("The answer is 1,000.", "1000", "1000"),
    ("The answer is 12", "12", "1"),  # lm-eval's trailing '.' needs a character after the number
    ("the final answer is $12", "12", None),  # case, 'final' and '$' are ours only
    ("The answer is: 9", "9", None),
])
def test_strict_answer_is_fallback_against_gsm8k_cot(text, ours, cot):
    """answer_is_fallback: with no '####', our strict reads gsm8k-cot's form, more leniently."""
    assert lm_pred(text, "strict") is None
    assert extract_answer(text, "strict") == ours and lm_pred(text, "cot") == cot


def test_strict_takes_the_first_stated_answer_not_a_retraction():
    """Issue 15, item 15, decided: strict grades the first stated answer (lm-eval's strict-match takes the first
    '#### N' too); a last-answer-wins rule would reward hedging ("The answer is 7. The answer is 9."). Flexible
    reads the last number, and lm-eval's strict-match finds nothing without '####'."""
    text = "The answer is 7. Wait, actually it's 9."
    g = G.grade_output(text, "9", target="#### 9")
    assert (g["strict_pred"], g["strict_correct"], g["flexible_pred"], g["flexible_correct"]) == ("7", False, "9", True)
    assert (g["lm_eval_strict_pred"], g["lm_eval_strict_correct"]) == (G.LM_EVAL_INVALID, False)
    assert (g["lm_eval_flexible_pred"], g["lm_eval_flexible_correct"]) == ("9.", True)
    assert extract_answer("The answer is 7. The answer is 9.", "strict") == "7"  # no reward for hedging
    assert "retracted answer" in G.__doc__.lower()


def test_lm_eval_grade_is_stricter_than_the_kits_where_the_issue_found_it():
    """Issue 15, item 14: '#### $18', '####7' and 'The answer is 42.' have a kit strict answer but no lm-eval
    strict-match; '#### 3.50' against 3.5 is right for the kit and wrong for lm-eval."""
    for text, gold in (("#### $18", "18"), ("####7", "7"), ("The answer is 42.", "42")):
        g = G.grade_output(text, gold)
        assert g["strict_correct"] and g["lm_eval_strict_pred"] == G.LM_EVAL_INVALID and not g["lm_eval_strict_correct"]
    g = G.grade_output("#### 3.50", "3.5", target="Half of 7 is 3.5.\n#### 3.5")
    assert g["strict_correct"] and g["lm_eval_strict_pred"] == "3.50" and not g["lm_eval_strict_correct"]


def _lm_eval_gsm8k_task():
    """lm-eval's own gsm8k task config, filters and metric, from the installed package (the test skips without it)."""
    lm_eval = pytest.importorskip("lm_eval")
    import yaml
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.filters.extraction import RegexFilter
    from lm_eval.filters.selection import TakeFirstFilter

    cfg = yaml.safe_load((Path(lm_eval.__file__).parent / "tasks/gsm8k/gsm8k.yaml").read_text())
    metric = next(m for m in cfg["metric_list"] if m["metric"] == "exact_match")
    kwargs = {k: metric[k] for k in ("ignore_case", "ignore_punctuation", "regexes_to_ignore")}

    def grade(output: str, target: str) -> dict:
        for term in cfg["generation_kwargs"]["until"]:  # lm-eval's HF model cuts the continuation at each stop
            output = output.split(term)[0]
        out = {}
        for flt in cfg["filter_list"]:
            resps = [[output]]
            for step in flt["filter"]:
                args = {k: v for k, v in step.items() if k != "function"}
                f = {"regex": RegexFilter, "take_first": TakeFirstFilter}[step["function"]](**args)
                resps = list(f.apply(resps, [{}]))
            pred = resps[0]
            out[flt["name"]] = (pred, exact_match_hf_evaluate([pred], [target], **kwargs)["exact_match"] == 1.0)
        return out

    return cfg, grade


def test_lm_eval_constants_are_lm_evals_own():
    cfg, _ = _lm_eval_gsm8k_task()
    filters = {f["name"]: f["filter"] for f in cfg["filter_list"]}
    assert filters["strict-match"][0]["regex_pattern"] == G.LM_EVAL_STRICT_REGEX
    assert filters["flexible-extract"][0]["regex_pattern"] == G.LM_EVAL_FLEXIBLE_REGEX
    assert filters["flexible-extract"][0]["group_select"] == -1 and "group_select" not in filters["strict-match"][0]
    metric = next(m for m in cfg["metric_list"] if m["metric"] == "exact_match")
    assert tuple(metric["regexes_to_ignore"]) == G.LM_EVAL_IGNORE and metric["ignore_case"]
    assert not metric["ignore_punctuation"] and tuple(cfg["generation_kwargs"]["until"]) == G.LM_EVAL_UNTIL


@pytest.mark.parametrize("text, gold, ours, lm, diff", CASES + [
    case("stop_then_more", "#### 4\nQuestion: and 5?", "4", ("4", "4"), ("4", "4")),
    case("until_im_end", "3 + 3 = 6<|im_end|>#### 7", "6", (None, "6"), (None, "6")),
    case("triple_newline", "#### 4\n\n\n5", "4", ("4", "4"), ("4", "5")),
])
def test_lm_eval_grades_equal_lm_eval_itself(text, gold, ours, lm, diff):
    """Every case graded by lm-eval's own RegexFilter, TakeFirstFilter and exact_match_hf_evaluate with the
    settings of its installed gsm8k.yaml: the kit's lm_eval_* fields agree, prediction and verdict."""
    _, grade = _lm_eval_gsm8k_task()
    target = f"A worked solution, 1,000 steps.\n#### {gold}"
    theirs = grade(text, target)
    ours_ = G.grade_output(text, gold, target=target)
    assert (ours_["lm_eval_strict_pred"], ours_["lm_eval_strict_correct"]) == theirs["strict-match"]
    assert (ours_["lm_eval_flexible_pred"], ours_["lm_eval_flexible_correct"]) == theirs["flexible-extract"]


def test_numeric_equality_changes_the_verdict():
    """numeric_equality is the one difference that turns lm-eval's wrong into our right on a plain '#### N'."""
    assert is_correct("#### 5.0", "5") and not lm_correct("#### 5.0", "#### 5", "strict")
    assert is_correct("#### 3.50", "3.5", "flexible") and not lm_correct("#### 3.50", "#### 3.5", "flexible")


# ---------------------------------------------------------------------------
# Prompts and stop sequences
# ---------------------------------------------------------------------------

def _ex(i, q, sol, ans, split="train"):
    return Example(id=f"ex-{split}-{i}", task="math", split=split, prompt=q, reference=sol, answer=ans, tags=["math"])


SHOTS = [_ex(0, "Q zero?", "A zero.\n#### 0", "0"), _ex(1, "Q one?", "A one.\n#### 1", "1"),
         _ex(2, "Q two?", "A two.\n#### 2", "2")]


def test_few_shot_zero_shot_is_the_bare_question():
    for style, content in (("multiturn", "What is 2+2?"), ("single", "Question: What is 2+2?\nAnswer:")):
        assert G.few_shot_messages("What is 2+2?", SHOTS, k=0, style=style) == [{"role": "user", "content": content}]
    assert G.few_shot_messages("What is 2+2?", k=0) == [{"role": "user", "content": "What is 2+2?"}]


def test_few_shot_multiturn_k2():
    msgs = G.few_shot_messages("Q new?", SHOTS, k=2)
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant", "user"]
    assert [m["content"] for m in msgs] == ["Q zero?", "A zero.\n#### 0", "Q one?", "A one.\n#### 1", "Q new?"]


def test_few_shot_single_k2_is_lm_eval_text():
    msgs = G.few_shot_messages("Q new?", SHOTS, k=2, style="single")
    assert msgs == [{"role": "user", "content": "Question: Q zero?\nAnswer: A zero.\n#### 0\n\n"
                                                "Question: Q one?\nAnswer: A one.\n#### 1\n\n"
                                                "Question: Q new?\nAnswer:"}]


def test_few_shot_skips_the_question_itself_and_checks_arguments():
    msgs = G.few_shot_messages("Q zero?", SHOTS, k=2)
    assert [m["content"] for m in msgs if m["role"] == "user"] == ["Q one?", "Q two?", "Q zero?"]
    with pytest.raises(ValueError, match="k=3 shots requested but only 2"):
        G.few_shot_messages("Q zero?", SHOTS, k=3)
    with pytest.raises(ValueError, match="style must be one of"):
        G.few_shot_messages("Q?", SHOTS, k=1, style="chat")
    with pytest.raises(ValueError, match="non-negative"):
        G.few_shot_messages("Q?", SHOTS, k=-1)
    no_ref = Example(id="bad-7", task="math", split="train", prompt="Q?", answer="1")
    with pytest.raises(ValueError, match="exemplar 'bad-7': field 'reference'"):
        G.few_shot_messages("Other?", [no_ref], k=1)


@pytest.mark.parametrize("text, stop, cut, hit", [
    ("#### 42\n\nQuestion: Tom has 7 cats.", G.DEFAULT_STOP, "#### 42\n\n", "Question:"),
    ("#### 42</s>junk 7", G.DEFAULT_STOP, "#### 42", "</s>"),
    ("#### 42<|im_end|>7", G.DEFAULT_STOP, "#### 42", "<|im_end|>"),
    ("#### 42\n\n\nmore 7\n\n\n", G.DEFAULT_STOP, "#### 42", "\n\n\n"),
    ("#### 42\n\nnext", G.DEFAULT_STOP, "#### 42\n\nnext", None),  # two newlines are not a stop
    ("a Question: b </s> c", ["</s>", "Question:"], "a ", "Question:"),  # earliest in the text wins
    ("Question: at the start", G.DEFAULT_STOP, "", "Question:"),
    ("no stop here", (), "no stop here", None),
])
def test_truncate_at_stop(text, stop, cut, hit):
    assert G.truncate_at_stop(text, stop) == (cut, hit)


def test_truncation_changes_the_flexible_answer():
    g = G.grade_output("3+4=7\n#### 7\n\nQuestion: Ann has 9 pens.", "7")
    assert g["truncated"] and g["stop_hit"] == "Question:" and g["response"] == "3+4=7\n#### 7\n\n"
    assert (g["strict_pred"], g["flexible_pred"], g["strict_correct"], g["flexible_correct"]) == ("7", "7", True, True)
    assert extract_answer("3+4=7\n#### 7\n\nQuestion: Ann has 9 pens.", "flexible") == "9"


def test_truncate_rejects_bad_stop_lists():
    with pytest.raises(TypeError, match="single string"):
        G.truncate_at_stop("x", "Question:")
    with pytest.raises(ValueError, match="non-empty strings"):
        G.truncate_at_stop("x", ["Question:", ""])


# ---------------------------------------------------------------------------
# End to end with the committed tiny M0
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def m0():
    """M0 with torch on one thread: its 96-wide matmuls gain nothing from more, and on a busy machine idle
    OpenMP threads spinning against other processes made the first generate() take 10-50 s instead of 0.4 s."""
    import torch

    from rlrf_nb.models import load_policy, model_fingerprint

    path = ROOT / "data/tiny_world/m0"
    model, tok = load_policy(path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield model, tok, model_fingerprint(path)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world():
    from rlrf_nb.config import load_recipe
    from rlrf_nb.tiny_world import build_world

    return build_world(load_recipe(ROOT / "recipes/tiny-smoke.yaml").world)


def _check_rate(r, n):
    assert r["n"] == n and 0 <= r["k"] <= n
    assert 0.0 <= r["ci_low"] <= r["rate"] <= r["ci_high"] <= 1.0 and r["ci_low"] < r["ci_high"]


def test_evaluate_tiny_world_dev_is_stored_and_resumable(m0, world, tmp_path):
    from rlrf_nb.store import RunStore

    model, tok, fp = m0
    examples = world.math["dev"][:6]
    store = RunStore(tmp_path / "run")
    res = G.evaluate_gsm8k(model, tok, fp, examples, store, "M0", k=0, max_new_tokens=96, batch_size=4)
    path = tmp_path / "run/eval/M0/gsm8k.jsonl"
    lines = path.read_text().splitlines()
    assert res["n"] == 6 and len(res["records"]) == 6 and len(lines) == 6
    _check_rate(res["strict"], 6)
    _check_rate(res["flexible"], 6)
    assert res["lm_eval_strict"]["n"] == res["lm_eval_flexible"]["n"] == 6
    assert res["strict_flexible_gap"] == pytest.approx(res["flexible"]["rate"] - res["strict"]["rate"])
    for ex, rec, line in zip(examples, res["records"], lines):
        stored = json.loads(line)
        assert rec["id"] == stored["id"] == ex.id and rec["gold"] == ex.answer and rec["question"] == ex.prompt
        for field in ("key", "output", "response", "truncated", "strict_pred", "flexible_pred", "strict_correct",
                      "flexible_correct", "lm_eval_strict_pred", "lm_eval_strict_correct", "lm_eval_flexible_pred",
                      "lm_eval_flexible_correct"):
            assert field in stored and rec[field] == stored[field], field
        assert rec["strict_pred"] == extract_answer(rec["response"], "strict")
        assert rec["strict_correct"] == is_correct(rec["response"], ex.answer, "strict")
    # M0 solves tiny-world problems in the training format, so strict finds '#### N' in most outputs.
    assert sum(r["strict_pred"] is not None for r in res["records"]) >= 3

    size = path.stat().st_size
    again = G.evaluate_gsm8k(model, tok, fp, examples, RunStore(tmp_path / "run"), "M0", k=0, max_new_tokens=96,
                             batch_size=4)
    assert path.stat().st_size == size  # nothing recomputed
    assert [r["key"] for r in again["records"]] == [r["key"] for r in res["records"]]
    assert again["strict"] == res["strict"] and again["flexible"] == res["flexible"]


def test_evaluate_refuses_a_prompt_longer_than_the_context(m0, world, tmp_path):
    from rlrf_nb.store import RunStore

    model, tok, fp = m0
    shots = world.math["train"][:40]
    with pytest.raises(ValueError, match=r"example 'math-dev-00000': the prompt is \d+ tokens but the model's "
                                         r"context is 384"):
        G.evaluate_gsm8k(model, tok, fp, world.math["dev"][:1], RunStore(tmp_path / "run"), "M0", exemplars=shots,
                         k=40, max_new_tokens=8)


def test_evaluate_needs_gold_answers(m0, tmp_path):
    from rlrf_nb.store import RunStore

    model, tok, fp = m0
    bad = Example(id="gsm8k-test-00003", task="math", split="test", prompt="How many?")
    with pytest.raises(ValueError, match="example 'gsm8k-test-00003': field 'answer' is empty"):
        G.evaluate_gsm8k(model, tok, fp, [bad], RunStore(tmp_path / "run"), "M0")


def test_evaluate_real_gsm8k_format_file(m0, tmp_path):
    from rlrf_nb.store import RunStore
    from rlrf_nb.tasks.loaders import load_gsm8k

    rows = [
        {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in "
                     "May. How many clips did Natalia sell altogether in April and May?",
         "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
                   "altogether in April and May.\n#### 72"},
        {"question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
                     "How much did she earn?",
         "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = "
                   "$<<0.2*50=10>>10.\n#### 10"},
        {"question": "A box holds 1,250 pens. How many pens are in 4 boxes?",
         "answer": "4 boxes hold 1,250 * 4 = <<1250*4=5000>>5,000 pens.\n#### 5,000"},
    ]
    path = tmp_path / "gsm8k_tiny.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples = load_gsm8k(str(path), split="test")
    assert [e.answer for e in examples] == ["72", "10", "5000"]

    model, tok, fp = m0
    res = G.evaluate_gsm8k(model, tok, fp, examples, RunStore(tmp_path / "run"), "M0", k=0, max_new_tokens=24)
    assert res["n"] == 3 and [r["id"] for r in res["records"]] == ["gsm8k-test-00000", "gsm8k-test-00001",
                                                                   "gsm8k-test-00002"]
    assert [r["gold"] for r in res["records"]] == ["72", "10", "5000"]
    assert math.isclose(res["strict_flexible_gap"], res["flexible"]["rate"] - res["strict"]["rate"])
    # One shot from the same file, lm-eval's single-message style: the same records pipeline, a new key.
    res1 = G.evaluate_gsm8k(model, tok, fp, examples[1:2], RunStore(tmp_path / "run"), "M0", exemplars=examples,
                            k=1, style="single", max_new_tokens=8)
    assert res1["records"][0]["shots"] == ["gsm8k-test-00000"]
    assert res1["records"][0]["key"] != res["records"][1]["key"]
    assert len((tmp_path / "run/eval/M0/gsm8k.jsonl").read_text().splitlines()) == 4
