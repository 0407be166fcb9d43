"""A run as one self-contained HTML page: interactive Pareto plots (plotly, its JS inlined), the
front's per-layer choices as a heatmap, the front and trials tables.

The figures are built here once and shown both in the page and in ``notebooks/choose_model.ipynb``.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..types import plan_from_json
from .report import FRONT_COLUMNS, chance_warning, front_objective, rung_groups, smallest_within

if TYPE_CHECKING:
    from .results import SearchResult

# (column, axis title) of each accuracy plot; latency is measured at batch 1
AXES = (("params", "parameters"), ("flops", "FLOPs (multiply-add = 2)"),
        ("latency_ms", "latency at batch 1 (ms)"))
# the page's trials table: these columns of trials.csv
SHOWN_COLUMNS = ["number", "state", "val_accuracy", "params", "flops", "latency_ms",
                 "params_ratio", "flops_ratio", "duration_s", "error"]


def _plotly() -> Any:
    try:
        import plotly.graph_objects as go
    except ImportError:
        from ..errors import UserError

        raise UserError("interactive plots need plotly: pip install plotly") from None
    return go


def plan_text(plan_json: str, *, sep: str = "<br>") -> str:
    """A plan as one ``layer: method rank`` line per factorized layer (``keep`` left out)."""
    plan = plan_from_json(plan_json) if plan_json else {}
    lines = [f"{name}: {c}" for name, c in sorted(plan.items())
             if c.method != "keep"]
    return sep.join(lines) or "dense (nothing factorized)"


def _hover(frame: pd.DataFrame) -> list[str]:
    return [f"trial {int(r.number)}<br>val {r.val_accuracy:.4f}, params ratio "
            f"{r.params_ratio:.2f}x<br>{plan_text(str(r.plan))}" for r in frame.itertuples()]


def pareto_figure(trials: pd.DataFrame, front: pd.DataFrame, baseline: Mapping[str, Any], *,
                  objective: str = "params") -> Any:
    """Validation accuracy against params, FLOPs and latency: all trials, the front's points
    (joined by a line only in the panel of the ``objective`` it is the front of: in the other
    panels its points are not in cost order), the baseline as a red star; hovering a point
    shows its trial number and plan."""
    go = _plotly()
    from plotly.subplots import make_subplots

    done = trials[trials["state"] == "complete"] if len(trials) else trials
    fig = make_subplots(rows=1, cols=len(AXES), shared_yaxes=True,
                        horizontal_spacing=0.04, subplot_titles=[t for _, t in AXES])
    groups = rung_groups(done) if len(done) else [("trials", done)]
    for i, (col, _) in enumerate(AXES, start=1):
        first = i == 1
        for j, (name, group) in enumerate(groups):
            grey = int(200 - 110 * j / max(1, len(groups) - 1)) if len(groups) > 1 else 160
            fig.add_trace(go.Scatter(
                x=group[col], y=group["val_accuracy"], mode="markers", name=name,
                legendgroup=f"t{j}", showlegend=first,
                marker={"color": f"rgb({grey},{grey},{grey})", "size": 7,
                        "symbol": ["circle", "square", "diamond", "triangle-up"][j % 4]},
                hovertext=_hover(group), hoverinfo="text"), row=1, col=i)
        f = front.sort_values(col) if len(front) else front
        fig.add_trace(go.Scatter(
            x=f[col], y=f["val_accuracy"], mode="lines+markers" if col == objective else "markers",
            name="Pareto front",
            legendgroup="f", showlegend=first, marker={"color": "#1f77b4", "size": 9},
            hovertext=_hover(f), hoverinfo="text"), row=1, col=i)
        if baseline.get(col) is not None and baseline.get("val_accuracy") is not None:
            fig.add_trace(go.Scatter(
                x=[baseline[col]], y=[baseline["val_accuracy"]], mode="markers", name="baseline",
                legendgroup="b", showlegend=first, marker={"color": "#d62728", "size": 16,
                                                            "symbol": "star"},
                hovertext=[f"baseline (dense)<br>val {baseline['val_accuracy']:.4f}"],
                hoverinfo="text"), row=1, col=i)
        fig.update_xaxes(type="log", row=1, col=i)
    fig.update_yaxes(title_text="validation accuracy", row=1, col=1)
    fig.update_layout(height=430, margin={"t": 40, "b": 40, "l": 60, "r": 20},
                      legend={"orientation": "h", "y": -0.15}, template="plotly_white")
    return fig


def plan_matrix(front: pd.DataFrame) -> tuple[list[str], list[str], list[list[str]]]:
    """The front's choices as (trial labels, layer names, ``method rank`` per cell), smallest
    model first; a layer a plan does not name is ``keep``."""
    rows = front.sort_values("params") if len(front) else front
    plans = [plan_from_json(str(p)) for p in rows["plan"]] if len(rows) else []
    layers = sorted({name for plan in plans for name in plan})
    cells = [[str(plan[n]) if n in plan and plan[n].method != "keep"
              else "keep" for n in layers] for plan in plans]
    labels = [f"trial {int(n)}" for n in rows["number"]] if len(rows) else []
    return labels, layers, cells


def plan_heatmap(front: pd.DataFrame) -> Any:
    """One row per front trial (smallest first), one column per layer: colour is the method,
    the cell text its rank."""
    go = _plotly()
    from ..decompose import list_methods

    labels, layers, cells = plan_matrix(front)
    methods = list_methods()
    z = [[methods.index(c.split(" ")[0]) for c in row] for row in cells]
    palette = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d",
               "#666666"]
    scale = []
    for i, _ in enumerate(methods):
        color = "#f2f2f2" if methods[i] == "keep" else palette[i % len(palette)]
        scale += [[i / len(methods), color], [(i + 1) / len(methods), color]]
    fig = go.Figure(go.Heatmap(
        z=z, x=layers, y=labels, text=cells, texttemplate="%{text}", zmin=-0.5,
        zmax=len(methods) - 0.5, colorscale=scale, showscale=False, xgap=2, ygap=2,
        hovertemplate="%{y}<br>%{x}: %{text}<extra></extra>"))
    fig.update_layout(height=max(220, 40 * len(labels) + 120), template="plotly_white",
                      margin={"t": 30, "b": 40, "l": 80, "r": 20}, yaxis={"autorange": "reversed"},
                      title="method and rank per layer, Pareto front (smallest first)")
    return fig


def _table(frame: pd.DataFrame, columns: list[str]) -> str:
    cols = [c for c in columns if c in frame]
    if not len(frame):
        return "<p>(no trial yet)</p>"
    shown = frame[cols].copy()
    if "plan" in frame:
        shown["plan"] = [plan_text(str(p), sep="; ") for p in frame["plan"]]
    return shown.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="",
                         classes="table", border=0, escape=True)


_STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1250px;color:#222}
table.table{border-collapse:collapse;font-size:13px;margin-bottom:2em}
.table td,.table th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}
.table td:last-child{text-align:left}h2{margin-top:1.6em}"""


