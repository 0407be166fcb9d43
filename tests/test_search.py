"""End-to-end searches on tiny_cnn + digits: the run directory, failures, resume, a Ray cluster."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

import autorank as ar
from autorank.config import make_config, objective_metrics
from autorank.errors import UserError
from autorank.sweep import load_run, pareto_front, search


def tiny_config(out: Path, checkpoint: Path, **flags: object) -> ar.config.SearchConfig:
    options: dict[str, object] = dict(
        model="tiny_cnn", dataset="digits", checkpoint=str(checkpoint), val_source="train",
        budget=4, runner="local", out=str(out), seed=0)
    options.update(flags)
    return make_config(space="tiny", **options)


def check_run_dir(path: Path, budget: int) -> pd.DataFrame:
    for name in ("config.yaml", "baseline.json", "trials.csv", "pareto.csv", "pareto.png",
                 "study.db"):
        assert (path / name).exists(), name
    trials = pd.read_csv(path / "trials.csv")
    assert trials["number"].is_unique
    finished = trials[trials["state"].isin(["complete", "failed"])]
    assert len(finished) == budget
    done = trials[trials["state"] == "complete"]
    assert ((done["val_accuracy"] >= 0) & (done["val_accuracy"] <= 1)).all()
    assert (done["params_ratio"] > 0).all()
    baseline = json.loads((path / "baseline.json").read_text())
    assert 0 <= baseline["test_accuracy"] <= 1
    run = load_run(path)
    front = run.pareto()
    metrics, modes = objective_metrics(run.config.space)
    expected = pareto_front(run.trials, metrics, modes)
    assert sorted(front["number"]) == sorted(expected["number"])
    assert front["test_accuracy"].between(0, 1).all()
    # trials are not timed (shared cores); the front and the baseline are, at the end
    assert done["latency_ms"].isna().all() and done["latency_batch_ms"].isna().all()
    assert (front["latency_ms"] > 0).all() and (front["latency_batch_ms"] > 0).all()
    assert baseline["latency_ms"] > 0 and baseline["latency_batch_ms"] > 0
    for n in front["number"]:  # only the front's weights are kept
        assert (path / "weights" / f"trial-{n}.pt").exists()
    assert len(list((path / "weights").glob("trial-*.pt"))) == len(front)
    return trials


def test_local_search_writes_the_run_directory(tmp_path: Path, tiny_checkpoint: Path) -> None:
    seen: list[tuple[str, int]] = []
    result = search(tiny_config(tmp_path / "run", tiny_checkpoint, budget=5),
                    progress=lambda p: seen.append((p.phase, p.done)))
    trials = check_run_dir(result.path, budget=5)
    # a line before the first trial ends, one per trial, then one for the front's measurement
    assert seen == [("start", 0), *(("trials", n) for n in range(1, 6)), ("final", 5)]
    plans = [ar.plan_from_json(p) for p in trials["plan"]]
    tucker = [c for c in plans[0].values() if c.method == "tucker2"]
    assert tucker, "trial 0 is the EVBMF Tucker-2 seed"
    assert result.baseline["val_source"] == "train"


def test_existing_run_is_not_overwritten(tmp_path: Path, tiny_checkpoint: Path) -> None:
    with pytest.raises(UserError, match="holds no autorank run"):
        search(tiny_config(tmp_path / "nothing", tiny_checkpoint), resume=True)
    out = tmp_path / "run"
    search(tiny_config(out, tiny_checkpoint, budget=2))
    before = (out / "trials.csv").read_text()
    with pytest.raises(UserError, match="already holds a run; add --resume"):
        search(tiny_config(out, tiny_checkpoint, budget=2))
    assert (out / "trials.csv").read_text() == before
    result = search(tiny_config(out, tiny_checkpoint, budget=3), resume=True)
    trials = check_run_dir(result.path, budget=3)
    assert trials.iloc[:2].to_csv() == pd.read_csv(pd.io.common.StringIO(before)).to_csv()


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


class ListenWatch(threading.Thread):
    """Collects the addresses this process and its children listen on, while it runs."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.addresses: set[str] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        me = psutil.Process()
        while not self.stop.is_set():
            pids = {me.pid} | {c.pid for c in me.children(recursive=True)}
            for conn in psutil.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
                    self.addresses.add(conn.laddr.ip)
            time.sleep(0.5)


