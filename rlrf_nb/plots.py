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
