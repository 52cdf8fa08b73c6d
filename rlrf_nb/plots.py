"""Plotly figures for the notebooks. Each takes plain data and returns a ``go.Figure``."""

from __future__ import annotations

import plotly.graph_objects as go


def loss_curve(history: list[dict], title: str = "M0 pre-training loss", smooth: int = 10) -> go.Figure:
    """Training loss against step, from ``Trainer.state.log_history`` rows (``step``, ``loss``).

    The raw curve is saw-toothed because batches are grouped by length (long refinement examples and
    short drills/web documents alternate, and their losses differ); a moving average of ``smooth`` logs
    shows the trend.
    """
    steps = [h["step"] for h in history]
    loss = [h["loss"] for h in history]
    avg = [sum(loss[max(0, i - smooth + 1):i + 1]) / len(loss[max(0, i - smooth + 1):i + 1]) for i in range(len(loss))]
    fig = go.Figure([
        go.Scatter(x=steps, y=loss, mode="lines", name="logged loss", line={"width": 1, "color": "#bbb"}),
        go.Scatter(x=steps, y=avg, mode="lines", name=f"moving average ({smooth} logs)", line={"width": 3}),
    ])
    fig.update_layout(title=title, xaxis_title="optimizer step", yaxis_title="cross-entropy (nats/token, log scale)",
                      yaxis_type="log", template="plotly_white", height=380, width=760,
                      legend={"x": 0.6, "y": 0.95})
    return fig


def rates_with_ci(rates: dict[str, dict], title: str) -> go.Figure:
    """Bars of rates (``stats.rate`` dicts) with their 95% intervals as error bars; values in the labels."""
    names = list(rates)
    vals = [100 * rates[k]["rate"] for k in names]
    labels = [f"{k}<br><b>{v:.1f}%</b> (n={rates[k]['n']})" for k, v in zip(names, vals)]
    fig = go.Figure(go.Bar(
        x=labels, y=vals,
        error_y={"type": "data", "symmetric": False,
                 "array": [100 * rates[k]["ci_high"] - v for k, v in zip(names, vals)],
                 "arrayminus": [v - 100 * rates[k]["ci_low"] for k, v in zip(names, vals)]}))
    fig.update_layout(title=title, yaxis_title="% (bars: 95% Wilson CI)", yaxis_range=[0, 100],
                      template="plotly_white", height=400, width=760)
    return fig


def score_distribution(frame, title: str) -> go.Figure:
    """Counts of each rubric level per aspect (one panel each) and task (colours), from ``feedback_frame``
    rows; parse failures are left out (see the parse table). Built from plain lists: plotly.js mis-scales
    faceted axes over the typed arrays that plotly.py makes from numpy columns."""
    from plotly.subplots import make_subplots

    ok = frame[frame["parse_ok"]]
    aspects = sorted(ok["aspect"].unique())
    tasks = sorted(ok["task"].unique())
    colors = ["#636efa", "#ef553b", "#00cc96", "#ab63fa"]
    fig = make_subplots(rows=1, cols=max(1, len(aspects)), subplot_titles=aspects, shared_yaxes=True)
    for col, aspect in enumerate(aspects, start=1):
        for i, task in enumerate(tasks):
            sel = ok[(ok["aspect"] == aspect) & (ok["task"] == task)]["score"]
            if sel.empty:
                continue
            levels = list(range(1, 6))
            fig.add_bar(x=levels, y=[int((sel == k).sum()) for k in levels], name=task, legendgroup=task,
                        marker_color=colors[i % len(colors)], showlegend=col == 1, row=1, col=col)
    fig.update_xaxes(dtick=1, range=[0.5, 5.5], title_text="score")
    fig.update_yaxes(title_text="count", col=1)
    fig.update_layout(title=title, barmode="group", height=340, width=1000, template="plotly_white")
    return fig