def test_ray_search_parallel_with_failing_trials(tmp_path: Path, tiny_checkpoint: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    # trial 2 raises, 3 diverges to NaN, 4 runs out of memory, 5's worker process dies
    monkeypatch.setenv("AUTORANK_INJECT_FAULT", "raise:2,nan:3,oom:4,kill:5")
    cfg = tiny_config(tmp_path / "run", tiny_checkpoint, budget=7, runner="ray", parallel=2)
    watch = ListenWatch()
    watch.start()
    try:
        result = search(cfg)
    finally:
        watch.stop.set()
        ray.shutdown()
    assert watch.addresses, "Ray's servers were seen listening"
    assert all(is_loopback(a) for a in watch.addresses), watch.addresses
    trials = check_run_dir(result.path, budget=7)
    failed = trials[trials["state"] == "failed"].set_index("number")["error"]
    assert sorted(failed.index) == [2, 3, 4, 5]
    assert "injected fault" in failed[2]
    assert "non-finite" in failed[3].lower() or "nan" in failed[3].lower()
    assert "out of memory" in failed[4]
    assert failed[5]  # the dead worker's trial is failed with Ray's reason, not lost


def _trials_done(path: Path) -> int:
    try:
        frame = pd.read_csv(path / "trials.csv")
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return 0
    return int((frame["state"] == "complete").sum())


def test_killed_search_resumes_without_duplicates(tmp_path: Path, tiny_checkpoint: Path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "autorank", "search", "--model", "tiny_cnn", "--dataset", "digits",
           "--space", "tiny", "--checkpoint", str(tiny_checkpoint), "--val-source", "train",
           "--budget", "6", "--parallel", "1", "--out", str(out), "--finetune-steps", "60"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while _trials_done(out) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert proc.poll() is None, "the search ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = pd.read_csv(out / "trials.csv")
    done_before = before[before["state"] == "complete"]
    assert 2 <= len(done_before) < 6
    subprocess.run([*cmd, "--resume"], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=400)
    after = pd.read_csv(out / "trials.csv")
    interrupted = after["error"].fillna("").str.startswith("interrupted")
    check_run_dir(out, budget=6 + int(interrupted.sum()))
    kept = after.set_index("number").loc[done_before["number"]]
    assert list(kept["plan"]) == list(done_before["plan"])
    assert list(kept["val_accuracy"]) == list(done_before["val_accuracy"])
    complete = after[after["state"] == "complete"]
    assert complete["plan"].is_unique  # no plan evaluated twice
    assert len(after[~interrupted & after["state"].isin(["complete", "failed"])]) == 6


def test_search_through_a_two_node_cluster(tmp_path: Path, tiny_checkpoint: Path) -> None:
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1,
                                                            "node_ip_address": "127.0.0.1"})
    cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    try:
        cfg = tiny_config(tmp_path / "run", tiny_checkpoint, budget=4, runner="ray", parallel=2,
                          cpus_per_trial=1, address=cluster.address)
        result = search(cfg)
        assert len(ray.nodes()) == 2
    finally:
        ray.shutdown()
        cluster.shutdown()
    check_run_dir(result.path, budget=4)


@pytest.mark.parametrize("sampler", ["tpe", "gp", "nsga2"])
def test_every_sampler_runs_a_search(tmp_path: Path, tiny_checkpoint: Path, sampler: str) -> None:
    import dataclasses

    import optuna

    from autorank.config import space_from_dict
    from autorank.samplers import make_sampler

    cfg = tiny_config(tmp_path / "run", tiny_checkpoint, budget=6)
    cfg = dataclasses.replace(cfg, space=space_from_dict({"sampler": sampler, "max_drop": 0.05},
                                                         base=cfg.space))
    expected = {"tpe": optuna.samplers.TPESampler, "gp": optuna.samplers.GPSampler,
                "nsga2": optuna.samplers.NSGAIISampler}[sampler]
    assert isinstance(make_sampler(cfg.space.sampler, seed=0, budget=cfg.budget), expected)
    result = search(cfg)  # 2 seeds, 2 startup draws, then 2 draws from the sampler's model
    trials = check_run_dir(result.path, budget=6)
    assert trials["plan"].is_unique
    # the sampler judged every completed trial against the floor: baseline val - max_drop
    floor = result.baseline["val_accuracy"] - 0.05
    study = optuna.load_study(study_name=result.config.study_name, storage=result.config.storage)
    for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        assert t.constraints == {"accuracy_floor": pytest.approx(floor - t.values[0])}


def test_max_drop_null_turns_the_constraint_off(tmp_path: Path, tiny_checkpoint: Path) -> None:
    import dataclasses

    from autorank.config import space_from_dict
    from autorank.sweep.runner import accuracy_floor

    cfg = tiny_config(tmp_path / "run", tiny_checkpoint)
    off = space_from_dict({"max_drop": None}, base=cfg.space)
    assert accuracy_floor(off, 0.9) is None
    assert accuracy_floor(cfg.space, 0.9) == pytest.approx(0.9 - cfg.space.max_drop)
    with pytest.raises(UserError, match=r"max_drop: must be in \(0, 1\] or null"):
        dataclasses.replace(cfg.space, max_drop=1.5)


def test_a_baseline_at_chance_is_flagged() -> None:
    """A baseline within 2 pp of guessing (digits on an untrained net: 0.104 for 10 classes) is
    flagged, and no report calls a 500x model "within 1 pp" of a baseline that learned nothing."""
    import dataclasses

    from autorank.sweep.html_report import _summary
    from autorank.sweep.report import front_text
    from autorank.types import Baseline

    chance = Baseline(model="m", dataset="d", val_accuracy=0.104, num_classes=10, params=1, flops=1)
    trained = dataclasses.replace(chance, val_accuracy=0.9)
    assert chance.at_chance() and not trained.at_chance()
    assert not Baseline(val_accuracy=0.1).at_chance()  # classes not recorded: no claim either way
    front = pd.DataFrame({"number": [0], "val_accuracy": [0.1], "params": [1], "params_ratio": [500.0],
                          "flops_ratio": [9.0], "test_accuracy": [0.1], "latency_ms": [0.1]})
    text = front_text(front, chance)
    assert "WARNING: the baseline is at chance" in text and "within 1 pp" not in text
    # the same front beside a baseline at 10.5 % whose classes are not recorded: no warning
    assert "within 1 pp of the baseline: trial 0" in front_text(front, dataclasses.replace(
        trained, val_accuracy=0.105, num_classes=0))
    page = _summary(type("Run", (), {"baseline": chance})(), front)  # type: ignore[arg-type]
    assert "the baseline is at chance" in page and "within 1 pp" not in page
