"""Review widgets: pure data functions, a thin ipywidgets view over them, and a static fallback.

Widgets show records and never change them. In papermill (batch) runs the notebooks call
the ``static_*`` functions instead, since widgets do not render in saved notebooks.
"""

from __future__ import annotations

import html

import pandas as pd


def filter_feedback(frame: pd.DataFrame, aspect: str | None = None, lo: int = 1, hi: int = 5,
                    failures_only: bool = False) -> list[str]:
    """Response ids whose ``aspect`` score lies in [lo, hi] (any aspect if None); with
    ``failures_only``, those with a parse failure on it instead. Order of first appearance."""
    f = frame if aspect is None else frame[frame["aspect"] == aspect]
    if failures_only:
        f = f[~f["parse_ok"]]
    else:
        f = f[f["parse_ok"] & f["score"].between(lo, hi)]
    return list(dict.fromkeys(f["response_id"]))


def feedback_html(rec: dict) -> str:
    """One judged response as HTML: prompt, response, and a row per aspect (score, critique or parse error)."""
    esc = html.escape
    rows = []
    for a in rec["feedback"]["aspects"]:
        score = f"{a['score']}/{a['max_score']}" if a["parse_ok"] else "<b style='color:#b00'>parse failure</b>"
        text = esc(a["critique"]) if a["parse_ok"] else esc(a["error"] or "")
        rows.append(f"<tr><td>{esc(a['aspect'])}</td><td>{score}</td><td>{text}</td></tr>")
    raw = rec["feedback"].get("raw") or ""
    raw_html = (f"<details><summary>raw judge output ({len(raw)} chars)</summary><pre>{esc(raw)}</pre></details>"
                if raw else "")
    reward = "n/a (parse failure)" if rec["reward"] is None else f"{rec['reward']:.2f}"
    return (f"<div><b>{esc(rec['example_id'])}</b> · judge <code>{esc(rec['judge_id'])}</code> · "
            f"rubrics <code>{esc(rec['rubric_version'])}</code> · reward {reward}"
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


class FeedbackBrowser:
    """Page through judged responses, filtered by aspect and score range (or parse failures)."""

    def __init__(self, records: list[dict], frame: pd.DataFrame):
        import ipywidgets as w

        self.records = {r["response_id"]: r for r in records}
        self.frame = frame
        aspects = sorted(frame["aspect"].unique())
        self.aspect = w.Dropdown(options=[("any", None)] + [(a, a) for a in aspects], description="aspect")
        self.scores = w.IntRangeSlider(value=(1, 5), min=1, max=5, description="score")
        self.failures = w.Checkbox(value=False, description="parse failures only")
        self.prev, self.next = w.Button(description="◀ prev"), w.Button(description="next ▶")
        self.status, self.view = w.Label(), w.HTML()
        self.ids: list[str] = []
        self.pos = 0
        for c in (self.aspect, self.scores, self.failures):
            c.observe(lambda _: self._refilter(), names="value")
        self.prev.on_click(lambda _: self._move(-1))
        self.next.on_click(lambda _: self._move(1))
        self.widget = w.VBox([w.HBox([self.aspect, self.scores, self.failures]),
                              w.HBox([self.prev, self.next, self.status]), self.view])
        self._refilter()

    def _refilter(self):
        lo, hi = self.scores.value
        self.ids = filter_feedback(self.frame, self.aspect.value, lo, hi, self.failures.value)
        self.pos = 0
        self._show()

    def _move(self, step: int):
        if self.ids:
            self.pos = (self.pos + step) % len(self.ids)
        self._show()

    def _show(self):
        if not self.ids:
            self.status.value, self.view.value = "no response matches", ""
            return
        self.status.value = f"{self.pos + 1} / {len(self.ids)}"
        self.view.value = feedback_html(self.records[self.ids[self.pos]])

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
