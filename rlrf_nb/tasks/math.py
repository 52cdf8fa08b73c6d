"""Tiny-world math: GSM8K-format word problems, a safe arithmetic parser, answer extraction and a step checker.

Solutions (2-4 steps) are chain of thought with GSM8K calculator annotations (``<<48/2=24>>``) ending in ``#### N``, so
one extraction grades the tiny world and real GSM8K, in training and evaluation alike. :func:`check_solution` finds the
first wrong step against the ground-truth chain and phrases it as a critique ("Step 2 computes 7*8=54; 7*8 is 56."); the
verifier and M0's refinement data use the same words.
"""

from __future__ import annotations

import ast
import random
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from rlrf_nb.tasks.schema import Example

# -------------------------------------------------- Safe arithmetic: model text is parsed with ``ast`` and never eval'd

MAX_ABS = 10**12  # bound on every literal and intermediate value
MAX_EXPR_CHARS = 200
# Longest number normalize_number() converts: text from a model or a data file is untrusted, and Fraction()
# of "1e999999999" would build a billion-digit integer. A longer "number" is compared as text.
MAX_NUMBER_CHARS = 64
_PLAIN_NUMBER = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:/[0-9]+)?")
_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
        ast.Div: lambda a, b: a / b}


class ArithmeticError_(ValueError):
    """An expression the safe parser refuses (syntax, operator, size, division by zero)."""


def safe_eval(expr: str) -> Fraction:
    """Evaluate ``+ - * /`` and parentheses over decimal numbers exactly, with bounded sizes; anything else (names,
    calls, ``**``, attributes) raises :class:`ArithmeticError_`.
    """
    expr = expr.replace(",", "").replace("$", "").strip()
    if not expr or len(expr) > MAX_EXPR_CHARS:
        raise ArithmeticError_(f"expression empty or longer than {MAX_EXPR_CHARS} chars")
    if not re.fullmatch(r"[0-9+\-*/(). ]+", expr):
        raise ArithmeticError_(f"expression has characters other than digits and + - * / ( ): {expr!r}")
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        raise ArithmeticError_(f"not an arithmetic expression: {expr!r}") from None

    def walk(node) -> Fraction:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            val = Fraction(str(node.value))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            val = walk(node.operand) * (-1 if isinstance(node.op, ast.USub) else 1)
        elif isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Div) and right == 0:
                raise ArithmeticError_(f"division by zero in {expr!r}")
            val = _OPS[type(node.op)](left, right)
        else:
            raise ArithmeticError_(f"unsupported syntax {type(node).__name__} in {expr!r}")
        if abs(val) > MAX_ABS:
            raise ArithmeticError_(f"value exceeds {MAX_ABS:.0e} in {expr!r}")
        return val

    return walk(tree)


def format_number(x: Fraction | int | float) -> str:
    """Render a number the way GSM8K writes it: integers plain, others as short decimals."""
    x = Fraction(x)
    if x.denominator == 1:
        return str(x.numerator)
    return f"{float(x):.6g}"


# ------------------------------------------- Answer extraction, shared by training-time grading and the GSM8K benchmark

# A number as solutions write it: an optional sign and dollar sign ("-$5"), digits with thousands commas and
# an optional decimal part, or a bare decimal (".5", not preceded by a digit or "." so "1.2.3" and "so...5"
# do not yield ".3" or ".5"). It always has a digit: a run of punctuation ("...", "$$") is never an answer.
_NUM = r"-?\$?(?:[0-9][0-9,]*(?:\.[0-9]+)?|(?<![0-9.])\.[0-9]+)"
# Spaces and tabs only, never a newline: the answer must be on the "####" line itself.
_STRICT = re.compile(rf"####[ \t]*\$?[ \t]*({_NUM})")
_ANSWER_IS = re.compile(rf"[Tt]he (?:final )?answer is:?[ \t]*\$?[ \t]*({_NUM})")
_NUMBER = re.compile(_NUM)


def normalize_number(s: str) -> str:
    """Normalise a numeric answer so equal numbers compare equal as strings (``,`` ``$`` and a trailing ``.`` dropped;
    5.0, 05 and 5 -> ``5``, 3.50 -> ``3.5``; exact: 5.0000001 never rounds to 5). Anything else, or longer than
    :data:`MAX_NUMBER_CHARS` (no ``1e9`` size bomb is expanded), comes back cleaned but otherwise unchanged, and matches
    only itself.
    """
    s = s.strip().replace(",", "").replace("$", "").rstrip(".").strip()
    if len(s) > MAX_NUMBER_CHARS or not _PLAIN_NUMBER.fullmatch(s):
        return s
    try:
        x = Fraction(s)
    except (ValueError, ZeroDivisionError):
        return s
    if x.denominator == 1:
        return str(x.numerator)
    try:
        return format(Decimal(s).normalize(), "f")  # a finite decimal, exactly
    except InvalidOperation:  # a fraction such as "3/4"
        return format_number(x)


