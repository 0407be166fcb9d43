"""The latency model: cache keys, buckets, candidates under pruning, and the sum rule against a
direct measurement."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import autorank as ar
from autorank.latency import LatencyModel, LatencyTable, Target, bucket, measure_models
from autorank.models import get_model

SHAPE = (3, 32, 32)
PLAN = {"conv1": ar.LayerChoice("prune", (20,)),
        "conv2": ar.LayerChoice("tucker2", (8, 24)),
        "conv3": ar.LayerChoice("cp", (16,)),
        "fc": ar.LayerChoice("svd", (4,))}


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return get_model("tiny_cnn", width=32).eval()


def test_cache_key_changes_with_every_part_of_the_target(tmp_path: Path) -> None:
    base = Target(threads=1, batch=1)
    others = [Target(threads=2, batch=1), Target(threads=1, batch=32),
              Target(threads=1, batch=1, device="meta")]
    keys = {base.key(), *(t.key() for t in others)}
    assert len(keys) == 4
    assert base.key() == Target(threads=1, batch=1).key()
    assert base.about()["torch"] == torch.__version__
    paths = {LatencyTable(t, tmp_path).path for t in (base, *others)}
    assert len(paths) == 4


def test_buckets_round_up_and_clip() -> None:
    assert [bucket(v) for v in (1, 8, 9, 32, 33, 129, 600)] == [1, 8, 12, 32, 40, 144, 608]
    assert bucket(30, cap=29) == 29


def test_candidates_follow_pruning_into_the_next_layer(model: torch.nn.Module, tmp_path: Path) -> None:
    lm = LatencyModel(model, SHAPE, Target(), tmp_path)
    cands = lm.candidates(PLAN)
    assert (cands["conv1"].out_channels, cands["conv1"].method) == (20, "keep")
    assert cands["conv2"].in_channels == 20  # conv1's kept channels
    assert (cands["conv2"].method, cands["conv2"].rank) == ("tucker2", (8, 24))
    assert cands["conv2"].spatial == (32, 32) and cands["conv3"].spatial == (16, 16)
    assert cands["conv3"].rank == (16,)
    assert cands["fc"].method == "svd" and cands["fc"].in_channels == 64
    # ranks off the grid are rounded up: a 10-channel prune is timed as 12
    assert lm.candidates({"conv1": ar.LayerChoice("prune", (10,))})["conv2"].in_channels == 12


def test_the_table_is_measured_once_and_reused_from_disk(model: torch.nn.Module, tmp_path: Path) -> None:
    target = Target(threads=1, batch=2)
    first = LatencyModel(model, SHAPE, target, tmp_path)
    value = first.predict(PLAN)
    assert first.table.measured > 0 and value > 0
    again = LatencyModel(model, SHAPE, target, tmp_path)
    assert again.predict(PLAN) == value
    assert again.table.measured == 0
    other = LatencyModel(model, SHAPE, Target(threads=1, batch=3), tmp_path)
    other.predict(PLAN)
    assert other.table.measured > 0  # another batch: another table


# The sum rule is checked against the dense model timed in the same interleaved rounds: the
# plan's predicted speed-up over dense against its measured one, so that a load that comes and
# goes between the table's timing and this one cancels. Ten runs (tiny_cnn width 32, batch 8,
# one thread, a fresh table each) on a 2-core machine with a training job on both cores put
# that ratio at 0.92-1.05 in torch and 0.78-0.90 in onnxruntime, while the absolute
# predicted / measured ranged 0.77-1.27 (and past 1.6 once under a full test run beside
# training): the bound is 0.6-1.4 on the ratio, and a factor of 2 on the absolute scale. A
# full test run beside a training job once put the ratio at 2.3 (the plan's measurement
# landing in a quiet moment): the test passes when one of three attempts is within bounds.
TOLERANCE = 0.4
ATTEMPTS = 3


@pytest.mark.parametrize("backend", ["torch", pytest.param("onnxruntime", marks=pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime not installed"))])
def test_sum_rule_predicts_a_direct_measurement(model: torch.nn.Module, tmp_path: Path,
                                                backend: str) -> None:
    target = Target(threads=1, batch=8, backend=backend)
    built = ar.apply_plan(model, PLAN, structure_only=True)
    seen = []
    for attempt in range(ATTEMPTS):  # a fresh table each time
        lm = LatencyModel(model, SHAPE, target, tmp_path / str(attempt))
        predicted, dense_predicted = lm.predict(PLAN), lm.predict({})
        measured = measure_models({"plan": built, "dense": model}, SHAPE, target)
        ratio = (predicted / dense_predicted) / (measured["plan"] / measured["dense"])
        seen.append((ratio, predicted, dense_predicted, measured))
        if abs(ratio - 1) < TOLERANCE and all(
                0.5 < value / truth < 2.0 for value, truth in
                ((predicted, measured["plan"]), (dense_predicted, measured["dense"]))):
            return
    raise AssertionError(f"no attempt within the tolerance: {seen}")


def test_latency_command_times_a_plan_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from autorank.cli import main

    monkeypatch.setenv("AUTORANK_CACHE_DIR", str(tmp_path / "cache"))
    plan = tmp_path / "plan.json"
    plan.write_text('{"conv2": {"method": "tucker2", "rank": [8, 16]}}')
    assert main(["latency", "--model", "tiny_cnn", "--plan", str(plan), "--threads", "1",
                 "--repeats", "3", "--json"]) == 0
    import json

    out = json.loads(capsys.readouterr().out)
    assert out["target"]["threads"] == 1 and out["target"]["batch"] == 1
    assert out["flops"]["compressed"] < out["flops"]["dense"]
    assert all(v > 0 for col in ("predicted", "measured", "deployed") for v in out[col].values())
    assert out["table"].startswith(str(tmp_path / "cache"))


def test_latency_command_reads_a_run_and_refuses_bad_input(tiny_run: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from autorank.cli import main

    monkeypatch.setenv("AUTORANK_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["latency", "--run", str(tiny_run), "--trial", "0", "--repeats", "3"]) == 0
    assert "speed-up" in capsys.readouterr().out
    assert main(["latency", "--run", str(tiny_run), "--trial", "99"]) == 2
    assert "no trial 99" in capsys.readouterr().err
    assert main(["latency", "--run", str(tiny_run)]) == 2
    assert main(["latency", "--model", "tiny_cnn", "--plan", str(tmp_path / "missing.json")]) == 2


def test_a_latency_objective_search_steers_on_the_table(tmp_path: Path, tiny_checkpoint: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses
    import json

    import pandas as pd

    from autorank.config import make_config, space_from_dict
    from autorank.sweep import search

    monkeypatch.setenv("AUTORANK_CACHE_DIR", str(tmp_path / "cache"))
    cfg = make_config(space="tiny", model="tiny_cnn", dataset="digits",
                      checkpoint=str(tiny_checkpoint), val_source="train", budget=3,
                      runner="local", out=str(tmp_path / "run"), seed=0, finetune_steps=5,
                      objectives=["accuracy", "latency"])
    backend = "onnxruntime" if importlib.util.find_spec("onnxruntime") else "torch"
    cfg = dataclasses.replace(cfg, space=space_from_dict(
        {"latency_backend": backend, "latency_objective_batch": 4}, base=cfg.space))
    result = search(cfg)
    trials = pd.read_csv(result.path / "trials.csv")
    done = trials[trials["state"] == "complete"]
    assert len(done) and (done["predicted_latency_ms"] > 0).all()
    assert done["latency_ms"].isna().all()  # trials are not timed: shared cores
    tables = list((tmp_path / "cache" / "latency").glob("*.json"))
    assert len(tables) == 1
    about = json.loads(tables[0].read_text())["about"]  # the preset's target, not batch 1 torch
    assert (about["batch"], about["backend"]) == (4, backend)
    # the front is over the predicted latency: no trial on it is dominated in that plane
    front = result.pareto()
    for _, row in front.iterrows():
        better = done[(done["val_accuracy"] >= row["val_accuracy"])
                      & (done["predicted_latency_ms"] <= row["predicted_latency_ms"])
                      & ((done["val_accuracy"] > row["val_accuracy"])
                         | (done["predicted_latency_ms"] < row["predicted_latency_ms"]))]
        assert better.empty
    # the front's models are timed at the end, one by one, beside the dense model
    assert (front["latency_ms"] > 0).all() and result.baseline["latency_ms"] > 0


def test_a_latency_target_the_preset_cannot_have_is_one_line() -> None:
    from autorank.config import space_from_dict
    from autorank.errors import UserError

    with pytest.raises(UserError, match="latency_backend: unknown 'tensorrt'"):
        space_from_dict({"latency_backend": "tensorrt"})
    with pytest.raises(UserError, match="latency_objective_batch"):
        space_from_dict({"latency_objective_batch": 0})
