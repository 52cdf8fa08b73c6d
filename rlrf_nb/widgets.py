"""Review widgets: pure data functions, a thin ipywidgets view over them, and a static fallback (``static_*``) for
papermill runs, where widgets do not render. Widgets show records and never change them.
"""

from __future__ import annotations

import difflib
import re
from html import escape as esc

import ipywidgets as w
import pandas as pd
from IPython.display import display

from rlrf_nb.pairs import apply_decisions, load_decisions, record_decision, side_text


def judge_disagreements(frame: pd.DataFrame, aspect: str | None = None) -> set[str]:
    """Response ids that two or more judges scored with different scores on one aspect (``aspect``, or any), from
    :func:`rlrf_nb.feedback.feedback_frame`; parse failures have no score and count as no vote."""
    f = frame[frame["parse_ok"]] if aspect is None else frame[frame["parse_ok"] & (frame["aspect"] == aspect)]
    spread = f.groupby(["response_id", "aspect"])["score"].agg(["min", "max"])
    return set(spread[spread["min"] != spread["max"]].index.get_level_values("response_id"))


def feedback_keys(frame: pd.DataFrame, aspect: str | None = None, lo: int = 1, hi: int = 5,
                  failures_only: bool = False, judge: str | None = None,
                  disagreements_only: bool = False) -> list[tuple[str, str]]:
    """``(judge_id, response_id)`` of the judgements whose ``aspect`` score lies in [lo, hi] (any aspect or judge if
    None), or with ``failures_only`` those with a parse failure on it (no score, so the range does not apply), in order
    of first appearance; with ``disagreements_only``, only responses the judges scored differently on that aspect
    (:func:`judge_disagreements`). Each judge's judgement is its own key, so one judge's card never stands in for
    another's."""
    f = frame if aspect is None else frame[frame["aspect"] == aspect]
    if disagreements_only:
        f = f[f["response_id"].isin(judge_disagreements(frame, aspect))]
    if judge is not None:
        f = f[f["judge_id"] == judge]
    if failures_only:
        f = f[~f["parse_ok"]]
    else:
        f = f[f["parse_ok"] & f["score"].between(lo, hi)]
    keys = list(dict.fromkeys(zip(f["judge_id"], f["response_id"])))
    if disagreements_only:  # the judges' cards of one response side by side in the pager
        order = {rid: i for i, rid in enumerate(dict.fromkeys(f["response_id"]))}
        keys.sort(key=lambda k: order[k[1]])
    return keys


def feedback_html(rec: dict) -> str:
    """One judged response as HTML: prompt, response, and a row per aspect (score, critique or parse error)."""
    rows = []
    for a in rec["feedback"]["aspects"]:
        score = f"{a['score']}/{a['max_score']}" if a["parse_ok"] else "<b style='color:#b00'>parse failure</b>"
        text = esc(a["critique"]) if a["parse_ok"] else esc(a["error"] or "")
        rows.append(f"<tr><td>{esc(a['aspect'])}</td><td>{score}</td><td>{text}</td></tr>")
    raw = rec["feedback"].get("raw") or ""
    raw_html = (f"<details><summary>raw judge output ({len(raw)} chars)</summary><pre>{esc(raw)}</pre></details>"
                if raw else "")
    reward = "n/a (parse failure)" if rec["reward"] is None else f"{rec['reward']:.2f}"
    return (f"<div>response <b>{esc(rec['response_id'])}</b> · judge <b>{esc(rec['judge_id'])}</b> · "
            f"prompt {esc(rec['example_id'])} · rubrics <code>{esc(rec['rubric_version'])}</code> · reward {reward}"
            f"<pre style='white-space:pre-wrap'>{esc(rec['prompt'])}</pre>"
            f"<pre style='white-space:pre-wrap;background:#f6f6f6'>{esc(rec['response'])}</pre>"
            f"<table><tr><th>aspect</th><th>score</th><th>critique</th></tr>{''.join(rows)}</table>{raw_html}</div>")


