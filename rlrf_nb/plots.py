"""Plotly figures for the notebooks. Each takes plain data and returns a ``go.Figure``."""

from __future__ import annotations

import plotly.graph_objects as go


def loss_curve(history: list[dict], title: str = "M0 pre-training loss") -> go.Figure:
    """Training loss against step, from ``Trainer.state.log_history`` rows (``step``, ``loss``)."""
    steps = [h["step"] for h in history]
    fig = go.Figure(go.Scatter(x=steps, y=[h["loss"] for h in history], mode="lines", name="loss"))
    fig.update_layout(title=title, xaxis_title="optimizer step", yaxis_title="cross-entropy (nats/token)",
                      template="plotly_white", height=360, width=720)
    return fig


def rates_with_ci(rates: dict[str, dict], title: str) -> go.Figure:
    """Bars of rates (``stats.rate`` dicts) with their 95% intervals as error bars."""
    names = list(rates)
    vals = [100 * rates[k]["rate"] for k in names]
    fig = go.Figure(go.Bar(
        x=names, y=vals, text=[f"{v:.1f}%" for v in vals], textposition="outside",
        error_y=dict(type="data", symmetric=False,
                     array=[100 * rates[k]["ci_high"] - v for k, v in zip(names, vals)],
                     arrayminus=[v - 100 * rates[k]["ci_low"] for k, v in zip(names, vals)])))
    fig.update_layout(title=title, yaxis_title="% (95% Wilson CI)", yaxis_range=[0, 100], template="plotly_white",
                      height=380, width=720)
    return fig
