"""Plotly figures for the notebooks: plain data in, a responsive ``go.Figure`` out, legend below the plot."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from rlrf_nb.pairs import pair_lengths, pair_yield
from rlrf_nb.stats import pct, rate

# One colour per model or policy: the results table has up to ten models (M0, M1, M2, three ablations' M2 and the
# four one-round variants), so ten distinct colours, plus two spare (plotly's qualitative "Plotly" set, then grey
# and olive from D3's category10).
PALETTE = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692", "#b6e880", "#ff97ff",
           "#fecb52", "#7f7f7f", "#bcbd22"]
# at the bottom edge of the figure (not of the plot area), so it never sits between the tick labels and the x title
LEGEND_BELOW = {"orientation": "h", "yref": "container", "yanchor": "bottom", "y": 0.01, "xanchor": "left", "x": 0}


def _layout(fig: go.Figure, title: str, height: int, top: int = 70, bottom: int = 120, **kw) -> go.Figure:
    """The shared layout: the title, a white template, a height, no width (responsive), the legend at the bottom
    edge; margins: ``top`` 100 for figures with panel titles (the title does not run into them), ``bottom`` for
    tick labels, the x title and up to two rows of legend."""
    fig.update_layout(title=title, template="plotly_white", height=height, autosize=True,
                      legend=kw.pop("legend", LEGEND_BELOW), margin={"t": top, "r": 20, "b": bottom}, **kw)
    return fig


def _ci_bars(rates: list[dict], **kw) -> dict:
    """Asymmetric error bars (``error_y``) of ``stats.rate`` dicts drawn in percent: their 95% intervals."""
    vals = [100 * r["rate"] for r in rates]
    return {"type": "data", "symmetric": False, **kw, "array": [100 * r["ci_high"] - v for r, v in zip(rates, vals)],
            "arrayminus": [v - 100 * r["ci_low"] for r, v in zip(rates, vals)]}


def loss_curve(history: list[dict], title: str = "M0 pre-training loss", smooth: int = 10) -> go.Figure:
    """Training loss against step, from ``Trainer.state.log_history`` rows; a moving average of ``smooth`` logs shows
    the trend through the saw-tooth that length-grouped batches give.
    """
    steps = [h["step"] for h in history]
    loss = [h["loss"] for h in history]
    avg = [sum(loss[max(0, i - smooth + 1):i + 1]) / len(loss[max(0, i - smooth + 1):i + 1]) for i in range(len(loss))]
    fig = go.Figure([
        go.Scatter(x=steps, y=loss, mode="lines", name="logged loss", line={"width": 1, "color": "#bbb"}),
        go.Scatter(x=steps, y=avg, mode="lines", name=f"moving average ({smooth} logs)", line={"width": 3}),
    ])
    return _layout(fig, title, 400, xaxis_title="optimizer step", yaxis_title="cross-entropy (nats/token, log scale)",
                   yaxis_type="log")


def rates_with_ci(rates: dict[str, dict], title: str, xaxis_title: str = "model") -> go.Figure:
    """Bars of rates (``stats.rate`` dicts) with their 95% intervals as error bars; values in the labels."""
    names = list(rates)
    vals = [100 * rates[k]["rate"] for k in names]
    labels = [f"{k}<br><b>{v:.1f}%</b> (n={rates[k]['n']})" for k, v in zip(names, vals)]
    fig = go.Figure(go.Bar(x=labels, y=vals, name="rate", showlegend=False, marker_color=PALETTE[0],
                           error_y=_ci_bars([rates[k] for k in names])))
    return _layout(fig, title, 420, xaxis_title=xaxis_title, yaxis_title="% (bars: 95% Wilson CI)",
                   yaxis_range=[0, 100])


def score_distribution(frame, title: str) -> go.Figure:
    """Counts of each rubric level per aspect (one panel each) and task (colours), from ``feedback_frame``
    rows; parse failures are left out (see the parse table). Built from plain lists: plotly.js mis-scales
    faceted axes over the typed arrays that plotly.py makes from numpy columns."""
    ok = frame[frame["parse_ok"]]
    aspects = sorted(ok["aspect"].unique())
    tasks = sorted(ok["task"].unique())
    fig = make_subplots(rows=1, cols=max(1, len(aspects)), subplot_titles=[a.replace("_", " ") for a in aspects],
                        shared_yaxes=True)
    shown = set()
    for col, aspect in enumerate(aspects, start=1):
        for i, task in enumerate(tasks):
            sel = ok[(ok["aspect"] == aspect) & (ok["task"] == task)]["score"]
            if sel.empty:
                continue
            levels = list(range(1, 6))
            fig.add_bar(x=levels, y=[int((sel == k).sum()) for k in levels], name=task, legendgroup=task,
                        marker_color=PALETTE[i % len(PALETTE)], showlegend=task not in shown, row=1, col=col)
            shown.add(task)  # each task once in the legend, wherever it first appears
    fig.update_xaxes(dtick=1, range=[0.5, 5.5], title_text="score")
    fig.update_yaxes(title_text="count", col=1)
    return _layout(fig, title, 460, top=100, bottom=110, barmode="group",
                   legend={**LEGEND_BELOW, "title": {"text": "task"}})


def judge_calibration(pairs: dict[str, list[tuple[int, int]]], judge: str = "learned judge",
                      teacher: str = "verifier", title: str | None = None) -> go.Figure:
    """One heatmap per aspect: how many responses got each (teacher score, judge score), from
    :func:`rlrf_nb.judge_model.score_pairs`. A calibrated judge puts its mass on the diagonal; a judge above it is
    lenient, below it strict. Each row is the share of the teacher's score-s responses, so rare scores show too."""
    names = list(pairs)
    fig = make_subplots(rows=1, cols=max(1, len(names)), subplot_titles=[n.replace("_", " ") for n in names],
                        horizontal_spacing=0.06)
    levels = [1, 2, 3, 4, 5]
    for c, name in enumerate(names, start=1):
        counts = [[sum(1 for t, j in pairs[name] if t == tv and j == jv) for tv in levels] for jv in levels]
        totals = [sum(counts[jv][ti] for jv in range(5)) or 1 for ti in range(5)]
        share = [[counts[jv][ti] / totals[ti] for ti in range(5)] for jv in range(5)]
        fig.add_trace(go.Heatmap(z=share, x=levels, y=levels, zmin=0, zmax=1, colorscale="Blues",
                                 showscale=c == len(names), text=counts, texttemplate="%{text}",
                                 hovertemplate=f"{teacher} %{{x}}, {judge} %{{y}}: %{{text}} responses<extra></extra>"),
                      row=1, col=c)
        fig.update_xaxes(title_text=f"{teacher} score", tickvals=levels, row=1, col=c)
        fig.update_yaxes(title_text=f"{judge} score" if c == 1 else None, tickvals=levels, row=1, col=c)
    return _layout(fig, title or f"Calibration: {judge} against {teacher} (count; colour = share of the {teacher}'s "
                                 f"score)", 380, top=100, bottom=60)


