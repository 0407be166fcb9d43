"""Reading a run: the front as a table, the smallest model within an accuracy drop, the plot."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import SpaceConfig, objective_metrics
from ..errors import UserError
from ..types import Baseline
from .results import SearchResult, load_run
from .rundir import RunDir
from .rungs import open_rung_study
from .storage import open_storage, run_storage
from .study import fail_stale
from .table import trials_frame, write_frame

log = logging.getLogger(__name__)

FRONT_COLUMNS = ["number", "val_accuracy", "test_accuracy", "params", "params_ratio", "flops_ratio",
                 "latency_ms"]


def smallest_within(front: pd.DataFrame, baseline_accuracy: float, drop: float,
                    *, column: str = "val_accuracy", size: str = "params") -> pd.Series | None:
    """The front row with the fewest ``size`` whose ``column`` is within ``drop`` of the baseline.

    ``drop`` is in accuracy units (0.01 = 1 percentage point).
    """
    ok = front[front[column] >= baseline_accuracy - drop - 1e-12]
    if ok.empty:
        return None
    return ok.sort_values(size).iloc[0]


def front_text(front: pd.DataFrame, baseline: Mapping[str, Any]) -> str:
    """The front as an aligned table, then the smallest models within 1 and 2 pp of the baseline."""
    cols = [c for c in FRONT_COLUMNS if c in front]
    lines = [
        f"baseline: val {baseline.get('val_accuracy', float('nan')):.4f}, test "
        f"{baseline.get('test_accuracy') or float('nan'):.4f}, {baseline.get('params', 0):,} "
        f"params, {baseline.get('flops', 0) / 1e6:.1f} MFLOPs (multiply-add = 2), "
        f"{baseline.get('latency_ms', float('nan')):.2f} ms at batch 1",
        f"Pareto front ({len(front)} trials{_steps_note(front)}, judged on the "
        f"{baseline.get('val_source', '?')}-carved validation split):",
        front[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}") if len(front)
        else "  (no completed trial yet)",
    ]
    record = Baseline.from_json(baseline)
    if record.at_chance():
        lines.append(f"WARNING: {chance_warning(record)}")
    for drop in (0.01, 0.02):
        if record.at_chance():
            break
        best = smallest_within(front, float(baseline.get("val_accuracy", 0.0)), drop) \
            if len(front) else None
        if best is None:
            lines.append(f"within {drop * 100:.0f} pp of the baseline: no trial")
        else:
            lines.append(
                f"within {drop * 100:.0f} pp of the baseline: trial {int(best['number'])}, "
                f"params ratio {best['params_ratio']:.2f}x, FLOPs ratio {best['flops_ratio']:.2f}x "
                f"(dense / factorized), val {best['val_accuracy']:.4f}"
                + (f", test {best['test_accuracy']:.4f}" if "test_accuracy" in best else ""))
    return "\n".join(lines)


def chance_warning(baseline: Baseline) -> str:
    """The line that says a baseline learned nothing, and what follows."""
    return (f"the baseline is at chance: val {baseline.val_accuracy:.4f} against "
            f"{1 / baseline.num_classes:.4f} for guessing among {baseline.num_classes} classes; "
            "accuracy drops and ratios against it mean nothing (train it longer, or give a "
            "trained --checkpoint)")


def front_objective(space: SpaceConfig) -> str:
    """The trials-table column the front is drawn against: the first objective after accuracy."""
    return (objective_metrics(space)[0][1:2] or ["params"])[0]


def _steps_note(front: pd.DataFrame) -> str:
    """", at N fine-tune steps" when the front's trials were judged after the same steps."""
    if "steps" not in front or front["steps"].isna().all():
        return ""
    steps = sorted({int(v) for v in front["steps"].dropna()})
    return f" at {steps[0]} fine-tune steps" if len(steps) == 1 else ""


