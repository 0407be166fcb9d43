"""Baselines: training one from scratch, and its on-disk cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import autorank.baseline as baseline
from autorank.baseline import train_baseline
from autorank.models import get_model, load_checkpoint


def test_train_baseline_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = train_baseline("tiny_cnn", "synthetic", epochs=1, cache_dir=tmp_path, progress=False)
    mtime = path.stat().st_mtime_ns
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["meta"]["model"] == "tiny_cnn" and ckpt["meta"]["epochs"] == 1
    assert 0.0 <= ckpt["meta"]["test_accuracy"] <= 1.0
    model = get_model("tiny_cnn", num_classes=4, checkpoint=path)
    assert torch.equal(model.fc.weight, load_checkpoint(path)["fc.weight"])

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached baseline must not be trained again")

    monkeypatch.setattr(baseline, "finetune", no_training)
    again = train_baseline("tiny_cnn", "synthetic", epochs=1, cache_dir=tmp_path, progress=False)
    assert again == path and again.stat().st_mtime_ns == mtime
    monkeypatch.setenv("AUTORANK_CACHE_DIR", str(tmp_path / "env"))
    with pytest.raises(AssertionError, match="must not be trained"):
        train_baseline("tiny_cnn", "synthetic", epochs=1, progress=False)


def test_the_cache_keys_on_the_data_content_not_its_path(tmp_path: Path) -> None:
    """The same npz path overwritten with other images is another data set: a new baseline."""
    import numpy as np

    data = tmp_path / "d.npz"

    def write(seed: int) -> None:
        rng = np.random.default_rng(seed)
        x = rng.integers(0, 255, (120, 16, 16, 3), dtype=np.uint8)
        y = np.arange(120) % 3
        np.savez(data, x_train=x, y_train=y, x_test=x[:30], y_test=y[:30])

    write(0)
    first = train_baseline("tiny_cnn", f"npz:{data}", epochs=1, cache_dir=tmp_path / "c",
                           progress=False)
    assert train_baseline("tiny_cnn", f"npz:{data}", epochs=1, cache_dir=tmp_path / "c",
                          progress=False) == first  # the same content: cached
    write(1)
    second = train_baseline("tiny_cnn", f"npz:{data}", epochs=1, cache_dir=tmp_path / "c",
                            progress=False)
    assert second != first and first.exists()


def test_a_stopped_baseline_resumes_from_its_last_epoch_to_the_same_weights(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped after epoch 1 of 3, training goes on from epoch 1's saved state (weights,
    optimizer, schedule, batch order, RNG) and ends bit for bit where a run that never
    stopped ends. With ``keep_epochs`` every epoch's weights stay, each a checkpoint."""
    whole = train_baseline("tiny_cnn", "digits", epochs=3, cache_dir=tmp_path / "a",
                           progress=False)
    monkeypatch.setenv("AUTORANK_INJECT_FAULT", "raise:baseline-epoch-1")
    with pytest.raises(RuntimeError, match="injected fault at baseline-epoch-1"):
        train_baseline("tiny_cnn", "digits", epochs=3, cache_dir=tmp_path / "b", progress=False,
                       keep_epochs=True)
    (partial,) = (tmp_path / "b").glob(".*.partial")
    assert partial.name == f".{whole.name}.partial"  # the cache's key
    steps = torch.load(partial, weights_only=True)["step"]
    monkeypatch.delenv("AUTORANK_INJECT_FAULT")
    events: list[baseline.BaselineProgress] = []
    resumed = train_baseline("tiny_cnn", "digits", epochs=3, cache_dir=tmp_path / "b",
                             progress=False, on_progress=events.append, keep_epochs=True)
    assert events[0].loss is None and events[0].resumed_from == 1 and events[0].eta_s > 0
    assert [e.epoch for e in events[1:]] == [2, 3]
    assert all(e.loss is not None and 0 <= (e.val_accuracy or 0) <= 1 for e in events[1:])
    assert not partial.exists() and steps == 10  # 1212 training images, batches of 128
    first, second = load_checkpoint(whole), load_checkpoint(resumed)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    kept = sorted(baseline.epochs_dir(resumed).glob("*.pt"))
    assert [p.name for p in kept] == ["epoch-001.pt", "epoch-002.pt", "epoch-003.pt"]
    metas = [torch.load(p, weights_only=True)["meta"] for p in kept]
    assert [m["epoch"] for m in metas] == [1, 2, 3] and metas[0]["epochs"] == 3
    assert [m["val_accuracy"] for m in metas[1:]] == [e.val_accuracy for e in events[1:]]
    last = get_model("tiny_cnn", num_classes=10, checkpoint=kept[-1]).state_dict()
    assert all(torch.equal(last[k], second[k]) for k in second)
    assert not torch.equal(load_checkpoint(kept[0])["fc.weight"], second["fc.weight"])
    assert not baseline.epochs_dir(whole).exists()  # kept only when asked
