"""Shared fixtures: one CPU thread, small bundles, and the real-data directories from env vars."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from autorank.data import DataBundle, get_data


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
