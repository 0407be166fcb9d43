"""Export a trial of a tiny run and load it back: bit-identical, plain torch, ONNX, refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import autorank as ar
from autorank.bundle import ONNX_ATOL, ONNX_RTOL, write_bundle
from autorank.cli import main
from autorank.decompose import apply_plan
from autorank.errors import UserError
from autorank.models import get_model


def _front(run: Path) -> list[int]:
    return sorted(int(n) for n in pd.read_csv(run / "pareto.csv")["number"])


@pytest.fixture(scope="module")
def exported(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> ar.exporter.Exported:
    out = tmp_path_factory.mktemp("export") / "model"
    return ar.export(tiny_run, _front(tiny_run)[0], out, onnx=True)


def _trial_model(run: Path, number: int) -> nn.Module:
    """The trial's model assembled the way the search assembled it: baseline + plan + weights."""
    result = ar.load_run(run)
    plan = ar.plan_from_json(result.trials.set_index("number").loc[number, "plan"])
    baseline = get_model("tiny_cnn", checkpoint=result.config.checkpoint)
    model = apply_plan(baseline, plan)
    model.load_state_dict(torch.load(run / "weights" / f"trial-{number}.pt", weights_only=True))
    return model.eval()


def test_export_writes_the_bundle_and_loads_bit_identical(exported: ar.exporter.Exported,
                                                          tiny_run: Path) -> None:
    for name in ("plan.json", "model.safetensors", "export.json", "config.yaml", "README.md",
                 "model.onnx"):
        assert (exported.path / name).exists(), name
    info = exported.info
    assert ar.plan_from_json((exported.path / "plan.json").read_text())
    assert 0 <= info["test_accuracy"] <= 1 and info["params_ratio"] > 1
    assert info["latency_ms"] > 0 and info["baseline"]["latency_ms"] > 0
    deployed = info["deployed_latency"]  # BatchNorm folded, factors merged; both backends
    assert "deploy_error" not in deployed
    for key in (f"{b}_batch_{n}" for b in ("torch", "onnxruntime") for n in (1, info["latency_batch"])):
        assert deployed[key]["model"] > 0 and deployed[key]["baseline"] > 0, key
    card = (exported.path / "README.md").read_text()
    for text in ("test accuracy", "parameters", "latency at batch 1", "ar.load_exported", "ratio",
                 "latency at batch 1, deployed, onnxruntime"):
        assert text in card
    loaded = ar.load_exported(exported.path)
    reference = _trial_model(tiny_run, info["trial"])
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.equal(loaded(x), reference(x))


def test_exported_model_is_plain_torch(exported: ar.exporter.Exported) -> None:
    model = ar.load_exported(exported.path)
    assert all(type(m).__module__.startswith("torch.nn") for m in model.modules() if m is not model)
    x = torch.randn(2, 3, 32, 32)
    program = torch.export.export(model, (x,))
    with torch.inference_mode():
        assert torch.equal(program.module()(x), model(x))