def static_feedback_table(records: list[dict], n: int = 10) -> pd.DataFrame:
    """The batch-mode stand-in for :class:`FeedbackBrowser`: one row per response, scores per aspect."""
    rows = []
    for rec in records[:n]:
        row = {"response_id": rec["response_id"], "judge": rec["judge_id"], "response": rec["response"][:80],
               "reward": rec["reward"]}
        for a in rec["feedback"]["aspects"]:
            row[a["aspect"]] = a["score"] if a["parse_ok"] else "FAIL"
            row[a["aspect"] + " critique"] = (a["critique"] if a["parse_ok"] else a["error"])[:100]
        rows.append(row)
    return pd.DataFrame(rows)


class _Pager:
    """Shared prev/next paging over ``self.idx`` (item keys); subclasses define ``_html(key)`` and the filter."""

    empty = "nothing matches"

    def _pager(self):
        self.prev, self.next = w.Button(description="◀ prev"), w.Button(description="next ▶")
        self.status, self.view = w.Label(), w.HTML()
        self.prev.on_click(lambda _: self._move(-1))
        self.next.on_click(lambda _: self._move(1))
        self.idx: list[int] = []
        self.pos = 0

    def _move(self, step: int):
        if self.idx:
            self.pos = (self.pos + step) % len(self.idx)
        self._show()

    def _show(self):
        if not self.idx:
            self.status.value, self.view.value = self.empty, ""
            return
        self.status.value = f"{self.pos + 1} / {len(self.idx)}"
        self.view.value = self._html(self.idx[self.pos])

    def _ipython_display_(self):
        display(self.widget)


_BOX = "white-space:pre-wrap;border:1px solid #ddd;padding:4px;vertical-align:top;width:50%"  # a side-by-side cell
ANY = "any"  # the dropdowns' "no filter" value (a None value would show as a blank dropdown)


class FeedbackBrowser(_Pager):
    """Page through judgements, filtered by judge, aspect and score range (or parse failures), and to the responses
    the judges disagree on (``disagreements_only`` opens it there). Each card is one judge's judgement of one
    response, keyed by (judge, response id): a disagreement shows each judge's card in turn."""

    empty = "no response matches"

    def __init__(self, records: list[dict], frame: pd.DataFrame, disagreements_only: bool = False):
        self.records = {(r["judge_id"], r["response_id"]): r for r in records}
        self.frame = frame
        judges = list(dict.fromkeys(frame["judge_id"]))
        self.judge = w.Dropdown(options=[("any judge", ANY)] + [(j, j) for j in judges], value=ANY,
                                description="judge", layout=w.Layout(width="auto"))
        self.aspect = w.Dropdown(options=[("any aspect", ANY)] + [(a, a) for a in sorted(frame["aspect"].unique())],
                                 value=ANY, description="aspect")
        self.scores = w.IntRangeSlider(value=(1, 5), min=1, max=5, description="score")
        self.failures = w.Checkbox(value=False, description="parse failures only", indent=False)
        self.disagree = w.Checkbox(value=disagreements_only, description="judges disagree only", indent=False)
        self._pager()
        for c in (self.judge, self.aspect, self.scores, self.failures, self.disagree):
            c.observe(lambda _: self._refilter(), names="value")
        self.widget = w.VBox([w.HBox([self.judge, self.aspect]), w.HBox([self.scores, self.failures, self.disagree]),
                              w.HBox([self.prev, self.next, self.status]), self.view])
        self._refilter()

    def _refilter(self):
        lo, hi = self.scores.value
        self.scores.disabled = self.failures.value  # a parse failure has no score: the range does not apply
        self.idx = feedback_keys(self.frame, None if self.aspect.value == ANY else self.aspect.value, lo, hi,
                                 self.failures.value, None if self.judge.value == ANY else self.judge.value,
                                 self.disagree.value)
        self.pos = 0
        self._show()

    @property
    def ids(self) -> list[str]:
        """The response ids that match the filters, in order (a response two judges match appears twice)."""
        return [rid for _, rid in self.idx]

    @property
    def card(self) -> tuple[str, str] | None:
        """(judge id, response id) of the judgement on show, None when nothing matches."""
        return self.idx[self.pos] if self.idx else None

    def _html(self, key: tuple[str, str]) -> str:
        return feedback_html(self.records[key])