def extract_answer(text: str, mode: str = "strict") -> str | None:
    """The normalised final answer, or None, by ``mode`` (any other is a ValueError): strict, the first ``#### N`` else
    the first "The answer is N"; flexible, the last number. Differences from lm-eval:
    :data:`rlrf_nb.evals.gsm8k.LM_EVAL_DIFFERENCES`.
    """
    if mode == "strict":
        m = _STRICT.search(text) or _ANSWER_IS.search(text)
        return normalize_number(m.group(1)) if m else None
    if mode == "flexible":
        nums = _NUMBER.findall(text)
        return normalize_number(nums[-1]) if nums else None
    raise ValueError(f"mode must be 'strict' or 'flexible', got {mode!r}")


def is_correct(text: str, gold: str, mode: str = "strict") -> bool:
    """Whether the answer extracted from ``text`` (``mode``) is the number ``gold``; no answer is wrong."""
    pred = extract_answer(text, mode)
    return pred is not None and pred == normalize_number(gold)


# -------------------------------------------------------------------------------------------------------- The generator

NAMES = ["Ava", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jin", "Kai", "Lia", "Max", "Nia",
         "Omar", "Pia", "Quin", "Rosa", "Sam", "Tess", "Uma", "Vic", "Wren", "Yara", "Zed"]
FRIENDS = ["a friend", "a neighbor", "a cousin", "a classmate", "a teacher"]
ITEMS = ["apples", "marbles", "stickers", "books", "coins", "pencils", "cookies", "shells", "cards", "stamps",
         "beads", "toys"]
_PRON = {n: ("she" if n in {"Ava", "Cara", "Fay", "Hana", "Lia", "Nia", "Pia", "Rosa", "Tess", "Uma", "Wren", "Yara"}
             else "he") for n in NAMES}

# Question sentences per operation; {b} is the operand. Each solution line restates its question
# sentence verbatim and then computes ("She gives 2 toys to a cousin, so Cara has 3-2=<<3-2=1>>1 toys."),
# as many GSM8K solutions do; the operand is then a plain copy from the same line.
_OP_TEXT = {
    "+": ["{P} buys {b} more {i}.", "{P} finds {b} more {i}."],
    "-": ["{P} gives {b} {i} to {f}.", "{P} loses {b} {i}."],
    "*": ["Then the number of {i} {p} has grows {b} times.", "{P} trades them so that {p} has {b} times as many {i}."],
    "/": ["{P} splits the {i} into {b} equal groups and keeps one group.", "{P} keeps only one of every {b} {i}."],
}


@dataclass(frozen=True)
class Step:
    """One solution step: ``x op b = y``."""

    x: int
    op: str
    b: int
    y: int

    @property
    def expr(self) -> str:
        return f"{self.x}{self.op}{self.b}"


