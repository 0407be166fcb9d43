"""Shared fixtures: one CPU thread, small bundles, the real-data directories from env vars, and
a PostgreSQL server for the study tests (``$AUTORANK_TEST_POSTGRES_URL``, else a throw-away one
started by ``.ci/postgres``; skipped without one, failed in CI)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from autorank.data import DataBundle, get_data

POSTGRES = Path(__file__).resolve().parents[1] / ".ci" / "postgres"


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    # The CI machine has 2 cores shared between jobs; one thread keeps timings stable.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits() -> DataBundle:
    return get_data("digits")


@pytest.fixture(scope="session")
def synthetic() -> DataBundle:
    return get_data("synthetic", num_train=256, num_test=128, num_classes=4)


def _env_dir(var: str) -> Path:
    value = os.environ.get(var)
    if not value:
        pytest.skip(f"set {var} to run real-data tests")
    return Path(value)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return _env_dir("AUTORANK_DATA_DIR")


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    return _env_dir("AUTORANK_WEIGHTS_DIR")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny_cnn baseline trained briefly on digits (train split minus val), for searches."""
    from autorank.baseline import train_baseline

    out = tmp_path_factory.mktemp("baseline") / "tiny.pt"
    return train_baseline("tiny_cnn", "digits", epochs=10, out=out, seed=0, progress=False)


@pytest.fixture(autouse=True)
def _quiet_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def tiny_run(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 4-trial local search on tiny_cnn + digits whose trial 1 failed (injected)."""
    from autorank.config import make_config
    from autorank.sweep import search

    out = tmp_path_factory.mktemp("tiny-run") / "run"
    cfg = make_config(space="tiny", finetune_steps=10, model="tiny_cnn", dataset="digits",
                      checkpoint=str(tiny_checkpoint), val_source="train", budget=4,
                      runner="local", out=str(out), seed=0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTORANK_INJECT_FAULT", "raise:1")
        search(cfg)
    return out


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose server accepts new databases' tables (a throw-away one)."""
    url = os.environ.get("AUTORANK_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    folder = tempfile.mkdtemp(prefix="autorank-pg-")
    started = subprocess.run(["bash", str(POSTGRES), "start", folder], capture_output=True,
                             text=True, timeout=180)
    if started.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        last = (started.stderr.strip().splitlines() or ["?"])[-1]
        why = (f"no PostgreSQL server could be started ({last}); install postgresql or set "
               "AUTORANK_TEST_POSTGRES_URL")
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    try:
        yield started.stdout.strip()
    finally:
        subprocess.run(["bash", str(POSTGRES), "stop", folder], capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)