# ---------------------------------------------------------- Reflection viewer: a draft and its refinement, side by side

_TOKEN = re.compile(r"\s+|[^\s]+")


def word_diff(a: str, b: str) -> list[tuple[str, str]]:
    """Word-level diff of ``a`` → ``b`` as ``(op, text)`` runs, op in equal/delete/insert; joining the
    equal+delete texts gives ``a`` back and equal+insert gives ``b``."""
    ta, tb = _TOKEN.findall(a), _TOKEN.findall(b)
    out: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=ta, b=tb, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(("equal", "".join(ta[i1:i2])))
            continue
        if i2 > i1:
            out.append(("delete", "".join(ta[i1:i2])))
        if j2 > j1:
            out.append(("insert", "".join(tb[j1:j2])))
    return out


def word_diff_html(a: str, b: str) -> str:
    """:func:`word_diff` as HTML: deletions struck through in red, insertions underlined in green."""
    style = {"equal": "{}", "delete": "<del style='background:#fdd'>{}</del>",
             "insert": "<ins style='background:#dfd'>{}</ins>"}
    return "".join(style[op].format(esc(t)) for op, t in word_diff(a, b))


def refinement_rows(records: list[dict], pool: list) -> list[dict]:
    """One row per refinement in a reflection search (``res["records"]``, ``res["pool"]``): the draft and
    the refinement, their rewards, per-aspect scores before and after, the draft's critiques (what drove the
    change) and final-answer correctness before and after."""
    rec = {r["response_id"]: r for r in records}
    cand = {c.candidate_id: c for c in pool}
    rows = []
    for c in pool:
        if c.kind != "refinement":
            continue
        parent, child = rec[c.parent_id], rec[c.candidate_id]
        before = {a["aspect"]: a for a in parent["feedback"]["aspects"]}
        after = {a["aspect"]: a for a in child["feedback"]["aspects"]}
        delta = (None if child["reward"] is None or parent["reward"] is None
                 else child["reward"] - parent["reward"])
        rows.append({"refinement_id": c.candidate_id, "parent_id": c.parent_id, "example_id": c.prompt_id,
                     "round": child["round"], "question": parent["prompt"], "draft": parent["response"],
                     "refinement": child["response"], "parent_reward": parent["reward"],
                     "reward": child["reward"], "delta": delta,
                     "scores": {a: [before[a]["score"], after.get(a, {}).get("score")] for a in before},
                     "critiques": {a: (v["critique"] if v["parse_ok"] else f"(parse failure: {v['error']})")
                                   for a, v in before.items()},
                     "parent_correct": cand[c.parent_id].correct, "correct": c.correct})
    return rows


def refinement_frame(rows: list[dict]) -> pd.DataFrame:
    """One row per (refinement, aspect): score before, after and the change; rows with a parse failure on
    either side have ``delta`` NaN and ``parsed`` False, so they are counted, never scored."""
    out = []
    for r in rows:
        for aspect, (b, a) in r["scores"].items():
            ok = a is not None and b is not None
            out.append({"refinement_id": r["refinement_id"], "example_id": r["example_id"], "round": r["round"],
                        "aspect": aspect, "before": b, "after": a, "parsed": ok,
                        "delta": (a - b) if ok else float("nan")})
    return pd.DataFrame(out, columns=["refinement_id", "example_id", "round", "aspect", "before", "after",
                                      "parsed", "delta"])