def rung_groups(done: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Completed trials by the rung their accuracy is from, lowest first, labelled with the
    rung's steps; one group "trials" when the search had one rung."""
    if "rung" not in done or done["rung"].fillna(0).max() == 0:
        return [("trials", done)]
    out = []
    for rung, group in done.groupby(done["rung"].fillna(0).astype(int)):
        steps = group["steps"].dropna()
        out.append((f"rung {rung}" + (f" ({int(steps.iloc[0])} steps)" if len(steps) else ""), group))
    return out


def plot_front(trials: pd.DataFrame, front: pd.DataFrame, baseline: Mapping[str, Any],
               path: Path, *, objective: str = "params") -> None:
    """Accuracy against params, FLOPs and latency at batch 1: trials grey (by rung, in a
    multi-fidelity search), the front's points in blue, joined only in the panel of the
    objective it is the front of, the baseline marked; written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed: a file for terminals and READMEs
    import matplotlib.pyplot as plt

    done = trials[trials["state"] == "complete"]
    # latency: the front's models, timed at the end (trials are not timed: shared cores)
    panels = [("params", "parameters"), ("flops", "FLOPs"), ("latency_ms", "latency at batch 1 (ms)")]
    panels = [(col, label) for col, label in panels
              if any(col in f and f[col].notna().any() for f in (done, front))]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2),
                             constrained_layout=True, squeeze=False)
    groups = rung_groups(done)
    for ax, (col, label) in zip(axes[0], panels, strict=True):
        for i, (name, group) in enumerate(groups):
            shade = str(0.8 - 0.5 * i / max(1, len(groups) - 1)) if len(groups) > 1 else "0.65"
            ax.scatter(group[col], group["val_accuracy"], s=14, c=shade, label=name,
                       marker="osD^v"[i % 5])
        if len(front):
            f = front.sort_values(col)
            style = "o-" if col == objective else "o"
            ax.plot(f[col], f["val_accuracy"], style, c="tab:blue", ms=5,
                    label=f"Pareto front (accuracy vs {objective})")
        if baseline.get(col):
            ax.scatter([baseline[col]], [baseline["val_accuracy"]], marker="*", s=160,
                       c="tab:red", label="baseline", zorder=3)
        ax.set_xscale("log")
        ax.set_xlabel(label + (" (multiply-add = 2)" if col == "flops" else ""))
        ax.set_ylabel("validation accuracy")
        ax.grid(alpha=0.3)
    axes[0][0].legend(loc="lower right")
    fig.suptitle(f"{baseline.get('model', '')} on {baseline.get('dataset', '')}")
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def sync_run(path: str | os.PathLike[str], *, storage: str | None = None) -> SearchResult:
    """Read a run directory after rewriting its ``trials.csv`` from the study, which other
    drivers of the same study may have advanced; trials whose driver stopped are failed first.

    Args:
        path: the run directory.
        storage: the study's storage URL (``--storage``): needed when the saved one hides a
            password. Without it, a study that cannot be reached leaves the files as they are.

    Raises:
        UserError: no run there, or ``storage`` is another storage or cannot be opened.
    """
    import optuna

    result = load_run(path)
    cfg = result.config
    try:
        url = run_storage(cfg.storage, storage)
        if url is None or (url.startswith("sqlite:///") and not Path(url[10:]).exists()):
            return result  # no study to read (and opening it would create an empty one)
        opened = open_storage(url, heartbeat_s=cfg.heartbeat_s)
        study = optuna.load_study(study_name=cfg.study_name, storage=opened)
        fidelity = cfg.space.fidelity
        rung_study = (open_rung_study(opened, cfg.study_name)
                      if fidelity is not None and fidelity.top > 0 else None)
    except (UserError, KeyError) as err:
        if storage is not None:
            raise UserError(str(err).strip('"')) from err
        log.warning("the study was not read (%s): the run directory's own tables are shown", err)
        return result
    for each in (study, rung_study):
        if each is not None:
            fail_stale(each)
    write_frame(RunDir(result.path).trials, trials_frame(study, rung_study))
    return load_run(result.path)
