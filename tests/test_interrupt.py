"""Ctrl-C (SIGINT) or SIGTERM during ``autorank search``: the search stops promptly, records
what finished, prints how to resume and exits 130 (143); the resume finishes the budget."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from autorank.sweep.interrupt import held_interrupts

_HINT = re.compile(r"^interrupted: (\d+) of (\d+) trials finished; resume with: (.+)$", re.M)


def _start(argv: list[str]) -> subprocess.Popen[str]:
    # SIGINT back to its default in the child: a shell may start background jobs ignoring it
    return subprocess.Popen(
        [sys.executable, "-m", "autorank", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _complete(out: Path) -> int:
    try:
        return int((pd.read_csv(out / "trials.csv")["state"] == "complete").sum())
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return 0


def _interrupt_after_first_trial(argv: list[str], out: Path, signum: int, *, group: bool = False,
                                 ) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run the search, send ``signum`` once a trial has finished; its result and how long it
    took to stop. ``group``: to the whole process group, as a terminal's Ctrl-C does."""
    proc = _start(argv)
    try:
        deadline = time.time() + 300
        while _complete(out) < 1 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, "the search ended before it could be interrupted"
        sent = time.monotonic()
        (os.killpg if group else os.kill)(proc.pid, signum)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr), \
        time.monotonic() - sent


def _check_interrupted(done: subprocess.CompletedProcess[str], out: Path, budget: int,
                       status: int) -> pd.DataFrame:
    assert done.returncode == status, done.stderr
    assert "Pareto front" not in done.stdout and not (out / "pareto.csv").exists()
    assert "Traceback" not in done.stderr and "Tuner.restore" not in done.stderr
    hint = _HINT.search(done.stderr)
    assert hint, done.stderr
    trials = pd.read_csv(out / "trials.csv")
    assert "running" not in set(trials["state"])
    interrupted = trials["error"].astype(str).str.startswith("interrupted")
    assert set(trials.loc[interrupted, "state"]) <= {"failed"}
    finished = trials[~interrupted & trials["state"].isin(["complete", "failed"])]
    assert int(hint[1]) == len(finished) >= 1 and int(hint[2]) == budget
    return trials


def _resume_by_the_hint(done: subprocess.CompletedProcess[str], out: Path, budget: int,
                        before: pd.DataFrame) -> None:
    """Run the printed command itself: the budget is finished, the counter never passes it,
    and no trial that had finished is run again."""
    hint = _HINT.search(done.stderr)
    assert hint
    argv = shlex.split(hint[3])
    assert argv[:2] == ["autorank", "search"] and Path(argv[argv.index("--out") + 1]) == out
    resumed = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    counters = [(int(d), int(b)) for d, b in re.findall(r"\[(\d+)/(\d+)\]", resumed.stderr)]
    assert counters and all(d <= b == budget for d, b in counters), resumed.stderr
    assert counters[-1] == (budget, budget)
    after = pd.read_csv(out / "trials.csv")
    interrupted = after["error"].astype(str).str.startswith("interrupted")
    assert len(after[~interrupted & after["state"].isin(["complete", "failed"])]) == budget
    kept = before[before["state"] == "complete"]
    again = after.set_index("number").loc[kept["number"]]
    assert list(again["plan"]) == list(kept["plan"])
    assert list(again["val_accuracy"]) == list(kept["val_accuracy"])
    assert after.loc[after["state"] == "complete", "plan"].is_unique  # nothing ran twice


def _search_argv(out: Path, checkpoint: Path, budget: int, *extra: str) -> list[str]:
    return ["search", "--model", "tiny_cnn", "--dataset", "digits", "--space", "tiny",
            "--checkpoint", str(checkpoint), "--val-source", "train", "--budget", str(budget),
            "--finetune-steps", "20", "--out", str(out), *extra]


def test_ctrl_c_stops_a_local_search_and_the_hint_resumes_it(tmp_path: Path,
                                                             tiny_checkpoint: Path) -> None:
    out, budget = tmp_path / "run", 2
    done, took = _interrupt_after_first_trial(
        _search_argv(out, tiny_checkpoint, budget, "--runner", "local"), out, signal.SIGINT)
    before = _check_interrupted(done, out, budget, 130)
    assert took < 30, f"{took:.0f} s to stop"
    # the run's flags are saved: the hint repeats neither --budget nor --runner
    assert _HINT.search(done.stderr)[3] == f"autorank search --out {out} --resume"
    _resume_by_the_hint(done, out, budget, before)
    _interrupted_seeds_ran(out)


def _interrupted_seeds_ran(out: Path) -> None:
    """Every seed plan (an enqueued trial) that was interrupted completed on resume."""
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name=None, storage=f"sqlite:///{out / 'study.db'}")
    trials = study.get_trials(deepcopy=False)
    interrupted = [t.system_attrs["fixed_params"] for t in trials
                   if "fixed_params" in t.system_attrs
                   and str(t.user_attrs.get("error", "")).startswith("interrupted")]
    completed = [t.params for t in trials if t.state == TrialState.COMPLETE]
    assert all(params in completed for params in interrupted), (interrupted, completed)


