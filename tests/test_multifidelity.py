"""The multi-fidelity search: rungs of fine-tune steps, promotions that continue a trial from
its own weights, and a front judged at the top rung."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from autorank.config import Fidelity, make_config
from autorank.errors import UserError
from autorank.sweep import load_run, search
from autorank.sweep.rungs import RUNG_STUDY_SUFFIX, claim_promotion, open_rung_study


def mf_config(out: Path, checkpoint: Path, **flags: object) -> object:
    options: dict[str, object] = dict(
        model="tiny_cnn", dataset="digits", checkpoint=str(checkpoint), val_source="train",
        budget=6, runner="local", out=str(out), seed=0, min_steps=10, max_steps=30, eta=3)
    options.update(flags)
    return make_config(space="tiny", **options)


def rung_trials(out: Path, name: str = "autorank") -> list[optuna.trial.FrozenTrial]:
    storage = f"sqlite:///{out / 'study.db'}"
    return optuna.load_study(study_name=name + RUNG_STUDY_SUFFIX, storage=storage).get_trials()


def check_judged_at_top(out: Path, top_steps: int) -> pd.DataFrame:
    """Every promoted trial's row speaks of its top rung; the front holds top-rung trials only;
    the sampler was told first-rung accuracies; no rung ran twice."""
    trials = pd.read_csv(out / "trials.csv")
    done = trials[trials["state"] == "complete"]
    top = done[done["steps"] == top_steps]
    assert len(top), "no trial reached the top rung"
    assert (top["val_accuracy"] == top["val_accuracy_r1"]).all()
    assert (done[done["rung"] == 0]["val_accuracy"] == done[done["rung"] == 0]["val_accuracy_r0"]).all()
    front = pd.read_csv(out / "pareto.csv")
    assert len(front) and set(front["number"]) <= set(top["number"])
    assert (front["steps"] == top_steps).all()
    assert load_run(out).pareto()["number"].tolist() == front["number"].tolist()
    study = optuna.load_study(study_name="autorank", storage=f"sqlite:///{out / 'study.db'}")
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        row = trials.set_index("number").loc[t.number]
        assert t.values[0] == pytest.approx(row["val_accuracy_r0"])  # one fidelity for the sampler
    finished = [(t.user_attrs["trial"], t.user_attrs["rung"]) for t in rung_trials(out)
                if t.state == TrialState.COMPLETE]
    assert len(finished) == len(set(finished))  # no promotion ran twice
    return trials


def test_flags_make_rungs_and_refuse_mixing() -> None:
    cfg = make_config(space="tiny", min_steps=10, max_steps=90, eta=3)
    assert cfg.space.fidelity == Fidelity(10, 90, 3) and cfg.space.fidelity.rungs == (10, 30, 90)
    assert make_config(space="tiny", finetune_steps=40).space.fidelity is None
    assert make_config(space="cifar_resnet", finetune_steps=40).space.fidelity is None
    with pytest.raises(UserError, match="one rung of N steps"):
        make_config(space="tiny", finetune_steps=40, eta=3)
    with pytest.raises(UserError, match="fidelity needs"):
        make_config(space="tiny", min_steps=50, max_steps=10)
    preset = make_config(space="cifar_resnet").space
    assert preset.fidelity is not None and preset.fidelity.max_steps >= 4 * 391  # >= 4 epochs


def test_ray_search_with_two_rungs_judges_the_front_at_the_top(tmp_path: Path,
                                                                tiny_checkpoint: Path) -> None:
    import ray

    try:
        result = search(mf_config(tmp_path / "run", tiny_checkpoint, runner="ray", parallel=2))
    finally:
        ray.shutdown()
    trials = check_judged_at_top(result.path, top_steps=30)
    assert (trials["state"].isin(["complete", "failed"])).sum() == 6
    assert (trials["rung"] == 1).sum() == 2  # 6 // eta = 2 promoted, none waited for a rung to fill
    for n in pd.read_csv(result.path / "pareto.csv")["number"]:
        assert (result.path / "weights" / f"trial-{n}.pt").exists()


def _cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "autorank", *argv], capture_output=True,
                          text=True, timeout=600, env={**os.environ, **(env or {})})


def test_driver_killed_mid_rung_resumes_without_losing_or_rerunning(tmp_path: Path,
                                                                   tiny_checkpoint: Path) -> None:
    out = tmp_path / "run"
    argv = ["search", "--model", "tiny_cnn", "--dataset", "digits", "--space", "tiny",
            "--checkpoint", str(tiny_checkpoint), "--val-source", "train", "--runner", "local",
            "--budget", "6", "--min-steps", "10", "--max-steps", "30", "--eta", "3",
            "--out", str(out)]
    killed = _cli(*argv, env={"AUTORANK_INJECT_FAULT": "kill:*@1"})  # dies in its first promotion
    assert killed.returncode == 13, killed.stderr[-2000:]
    before = pd.read_csv(out / "trials.csv")
    done_before = before[before["state"] == "complete"]
    assert len(done_before) >= 3 and (before["rung"] == 0).all()
    running = [t for t in rung_trials(out) if t.state == TrialState.RUNNING]
    assert len(running) == 1
    resumed = _cli(*argv, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = check_judged_at_top(out, top_steps=30).set_index("number")
    kept = after.loc[done_before["number"]]
    assert list(kept["val_accuracy_r0"]) == list(done_before["val_accuracy"])  # nothing rerun
    assert list(kept["plan"]) == list(done_before["plan"])
    rungs = rung_trials(out)
    interrupted = [t for t in rungs if t.state == TrialState.FAIL]
    assert len(interrupted) == 1 and interrupted[0].user_attrs["error"].startswith("interrupted")
    again = [t for t in rungs if t.state == TrialState.COMPLETE
             and t.user_attrs["trial"] == running[0].user_attrs["trial"]]
    assert len(again) == 1  # the interrupted promotion ran to its end once, after the resume


def test_two_claims_of_one_promotion_the_earlier_wins(tmp_path: Path) -> None:
    storage = optuna.storages.InMemoryStorage()
    rung_study = open_rung_study(storage, "s")
    first = claim_promotion(rung_study, 3, 1)
    assert first is not None
    assert claim_promotion(rung_study, 3, 1) is None  # the same (trial, rung): not run
    assert claim_promotion(rung_study, 4, 1) is not None
    states = [t.state for t in rung_study.get_trials()]
    assert states == [TrialState.RUNNING, TrialState.PRUNED, TrialState.RUNNING]
