#!/usr/bin/env python
"""Issue 16 feasibility pilot: can a tiny Llama trained from scratch on one CPU thread learn world v2's
three-digit arithmetic?

The design (two changes against the failed pilots in docs/tiny_world.md):

1. **A column scratchpad inside every step.** Each solution line works the sum column by column, least
   significant digit first, before it writes the kit's calculator annotation::

       She buys 285 more apples. 347+285: ones 7+5+0=2 carry 1, tens 4+8+1=3 carry 1, hundreds 3+2+1=6 carry 0.
       So Ava has 347+285=<<347+285=632>>632 apples.        (one line in the solution)

   Subtraction borrows (``ones 2-5-0=7 borrow 1``); the optional one-digit multiplication carries
   (``ones 7*3+0=1 carry 2``). Every token is then one small operation: copy a digit, look up a one-digit sum,
   copy a carry. The columns have a fixed width, so every number the model needs sits at a fixed place.
2. **Place-value digit tokens.** A digit is one token *tagged with its place in its number* (the 3 of 347 is
   ``3@2``, hundreds; the 7 is ``7@0``, ones), in the spirit of Abacus embeddings (McLeish et al., 2024). "The
   ones digit of the first operand" is then found by content, not by counting positions, and the MSB-first answer
   is assembled by asking for the column whose label matches the tag being written. Decoding drops the tags, so
   the text is exactly the kit's format and the kit's verifier (:func:`rlrf_nb.tasks.math.check_solution`)
   grades it unchanged.

Problems: 2-4 steps of + and - (``--ops +-*`` adds x by one digit 2-9) on three-digit quantities; the start, every
operand, every intermediate and the answer are in 100-999. The wording reuses world v1's names, items and
sentences (:mod:`rlrf_nb.tasks.math`). Training draws fresh problems all the time (the space is far larger than
what is seen), never one whose question is in the held-out set; a share of the sequences are bare scratchpad
drills (the arithmetic only).

After training for a fixed wall budget, on ``--n-eval`` held-out problems it measures greedy final-answer and
every-step-right accuracy, sampled pass@1 and pass@16 at T = 1.0 and 0.7 (final answer and every step right), and
the chance control: each problem's samples scored against a deranged problem's gold answer. Every rate has a 95%
Wilson interval; the headroom (perfect pass@k - greedy perfect) has a paired bootstrap interval over problems.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/pilot_world_v2.py --minutes 30 --out benchmarks/pilot_world_v2.json
    OMP_NUM_THREADS=1 .venv/bin/python scripts/pilot_world_v2.py --minutes 0.2 --n-eval 8 --k 4   # smoke

The committed run (benchmarks/pilot_world_v2.json and .log, 30 min training + 12.8 min evaluation on one thread) and
what it showed are in docs/tiny_world.md, "World v2: what was tried".
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from rlrf_nb.stats import rate  # noqa: E402
from rlrf_nb.tasks.math import _OP_TEXT, _PRON, FRIENDS, ITEMS, NAMES, check_solution, columns, extract_answer  # noqa: E402

LO, HI = 100, 999

# ---------------------------------------------------------------------------------------------- the world


def sample_chain(rng: random.Random, n_steps: int, ops: str) -> tuple[int, list[list]]:
    """A start value and ``n_steps`` steps ``[x, op, b, y]``, every value (start, operands, results) in 100-999;
    ``*`` multiplies by one digit 2-9."""
    while True:
        x = rng.randint(LO, HI)
        start, steps = x, []
        for _ in range(n_steps):
            choices = []
            if "+" in ops and x + LO <= HI:
                choices.append("+")
            if "-" in ops and x - LO >= LO:
                choices.append("-")
            if "*" in ops and x * 2 <= HI:
                choices.append("*")
            if not choices:
                break
            op = rng.choice(choices)
            if op == "+":
                b = rng.randint(LO, HI - x)
                y = x + b
            elif op == "-":
                b = rng.randint(LO, x - LO)
                y = x - b
            else:
                b = rng.choice([k for k in range(2, 10) if x * k <= HI])
                y = x * b
            steps.append([x, op, b, y])
            x = y
        if len(steps) == n_steps:
            return start, steps


def scratch(x: int, op: str, b: int) -> str:
    return f"{x}{op}{b}: {columns(x, op, b)}."


_OP_TEXT_V2 = {"+": _OP_TEXT["+"], "-": _OP_TEXT["-"], "*": _OP_TEXT["*"]}


def make_problem(rng: random.Random, ops: str, min_steps: int = 2, max_steps: int = 4) -> dict:
    """Question, solution (scratchpad + annotation per line, ``#### N``), answer and steps, worded like world v1."""
    n_steps = rng.randint(min_steps, max_steps)
    start, steps = sample_chain(rng, n_steps, ops)
    name, item, friend = rng.choice(NAMES), rng.choice(ITEMS), rng.choice(FRIENDS)
    p = _PRON[name]
    fmt = dict(n=name, i=item, f=friend, p=p, P=p.capitalize())
    q, lines = [f"{name} has {start} {item}."], []
    for x, op, b, y in steps:
        sentence = rng.choice(_OP_TEXT_V2[op]).format(b=b, **fmt)
        q.append(sentence)
        e = f"{x}{op}{b}"
        lines.append(f"{sentence} {scratch(x, op, b)} So {name} has {e}=<<{e}={y}>>{y} {item}.")
    q.append(f"How many {item} does {name} have now?")
    answer = str(steps[-1][3])
    return {"question": " ".join(q), "solution": "\n".join(lines + [f"#### {answer}"]), "answer": answer,
            "steps": steps}


def drill(rng: random.Random, ops: str, n_lines: int) -> str:
    """Bare scratchpads, one per line: ``347+285: ones ... carry 0. 347+285=632``."""
    out = []
    for _ in range(n_lines):
        _, steps = sample_chain(rng, 1, ops)
        x, op, b, y = steps[0]
        out.append(f"{scratch(x, op, b)} {x}{op}{b}={y}")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- the tokenizer

_PIECE = re.compile(r" ?[A-Za-z]+|[0-9]+|<<|>>|####|\n| |[^\sA-Za-z0-9]")
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]