def filter_refinements(rows: list[dict], outcome: str = "all") -> list[int]:
    """Indices of rows whose reward ``improved``, stayed ``unchanged``, got ``worse``, or ``all``."""
    test = {"all": lambda d: True, "improved": lambda d: d is not None and d > 0,
            "unchanged": lambda d: d is not None and d == 0, "worse": lambda d: d is not None and d < 0}
    if outcome not in test:
        raise ValueError(f"outcome must be one of {list(test)}, got {outcome!r}")
    return [i for i, r in enumerate(rows) if test[outcome](r["delta"])]


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def reflection_html(row: dict) -> str:
    """A refinement next to its draft: the question, the word diff, score deltas and the driving critiques."""
    score_rows = []
    for aspect, (b, a) in row["scores"].items():
        d = "" if a is None or b is None else f"{a - b:+d}"
        color = "#070" if d.startswith("+") and d != "+0" else "#b00" if d.startswith("-") else "#555"
        score_rows.append(f"<tr><td>{esc(aspect)}</td><td>{b}</td><td>{a}</td>"
                          f"<td style='color:{color}'><b>{d}</b></td><td>{esc(row['critiques'][aspect])}</td></tr>")
    return (f"<div><b>{esc(row['refinement_id'])}</b> refines <b>{esc(row['parent_id'])}</b> (round {row['round']})"
            f" · reward {_fmt(row['parent_reward'])} → {_fmt(row['reward'])}"
            f" · answer right: {row['parent_correct']} → {row['correct']}"
            f"<pre style='white-space:pre-wrap'>{esc(row['question'])}</pre>"
            f"<table style='width:100%'><tr><th>draft</th><th>refinement (word diff)</th></tr>"
            f"<tr><td style='{_BOX}'>{esc(row['draft'])}</td>"
            f"<td style='{_BOX}'>{word_diff_html(row['draft'], row['refinement'])}</td></tr></table>"
            f"<table><tr><th>aspect</th><th>before</th><th>after</th><th>Δ</th><th>critique of the draft</th></tr>"
            f"{''.join(score_rows)}</table></div>")


def static_reflection_table(rows: list[dict], n: int = 10) -> pd.DataFrame:
    """The batch-mode stand-in for :class:`ReflectionViewer`: one row per refinement."""
    out = []
    for r in rows[:n]:
        row = {"refinement_id": r["refinement_id"], "parent_reward": r["parent_reward"], "reward": r["reward"],
               "delta": r["delta"], "right before → after": f"{r['parent_correct']} → {r['correct']}",
               **{aspect: f"{b} → {a}" for aspect, (b, a) in r["scores"].items()}}
        row["changed words"] = " ".join(t for op, t in word_diff(r["draft"], r["refinement"]) if op == "insert")[:80]
        out.append(row)
    return pd.DataFrame(out)


class ReflectionViewer(_Pager):
    """Page through refinements next to their drafts, filtered by outcome (improved, unchanged, worse)."""

    def __init__(self, rows: list[dict]):
        self.rows = rows
        self.outcome = w.ToggleButtons(options=["all", "improved", "unchanged", "worse"], description="reward")
        self._pager()
        self.outcome.observe(lambda _: self._refilter(), names="value")
        self.widget = w.VBox([self.outcome, w.HBox([self.prev, self.next, self.status]), self.view])
        self._refilter()

    def _refilter(self):
        self.idx, self.pos = filter_refinements(self.rows, self.outcome.value), 0
        self._show()

    def _html(self, i: int) -> str:
        return reflection_html(self.rows[i])


# --------------------------------------------------------- Pair reviewer: accept, reject, swap or edit preference pairs


