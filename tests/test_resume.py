"""``autorank search --resume``: the run's saved flags are the base, flags given again override
them (a larger budget extends the run), and flags that change what trials compute are refused.
A search without ``--checkpoint`` stopped while training its baseline goes on from the last
epoch, in the same run directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from autorank.cli import main
from autorank.config import make_config, save_config
from autorank.errors import UserError
from autorank.sweep.rundir import RunDir, resume_config


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _finished(out: Path) -> int:
    trials = pd.read_csv(out / "trials.csv")
    return int(trials["state"].isin(["complete", "failed"]).sum())


def _saved_run(tmp_path: Path, **flags: object) -> Path:
    """A run directory holding only its config.yaml, as a search saves it."""
    out = tmp_path / "run"
    out.mkdir(parents=True)
    options: dict[str, object] = dict(space="tiny", model="tiny_cnn", dataset="digits",
                                      budget=7, runner="local", seed=3, finetune_steps=20,
                                      out=str(out), storage=RunDir(out).default_storage())
    save_config(make_config(**{**options, **flags}), out / "config.yaml")
    return out


def test_resume_config_keeps_the_saved_flags(tmp_path: Path) -> None:
    out = _saved_run(tmp_path, parallel=2)
    cfg = resume_config({"out": str(out)})
    assert (cfg.budget, cfg.runner, cfg.seed, cfg.parallel) == (7, "local", 3, 2)
    assert cfg.space.finetune.steps == 20 and cfg.space_name == "tiny"
    more = resume_config({"out": str(out), "budget": 30, "runner": "ray", "model": "tiny_cnn",
                          "space": "tiny", "finetune_steps": 20, "objectives": ["params"]})
    assert (more.budget, more.runner, more.seed) == (30, "ray", 3)
    rungs = _saved_run(tmp_path / "rungs", finetune_steps=None, min_steps=10, max_steps=30)
    same = resume_config({"out": str(rungs), "space": "tiny", "min_steps": 10, "max_steps": 30,
                          "eta": 3, "budget": 9})
    assert same.budget == 9 and same.space.fidelity is not None
    with pytest.raises(UserError, match="--max-steps 90 differs from the run's --min-steps 10 "
                                        "--max-steps 30 --eta 3"):
        resume_config({"out": str(rungs), "space": "tiny", "max_steps": 90})


@pytest.mark.parametrize(("flag", "value", "says"), [
    ("model", "resnet20", "--model resnet20 differs from the run's tiny_cnn"),
    ("dataset", "cifar10", "--dataset cifar10 differs from the run's digits"),
    ("seed", 4, "--seed 4 differs from the run's 3"),
    ("checkpoint", "/other.pt", "--checkpoint /other.pt differs from the run's None"),
    ("baseline_epochs", 2, "--baseline-epochs 2 differs"),
    ("space", "default", "--space default differs from the run's tiny"),
    ("objectives", ["params", "flops"], "--objectives params,flops differs from the run's params"),
    ("finetune_steps", 5, "--finetune-steps 5 differs from the run's --finetune-steps 20"),
    ("min_steps", 5, "--min-steps 5 differs from the run's --finetune-steps 20"),
])
def test_resume_refuses_flags_that_change_what_trials_compute(
        tmp_path: Path, flag: str, value: object, says: str) -> None:
    out = _saved_run(tmp_path)
    with pytest.raises(UserError, match="start a new run with another --out") as err:
        resume_config({"out": str(out), flag: value})
    assert says in str(err.value) and "\n" not in str(err.value)


def test_resume_needs_out(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["search", "--resume"], capsys)
    assert code == 2 and err.count("\n") == 1 and "--resume needs --out RUN" in err
    _saved_run(tmp_path / "runs")
    code, _, err = run(["search", "--resume"], capsys)
    assert code == 2 and f"the newest here: --out {Path('runs', 'run')}" in err


def test_resume_keeps_the_budget_extends_it_and_refuses_another_model(
        tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code, _, err = run(["search", "--model", "tiny_cnn", "--dataset", "digits", "--space", "tiny",
                        "--checkpoint", str(tiny_checkpoint), "--val-source", "train",
                        "--budget", "2", "--finetune-steps", "5", "--runner", "local",
                        "--out", str(out)], capsys)
    assert code == 0, err
    assert _finished(out) == 2

    code, _, err = run(["search", "--out", str(out), "--resume"], capsys)  # no --budget, no --runner
    assert code == 0, err
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["budget"], saved["runner"]) == (2, "local") and _finished(out) == 2

    code, _, err = run(["search", "--out", str(out), "--resume", "--budget", "3"], capsys)
    assert code == 0, err
    assert _finished(out) == 3 and yaml.safe_load((out / "config.yaml").read_text())["budget"] == 3

    before = (out / "config.yaml").read_text()
    code, _, err = run(["search", "--out", str(out), "--resume", "--model", "resnet20"], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "--model resnet20 differs from the run's tiny_cnn" in err
    assert (out / "config.yaml").read_text() == before and _finished(out) == 3


def test_a_search_stopped_in_its_baseline_goes_on_from_the_last_epoch_in_the_same_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """No --checkpoint and no --out: a baseline is trained first, with a line that says so
    and one per epoch (stderr is no terminal here: plain lines, no bar); stopped after its
    first epoch, the same command continues that run directory and that baseline."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTORANK_CACHE_DIR", str(tmp_path / "cache"))
    argv = ["search", "--model", "tiny_cnn", "--dataset", "digits", "--space", "tiny",
            "--baseline-epochs", "2", "--budget", "1", "--finetune-steps", "5",
            "--runner", "local"]
    monkeypatch.setenv("AUTORANK_INJECT_FAULT", "raise:baseline-epoch-1")
    with pytest.raises(RuntimeError, match="injected fault at baseline-epoch-1"):
        main(argv)
    err = capsys.readouterr().err
    assert "training a tiny_cnn baseline first (no --checkpoint): 2 epochs on digits" in err
    assert "the trials start after it" in err and "about " in err
    assert "baseline epoch 1/2: loss " in err and "val accuracy 0." in err
    assert "\r" not in err and "step/s" not in err
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and not (runs[0] / "trials.csv").exists()

    monkeypatch.delenv("AUTORANK_INJECT_FAULT")
    code, _, err = run(argv, capsys)
    assert code == 0, err
    assert f"continuing {runs[0]}" in caplog.text
    assert "resuming the tiny_cnn baseline after epoch 1/2: 1 epochs on digits" in err
    assert "baseline epoch 1/2" not in err and "baseline epoch 2/2" in err
    assert list((tmp_path / "runs").iterdir()) == runs and _finished(runs[0]) == 1

    code, _, err = run(argv, capsys)  # a finished run is not continued: a new one
    assert code == 0, err
    assert len(list((tmp_path / "runs").iterdir())) == 2 and "baseline epoch" not in err


@pytest.mark.slow
def test_a_driver_killed_in_its_baseline_resumes_it(tmp_path: Path) -> None:
    """SIGKILL right after the baseline's first epoch is saved; ``--resume`` goes on from it."""
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "autorank", "search", "--model", "tiny_cnn", "--dataset",
            "digits", "--space", "tiny", "--baseline-epochs", "2", "--budget", "1",
            "--finetune-steps", "5", "--runner", "local", "--out", str(out)]
    env = {**os.environ, "AUTORANK_CACHE_DIR": str(tmp_path / "cache")}
    killed = subprocess.run(argv, capture_output=True, text=True, timeout=300,
                            env={**env, "AUTORANK_INJECT_FAULT": "driver:baseline-epoch-1"})
    assert killed.returncode == -9, killed.stderr
    assert "baseline epoch 1/2" in killed.stderr
    resumed = subprocess.run([*argv, "--resume"], capture_output=True, text=True, timeout=300,
                             env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming the tiny_cnn baseline after epoch 1/2" in resumed.stderr
    assert _finished(out) == 1