class PlaceTokenizer:
    """Words (with their leading space) and punctuation are one token each; a digit is one token tagged with
    its place in its number (``3@2`` = a 3 in the hundreds place; places above 3 share tag 3). Decoding drops
    the tags, so ``decode(encode(s)) == s`` for any text the vocabulary covers."""

    def __init__(self, texts):
        vocab = set()
        for t in texts:
            vocab.update(self.pieces(t))
        vocab.update(f"{d}@{p}" for d in range(10) for p in range(4))
        self.itos = SPECIALS + sorted(vocab)
        self.stoi = {s: i for i, s in enumerate(self.itos)}
        self.pad, self.bos, self.eos, self.unk = range(4)

    @staticmethod
    def pieces(text: str) -> list[str]:
        out = []
        for m in _PIECE.finditer(text):
            s = m.group(0)
            if s.isdigit():
                n = len(s)
                out += [f"{c}@{min(n - 1 - i, 3)}" for i, c in enumerate(s)]
            else:
                out.append(s)
        return out

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(p, self.unk) for p in self.pieces(text)]

    def decode(self, ids) -> str:
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos:
                break
            if i < len(SPECIALS):
                continue
            s = self.itos[i]
            out.append(s[0] if "@" in s and s[0].isdigit() else s)
        return "".join(out)

    def __len__(self):
        return len(self.itos)


def prompt_ids(tok, question: str) -> list[int]:
    return [tok.bos] + tok.encode(question + "\n")


def math_item(tok, p: dict) -> tuple[list[int], list[int]]:
    """Ids and labels: loss on the solution and the end token only."""
    pr = prompt_ids(tok, p["question"])
    sol = tok.encode(p["solution"]) + [tok.eos]
    return pr + sol, [-100] * len(pr) + sol


def drill_item(tok, text: str) -> tuple[list[int], list[int]]:
    ids = [tok.bos] + tok.encode(text) + [tok.eos]
    return ids, [-100] + ids[1:]


# ---------------------------------------------------------------------------------------------- training