def reward_distribution(pool: list, title: str = "Reward of samples and refinements") -> go.Figure:
    """Share of candidates at each reward value: all samples, the drafts that were refined (the top-k of the
    prompts without a perfect sample, the fair baseline) and their refinements. Parse failures are left out
    and counted in the legend. Rewards take few values (means of rubric levels), so bars, not a density."""
    parents = {c.parent_id for c in pool if c.kind == "refinement"}
    groups = {"samples": [c for c in pool if c.kind == "sample"],
              "refined drafts": [c for c in pool if c.candidate_id in parents],
              "refinements": [c for c in pool if c.kind == "refinement"]}
    fig = go.Figure()
    for i, (name, cands) in enumerate(groups.items()):
        vals = [round(c.reward, 3) for c in cands if c.reward is not None]
        if not vals:
            continue
        levels = sorted(set(vals))
        fig.add_bar(x=levels, y=[100 * vals.count(v) / len(vals) for v in levels], marker_color=PALETTE[i],
                    name=f"{name} (n={len(vals)}, mean {sum(vals) / len(vals):.2f}, "
                         f"{len(cands) - len(vals)} parse failures)")
    return _layout(fig, title, 440, barmode="group", xaxis_title="scalar reward (mean normalised aspect score)",
                   yaxis_title="% of candidates in the group")


