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


def test_a_held_interrupt_comes_after_the_block() -> None:
    handler, steps = signal.getsignal(signal.SIGINT), []
    with pytest.raises(KeyboardInterrupt), held_interrupts():
        os.kill(os.getpid(), signal.SIGINT)
        steps.append("block ran to its end")
    assert steps == ["block ran to its end"]
    with held_interrupts(deliver=False):
        os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is handler