def review_state(pair: dict, decisions: list[dict] | None) -> tuple[dict, str]:
    """``(pair after swaps and edits, status)``: ``"not reviewed"``, ``"accepted"``, ``"rejected"`` (the last verdict
    wins, as in :func:`rlrf_nb.pairs.apply_decisions`) or ``"changed"`` (swapped or edited, neither accepted nor
    rejected). A rejected pair is returned too, so a reviewer can still see it and accept it again."""
    ds = decisions or []
    edits = [d for d in ds if d["action"] in ("swap", "edit")]
    after = apply_decisions([pair], {pair["pair_id"]: edits} if edits else {})[0]
    verdicts = [d["action"] for d in ds if d["action"] in ("accept", "reject")]
    status = {"accept": "accepted", "reject": "rejected"}[verdicts[-1]] if verdicts else \
        "changed" if edits else "not reviewed"
    return after, status


def swap_warning(pair: dict) -> str | None:
    """Why swapping ``pair`` (as it stands) needs a second look: it would prefer a wrong final answer over a right
    one, which pair building never does (the verifiable override of :func:`rlrf_nb.pairs.build_pairs`)."""
    if pair["chosen_correct"] is True and pair["rejected_correct"] is False:
        return (f"swapping makes {pair['rejected_id']}, a wrong final answer, the chosen response over a right one "
                f"({pair['chosen_id']}); pair building never does that. Press swap again to record it anyway.")
    return None


def next_unreviewed(keys: list[str], reviewed: set[str], pos: int) -> int:
    """The position after ``pos`` of the next key not in ``reviewed`` (wrapping around); ``pos + 1`` (wrapping) when
    every key is reviewed."""
    n = len(keys)
    for step in range(1, n + 1):
        if keys[(pos + step) % n] not in reviewed:
            return (pos + step) % n
    return (pos + 1) % n


_STATUS_STYLE = {"not reviewed": "#555", "accepted": "#070", "rejected": "#b00", "changed": "#a60"}


def pair_html(pair: dict, decisions: list[dict] | None = None) -> str:
    """A preference pair as its review decisions leave it (:func:`review_state`): its status, the prompt, chosen and
    rejected side by side with their rewards and aspect scores, and the decisions recorded for it."""
    pair, status = review_state(pair, decisions)
    prompt = pair["prompt"] if isinstance(pair["prompt"], str) else pair["prompt"][-1]["content"]

    def side(name):
        scores = ", ".join(f"{k} {v}" for k, v in (pair[f"{name}_scores"] or {}).items())
        return (f"<td style='{_BOX}'><b>{name}</b> {esc(pair[f'{name}_id'])} ({pair[f'{name}_kind']}) · reward "
                f"{_fmt(pair[f'{name}_reward'])} · right: {pair[f'{name}_correct']}<br><i>{esc(scores)}</i>"
                f"<hr>{esc(side_text(pair[name]))}</td>")

    done = "".join(f"<li>{esc(d['action'])} {esc(d.get('candidate_id', ''))} {esc(d.get('note', ''))}"
                   f"{' · by ' + esc(d['reviewer']) if d.get('reviewer') else ''}</li>" for d in decisions or [])
    return (f"<div><b style='color:{_STATUS_STYLE[status]}'>{status}</b> · pair <code>{esc(pair['pair_id'])}</code>"
            f" · policy {esc(pair['pair_policy'])} · margin {_fmt(pair['margin'])}"
            f"<pre style='white-space:pre-wrap'>{esc(prompt)}</pre>"
            f"<table style='width:100%'><tr>{side('chosen')}{side('rejected')}</tr></table>"
            + (f"recorded decisions:<ul>{done}</ul>" if done else "") + "</div>")


def static_pair_table(pairs: list[dict], n: int = 10) -> pd.DataFrame:
    """The batch-mode stand-in for :class:`PairReviewer`: one row per pair."""
    return pd.DataFrame([{"pair_id": p["pair_id"], "policy": p["pair_policy"], "chosen": p["chosen_id"],
                          "rejected": p["rejected_id"], "margin": p["margin"],
                          "right over wrong": p["chosen_correct"] is True and p["rejected_correct"] is False,
                          "review": ",".join(p.get("review", [])), "chosen text": side_text(p["chosen"])[:60],
                          "rejected text": side_text(p["rejected"])[:60]} for p in pairs[:n]])