class Stream:
    """Fresh training sequences (math problems, a share of drills), never a held-out question."""

    def __init__(self, tok, seed: int, ops: str, held_out: set[str], drill_share: float, drill_lines: int):
        self.rng = random.Random(f"train:{seed}")
        self.tok, self.ops, self.held, self.share, self.lines = tok, ops, held_out, drill_share, drill_lines
        self.n_math = self.n_drill = self.n_skipped = 0

    def next(self):
        if self.rng.random() < self.share:
            self.n_drill += 1
            return drill_item(self.tok, drill(self.rng, self.ops, self.lines))
        while True:
            p = make_problem(self.rng, self.ops)
            if p["question"] not in self.held:
                self.n_math += 1
                return math_item(self.tok, p)
            self.n_skipped += 1

    def batch(self, tokens: int, pool: int = 64):
        """About ``tokens`` tokens per batch from a pool sorted by length (little padding)."""
        items = sorted((self.next() for _ in range(pool)), key=lambda it: len(it[0]))
        # take a contiguous run of similar lengths from a random place in the pool
        start = self.rng.randrange(len(items))
        run, width = [], 0
        for it in items[start:] + items[:start][::-1]:
            width = max(width, len(it[0]))
            if run and width * (len(run) + 1) > tokens:
                break
            run.append(it)
        width = max(len(it[0]) for it in run)
        ids = torch.full((len(run), width), self.tok.pad, dtype=torch.long)
        lab = torch.full((len(run), width), -100, dtype=torch.long)
        att = torch.zeros((len(run), width), dtype=torch.long)
        for r, (i, lb) in enumerate(run):
            ids[r, : len(i)] = torch.tensor(i)
            lab[r, : len(lb)] = torch.tensor(lb)
            att[r, : len(i)] = 1
        return ids, lab, att


def lr_at(frac: float, peak: float, warmup: float = 0.03, floor: float = 0.1) -> float:
    """Linear warm-up then cosine decay to ``floor * peak``, over the fraction of the wall budget spent."""
    if frac < warmup:
        return peak * frac / warmup
    f = min(1.0, (frac - warmup) / (1 - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * f)))


def train(model, stream, args) -> dict:
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    model.train()
    budget = args.minutes * 60
    t0 = time.time()
    step, tokens, curve, window = 0, 0, [], []
    next_log = 0.0
    while True:
        el = time.time() - t0
        if el >= budget:
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(el / budget, args.lr)
        ids, lab, att = stream.batch(args.batch_tokens)
        out = model(input_ids=ids, attention_mask=att, labels=lab)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens += int(att.sum())
        window.append(float(out.loss.detach()))
        if el >= next_log or time.time() - t0 >= budget:
            row = {"step": step, "minutes": round(el / 60, 2), "tokens": tokens,
                   "loss": round(sum(window) / len(window), 4), "lr": round(opt.param_groups[0]["lr"], 6)}
            curve.append(row)
            print(f"  train {row}", flush=True)
            window = []
            next_log = el + max(5.0, budget / 40)
    if window:
        curve.append({"step": step, "minutes": round((time.time() - t0) / 60, 2), "tokens": tokens,
                      "loss": round(sum(window) / len(window), 4), "lr": round(opt.param_groups[0]["lr"], 6)})
    return {"seconds": time.time() - t0, "steps": step, "tokens": tokens, "curve": curve,
            "sequences": {"math": stream.n_math, "drill": stream.n_drill,
                          "skipped_held_out": stream.n_skipped}}


# ---------------------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def generate(model, tok, questions: list[str], n: int, temperature: float | None, max_new: int,
             batch: int, seed: int) -> list[list[str]]:
    """``n`` completions per question (greedy when ``temperature`` is None), left-padded batches."""
    model.eval()
    # rows sorted by prompt length: a batch then holds problems with the same number of steps and stops early
    order = sorted(range(len(questions)), key=lambda i: len(prompt_ids(tok, questions[i])))
    rows = [(qi, questions[qi]) for qi in order for _ in range(n)]
    out: list[list[str]] = [[] for _ in questions]
    torch.manual_seed(seed)
    for s in range(0, len(rows), batch):
        chunk = rows[s: s + batch]
        enc = [prompt_ids(tok, q) for _, q in chunk]
        w = max(map(len, enc))
        ids = torch.full((len(enc), w), tok.pad, dtype=torch.long)
        att = torch.zeros((len(enc), w), dtype=torch.long)
        for r, e in enumerate(enc):
            ids[r, w - len(e):] = torch.tensor(e)
            att[r, w - len(e):] = 1
        kw = dict(do_sample=False) if temperature is None else dict(do_sample=True, temperature=temperature,
                                                                     top_k=0, top_p=1.0)
        gen = model.generate(input_ids=ids, attention_mask=att, max_new_tokens=max_new, pad_token_id=tok.pad,
                             eos_token_id=tok.eos, **kw)
        for (qi, _), g in zip(chunk, gen[:, w:]):
            out[qi].append(tok.decode(g.tolist()))
    return out


def grade(text: str, p: dict) -> tuple[bool, bool]:
    c = check_solution(text, p["steps"], p["answer"])
    return c.correct, c.perfect


