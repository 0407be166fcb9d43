"""optuna-dashboard on a study autorank wrote to PostgreSQL: its HTTP API lists the study and
each trial with the user attributes autorank stored (plan, params, FLOPs, accuracy, driver).

The server is the one ``tests/test_study.py`` uses. Without it, or without optuna-dashboard (the
``dev`` extra), the test skips, except in CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import autorank as ar
from autorank.sweep import load_run, search

# no proxy: a proxy from the environment would answer for 127.0.0.1 instead of the dashboard
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _dashboard_binary() -> str:
    found = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent)) \
        or shutil.which("optuna-dashboard")
    if found:
        return found
    why = "optuna-dashboard is not installed (pip install -e '.[dev]')"
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> Any:
    with _HTTP.open(url, timeout=30) as response:
        return json.load(response)


@contextmanager
def _dashboard(storage_url: str, log: Path, *, timeout_s: float = 60) -> Iterator[str]:
    """optuna-dashboard serving ``storage_url`` on 127.0.0.1 and a free port; yields its base URL
    once its API answers, and stops it on the way out."""
    port = _free_port()
    with log.open("wb") as out:
        server = subprocess.Popen([_dashboard_binary(), storage_url, "--host", "127.0.0.1",
                                   "--port", str(port)], stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            assert server.poll() is None, f"optuna-dashboard exited:\n{log.read_text()[-3000:]}"
            try:
                _get(f"{base}/api/meta")
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, f"no answer in {timeout_s:.0f} s:\n{log.read_text()}"
                time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_dashboard_lists_the_study_and_its_trials_with_their_attributes(
        tmp_path: Path, tiny_checkpoint: Path, postgres_url: str) -> None:
    name, out = f"dashboard-{uuid.uuid4().hex[:8]}", tmp_path / "run"
    search(ar.config.make_config(
        space="tiny", budget=3, model="tiny_cnn", dataset="digits", checkpoint=str(tiny_checkpoint),
        val_source="train", runner="local", out=str(out), storage=postgres_url, study_name=name,
        finetune_steps=10, seed=0))
    run = load_run(out).trials

    with _dashboard(postgres_url, tmp_path / "dashboard.log") as base:
        listed = [s for s in _get(f"{base}/api/studies")["study_summaries"]
                  if s["study_name"] == name]
        assert len(listed) == 1
        detail = _get(f"{base}/api/studies/{listed[0]['study_id']}")

    assert detail["name"] == name and len(detail["directions"]) == 2
    trials = {t["number"]: t for t in detail["trials"]}
    assert sorted(trials) == sorted(run["number"]) and (run["state"] == "complete").sum() >= 2
    for row in run.itertuples():
        shown = trials[row.number]
        attrs = {a["key"]: a["value"] for a in shown["user_attrs"]}
        assert attrs["driver"] == row.driver
        assert ar.plan_from_json(attrs["plan"]) == ar.plan_from_json(str(row.plan))
        if row.state == "complete":
            assert shown["state"] == "Complete"
            assert {"val_accuracy", "params", "flops", "params_ratio", "flops_ratio"} <= set(attrs)
            assert int(attrs["params"]) == row.params and float(attrs["flops"]) == row.flops
            assert float(attrs["val_accuracy"]) == pytest.approx(row.val_accuracy)
            assert {p["name"] for p in shown["params"]} >= {"w"}
    assert {t["number"] for t in detail["best_trials"]} <= set(run["number"][run["state"] == "complete"])