class PairReviewer(_Pager):
    """Review pairs: each button appends a decision to ``decisions_path`` at once (nothing is lost if the kernel dies).
    Decisions change no pair here: ``pairs.apply_decisions``, or ``build_pairs(..., decisions=load_decisions(path))`` as
    every later run does, applies them. Give it the pairs built *without* decisions (``build_pairs(pool, policy)``), so
    a pair rejected earlier is still here, marked rejected, and can be accepted again. Accept and reject move on to the
    next unreviewed pair; each decision records the ``reviewer`` box's name, and none is recorded while it is empty."""

    def __init__(self, pairs: list[dict], decisions_path, reviewer: str = ""):
        self.pairs, self.path = pairs, decisions_path
        self.decisions = load_decisions(decisions_path)
        self._pager()
        self.reviewer = w.Text(value=reviewer, description="reviewer", placeholder="your name")
        self.counter, self.message = w.Label(), w.HTML()
        self.buttons = {a: w.Button(description=a, button_style=style) for a, style in
                        (("accept", "success"), ("reject", "danger"), ("swap", "warning"))}
        for action, b in self.buttons.items():
            b.on_click(lambda _, a=action: self._click(a))
        self.side = w.Dropdown(options=["chosen", "rejected"], description="edit")
        self.text = w.Textarea(layout=w.Layout(width="100%", height="120px"))
        self.save = w.Button(description="save edit")
        self.side.observe(lambda _: self._load_text(), names="value")
        self.save.on_click(lambda _: self.decide("edit", text=self.text.value))
        # the buttons sit above the pair, so a long pair or decision list never moves them
        self.widget = w.VBox([w.HBox([self.prev, self.next, self.status, self.counter]),
                              w.HBox([*self.buttons.values(), self.reviewer]), self.message, self.view,
                              w.HBox([self.side, self.save]), self.text])
        self.idx = list(range(len(pairs)))
        self._armed: str | None = None  # the pair whose risky swap was warned about once
        self._show()

    @property
    def current(self) -> dict:
        """The pair on show, as its decisions so far leave it (swaps and edits applied)."""
        p = self.pairs[self.idx[self.pos]]
        return review_state(p, self.decisions.get(p["pair_id"]))[0]

    @property
    def reviewed(self) -> set[str]:
        """Pair ids of these pairs with at least one recorded decision."""
        return {p["pair_id"] for p in self.pairs if self.decisions.get(p["pair_id"])}

    def decide(self, action: str, text: str | None = None, note: str = "") -> dict | None:
        """Record ``action`` on the current pair (edit: ``text`` replaces the side chosen in the dropdown) and return
        the decision; None (with a message) when nothing was recorded: no reviewer name, or a swap that would make
        a wrong final answer chosen, until it is asked for a second time."""
        who = self.reviewer.value.strip()
        if not who:
            self.message.value = "<b style='color:#b00'>Enter your name in <i>reviewer</i> first: every decision " \
                                 "records who made it.</b>"
            return None
        p = self.current
        warning = swap_warning(p) if action == "swap" else None
        if warning and self._armed != p["pair_id"]:
            self._armed = p["pair_id"]
            self.message.value = f"<b style='color:#b00'>⚠ {esc(warning)}</b>"
            return None
        if warning:
            note = (note + "; " if note else "") + "swap over a right answer, confirmed after a warning"
        cid = p[f"{self.side.value}_id"] if action == "edit" else None
        d = record_decision(self.path, p, action, candidate_id=cid, text=text, note=note, reviewer=who)
        self.decisions.setdefault(p["pair_id"], []).append(d)
        self.message.value = f"recorded: {action} on {esc(p['pair_id'])}"
        self._show()
        return d

    def _click(self, action: str):
        """A button: record the decision, then (accept, reject) move on to the next pair not yet reviewed."""
        if self.decide(action) is not None and action in ("accept", "reject"):
            self.pos = next_unreviewed([p["pair_id"] for p in self.pairs], self.reviewed, self.pos)
            self._show()

    def _move(self, step: int):
        self.message.value = ""
        super()._move(step)

    def _load_text(self):
        if self.idx:
            self.text.value = side_text(self.current[self.side.value])

    def _show(self):
        if self.idx and self._armed != self.pairs[self.idx[self.pos]]["pair_id"]:
            self._armed = None
        super()._show()
        self.counter.value = f"· {len(self.reviewed)} of {len(self.pairs)} reviewed"
        self._load_text()

    def _html(self, i: int) -> str:
        p = self.pairs[i]
        return pair_html(p, self.decisions.get(p["pair_id"]))


