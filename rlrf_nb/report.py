"""``runs/<name>/report.html``: a run as a page to send (what ``rlrf-nb run`` writes after the last stage).

A header (run, recipe, parameters, dates, commit, which M0, with a plain warning for a seconds-long smoke model, the
diagnosis and the paper's claims when present), then the executed notebooks' narrative and outputs without code,
injected parameters, progress bars or stderr; Plotly is embedded once, so the page opens offline.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from rlrf_nb.readings import claims
from rlrf_nb.stats import signed

# A retrained M0 that trained for less than this is a smoke-test model: the committed tiny-world M0 trained for
# minutes (README: "The tiny world"), the smoke recipe's trains in seconds and never writes a fully right solution.
UNTRAINED_SECONDS = 60.0


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def m0_used(run_dir: Path, results: dict) -> list[dict]:
    """The M0s this run used: the one notebook 00 measured (``results["m0"]``) and every M0 retrained into
    ``checkpoints/M0-*`` (the recipe's ``m0.retrain``), each ``{"path", "source", "train_seconds", "n_params"}``."""
    out = []
    m0 = results.get("m0")
    if m0:
        out.append({k: m0.get(k) for k in ("path", "source", "train_seconds", "n_params")})
    for d in sorted((run_dir / "checkpoints").glob("M0-*")):
        if m0 and str(m0.get("path", "")).endswith(d.name):
            continue
        out.append({"path": f"{run_dir.name}/{d.relative_to(run_dir)}", "source": "retrained by this run",
                    "train_seconds": _read(d / "COMPLETE.json").get("seconds"), "n_params": None})
    return out


def untrained_warning(m0s: list[dict]) -> str | None:
    """A plain sentence when any M0 the run used trained for under :data:`UNTRAINED_SECONDS` (a smoke model)."""
    m = next((m for m in m0s if m["train_seconds"] is not None and m["train_seconds"] < UNTRAINED_SECONDS), None)
    if m is None:
        return None
    return (f"**This run's M0 is untrained.** `{m['path']}` was trained for {m['train_seconds']:.0f} s (a smoke "
            f"recipe's seconds-long model), so the numbers below only show that the pipeline runs end to end; none "
            "of them says anything about RLRF. For results, run `recipes/tiny-v2-short.yaml` (the committed, fully "
            "trained M0) or a real model.")


def _span(stages: dict) -> str:
    """``"2026-11-28 12:56 to 12:58 UTC"`` from ``stages.json``'s start and finish times (epoch seconds)."""
    starts = [v["started"] for v in stages.values() if v.get("started")]
    ends = [v["finished"] for v in stages.values() if v.get("finished")]
    if not starts or not ends:
        return ""
    a, b = (datetime.fromtimestamp(t, UTC) for t in (min(starts), max(ends)))
    return f"{a:%Y-%m-%d %H:%M} to {b:%Y-%m-%d %H:%M} UTC"


def _md_table(header: list[str], rows: list[list]) -> str:
    cell = lambda x: str(x).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(cell(x) for x in r) + " |" for r in rows])


def diagnose_section(results: dict) -> str:
    """The organism's properties from ``results["diagnose"]``: its ``verdicts`` rows (property, value, bar, holds) and
    its ``headline`` numbers; a sentence saying they are absent otherwise."""
    d = results.get("diagnose")
    if not d:
        return ("**The organism's properties are not measured in this run**: `results.json` has no `diagnose` entry "
                "(chance level, headroom, critique vs resampling, context fit). Read any null result below with that "
                "in mind.")
    parts = []
    if d.get("verdicts"):
        parts.append(_md_table(["property", "measured", "target", "holds"],
                               [[v["property"], f"{v['value']:.3f}", v["bar"], "yes" if v["holds"] else "**no**"]
                                for v in d["verdicts"]]))
    if d.get("headline"):
        parts.append(_md_table(["headline number", "value"], [[k, f"{v:.3f}"] for k, v in d["headline"].items()]))
    return "\n\n".join(parts) or "`results.json` has a `diagnose` entry without `verdicts` or `headline` rows."


def claims_section(results: dict) -> str:
    """The paper's claims in miniature (notebook 05's ``benchmarks.claims``), or why there are none."""
    rows = results.get("benchmarks", {}).get("claims")
    if rows is None:
        return "**No claims tested**: notebook 05 (benchmarks) is not part of this run."
    if not rows:
        return claims([])

    table = _md_table(["claim", "difference", "95% CI", "bar", "verdict"],
                      [[c["claim"], signed(c.get("diff")), f"[{signed(c.get('ci_low'))}, {signed(c.get('ci_high'))}]",
                        "" if c.get("bar") is None else f"{c['bar']:+.2f}", f"**{c['verdict']}**"] for c in rows])
    return table + "\n\n" + claims(rows)