def _sample_chain(rng: random.Random, n_steps: int, max_value: int, max_factor: int,
                  max_operand: int = 9) -> tuple[int, list[Step]]:
    while True:
        start = rng.randint(2, max_value // 2)
        x, steps = start, []
        for _ in range(n_steps):
            choices = ["+", "-"]
            if x * 2 <= max_value:
                choices.append("*")
            divisors = [k for k in range(2, max_factor + 1) if x % k == 0]
            if divisors:
                choices.append("/")
            op = rng.choice(choices)
            if op == "+":
                b = rng.randint(1, max(1, min(max_value - x, max_operand)))
                if x + b > max_value:
                    break
                y = x + b
            elif op == "-":
                if x < 3:
                    break
                b = rng.randint(1, min(x - 1, max_operand))
                y = x - b
            elif op == "*":
                b = rng.choice([k for k in range(2, max_factor + 1) if x * k <= max_value])
                y = x * b
            else:
                b = rng.choice(divisors)
                y = x // b
            steps.append(Step(x, op, b, y))
            x = y
        if len(steps) == n_steps:
            return start, steps


def _sample_wide_chain(rng: random.Random, n_steps: int, min_value: int, max_value: int, max_operand: int,
                       ops: str) -> tuple[int, list[Step]]:
    """World v2's chain: the start, every operand and every result in ``[min_value, max_value]`` (100-999: about 900
    possible answers, so a guess is right about once in 900); ``*`` multiplies by one digit 2-9."""
    while True:
        x = rng.randint(min_value, max_value)
        start, steps = x, []
        for _ in range(n_steps):
            choices = [op for op, ok in (("+", x + min_value <= max_value), ("-", x - min_value >= min_value),
                                         ("*", x * 2 <= max_value)) if op in ops and ok]
            if not choices:
                break
            op = rng.choice(choices)
            if op == "+":
                b = rng.randint(min_value, min(max_value - x, max_operand))
                y = x + b
            elif op == "-":
                b = rng.randint(min_value, min(x - min_value, max_operand))
                y = x - b
            else:
                b = rng.choice([k for k in range(2, 10) if x * k <= max_value])
                y = x * b
            steps.append(Step(x, op, b, y))
            x = y
        if len(steps) == n_steps:
            return start, steps


PLACES = ["ones", "tens", "hundreds", "thousands"]


def columns(x: int, op: str, b: int) -> str:
    """World v2's column scratchpad for ``x op b``, least significant digit first, one column per place of the
    longer number (at least 3): ``ones 7+5+0=2 carry 1, tens 4+8+1=3 carry 1, hundreds 3+2+1=6 carry 0``;
    subtraction borrows (``ones 2-5-0=7 borrow 1``); ``*`` by one digit carries (``ones 7*3+0=1 carry 2``). Every
    token is one small operation: copy a digit, look up a one-digit sum, copy a carry."""
    width = max(3, len(str(abs(x))), len(str(abs(b))) if op != "*" else 0)
    xd = [int(c) for c in str(abs(x)).zfill(width)][::-1]
    bd = [int(c) for c in str(abs(b)).zfill(width)][::-1]
    parts, carry = [], 0
    for k in range(width):
        place, cin = PLACES[min(k, len(PLACES) - 1)], carry
        if op == "*":
            v = xd[k] * b + cin
            d, carry = v % 10, v // 10
            parts.append(f"{place} {xd[k]}*{b}+{cin}={d} carry {carry}")
        elif op == "+":
            v = xd[k] + bd[k] + cin
            d, carry = v % 10, v // 10
            parts.append(f"{place} {xd[k]}+{bd[k]}+{cin}={d} carry {carry}")
        else:
            v = xd[k] - bd[k] - cin
            d, carry = v % 10, int(v < 0)
            parts.append(f"{place} {xd[k]}-{bd[k]}-{cin}={d} borrow {carry}")
    return ", ".join(parts)


def solution_line(sentence: str, name: str, item: str, x, op: str, b, y, scratchpad: bool) -> str:
    """One solution line: the question's sentence restated, then (world v2, ``scratchpad``) the column work, then
    the calculator annotation: ``She buys 3 more toys, so Cara has 5+3=<<5+3=8>>8 toys.`` (v1) or ``She buys 285 more
    apples. 347+285: ones 7+5+0=2 carry 1, ... So Ava has 347+285=<<347+285=632>>632 apples.`` (v2)."""
    e = f"{x}{op}{b}"
    if not scratchpad:
        return f"{sentence[:-1]}, so {name} has {e}=<<{e}={y}>>{y} {item}."
    return f"{sentence} {e}: {columns(int(x), op, int(b))}. So {name} has {e}=<<{e}={y}>>{y} {item}."


def make_problem(rng: random.Random, min_steps: int = 2, max_steps: int = 4, max_value: int = 20,
                 max_factor: int = 4, max_operand: int = 5, min_value: int = 0, ops: str = "+-*/",
                 scratchpad: bool = False) -> dict:
    """One problem: question, solution (with annotations and ``#### N``), answer and steps. ``min_value`` > 0 draws
    world v2's chains (:func:`_sample_wide_chain`, operations ``ops``); ``scratchpad`` adds the column work to
    every line (:func:`solution_line`)."""
    n_steps = rng.randint(min_steps, max_steps)
    if min_value:
        start, steps = _sample_wide_chain(rng, n_steps, min_value, max_value, max_operand, ops)
    else:
        start, steps = _sample_chain(rng, n_steps, max_value, max_factor, max_operand)
    name, item, friend = rng.choice(NAMES), rng.choice(ITEMS), rng.choice(FRIENDS)
    p = _PRON[name]
    fmt = dict(n=name, i=item, f=friend, p=p, P=p.capitalize())
    q_parts, s_lines = [f"{name} has {start} {item}."], []
    for st in steps:
        sentence = rng.choice(_OP_TEXT[st.op]).format(b=st.b, **fmt)
        q_parts.append(sentence)
        s_lines.append(solution_line(sentence, name, item, st.x, st.op, st.b, st.y, scratchpad))
    q_parts.append(f"How many {item} does {name} have now?")
    answer = str(steps[-1].y)
    solution = "\n".join(s_lines + [f"#### {answer}"])
    return {"question": " ".join(q_parts), "solution": solution, "answer": answer,
            "steps": [[s.x, s.op, s.b, s.y] for s in steps]}


def arithmetic_drill(rng: random.Random, n_lines: int, max_value: int = 20, max_factor: int = 4,
                     max_operand: int = 5, min_value: int = 0, ops: str = "+-*/", scratchpad: bool = False) -> str:
    """Pre-training text of bare equations (``48-19=29``), one per line, drawn from the same step
    distribution as the problems: the arithmetic practice a real LM gets from web text. With ``scratchpad`` (world
    v2) each line is a bare column scratchpad: ``347+285: ones 7+5+0=2 carry 1, ... 347+285=632``."""
    lines = []
    while min_value and len(lines) < n_lines:
        _, (st,) = _sample_wide_chain(rng, 1, min_value, max_value, max_operand, ops)
        lines.append(f"{st.expr}: {columns(st.x, st.op, st.b)}. {st.expr}={st.y}" if scratchpad
                     else f"{st.expr}={st.y}")
    while len(lines) < n_lines:
        _, steps = _sample_chain(rng, 4, max_value, max_factor, max_operand)
        lines += [f"{s.expr}={s.y}" for s in steps]
    return "\n".join(lines[:n_lines])


def generate_splits(seed: int, sizes: dict[str, int], **kw) -> dict[str, list[Example]]:
    """Disjoint splits, deterministic from ``seed``: one seeded stream de-duplicated by question text, filled in the
    order of ``sizes`` (evaluation splits first, so a training size never changes them).
    """
    rng = random.Random(f"math:{seed}")
    seen: set[str] = set()
    out: dict[str, list[Example]] = {}
    for split, n in sizes.items():
        rows = []
        while len(rows) < n:
            p = make_problem(rng, **kw)
            if p["question"] in seen:
                continue
            seen.add(p["question"])
            rows.append(Example(id=f"math-{split}-{len(rows):05d}", task="math", split=split, prompt=p["question"],
                                reference=p["solution"], answer=p["answer"], tags=["math"],
                                meta={"steps": p["steps"]}))
        out[split] = rows
    return out


# ------------------------------------------------------ Checking a solution step by step against the ground-truth chain

ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>]*)>>")  # a calculator annotation <<expr=value>>