def refinement_success(frame, title: str = "Does a refinement beat its draft? Per aspect") -> go.Figure:
    """Per aspect, the share of refinements that score higher / the same / lower than their draft (stacked),
    with the 95% interval of "higher" and the mean change in the labels; from ``widgets.refinement_frame``.
    Pairs with a parse failure on either side are counted in the label, not scored."""
    aspects = list(dict.fromkeys(frame["aspect"]))
    fig = go.Figure()
    stats = {}
    for a in aspects:
        f = frame[(frame["aspect"] == a) & frame["parsed"]]
        d = [float(x) for x in f["delta"]]
        stats[a] = (rate(sum(x > 0 for x in d), len(d)), sum(x == 0 for x in d), sum(x < 0 for x in d),
                    sum(d) / len(d) if d else float("nan"), int((~frame[frame["aspect"] == a]["parsed"]).sum()))
    labels = [f"{a.replace('_', ' ')}<br>higher {100 * stats[a][0]['rate']:.1f}% [{100 * stats[a][0]['ci_low']:.1f}, "
              f"{100 * stats[a][0]['ci_high']:.1f}]<br>mean Δ {stats[a][3]:+.2f} · n={stats[a][0]['n']}"
              + (f" · {stats[a][4]} unparsed" if stats[a][4] else "") for a in aspects]
    n = [max(1, stats[a][0]["n"]) for a in aspects]
    up = [100 * stats[a][0]["rate"] for a in aspects]
    fig.add_bar(x=labels, y=up, name="higher", marker_color="#2ca02c", error_y=_ci_bars([stats[a][0] for a in aspects]))
    fig.add_bar(x=labels, y=[100 * stats[a][1] / k for a, k in zip(aspects, n)], name="same", marker_color="#bbb")
    fig.add_bar(x=labels, y=[100 * stats[a][2] / k for a, k in zip(aspects, n)], name="lower", marker_color="#d62728")
    return _layout(fig, title, 480, bottom=150, barmode="stack", xaxis_title="aspect",
                   yaxis_title="% of refinements (error bar: 95% CI of higher)", yaxis_range=[0, 100])


def pair_counts_and_margins(pairs_by_policy: dict[str, list[dict]], n_prompts: int,
                            title: str = "Preference pairs per pair policy") -> go.Figure:
    """Left: pairs per policy (right-over-wrong math pairs marked). Right: the histogram of reward margins
    (chosen minus rejected) per policy; a negative margin is a right answer kept over a higher-reward
    wrong one by the verifiable override."""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.45, 0.55], horizontal_spacing=0.12,
                        subplot_titles=(f"pairs from {n_prompts} prompts", "reward margin of the pairs"))
    names = list(pairs_by_policy)
    row = [pair_yield(pairs_by_policy[k], n_prompts)["right_over_wrong"] for k in names]
    total = [len(pairs_by_policy[k]) for k in names]
    # overlaid, not stacked (the margin histograms share the layout's overlay mode): right-over-wrong pairs are
    # a subset of all pairs, drawn on top of them
    # horizontal bars: the policy names are long and stay readable at any width
    fig.add_bar(y=names, x=total, orientation="h", name="all pairs", marker_color="#9aa",
                text=[str(t) for t in total], textposition="outside", cliponaxis=False, row=1, col=1)
    fig.add_bar(y=names, x=row, orientation="h", name="right over wrong (math)", marker_color="#2ca02c", width=0.5,
                text=[str(r) for r in row], textposition="inside", row=1, col=1)
    for i, k in enumerate(names):
        margins = [round(p["margin"], 3) for p in pairs_by_policy[k]]
        if margins:
            fig.add_histogram(x=margins, name=k, marker_color=PALETTE[i % len(PALETTE)], opacity=0.55,
                              histnorm="percent", xbins={"start": -1.0625, "end": 1.0625, "size": 0.125},
                              row=1, col=2)
    _layout(fig, title, 500, top=100, bottom=140, barmode="overlay")
    fig.update_xaxes(title_text="pairs", row=1, col=1)
    fig.update_xaxes(title_text="reward margin (chosen − rejected)", row=1, col=2)
    fig.update_yaxes(title_text="% of the policy's pairs", row=1, col=2)
    fig.update_yaxes(title_text="pair policy", autorange="reversed", row=1, col=1)
    return fig