def _summary(result: SearchResult, front: pd.DataFrame) -> str:
    b = result.baseline
    parts = [f"baseline: val {b.get('val_accuracy', float('nan')):.4f}, test "
             f"{b.get('test_accuracy') or float('nan'):.4f}, {b.get('params', 0):,} params, "
             f"{b.get('flops', 0) / 1e6:.2f} MFLOPs, {b.get('latency_ms', float('nan')):.2f} ms"]
    if b.at_chance():
        parts.append(f"WARNING: {chance_warning(b)}")
    for drop in (0.01, 0.02) if not b.at_chance() else ():
        best = smallest_within(front, float(b.get("val_accuracy", 0.0)), drop) if len(front) else None
        parts.append(f"smallest within {drop * 100:.0f} pp: " + (
            "none" if best is None else f"trial {int(best['number'])} "
            f"({best['params_ratio']:.2f}x params, val {best['val_accuracy']:.4f})"))
    return "<ul>" + "".join(f"<li>{html.escape(p)}</li>" for p in parts) + "</ul>"


def html_page(result: SearchResult) -> str:
    """The whole page as a string; plotly's JS is inlined once, so it opens offline."""
    front, trials, b = result.pareto(), result.trials, result.baseline
    title = f"autorank run {result.path.name}: {b.get('model', '')} on {b.get('dataset', '')}"
    plots = pareto_figure(trials, front, b, objective=front_objective(result.config.space)
                          ).to_html(full_html=False, include_plotlyjs=True)
    heat = plan_heatmap(front).to_html(full_html=False, include_plotlyjs=False) if len(front) else ""
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>", _summary(result, front),
        "<h2>Accuracy against cost</h2>", plots, heat,
        f"<h2>Pareto front ({len(front)} trials)</h2>",
        _table(front, [*FRONT_COLUMNS, "flops", "plan"]),
        f"<h2>All trials ({len(trials)})</h2>", _table(trials, [*SHOWN_COLUMNS, "plan"]),
        f"<script type=\"application/json\" id=\"front-trials\">"
        f"{json.dumps([int(n) for n in front['number']] if len(front) else [])}</script>",
        "</body></html>"])


def write_html(result: SearchResult, path: str | os.PathLike[str] | None = None) -> Path:
    """Write :func:`html_page` to ``path`` (default ``report.html`` in the run directory)."""
    from .._io import atomic_write, check_writable
    from ..errors import UserError

    target = Path(path) if path else result.path / "report.html"
    check_writable(target.parent, "--html")
    page = html_page(result)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, page)
    except OSError as err:
        raise UserError(f"--html {str(target)!r} cannot be written: {err.strerror or err}") from err
    return target