@dataclass(frozen=True)
class MathCheck:
    """What is wrong with a solution: ``correct`` (strict final answer equals gold), ``n_steps`` annotated,
    ``first_error`` (1-based, None if all right) and a one-sentence ``critique`` naming it.
    """

    correct: bool
    n_steps: int
    first_error: int | None
    # arithmetic | wrong_step | missing_step | extra_step | no_answer | wrong_answer | unparseable
    error_kind: str | None
    critique: str

    @property
    def perfect(self) -> bool:
        """Every step right and the final answer right: the measure a guessed answer cannot pass."""
        return self.correct and self.first_error is None

    @property
    def first_wrong_line(self) -> int:
        """0 when :attr:`perfect`; else the 1-based line of the first mistake: its first wrong step, or the answer
        line after its ``n_steps`` steps when every step is right and the answer is not (step-level pairs)."""
        if self.perfect:
            return 0
        return self.first_error if self.first_error is not None else self.n_steps + 1


def step_prefix(text: str, k: int) -> str | None:
    """``text`` through the end of the line that holds its ``k``-th calculator annotation (with the newline), ``""``
    for ``k`` = 0, None when it has fewer than ``k`` annotated lines: the right prefix a step-level pair shares."""
    if k == 0:
        return ""
    found = list(ANNOTATION.finditer(text))
    if len(found) < k:
        return None
    end = text.find("\n", found[k - 1].end())
    return text if end < 0 else text[: end + 1]


def step_sentences(problem: Example) -> list[str]:
    """The problem's sentence behind each step, as its reference solution restates it."""
    out = []
    for (x, op, b, _), line in zip(problem.meta["steps"], problem.reference.split("\n")):
        v2 = f" {x}{op}{b}: "
        out.append(line[: line.index(v2)] if v2 in line else line[: line.rindex(", so ")] + ".")
    return out