def length_bias(pairs_by_policy: dict[str, list[dict]], title: str = "Length bias of the pairs") -> go.Figure:
    """Per policy, the words in chosen minus rejected (box) and, in the label, the share of pairs whose chosen
    response is longer with its 95% interval. DPO on pairs where chosen is mostly longer teaches length."""
    fig = go.Figure()
    for i, (k, pairs) in enumerate(pairs_by_policy.items()):
        if not pairs:
            continue
        lb = pair_lengths(pairs)
        fig.add_box(y=lb["diffs"], name=f"{k}<br>chosen longer<br>{pct(lb['chosen_longer'])}",
                    marker_color=PALETTE[i % len(PALETTE)], boxmean=True)
    fig.add_hline(y=0, line_dash="dot", line_color="#888")
    return _layout(fig, title, 460, xaxis_title="pair policy (share of pairs whose chosen is longer, 95% CI)",
                   yaxis_title="words in chosen − words in rejected", showlegend=False)


def budget_curves(cmp: dict, title: str = "What each refinement budget buys") -> go.Figure:
    """Pair yield against refinement budget for prompt orders (``reflection.budget_comparison``), with the
    target (a fraction of the full search's gain) as a dotted line."""
    fig = go.Figure()
    metric = cmp["metric"]
    names = {"low_best": "lowest best sample first", "variance": "most varied rewards first",
             "random": "random order (one shuffle drawn)"}
    for i, (k, curve) in enumerate(cmp["curves"].items()):
        to_target = (f"{cmp[k + '_budget']:.0f} to target" if k != "random" else
                     f"{cmp['random_budget']:.0f} to target, mean of the shuffles")
        fig.add_scatter(x=[p["budget"] for p in curve], y=[p[metric] for p in curve], mode="lines",
                        name=f"{names.get(k, k)}: {to_target}",
                        line={"color": PALETTE[i % len(PALETTE)], "shape": "hv"})
    fig.add_hline(y=cmp["target"], line_dash="dot", line_color="#888",
                  annotation_text=f"{100 * cmp['fraction']:.0f}% of the full gain", annotation_position="top left")
    return _layout(fig, title, 440, xaxis_title="refinement generations spent",
                   yaxis_title=f"{metric.replace('_', ' ')} pairs ({cmp['policy']})")


def training_curves(history: list[dict], title: str = "DPO training") -> go.Figure:
    """TRL's logged DPO metrics against step: loss, reward margin and accuracy, and the chosen/rejected
    log-probs (the ones that show a collapse coming: both falling, chosen far)."""
    rows = [h for h in history if "loss" in h and "train_runtime" not in h and "eval_loss" not in h]
    fig = make_subplots(rows=1, cols=3, subplot_titles=("loss", "reward margin and accuracy",
                                                        "log-prob of the responses (sum over tokens)"))
    steps = [h["step"] for h in rows]
    fig.add_scatter(x=steps, y=[h["loss"] for h in rows], name="loss", row=1, col=1, line={"color": "#333"})
    for key, name, color, col in (("rewards/margins", "reward margin", "#636efa", 2),
                                  ("rewards/accuracies", "reward accuracy", "#00cc96", 2),
                                  ("logps/chosen", "log p(chosen)", "#2ca02c", 3),
                                  ("logps/rejected", "log p(rejected)", "#d62728", 3)):
        if rows and key in rows[0]:
            fig.add_scatter(x=steps, y=[h[key] for h in rows], name=name, row=1, col=col, line={"color": color})
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="DPO loss", col=1)
    fig.update_yaxes(title_text="margin / accuracy", col=2)
    fig.update_yaxes(title_text="log-prob", col=3)
    return _layout(fig, title, 440, top=100)


def round_metrics(rows: list[dict], title: str = "Held-out dev metrics after each RLRF round") -> go.Figure:
    """Dev math accuracy (and bio claim precision when evaluated) per round, with 95% intervals."""
    fig = go.Figure()
    x = [r["policy"] for r in rows]
    series = [("math_accuracy", "math exact match", "#636efa")]
    if rows and "bio_claims_supported" in rows[0]:
        series.append(("bio_claims_supported", "bio claims supported (FactScore-style)", "#ef553b"))
    for key, name, color in series:
        vals = [100 * r[key]["rate"] for r in rows]
        fig.add_scatter(x=x, y=vals, mode="lines+markers+text", name=name, line={"color": color},
                        text=[f"{v:.1f}" for v in vals], textposition="top right",
                        error_y=_ci_bars([r[key] for r in rows]))
    n = rows[0]["math_accuracy"]["n"] if rows else 0
    return _layout(fig, title, 440, xaxis_title="policy after each round", yaxis_range=[0, 100],
                   yaxis_title=f"% (95% Wilson CI; {n} dev math prompts)")