def test_onnx_matches_torch_within_the_stated_tolerance(exported: ar.exporter.Exported) -> None:
    import onnxruntime as ort

    assert exported.info["onnx"]["max_abs_diff"] <= ONNX_ATOL
    model = ar.load_exported(exported.path)
    session = ort.InferenceSession(str(exported.path / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    x = torch.randn(7, 3, 32, 32, generator=torch.Generator().manual_seed(2))  # another batch size
    got = session.run(None, {"input": x.numpy()})[0]
    with torch.inference_mode():
        want = model(x).numpy()
    assert np.allclose(got, want, atol=ONNX_ATOL, rtol=ONNX_RTOL)


def test_every_method_round_trips_without_refactorizing(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = get_model("tiny_cnn", num_classes=10)
    plans = [{"conv2": ar.LayerChoice("cp", (2,)), "conv3": ar.LayerChoice("cp3", (2,)),
              "fc": ar.LayerChoice("svd", (3,))},
             {"conv2": ar.LayerChoice("tt", (4, 3, 4)), "conv3": ar.LayerChoice("spatial_svd", (5,)),
              "conv1": ar.LayerChoice("tucker2", (3, 4)), "fc": ar.LayerChoice("keep")}]
    x = torch.randn(3, 3, 32, 32)
    for i, plan in enumerate(plans):
        small = apply_plan(model, plan).eval()
        folder = tmp_path / str(i)
        folder.mkdir()
        write_bundle(small, plan, folder, {"model_name": "tiny_cnn", "num_classes": 10,
                                            "input_shape": [3, 32, 32]})
        loaded = ar.load_exported(folder)
        with torch.inference_mode():
            assert torch.equal(loaded(x), small(x))


def test_unknown_failed_and_pruned_trials_are_refused(tiny_run: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UserError, match=r"has no trial 99 \(its trials: 0\.\.3\)"):
        ar.export(tiny_run, 99, tmp_path / "a")
    with pytest.raises(UserError, match=r"trial 1 did not complete \(failed: .*injected fault"):
        ar.export(tiny_run, 1, tmp_path / "a")
    assert main(["export", str(tiny_run), "--trial", "1", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did not complete" in err
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    number = _front(run)[0]
    (run / "weights" / f"trial-{number}.pt").unlink()
    with pytest.raises(UserError, match=f"weights of trial {number} were not kept"):
        ar.export(run, number, tmp_path / "a")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="holds other files"):
        ar.export(tiny_run, _front(tiny_run)[0], busy)


def test_tampered_plan_names_the_missing_layer(exported: ar.exporter.Exported, tmp_path: Path) -> None:
    folder = tmp_path / "tampered"
    shutil.copytree(exported.path, folder)
    plan = json.loads((folder / "plan.json").read_text())
    plan["layer9.conv7"] = {"method": "svd", "rank": [2]}
    (folder / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(UserError, match=r"names layer\(s\) \['layer9.conv7'\] that do not exist"):
        ar.load_exported(folder)
    (folder / "plan.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        ar.load_exported(folder)
    with pytest.raises(UserError, match="not an autorank export"):
        ar.load_exported(tmp_path)


def test_longer_finetune_is_reported(tiny_run: Path, tmp_path: Path) -> None:
    number = _front(tiny_run)[-1]
    code = main(["export", str(tiny_run), "--trial", str(number), "--out", str(tmp_path / "m"),
                 "--finetune-epochs", "1"])
    assert code == 0
    info = json.loads((tmp_path / "m" / "export.json").read_text())
    assert info["finetune_epochs"] == 1 and info["finetune_s"] > 0
    assert 0 <= info["test_accuracy_trial"] <= 1
    assert "before the 1-epoch fine-tune" in (tmp_path / "m" / "README.md").read_text()
    tuned = ar.load_exported(tmp_path / "m")
    trial = _trial_model(tiny_run, number)
    assert any(not torch.equal(a, b) for a, b in zip(tuned.state_dict().values(),
                                                     trial.state_dict().values(), strict=True))


@pytest.mark.parametrize("strategy", ["vbmf-tucker2", "admm"])
def test_export_with_a_strategy_trains_the_plan_from_the_baseline(
        strategy: str, tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    number = _front(run)[0]
    (run / "weights" / f"trial-{number}.pt").unlink()  # not needed: the plan is trained anew
    if strategy == "admm":  # through the Python API
        ar.export(run, number, tmp_path / "m", finetune_epochs=0.5, strategy=strategy,
                  admm_steps=20)
    else:
        assert main(["export", str(run), "--trial", str(number), "--out", str(tmp_path / "m"),
                     "--strategy", strategy, "--finetune-epochs", "0.5"]) == 0
    info = json.loads((tmp_path / "m" / "export.json").read_text())
    assert info["strategy"] == strategy and info["finetune_s"] > 0
    assert 0 <= info["accuracy_after"] <= 1 and 0 <= info["test_accuracy"] <= 1
    plan = ar.load_run(run).trials.set_index("number").loc[number, "plan"]
    assert ar.plan_from_json((tmp_path / "m" / "plan.json").read_text()) == ar.plan_from_json(plan)
    card = (tmp_path / "m" / "README.md").read_text()
    assert f"by the `{strategy}` recipe" in card
    if strategy == "admm":
        extra = info["strategy_extra"]
        assert info["admm_steps"] == 20 and extra["distance_end"] < extra["distance_start"]
    assert ar.load_exported(tmp_path / "m")  # export checked the round trip bit for bit


@pytest.mark.parametrize(("argv", "pattern"), [
    (["--strategy", "musco", "--finetune-epochs", "1"], "cannot train a chosen plan; expected one"),
    (["--strategy", "admm"], "give --finetune-epochs > 0"),
    (["--strategy", "admm", "--finetune-epochs", "1", "--admm-steps", "-3"], "--admm-steps must"),
])
def test_export_strategy_bad_input(argv: list[str], pattern: str, tiny_run: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["export", str(tiny_run), "--trial", str(_front(tiny_run)[0]),
                 "--out", str(tmp_path / "m"), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and pattern in err and len(err.splitlines()) == 1
    assert not (tmp_path / "m").exists()


def test_exported_files_share_one_mode(exported: ar.exporter.Exported) -> None:
    modes = {p.name: p.stat().st_mode & 0o777 for p in exported.path.iterdir()}
    assert len(set(modes.values())) == 1, modes  # model.safetensors like its siblings


def test_onnx_without_its_packages_is_refused_before_any_work(
        tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    monkeypatch.setattr("autorank.exporter.load_baseline", lambda *a, **k: pytest.fail("work began"))
    out = tmp_path / "never"
    assert main(["export", str(tiny_run), "--trial", str(_front(tiny_run)[0]), "--out", str(out),
                 "--onnx"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "onnxruntime" in err[0] and "autorank[onnx]" in err[0]
    assert not out.exists()


def test_a_failed_export_leaves_nothing_behind(tiny_run: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("simulated failure after the weights were written")

    monkeypatch.setattr("autorank.exporter.check_round_trip", broken)
    out = tmp_path / "exports" / "model"
    with pytest.raises(RuntimeError, match="simulated failure"):
        ar.export(tiny_run, _front(tiny_run)[0], out)
    assert not out.exists()
    assert list((tmp_path / "exports").iterdir()) == []  # no staging directory either
    monkeypatch.undo()
    done = ar.export(tiny_run, _front(tiny_run)[0], out)
    again = ar.export(tiny_run, _front(tiny_run)[0], out)  # an earlier export is replaced
    assert done.path == again.path == out.resolve() and (out / "export.json").exists()
    assert sorted(p.name for p in (tmp_path / "exports").iterdir()) == ["model"]
    assert (out.stat().st_mode & 0o777) == ((tmp_path / "exports").stat().st_mode & 0o777)