def check_example(text: str, problem: Example) -> MathCheck:
    """:func:`check_solution` against a problem's ground truth, quoting its sentences when its world does
    (``world.critique_quotes`` puts them in ``meta["quotes"]``)."""
    return check_solution(text, problem.meta["steps"], problem.answer, problem.meta.get("quotes"))


def check_solution(text: str, steps: list[list], gold: str, quotes: list[str] | None = None) -> MathCheck:
    """Check every calculator annotation and the final answer of ``text`` against ``steps``. With ``quotes`` (the
    problem's sentence per step) the critique of a wrong or missing step quotes the sentence it should follow."""
    found = ANNOTATION.findall(text)
    pred = extract_answer(text, "strict")
    correct = pred is not None and pred == normalize_number(gold)
    for i, (expr, claimed) in enumerate(found, start=1):
        try:
            true_val = safe_eval(expr)
            claimed_val = safe_eval(claimed)
        except ArithmeticError_:
            return MathCheck(correct, len(found), i, "unparseable",
                             f"Step {i} has a calculation that cannot be read: <<{expr}={claimed}>>.")
        if claimed_val != true_val:
            return MathCheck(correct, len(found), i, "arithmetic",
                             f"Step {i} computes {expr}={claimed}; {expr} is {format_number(true_val)}.")
        if i <= len(steps):
            x, op, b, y = steps[i - 1]
            ref = f"{x}{op}{b}"
            if true_val != y or expr.replace(" ", "") != ref:
                said = f"the problem says '{quotes[i - 1]}', so " if quotes else ""
                return MathCheck(correct, len(found), i, "wrong_step",
                                 f"Step {i} computes {expr}={claimed}, but {said}this step should be {ref}={y}.")
        else:
            return MathCheck(correct, len(found), i, "extra_step",
                             f"Step {i} computes {expr}={claimed}, but the problem needs only {len(steps)} steps.")
    if len(found) < len(steps):
        i = len(found) + 1
        x, op, b, y = steps[i - 1]
        said = f"the problem says '{quotes[i - 1]}', so " if quotes else ""
        return MathCheck(correct, len(found), i, "missing_step",
                         f"Step {i} is missing: {said}the solution should next compute {x}{op}{b}={y}.")
    if pred is None:
        return MathCheck(False, len(found), None, "no_answer",
                         "The solution does not end with a final answer line '#### N'.")
    if not correct:
        return MathCheck(False, len(found), None, "wrong_answer",
                         f"The final answer {pred} does not match the result of the last step, {steps[-1][3]}.")
    return MathCheck(True, len(found), None, None, "Every step is correct and the final answer is right.")


def rewrite_from_step(problem: Example, j: int, *, operand: int | None = None, result=None) -> str:
    """The reference solution with step ``j`` (0-based) changed, its operand or its result, and every later
    step recomputed from the changed value: a draft whose first wrong step is ``j + 1``."""
    steps, lines = problem.meta["steps"], problem.reference.split("\n")
    out, cur = lines[:j], None
    for i in range(j, len(steps)):
        x, op, b, _ = steps[i]
        new_x = x if i == j else cur
        new_b = operand if i == j and operand is not None else b
        val = format_number(result if i == j and result is not None else safe_eval(f"{new_x}{op}{new_b}"))
        item = lines[i].rsplit(" ", 1)[1][:-1]
        if f" {x}{op}{b}: " in lines[i]:  # world v2: the sentence, the column work, "So <name> has"
            sentence = lines[i][: lines[i].index(f" {x}{op}{b}: ")]
            name = re.search(r" So (\S+) has ", lines[i]).group(1)
            out.append(solution_line(sentence, name, item, new_x, op, new_b, val, True))
        else:
            prefix = lines[i][: lines[i].rindex(f" {x}{op}{b}=<<")]
            out.append(f"{prefix} {new_x}{op}{new_b}=<<{new_x}{op}{new_b}={val}>>{val} {item}.")
        cur = val
    out.append(f"#### {cur}")
    return "\n".join(out)


def corrupt_solution(rng: random.Random, problem: Example) -> tuple[str, int]:
    """A flawed draft (one step wrong, later steps carrying the error on) and the 1-based index of the wrong step, for
    M0's refinement data and for refinement success on injected errors.
    """
    steps = problem.meta["steps"]
    j = rng.randrange(len(steps))
    y = steps[j][3]
    delta = rng.choice([d for d in (-10, -2, -1, 1, 2, 10) if y + d > 0])
    return rewrite_from_step(problem, j, result=y + delta), j + 1