def variant_rounds(variants: dict[str, list[dict]], key: str = "math_accuracy",
                   title: str = "Dev math exact match per round: RLRF and its ablations") -> go.Figure:
    """One line per round-loop variant (``{variant: rows}`` from :func:`rlrf_nb.rounds.run_rounds`'s results),
    ``key``'s rate per round with 95% intervals; M0 is the shared start."""
    fig = go.Figure()
    n = 0
    for i, (variant, rows) in enumerate(variants.items()):
        rows = [r for r in rows if key in r]
        vals = [100 * r[key]["rate"] for r in rows]
        n = rows[0][key]["n"] if rows else n
        fig.add_scatter(x=[r["policy"] for r in rows], y=vals, mode="lines+markers", name=variant,
                        line={"color": PALETTE[i % len(PALETTE)], "dash": "solid" if variant == "rlrf" else "dot",
                              "width": 3 if variant == "rlrf" else 2},
                        error_y=_ci_bars([r[key] for r in rows], width=4))
    return _layout(fig, title, 440, xaxis_title="policy after each round", yaxis_title=f"% (95% Wilson CI; n = {n})",
                   legend={**LEGEND_BELOW, "title": {"text": "variant"}})


def export(fig: go.Figure, directory, name: str) -> dict:
    """Write ``fig`` as standalone HTML (always) and PNG (when plotly's static export, kaleido with a browser, is
    available) into ``directory``; returns the paths written and why a PNG was skipped, if it was."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    html = directory / f"{name}.html"
    fig.write_html(html, include_plotlyjs="cdn")
    out = {"html": str(html), "png": None, "png_skipped": None}
    try:
        fig.write_image(directory / f"{name}.png", width=1000)  # the figure itself has no width (responsive)
        out["png"] = str(directory / f"{name}.png")
    except Exception as e:  # kaleido or its browser missing: say so, keep the HTML
        out["png_skipped"] = f"{type(e).__name__}: {' '.join(str(e).split())[:200] or 'no message'}"
    return out


def aspect_bars(table: dict[str, dict[str, dict]], title: str = "Just-Eval aspects per model") -> go.Figure:
    """Grouped bars: per aspect (x), one bar per model with its 95% interval; ``table[model][aspect]`` is a dict
    with ``mean``, ``ci_low``, ``ci_high`` (aspects a model lacks are skipped)."""
    fig = go.Figure()
    aspects = list(dict.fromkeys(a for m in table.values() for a in m))
    for i, (model, row) in enumerate(table.items()):
        xs = [a for a in aspects if a in row and row[a].get("mean") == row[a].get("mean")]
        ys = [row[a]["mean"] for a in xs]
        fig.add_bar(x=xs, y=ys, name=model, marker_color=PALETTE[i % len(PALETTE)],
                    error_y={"type": "data", "symmetric": False,
                             "array": [row[a]["ci_high"] - y for a, y in zip(xs, ys)],
                             "arrayminus": [y - row[a]["ci_low"] for a, y in zip(xs, ys)]})
    return _layout(fig, title, 520, bottom=170, barmode="group", xaxis_title="Just-Eval aspect",
                   yaxis_title="mean score (1-5; bars: 95% bootstrap CI)", yaxis_range=[0, 5.5],
                   legend={**LEGEND_BELOW, "title": {"text": "model"}})


def shift_by_kind(summary: dict, title: str = "Token distribution shift from M0, by token kind") -> go.Figure:
    """Stacked shares of unshifted / marginal / shifted positions per token kind (``analysis.shift_summary``)."""
    kinds = list(summary["by_kind"])
    fig = go.Figure()
    colors = {"unshifted": "#bbb", "marginal": "#ffa15a", "shifted": "#d62728"}
    for cls in ("unshifted", "marginal", "shifted"):
        vals = [100 * summary["by_kind"][k][cls]["rate"] for k in kinds]
        fig.add_bar(x=[f"{k}<br>n={summary['by_kind'][k][cls]['n']}" for k in kinds], y=vals, name=cls,
                    marker_color=colors[cls], text=[f"{v:.1f}%" for v in vals], textposition="inside")
    return _layout(fig, title, 440, barmode="stack", xaxis_title="token kind",
                   yaxis_title="% of the aligned model's tokens", yaxis_range=[0, 100])