# ------------------------------------------------------------------------------ Case browser: where two models disagree


def disagreements(a_name: str, a_recs: list[dict], b_name: str, b_recs: list[dict], *, id_key: str = "id",
                  correct_key: str = "correct", text_key: str = "response", prompt_key: str = "prompt") -> dict:
    """Per-item records of two models on the same benchmark, split into ``"<a> wrong, <b> right"`` and
    ``"<a> right, <b> wrong"`` case lists (each case: id, prompt, both responses and verdicts)."""
    b_by = {r[id_key]: r for r in b_recs}
    cases: dict[str, list] = {f"{a_name} wrong, {b_name} right": [], f"{a_name} right, {b_name} wrong": []}
    for ra in a_recs:
        rb = b_by.get(ra[id_key])
        if rb is None or bool(ra[correct_key]) == bool(rb[correct_key]):
            continue
        key = f"{a_name} wrong, {b_name} right" if rb[correct_key] else f"{a_name} right, {b_name} wrong"
        cases[key].append({"id": ra[id_key], "prompt": ra.get(prompt_key, ""), "gold": ra.get("gold"),
                           a_name: ra[text_key], b_name: rb[text_key]})
    return cases


def case_html(case: dict, names: tuple[str, str]) -> str:
    return (f"<div><b>{esc(str(case['id']))}</b> · gold {esc(str(case.get('gold')))}"
            f"<pre style='white-space:pre-wrap'>{esc(case['prompt'])}</pre><table style='width:100%'><tr>"
            + "".join(f"<th>{esc(n)}</th>" for n in names) + "</tr><tr>"
            + "".join(f"<td style='{_BOX}'>{esc(case[n])}</td>" for n in names) + "</tr></table></div>")


class CaseBrowser(_Pager):
    """Page through the items where two models disagree (``disagreements``), one direction at a time."""

    def __init__(self, cases: dict[str, list], names: tuple[str, str]):
        self.cases, self.names = cases, names
        self.which = w.ToggleButtons(options=[f"{k} ({len(v)})" for k, v in cases.items()])
        self._pager()
        self.which.observe(lambda _: self._refilter(), names="value")
        self.widget = w.VBox([self.which, w.HBox([self.prev, self.next, self.status]), self.view])
        self._refilter()

    def _current(self) -> list:
        return self.cases[self.which.value.rsplit(" (", 1)[0]]

    def _refilter(self):
        self.idx, self.pos = list(range(len(self._current()))), 0
        self._show()

    def _html(self, i: int) -> str:
        return case_html(self._current()[i], self.names)


def static_case_table(cases: dict[str, list], n: int = 5) -> pd.DataFrame:
    """The batch-mode stand-in for :class:`CaseBrowser`: the first ``n`` cases of each direction."""
    rows = [{"direction": k, **{f: (str(v)[:90] if isinstance(v, str) else v) for f, v in c.items()}}
            for k, cs in cases.items() for c in cs[:n]]
    return pd.DataFrame(rows)