def derangement(n: int, rng: random.Random) -> list[int]:
    while True:
        perm = list(range(n))
        rng.shuffle(perm)
        if all(i != j for i, j in enumerate(perm)):
            return perm


def paired_diff_ci(a: list[int], b: list[int], n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of a - b over problems, with a percentile bootstrap 95% interval (resampling problems)."""
    rng = random.Random(seed)
    n = len(a)
    d = [x - y for x, y in zip(a, b)]
    boots = sorted(sum(d[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    return sum(d) / n, boots[int(0.025 * n_boot)], boots[int(0.975 * n_boot) - 1]


def token_classes(tok, ids: list[int]) -> list[str]:
    """What each solution token is: a column's result digit, a carry/borrow digit, a column operand (an operand's
    digit or the carry in, fetched into the column: the least-significant-first reversal), a step result inside
    the annotation, the result copied after it, any other digit (copied from the question or the previous line),
    or a word/symbol."""
    out, prev, in_ann, in_scratch = [], None, False, False
    for i in ids:
        s = tok.itos[i]
        digit = "@" in s and s[0].isdigit()
        if not digit:
            cls = "other"
            if s == "<<":
                in_ann = True
            elif s == ">>":
                in_ann = False
            elif s == ":":
                in_scratch = True
            elif s == ".":
                in_scratch = False
            if s != " ":
                prev = s
        elif prev in (" carry", " borrow"):
            cls = "carry digit"
        elif prev == "=" and in_scratch:
            cls = "column digit"
        elif in_scratch and prev in (" ones", " tens", " hundreds", "+", "-", "*"):
            cls = "column operand"
        elif prev == "=" and in_ann:
            cls = "annotation result"
        elif prev == ">>":
            cls = "result copy"
        else:
            cls = "copied digit"
        out.append(cls)
    return out


@torch.no_grad()
def teacher_forced(model, tok, probs: list[dict]) -> dict:
    """Next-token accuracy on the gold solutions, by token class (which sub-skills are learnt)."""
    model.eval()
    hits, tot = {}, {}
    for p in probs:
        ids, lab = math_item(tok, p)
        logits = model(input_ids=torch.tensor([ids])).logits[0]
        pred = logits[:-1].argmax(-1).tolist()
        n_prompt = sum(1 for x in lab if x == -100)
        sol = ids[n_prompt:]
        classes = token_classes(tok, sol)
        for j, c in enumerate(classes):
            pos = n_prompt + j - 1
            tot[c] = tot.get(c, 0) + 1
            hits[c] = hits.get(c, 0) + int(pred[pos] == sol[j])
    return {c: rate(hits[c], tot[c]) for c in sorted(tot)}


def evaluate(model, tok, probs: list[dict], args) -> dict:
    qs = [p["question"] for p in probs]
    max_new = args.max_new
    res, times = {}, {}
    t = time.time()
    greedy = [g[0] for g in generate(model, tok, qs, 1, None, max_new, args.gen_batch, args.seed)]
    times["greedy"] = time.time() - t
    gg = [grade(g, p) for g, p in zip(greedy, probs)]
    n = len(probs)
    kinds = {}
    for g, p in zip(greedy, probs):
        kind = check_solution(g, p["steps"], p["answer"]).error_kind or "perfect"
        kinds[kind] = kinds.get(kind, 0) + 1
    res["greedy_error_kinds"] = kinds
    t = time.time()
    res["teacher_forced"] = teacher_forced(model, tok, probs)
    times["teacher_forced"] = time.time() - t
    res["greedy_final"] = rate(sum(c for c, _ in gg), n)
    res["greedy_perfect"] = rate(sum(pf for _, pf in gg), n)
    res["greedy_by_steps"] = {}
    for s in (2, 3, 4):
        idx = [i for i, p in enumerate(probs) if len(p["steps"]) == s]
        res["greedy_by_steps"][s] = {"final": rate(sum(gg[i][0] for i in idx), len(idx)),
                                     "perfect": rate(sum(gg[i][1] for i in idx), len(idx))}
    perm = derangement(n, random.Random(f"derange:{args.seed}"))
    examples = {"greedy": greedy[:3]}
    for T in args.temperatures:
        t = time.time()
        samples = generate(model, tok, qs, args.k, T, max_new, args.gen_batch, args.seed + int(100 * T))
        times[f"sample_T{T}"] = time.time() - t
        sg = [[grade(s, p) for s in ss] for ss, p in zip(samples, probs)]
        k = args.k
        fin_any = [int(any(c for c, _ in row)) for row in sg]
        per_any = [int(any(pf for _, pf in row)) for row in sg]
        chance = [int(any(extract_answer(s, "strict") == probs[perm[i]]["answer"] for s in samples[i]))
                  for i in range(n)]
        chance_p1 = sum(extract_answer(s, "strict") == probs[perm[i]]["answer"]
                        for i in range(n) for s in samples[i])
        head = paired_diff_ci(per_any, [pf for _, pf in gg], seed=args.seed)
        res[f"T{T}"] = {
            "pass1_final": rate(sum(c for row in sg for c, _ in row), n * k),
            "pass1_perfect": rate(sum(pf for row in sg for _, pf in row), n * k),
            f"pass{k}_final": rate(sum(fin_any), n),
            f"pass{k}_perfect": rate(sum(per_any), n),
            f"chance_pass{k}": rate(sum(chance), n),
            "chance_pass1": rate(chance_p1, n * k),
            "headroom_points": {"diff": 100 * head[0], "ci_low": 100 * head[1], "ci_high": 100 * head[2],
                                "what": f"pass@{k} every step right minus greedy every step right, "
                                        "paired bootstrap over problems"},
            f"pass{k}_perfect_by_steps": {s: rate(sum(per_any[i] for i, p in enumerate(probs)
                                                      if len(p["steps"]) == s),
                                               sum(len(p["steps"]) == s for p in probs)) for s in (2, 3, 4)},
        }
        examples[f"T{T}"] = samples[0][:2]
    res["eval_seconds"] = times
    res["examples"] = examples
    return res


# ---------------------------------------------------------------------------------------------- main


def fmt(r: dict) -> str:
    return f"{100 * r['rate']:5.1f}% [{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}] ({r['k']}/{r['n']})"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="training wall budget")
    ap.add_argument("--ops", default="+-", help="operations: any of + - * (x by one digit)")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=512)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch-tokens", type=int, default=4096)
    ap.add_argument("--drill-share", type=float, default=0.3, help="share of training sequences that are drills")
    ap.add_argument("--drill-lines", type=int, default=4)
    ap.add_argument("--n-eval", type=int, default=200)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.7])
    ap.add_argument("--gen-batch", type=int, default=128)
    ap.add_argument("--max-new", type=int, default=0, help="0: 1.1 x the longest held-out solution")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/pilot_world_v2.json")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    t_start = time.time()

    # Held-out problems first, from their own seeded stream.
    erng = random.Random(f"heldout:{args.seed}")
    held, seen = [], set()
    while len(held) < args.n_eval:
        p = make_problem(erng, args.ops)
        if p["question"] not in seen:
            seen.add(p["question"])
            held.append(p)
    # Vocabulary from a sample of everything the world can write (every word, punctuation, place-tagged digit).
    vrng = random.Random(f"vocab:{args.seed}")
    vtexts = []
    for _ in range(2000):
        p = make_problem(vrng, args.ops)
        vtexts += [p["question"], p["solution"]]
    vtexts.append(drill(vrng, args.ops, 50))
    tok = PlaceTokenizer(vtexts)
    for p in held:  # the tokenizer must round-trip the held-out text exactly
        for s in (p["question"] + "\n", p["solution"]):
            assert tok.decode(tok.encode(s)) == s, s
            assert tok.unk not in tok.encode(s), s
        assert check_solution(p["solution"], p["steps"], p["answer"]).perfect
    sol_tokens = [len(tok.encode(p["solution"])) + 1 for p in held]
    q_tokens = [len(prompt_ids(tok, p["question"])) for p in held]
    max_new = args.max_new or int(1.1 * max(sol_tokens)) + 4
    args.max_new = max_new

    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=args.hidden, intermediate_size=args.intermediate,
                      num_hidden_layers=args.layers, num_attention_heads=args.heads,
                      num_key_value_heads=args.heads, max_position_embeddings=1024, tie_word_embeddings=True,
                      bos_token_id=tok.bos, eos_token_id=tok.eos, pad_token_id=tok.pad)
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"pilot world v2: ops {args.ops!r}, vocab {len(tok)}, params {n_params:,}, "
          f"solution tokens mean {sum(sol_tokens) / len(sol_tokens):.0f} max {max(sol_tokens)}, "
          f"question tokens mean {sum(q_tokens) / len(q_tokens):.0f}; training {args.minutes} min", flush=True)
    print("example problem:\n" + held[0]["question"] + "\n" + held[0]["solution"], flush=True)

    stream = Stream(tok, args.seed, args.ops, seen, args.drill_share, args.drill_lines)
    tr = train(model, stream, args)
    print(f"trained {tr['steps']} steps, {tr['tokens']:,} tokens in {tr['seconds'] / 60:.1f} min", flush=True)

    t_eval = time.time()
    ev = evaluate(model, tok, held, args)
    eval_seconds = time.time() - t_eval

    k = args.k
    by_steps = {s: sum(len(p["steps"]) == s for p in held) for s in (2, 3, 4)}
    result = {
        "design": "column scratchpad (LSB first, fixed width) inside every step + place-value digit tokens; "
                  "world v1 wording; fresh problems; drills",
        "args": vars(args), "n_params": n_params, "vocab": len(tok),
        "tokens_per_solution": {"mean": sum(sol_tokens) / len(sol_tokens), "max": max(sol_tokens),
                                "by_steps": {s: sum(t for t, p in zip(sol_tokens, held) if len(p["steps"]) == s)
                                             / max(1, by_steps[s]) for s in (2, 3, 4)}},
        "question_tokens_mean": sum(q_tokens) / len(q_tokens), "held_out_by_steps": by_steps,
        "training": tr, "eval": ev,
        "wall_seconds": {"train": tr["seconds"], "eval": eval_seconds, "total": time.time() - t_start},
        "torch_threads": torch.get_num_threads(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))

    print("\n================ pilot world v2: results ================")
    print(f"design       : {result['design']}")
    print(f"model        : Llama {args.layers}x{args.hidden} (ffn {args.intermediate}, {args.heads} heads), "
          f"{n_params:,} params, vocab {len(tok)}")
    print(f"tokens/sol.  : mean {result['tokens_per_solution']['mean']:.0f}, max {max(sol_tokens)}; "
          f"by steps {', '.join(f'{s}: {v:.0f}' for s, v in result['tokens_per_solution']['by_steps'].items())}")
    print(f"training     : {tr['steps']} steps, {tr['tokens']:,} tokens, {tr['seconds'] / 60:.1f} min "
          f"({tr['tokens'] / tr['seconds']:.0f} tok/s, {torch.get_num_threads()} thread); "
          f"sequences {tr['sequences']}")
    print("loss curve   : " + ", ".join(f"{c['minutes']}m {c['loss']:.3f}" for c in tr["curve"]))
    print(f"held-out     : {len(held)} problems, by steps {by_steps}")
    print(f"greedy       : final {fmt(ev['greedy_final'])}   every step right {fmt(ev['greedy_perfect'])}")
    for s, r in ev["greedy_by_steps"].items():
        print(f"  {s} steps    : final {fmt(r['final'])}   every step right {fmt(r['perfect'])}")
    print(f"greedy first error kinds: {ev['greedy_error_kinds']}")
    print("teacher-forced next-token accuracy on gold solutions:")
    for c, r in ev["teacher_forced"].items():
        print(f"  {c:18s}: {fmt(r)}")
    for T in args.temperatures:
        r = ev[f"T{T}"]
        print(f"T = {T}:")
        print(f"  pass@1     : final {fmt(r['pass1_final'])}   every step right {fmt(r['pass1_perfect'])}")
        print(f"  pass@{k}    : final {fmt(r[f'pass{k}_final'])}   every step right {fmt(r[f'pass{k}_perfect'])}")
        print(f"  chance     : pass@{k} vs deranged gold {fmt(r[f'chance_pass{k}'])}   "
              f"(per sample {fmt(r['chance_pass1'])})")
        h = r["headroom_points"]
        print(f"  headroom   : {h['diff']:+.1f} points [{h['ci_low']:+.1f}, {h['ci_high']:+.1f}] "
              f"(pass@{k} perfect - greedy perfect)")
        print("  pass@k perfect by steps: " + ", ".join(f"{s}: {fmt(v)}"
                                                      for s, v in r[f"pass{k}_perfect_by_steps"].items()))
    print(f"wall         : train {tr['seconds'] / 60:.1f} min, eval {eval_seconds / 60:.1f} min "
          f"({', '.join(f'{a} {b:.0f}s' for a, b in ev['eval_seconds'].items())}), "
          f"total {result['wall_seconds']['total'] / 60:.1f} min")
    print(f"greedy example:\n{ev['examples']['greedy'][0]}")
    print(f"json         : {args.out}")
    return result


if __name__ == "__main__":
    main()
