"""A study in a real PostgreSQL server: search, resume and report through it, heartbeats, two
drivers sharing one study, and what optuna-dashboard reads.

The server is ``$AUTORANK_TEST_POSTGRES_URL`` (``.ci/run`` starts one), else a throw-away one
started here by ``.ci/postgres`` when PostgreSQL's binaries are installed. Without either the
tests skip, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

import autorank as ar
from autorank.cli import main
from autorank.errors import UserError
from autorank.sweep import load_run, search
from autorank.sweep.storage import hide_password, open_storage
from autorank.sweep.study import INTERRUPTED, Heartbeat, counts, fail_stale, is_interrupted, quiet_optuna


def study_name() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def search_cmd(checkpoint: Path, out: Path, url: str, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "autorank", "search", "--model", "tiny_cnn", "--dataset",
            "digits", "--space", "tiny", "--checkpoint", str(checkpoint), "--val-source", "train",
            "--out", str(out), "--storage", url, "--study-name", name, *extra]


def started_trials(storage: optuna.storages.BaseStorage, name: str) -> int:
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:  # not created yet
        return 0
    return len(study.get_trials(states=(TrialState.RUNNING, TrialState.COMPLETE)))


def test_a_storage_that_cannot_be_opened_is_one_line(tmp_path: Path, tiny_checkpoint: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql://someone:s3cret@127.0.0.1:1/nothing"
    with pytest.raises(UserError, match=r"cannot open study storage 'postgresql://someone:\*\*\*@"):
        open_storage(url)
    code = main(["search", "--model", "tiny_cnn", "--dataset", "digits", "--space", "tiny",
                 "--checkpoint", str(tiny_checkpoint), "--runner", "local", "--budget", "1",
                 "--out", str(tmp_path / "run"), "--storage", url])
    err = capsys.readouterr().err
    assert code == 2
    assert "cannot open study storage" in err and "s3cret" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "config.yaml").exists()  # nothing written: a retry starts clean


def test_search_resume_report_through_postgres(tmp_path: Path, tiny_checkpoint: Path,
                                               postgres_url: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    name, out = study_name(), tmp_path / "run"
    flags = dict(model="tiny_cnn", dataset="digits", checkpoint=str(tiny_checkpoint),
                 val_source="train", runner="local", out=str(out), storage=postgres_url,
                 study_name=name, finetune_steps=10)
    search(ar.config.make_config(space="tiny", budget=3, **flags))
    saved = load_run(out).config.storage
    assert saved == hide_password(postgres_url) and ":***@" in saved  # which storage; no password
    password = postgres_url.split("@")[0].rsplit(":", 1)[1]
    assert password not in (out / "config.yaml").read_text()
    with pytest.raises(UserError, match="pass --storage with its password"):
        search(ar.config.make_config(space="tiny", budget=4, **{**flags, "storage": None}),
               resume=True)
    result = search(ar.config.make_config(space="tiny", budget=4, **flags), resume=True)
    assert (result.trials["state"].isin(["complete", "failed"])).sum() == 4
    assert not (out / "study.db").exists()

    # what optuna-dashboard shows: the study opened by Optuna's public API with the same URL
    study = optuna.load_study(study_name=name, storage=postgres_url)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) >= 3
    for t in done:
        assert {"w", *[k for k in t.params if k.startswith("method.")]} <= set(t.params)
        assert t.user_attrs["params"] > 0 and t.user_attrs["flops"] > 0
        assert 0 <= t.user_attrs["val_accuracy"] <= 1
        plan = ar.plan_from_json(t.user_attrs["plan"])
        assert all(c.method in ar.list_methods() for c in plan.values())
        assert t.user_attrs["driver"]
    assert len(study.best_trials) >= 1

    assert main(["report", str(out), "--storage", postgres_url]) == 0
    assert "Pareto front" in capsys.readouterr().out
    assert main(["report", str(out), "--storage", "postgresql://other@127.0.0.1:1/x"]) == 2
    assert "is not where this run's study is" in capsys.readouterr().err


def test_heartbeat_fails_only_the_trials_of_a_silent_driver(postgres_url: str) -> None:
    storage = open_storage(postgres_url, heartbeat_s=1)
    study = optuna.create_study(storage=storage, study_name=study_name(),
                                directions=["maximize", "minimize"])
    with quiet_optuna():
        silent, alive, unknown = study.ask(), study.ask(), study.ask()
    storage.record_heartbeat(silent._trial_id)  # beats once, then its driver "dies"
    for trial in (silent, alive):  # claimed by drivers on another machine, as ask_new does
        trial.set_user_attr("driver", "elsewhere:1:1")
    with Heartbeat(study) as beat:
        beat.add(alive._trial_id)
        time.sleep(4.5)  # past the grace period (3 x 1 s)
        fail_stale(study)
    states = {t.number: t for t in study.get_trials()}
    assert states[silent.number].state == TrialState.FAIL and is_interrupted(states[silent.number])
    assert states[alive.number].state == TrialState.RUNNING
    # never claimed by a driver and older than the grace period: its driver died between
    # study.ask() and the first heartbeat (ask_new beats before anything else)
    assert states[unknown.number].state == TrialState.FAIL and is_interrupted(states[unknown.number])
    assert "before claiming it" in states[unknown.number].user_attrs["error"]
    with quiet_optuna():
        fresh = study.ask()
    fail_stale(study)  # a trial younger than the grace period is left to its driver
    assert study.get_trials()[fresh.number].state == TrialState.RUNNING
    assert counts(study) == (0, 2)  # an interrupted trial does not count in the budget


def test_two_drivers_share_one_study(tmp_path: Path, tiny_checkpoint: Path,
                                     postgres_url: str) -> None:
    name, budget = study_name(), 6
    extra = ("--budget", str(budget), "--finetune-steps", "10", "--heartbeat", "2")
    first = subprocess.Popen(
        search_cmd(tiny_checkpoint, tmp_path / "a", postgres_url, name, "--runner", "ray",
                   "--parallel", "1", *extra),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # the second driver joins once the first runs a trial (Ray's start is slower than a trial)
    deadline, storage = time.time() + 180, optuna.storages.RDBStorage(postgres_url)
    while not started_trials(storage, name) and time.time() < deadline:
        assert first.poll() is None, first.communicate()[1][-2000:]
        time.sleep(0.5)
    second = subprocess.Popen(
        search_cmd(tiny_checkpoint, tmp_path / "b", postgres_url, name, "--runner", "local", *extra),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    procs = [first, second]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    study = optuna.load_study(study_name=name, storage=postgres_url)
    trials = study.get_trials()
    # a trial one driver took for dead (its heartbeat late on a loaded machine) is failed as
    # interrupted and does not count in the budget
    finished = [t for t in trials if t.state == TrialState.COMPLETE
                or (t.state == TrialState.FAIL and not is_interrupted(t))]
    assert len(finished) == budget
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    plans = [t.user_attrs["plan"] for t in trials if t.state == TrialState.COMPLETE]
    assert len(plans) == len(set(plans))  # no plan evaluated twice
    assert len({t.user_attrs["driver"] for t in finished}) == 2  # both drivers ran trials
    seeds = [t for t in trials if t.system_attrs.get("fixed_params")]
    assert len(seeds) == 4  # the seeds (EVBMF, MUSCO, two uniform Tucker-2) were enqueued once
    fronts = [sorted(pd.read_csv(tmp_path / d / "pareto.csv")["number"]) for d in ("a", "b")]
    assert fronts[0] == fronts[1] and fronts[0]
    for d in ("a", "b"):
        table = pd.read_csv(tmp_path / d / "trials.csv")
        assert json.loads(table["plan"].iloc[0]) is not None
        interrupted = table["error"].astype(str).str.startswith(INTERRUPTED)
        ended = table["state"].isin(["complete", "failed"]) & ~interrupted
        assert ended.sum() == budget


def test_two_drivers_never_promote_a_trial_twice(tmp_path: Path, tiny_checkpoint: Path,
                                                 postgres_url: str) -> None:
    from autorank.sweep.rungs import RUNG_STUDY_SUFFIX

    name, budget = study_name(), 8
    extra = ("--budget", str(budget), "--min-steps", "10", "--max-steps", "40", "--eta", "2",
             "--heartbeat", "2", "--runner", "local")
    procs = [subprocess.Popen(search_cmd(tiny_checkpoint, tmp_path / d, postgres_url, name, *extra),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for d in ("a", "b")]
    for proc in procs:
        _, err = proc.communicate(timeout=400)
        assert proc.returncode == 0, err[-2000:]
    rungs = optuna.load_study(study_name=name + RUNG_STUDY_SUFFIX, storage=postgres_url).get_trials()
    done = [(t.user_attrs["trial"], t.user_attrs["rung"]) for t in rungs
            if t.state == TrialState.COMPLETE]
    assert done and len(done) == len(set(done))  # no (trial, rung) promoted twice
    assert not [t for t in rungs if t.state == TrialState.RUNNING]
    duplicates = [t for t in rungs if t.state == TrialState.PRUNED]
    assert all("duplicate of promotion" in t.user_attrs["error"] for t in duplicates)
    assert {r for _, r in done} == {1, 2}  # rungs 10 -> 20 -> 40 steps: both reached
    fronts = [pd.read_csv(tmp_path / d / "pareto.csv") for d in ("a", "b")]
    assert sorted(fronts[0]["number"]) == sorted(fronts[1]["number"])
    assert (fronts[0]["steps"] == 40).all()
