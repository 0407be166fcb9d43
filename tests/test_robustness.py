"""What a mistyped flag, a killed driver or a hostile input may never cost: finished results,
a clean one-line error, loopback-only servers, determinism (README, "Guarantees")."""

from __future__ import annotations

import ast
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autorank.cli import main
from autorank.config import make_config
from autorank.sweep.runner import resolve_resources

PACKAGE = Path(__file__).resolve().parent.parent / "autorank"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    return code, capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tiny_search(out: Path, checkpoint: Path, *extra: str) -> list[str]:
    return ["search", "--model", "tiny_cnn", "--dataset", "digits", "--space", "tiny",
            "--checkpoint", str(checkpoint), "--val-source", "train", "--runner", "local",
            "--out", str(out), *extra]


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, str]:
    """Bad files: search-space presets and npz data sets, each wrong in one way."""
    presets = {"empty_methods": "methods: []\n", "unknown_key": "rankz: 3\n",
               "wrong_type": "min_params: many\n", "unknown_method": "methods: [qr]\n",
               "nothing_left": "exclude: ['*']\n", "bad_strength": "strength: [0.2, 3]\n"}
    paths = {}
    for name, text in presets.items():
        paths[name] = str(tmp_path / f"{name}.yaml")
        Path(paths[name]).write_text(text)
    rng = np.random.default_rng(0)

    def npz(name: str, **arrays: np.ndarray) -> None:
        paths[name] = f"npz:{tmp_path / name}.npz"
        np.savez(tmp_path / f"{name}.npz", **arrays)

    images = rng.integers(0, 255, (200, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(200) % 3
    npz("wrong_keys", images=images, targets=labels)
    npz("label_range", x_train=images, y_train=labels - 5, x_test=images, y_test=labels)
    npz("small_images", x_train=images, y_train=labels, x_test=images, y_test=labels)
    paths["empty_dir"] = str(tmp_path / "no-data")
    os.makedirs(paths["empty_dir"])
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04" + bytes(rng.integers(0, 255, 300, dtype=np.uint8)))
    paths["corrupt"] = f"npz:{corrupt}"
    return paths


@pytest.mark.parametrize(
    ("flags", "pattern"),
    [
        (["--space", "{empty_methods}"], "methods: is empty; give at least one of"),
        (["--space", "{unknown_key}"], "rankz: unknown key; expected one of"),
        (["--space", "{wrong_type}"], "min_params: expected int"),
        (["--space", "{unknown_method}"], "unknown method 'qr'; expected one of"),
        (["--space", "{bad_strength}"], r"strength: needs \[low, high\]"),
        (["--space", "{nothing_left}"], "no compressible layer"),
        (["--dataset", "{wrong_keys}"], "x_train"),
        (["--dataset", "{label_range}"], "label"),
        (["--dataset", "{corrupt}"], "is corrupt or not a plain .npz"),
        (["--model", "alexnet", "--dataset", "{small_images}"],
         "model 'alexnet' cannot take 3x8x8 images"),
        (["--dataset", "cifar10", "--data-dir", "{empty_dir}"], "cifar10 not found: put cifar10.npz"),
        (["--storage", "sqlite:////no/such/dir/study.db"], "cannot open study storage"),
        (["--runner", "ray", "--address", "127.0.0.1:{port}"], "no Ray cluster answers"),
        (["--runner", "ray", "--address", "nonsense"], "expected 'auto', 'host:port'"),
        (["--budget", "2.5"], "invalid int value"),
        (["--budget", "-1"], "--budget must be a positive number"),
        (["--model", "tiny_cnn; touch pwned"], "unknown model 'tiny_cnn; touch pwned'"),
    ],
)
def test_bad_input_is_one_line_exit_2(flags: list[str], pattern: str, inputs: dict[str, str],
                                      tmp_path: Path, tiny_checkpoint: Path,
                                      capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    monkeypatch.chdir(tmp_path)
    flags = [f.format(port=free_port(), **inputs) for f in flags]
    argv = tiny_search(tmp_path / "run", tiny_checkpoint, "--budget", "2")
    if "--model" in flags:  # another model: the tiny checkpoint does not fit it
        argv[argv.index("--checkpoint"):argv.index("--checkpoint") + 2] = []
    start = time.monotonic()
    code, err = run([*argv, *flags], capsys)
    assert code == 2, err
    assert re.search(pattern, err), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert time.monotonic() - start < 30  # an absent cluster is reported at once, not retried
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / "run" / "trials.csv").exists()


def test_parallel_above_the_machine_is_capped(caplog: pytest.LogCaptureFixture) -> None:
    cpus = os.cpu_count() or 1
    cfg = make_config(space="tiny", model="tiny_cnn", dataset="digits", runner="ray",
                      parallel=cpus + 7)
    with caplog.at_level(logging.WARNING, logger="autorank"):
        res = resolve_resources(cfg)
    assert res.parallel == cpus
    assert f"--parallel {cpus + 7} is more than the {cpus} CPUs here: capped at {cpus}" in caplog.text


def _cli(*argv: str, env: dict[str, str] | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "autorank", *argv], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


@pytest.mark.parametrize("point", ["baseline", "trials.csv"])
def test_driver_killed_at_a_point_resumes_losing_nothing(point: str, tmp_path: Path,
                                                         tiny_checkpoint: Path) -> None:
    """SIGKILL while measuring the baseline, and between writing trials.csv and renaming it."""
    out = tmp_path / "run"
    argv = tiny_search(out, tiny_checkpoint, "--budget", "3", "--finetune-steps", "5")
    killed = _cli(*argv, env={"AUTORANK_INJECT_FAULT": f"driver:{point}"})
    assert killed.returncode == -9, killed.stderr
    before = pd.read_csv(out / "trials.csv") if (out / "trials.csv").exists() else None
    if point == "trials.csv":  # killed mid-write: the old file is intact (here: none yet)
        assert before is None and (out / ".trials.csv.tmp").exists()
    resumed = _cli(*argv, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    after = pd.read_csv(out / "trials.csv")
    assert after["number"].is_unique
    complete = after[after["state"] == "complete"]
    assert len(complete) == 3 and complete["plan"].is_unique
    assert len(pd.read_csv(out / "pareto.csv")) >= 1


def test_a_second_search_on_the_same_out_is_refused(tmp_path: Path, tiny_checkpoint: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    argv = tiny_search(out, tiny_checkpoint, "--budget", "3", "--finetune-steps", "200")
    first = subprocess.Popen([sys.executable, "-m", "autorank", *argv], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (out / "baseline.json").exists() and time.time() < deadline:
            time.sleep(0.2)
        assert first.poll() is None, "the first search ended before the second started"
        code, err = run([*argv, "--resume"], capsys)
        assert code == 2 and "another autorank process is using" in err
    finally:
        first.kill()
        first.wait()


def test_nothing_user_given_reaches_a_shell() -> None:
    """No shell anywhere in the package: no os.system/popen, no subprocess with shell=True."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = ast.unparse(node.func)
                if name in ("os.system", "os.popen", "subprocess.getoutput",
                            "subprocess.getstatusoutput"):
                    offenders.append(f"{path.name}: {name}")
                for kw in node.keywords:
                    if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant)
                                                  and kw.value.value is False):
                        offenders.append(f"{path.name}: {name}(shell=...)")
    assert offenders == []


def test_same_seed_same_plans_and_weights(tmp_path: Path, tiny_checkpoint: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """On CPU, one seed gives the same sequence of plans and bit-identical trial weights."""
    import torch

    runs = []
    for name in ("a", "b"):
        code, err = run(tiny_search(tmp_path / name, tiny_checkpoint, "--budget", "3", "--seed", "7",
                                   "--finetune-steps", "10"),
                        capsys)
        assert code == 0, err
        runs.append(pd.read_csv(tmp_path / name / "trials.csv"))
    assert list(runs[0]["plan"]) == list(runs[1]["plan"])
    assert list(runs[0]["val_accuracy"]) == list(runs[1]["val_accuracy"])
    kept = sorted(p.name for p in (tmp_path / "a" / "weights").glob("trial-*.pt"))
    assert kept and kept == sorted(p.name for p in (tmp_path / "b" / "weights").glob("trial-*.pt"))
    for file in kept:
        a, b = (torch.load(tmp_path / n / "weights" / file, weights_only=True) for n in ("a", "b"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_with_nan_weights_is_refused_leaving_nothing(
        tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from autorank.models import load_checkpoint

    state = load_checkpoint(tiny_checkpoint)
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = torch.full_like(state[name], float("nan"))
    broken = tmp_path / "nan.pt"
    torch.save(state, broken)
    out = tmp_path / "run"
    code, err = run(tiny_search(out, broken, "--budget", "2"), capsys)
    assert code == 2 and "NaN or infinite values" in err and name in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()  # refused before the run directory was made


def test_an_out_that_cannot_be_written_is_one_line(tmp_path: Path, tiny_checkpoint: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code, err = run(tiny_search(blocker / "run", tiny_checkpoint, "--budget", "2"), capsys)
    assert code == 2 and "cannot be made" in err and "is a file" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert blocker.read_text() == "not a directory"