def header_markdown(run_dir: Path, now: datetime | None = None) -> tuple[str, str]:
    """``(title, markdown)`` of the report's header for ``run_dir``."""
    results, run = _read(run_dir / "results.json"), _read(run_dir / "run.json")
    stages = _read(run_dir / "stages.json")
    info = results.get("run", {})
    name = info.get("name") or run_dir.name
    recipe = info.get("recipe", "?")
    sha = run.get("git_sha") or "unknown"
    title = f"rlrf_nb report: {name} ({Path(recipe).name})"
    now = now or datetime.now(UTC)
    rows = [["run", f"`{name}` ({run_dir})"], ["recipe", f"`{recipe}`"],
            ["overrides / parameters", f"`{info.get('overrides') or {}}` / `{info.get('params') or {}}`"],
            ["stages ran", _span(stages) or f"last at {run.get('created_utc', '?')}"],
            ["report written", now.isoformat(timespec="seconds")],
            ["git commit (last stage)", f"`{sha}`" + (" (with uncommitted changes)" if run.get("git_dirty") else "")],
            ["seed", run.get("seed", "?")],
            ["stages", ", ".join(f"{k[:2]} {v.get('status')} ({v.get('seconds', 0):.0f} s)"
                                 for k, v in stages.items()) or "none recorded"]]
    m0s = m0_used(run_dir, results)
    for m in m0s:
        secs = "?" if m["train_seconds"] is None else f"{m['train_seconds']:.0f} s of training"
        params = f", {m['n_params'] / 1e6:.2f}M parameters" if m["n_params"] else ""
        rows.append(["M0", f"`{m['path']}` ({m['source']}; {secs}{params})"])
    if len(m0s) > 1:
        rows.append(["note", "notebook 00 measured a different M0 from the one retrained for the later stages"])
    parts = [f"# {title}", _md_table(["", ""], rows)]
    warning = untrained_warning(m0s)
    if warning:
        parts.insert(1, f"<div style='border:2px solid #b00;padding:8px;background:#fee'>\n\n{warning}\n\n</div>")
    parts += ["## The organism", diagnose_section(results), "## The paper's claims in miniature",
              claims_section(results), "## The notebooks",
              "Below: each notebook of the run as it executed, narrative and outputs, without code."]
    return title, "\n\n".join(parts)


def _keep(output: dict) -> bool:
    """Outputs a reader needs: not stderr (warnings, kernel chatter), not progress-bar widgets."""
    if output.get("output_type") == "stream":
        return output.get("name") != "stderr"
    return "application/vnd.jupyter.widget-view+json" not in output.get("data", {})


def report_notebook(run_dir: Path, now: datetime | None = None):
    """The report as one notebook: the header cell, then every executed stage notebook's cells (injected parameters
    and the parameters cell dropped, outputs filtered by :func:`_keep`, plotly figures given an HTML form)."""
    import nbformat
    import plotly.io as pio

    title, header = header_markdown(run_dir, now)
    book = nbformat.v4.new_notebook()
    book.metadata["title"] = title
    book.cells.append(nbformat.v4.new_markdown_cell(header))
    first = True
    for path in sorted(run_dir.glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            tags = cell.get("metadata", {}).get("tags", [])
            if "injected-parameters" in tags or "parameters" in tags:
                continue
            if cell.cell_type == "code":
                cell.outputs = [o for o in cell.get("outputs", []) if _keep(o)]
                for output in cell.outputs:  # plotly's JSON has no HTML form for nbconvert: give it one
                    data = output.get("data", {})
                    fig = data.get("application/vnd.plotly.v1+json")
                    if fig and "text/html" not in data:
                        data["text/html"] = pio.to_html(fig, include_plotlyjs=first, full_html=False)
                        first = False
            book.cells.append(cell)
    return book


def write_report(run_dir: Path, now: datetime | None = None) -> Path | None:
    """Write ``run_dir/report.html`` (None when the run has no executed notebook yet)."""
    from nbconvert import HTMLExporter

    run_dir = Path(run_dir)
    if not any(run_dir.glob("[0-9][0-9]_*.ipynb")):
        return None
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(report_notebook(run_dir, now))
    out = run_dir / "report.html"
    out.write_text(body, encoding="utf-8")
    return out