def test_sigterm_stops_a_local_search_with_status_143(tmp_path: Path,
                                                      tiny_checkpoint: Path) -> None:
    out = tmp_path / "run"
    done, _ = _interrupt_after_first_trial(
        _search_argv(out, tiny_checkpoint, 2, "--runner", "local"), out, signal.SIGTERM)
    _check_interrupted(done, out, 2, 143)


@pytest.mark.slow
def test_ctrl_c_stops_a_ray_search_and_the_hint_resumes_it(tmp_path: Path,
                                                           tiny_checkpoint: Path) -> None:
    """Ctrl-C to the terminal's process group (Ray's own processes ignore it); Tune's
    ``Tuner.restore`` hint is not shown."""
    out, budget = tmp_path / "run", 4
    argv = _search_argv(out, tiny_checkpoint, budget, "--runner", "ray", "--parallel", "2",
                        "--cpus-per-trial", "1")
    done, took = _interrupt_after_first_trial(argv, out, signal.SIGINT, group=True)
    before = _check_interrupted(done, out, budget, 130)
    assert took < 60, f"{took:.0f} s to stop"
    _resume_by_the_hint(done, out, budget, before)


@pytest.mark.slow
def test_sigterm_to_the_process_group_stops_a_ray_search_with_status_143(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    """SIGTERM to the whole group (systemd's stop, ``kill -TERM -PGID``): Ray's processes hold
    it blocked, so the driver records the interrupt and stops them; nothing is left running."""
    out, budget = tmp_path / "run", 4
    argv = _search_argv(out, tiny_checkpoint, budget, "--runner", "ray", "--parallel", "2",
                        "--cpus-per-trial", "1")
    done, took = _interrupt_after_first_trial(argv, out, signal.SIGTERM, group=True)
    _check_interrupted(done, out, budget, 143)
    assert took < 60, f"{took:.0f} s to stop"


def test_a_held_interrupt_comes_after_the_block() -> None:
    handler, steps = signal.getsignal(signal.SIGINT), []
    with pytest.raises(KeyboardInterrupt), held_interrupts():
        os.kill(os.getpid(), signal.SIGINT)
        steps.append("block ran to its end")
    assert steps == ["block ran to its end"]
    with held_interrupts(deliver=False):
        os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is handler


def test_an_interrupted_seed_plan_is_enqueued_again_once() -> None:
    import optuna

    from autorank.sweep.study import _fail, requeue_interrupted_seeds

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"])
    for w in (0.25, 0.5):
        study.enqueue_trial({"w": w})
    seed, other = study.ask(), study.ask()
    for t in (seed, other):
        t.suggest_float("w", 0.0, 1.0)
    sampled = study.ask()
    sampled.suggest_float("w", 0.0, 1.0)
    study.tell(other, [0.5, 1.0])
    _fail(study, seed, "the search was killed")  # a seed plan interrupted
    _fail(study, sampled, "the search was killed")  # a sampled plan interrupted: not requeued
    assert requeue_interrupted_seeds(study) == [seed.number]
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in waiting] == [{"w": 0.25}]
    assert requeue_interrupted_seeds(study) == []  # asked twice (a second resume): once
    again = study.ask()
    assert again.suggest_float("w", 0.0, 1.0) == 0.25


class _TakenForDeadOnce:
    """A space whose first suggestion finds its trial failed by another driver (a late
    heartbeat on a loaded machine)."""

    def __init__(self, study: object) -> None:
        self.study, self.calls = study, 0

    def suggest(self, trial: object) -> None:
        from autorank.sweep.study import _fail

        self.calls += 1
        if self.calls == 1:
            _fail(self.study, trial, "its driver stopped beating")
        trial.suggest_float("w", 0.0, 1.0)  # type: ignore[attr-defined]

    def plan(self, params: dict[str, float]) -> dict[str, float]:
        return {}


def test_a_trial_taken_for_dead_before_it_starts_is_replaced_not_a_crash() -> None:
    import optuna

    from autorank.sweep.study import ask_new, counts

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"])
    space = _TakenForDeadOnce(study)
    asked = ask_new(study, space)
    assert asked is not None and space.calls == 2
    trial, params = asked
    assert trial.number == 1 and set(params) == {"w"}
    assert counts(study) == (0, 1)  # the failed one is interrupted: not in the budget


def test_a_promotion_claim_or_result_taken_for_dead_is_dropped_not_a_crash(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import optuna
    from optuna.trial import TrialState

    from autorank.sweep.rungs import claim_promotion, open_rung_study
    from autorank.sweep.study import _fail, is_interrupted
    from autorank.sweep.table import record
    from autorank.types import TrialOutcome

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rung_study = open_rung_study(optuna.storages.InMemoryStorage(), "s")
    ask = rung_study.ask

    def ask_then_die() -> object:
        trial = ask()
        _fail(rung_study, trial, "its driver stopped beating")
        return trial

    monkeypatch.setattr(rung_study, "ask", ask_then_die)
    assert claim_promotion(rung_study, 3, 1) is None
    monkeypatch.undo()
    claimed = claim_promotion(rung_study, 3, 1)  # the failed claim does not hold the promotion
    assert claimed is not None
    _fail(rung_study, claimed, "its driver stopped beating")  # while the promotion ran
    record(rung_study, claimed, TrialOutcome(val_accuracy=0.5), ["val_accuracy"])
    states = [t.state for t in rung_study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.FAIL]
    assert all(is_interrupted(t) for t in rung_study.get_trials())
