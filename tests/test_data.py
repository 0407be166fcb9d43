"""Data sets: loaders, checks on user arrays, disjoint seeded splits, batching and augmentation."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.datasets.cifar as tv_cifar

from autorank.data import DataBundle, augment_batch, get_data, image_hashes, list_datasets
from autorank.errors import UserError


def _write_npz(path: Path, n_train: int = 40, n_test: int = 20, **override: object) -> Path:
    rng = np.random.default_rng(0)
    arrays: dict[str, object] = {
        "x_train": rng.integers(0, 256, (n_train, 8, 8, 3), dtype=np.uint8),
        "y_train": np.arange(n_train) % 4,
        "x_test": rng.integers(0, 256, (n_test, 8, 8, 3), dtype=np.uint8),
        "y_test": np.arange(n_test) % 4,
    }
    arrays.update(override)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def test_registry_and_unknown_name() -> None:
    assert {"cifar10", "cifar100", "digits", "imagefolder", "npz", "synthetic"} <= set(
        list_datasets()
    )
    with pytest.raises(UserError, match=r"unknown data set 'mnist'; expected one of \["):
        get_data("mnist")


def test_digits_bundle(digits: DataBundle) -> None:
    assert (len(digits.train), len(digits.val), len(digits.test)) == (1212, 135, 450)
    assert digits.train.x.dtype == torch.uint8 and digits.train.y.dtype == torch.int64
    assert digits.input_shape == (3, 32, 32) and digits.image_size == (32, 32)
    assert digits.num_classes == 10 and len(digits.class_names) == 10
    assert torch.bincount(digits.test.y).min() >= 43  # stratified: 174-183 per class in all
    assert digits.val_source == "train" and len(digits) == 1212


def test_batches_are_normalised(digits: DataBundle) -> None:
    x, y = next(digits.batches("train", batch_size=1212))
    assert x.dtype == torch.float32 and x.shape == (1212, 3, 32, 32) and y.shape == (1212,)
    # Default mean/std are the training set's own, so the normalised train set is standard.
    assert x.mean().item() == pytest.approx(0.0, abs=0.02)
    assert x.std().item() == pytest.approx(1.0, abs=0.02)


def test_batches_limit_shuffle_and_sizes(synthetic: DataBundle) -> None:
    sizes = [len(y) for _, y in synthetic.batches("test", batch_size=50)]
    assert sizes == [50, 50, 28]
    assert sum(len(y) for _, y in synthetic.batches("train", batch_size=64, limit=100)) == 100
    first = [next(synthetic.batches("train", batch_size=8, shuffle=True,
                                    generator=torch.Generator().manual_seed(s)))[1]
             for s in (1, 1, 2)]
    assert torch.equal(first[0], first[1]) and not torch.equal(first[0], first[2])
    with pytest.raises(UserError, match="unknown split 'dev'"):
        next(synthetic.batches("dev", batch_size=8))


def test_augment_is_a_padded_crop_and_maybe_a_flip() -> None:
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    out = augment_batch(x, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = F.pad(x, (4, 4, 4, 4))
    for i in range(16):
        candidates = [c for dy in range(9) for dx in range(9)
                      for c in (padded[i, :, dy:dy + 8, dx:dx + 8],
                                padded[i, :, dy:dy + 8, dx:dx + 8].flip(-1))]
        assert any(torch.equal(out[i], c) for c in candidates)
    assert not torch.equal(out, x)


def test_mean_std_passed_through(synthetic: DataBundle) -> None:
    data = get_data("synthetic", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert data.mean == (0.5, 0.5, 0.5) and data.std == (0.25, 0.25, 0.25)
    with pytest.raises(UserError, match="mean and std need 3 values"):
        get_data("synthetic", mean=(0.5,), std=(0.2,))


@pytest.mark.parametrize("val_source", ["train", "test"])
def test_val_is_disjoint_from_train_and_test(val_source: str) -> None:
    data = get_data("synthetic", num_train=400, num_test=200, val_source=val_source, seed=3)
    train, val, test = (set(image_hashes(s.x)) for s in (data.train, data.val, data.test))
    assert len(train) == 400 - len(val) if val_source == "train" else len(train) == 400
    assert len(val) == (40 if val_source == "train" else 100)
    assert not (val & train) and not (val & test) and not (train & test)
    assert torch.bincount(data.val.y).tolist() == [len(val) // 4] * 4  # stratified
    assert data.val_source == val_source


def test_val_split_is_seeded() -> None:
    def val_images(seed: int) -> list[int]:
        return image_hashes(get_data("synthetic", seed=seed).val.x)

    assert val_images(0) == val_images(0) and val_images(0) != val_images(1)


def test_val_size_options() -> None:
    assert len(get_data("synthetic", val_size=0).val) == 0
    assert len(get_data("synthetic", val_size=0.25).val) == 128
    assert len(get_data("synthetic", val_size=64, val_source="test").val) == 64
    with pytest.raises(UserError, match="val_size must be in"):
        get_data("synthetic", val_size=512)
    with pytest.raises(UserError, match="val_source must be one of"):
        get_data("synthetic", val_source="both")


def test_npz_round_trip(tmp_path: Path) -> None:
    names = np.array(["a", "b", "c", "d", "e"])
    data = get_data(f"npz:{_write_npz(tmp_path / 'ok.npz', class_names=names)}", val_size=0.2)
    assert (len(data.train), len(data.val), len(data.test)) == (32, 8, 20)
    assert data.num_classes == 5 and data.class_names[0] == "a"
    assert data.input_shape == (3, 8, 8)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"y_test": None}, r"missing arrays \['y_test'\]"),
        ({"y_train": np.arange(39) % 4}, "39 labels for 40 images"),
        ({"y_train": np.arange(40) - 1}, r"labels in -1\.\.38"),
        ({"class_names": np.array(["a", "b"])}, r"expected 0\.\.1"),
        ({"x_train": np.zeros((40, 8, 8, 5), np.uint8)}, r"shape \(40, 8, 8, 5\)"),
        ({"x_train": np.zeros((40, 8, 8, 3), np.float32)}, "dtype float32; expected uint8"),
        ({"x_test": np.zeros((20, 9, 9, 3), np.uint8)}, "differ in size"),
    ],
)
def test_npz_refuses_bad_arrays(tmp_path: Path, override: dict[str, object], message: str) -> None:
    path = _write_npz(tmp_path / "bad.npz", **override)
    with pytest.raises(UserError, match=message):
        get_data(f"npz:{path}")


def test_npz_missing_file_and_missing_path(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        get_data(f"npz:{tmp_path / 'none.npz'}")
    with pytest.raises(UserError, match="npz:PATH"):
        get_data("npz")


def test_grey_npz_becomes_rgb(tmp_path: Path) -> None:
    grey = np.zeros((40, 8, 8), np.uint8)
    data = get_data(f"npz:{_write_npz(tmp_path / 'g.npz', x_train=grey)}", val_size=0)
    assert data.train.x.shape == (40, 3, 8, 8)
    assert torch.equal(data.train.x[:, 0], data.train.x[:, 2])


def test_cifar_missing_says_where_to_put_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AUTORANK_DATA_DIR", raising=False)
    with pytest.raises(UserError, match=r"cifar10 not found: put cifar10\.npz.*--download"):
        get_data("cifar10", data_dir=tmp_path)


def test_cifar_download_offline_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.delenv("AUTORANK_DATA_DIR", raising=False)
    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    with pytest.raises(UserError, match="could not download cifar100.*offline"):
        get_data("cifar100", data_dir=tmp_path, download=True)


def test_cifar_reads_npz_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_npz(tmp_path / "cifar10.npz", n_train=100, n_test=40)
    monkeypatch.setenv("AUTORANK_DATA_DIR", str(tmp_path))
    data = get_data("cifar10")
    assert data.mean == (0.4914, 0.4822, 0.4465) and len(data.val) == 10


def test_imagefolder(tmp_path: Path) -> None:
    from PIL import Image

    for split, count in (("train", 4), ("test", 2)):
        for cls, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (12, 10), colour).save(folder / f"{i}.png")
    data = get_data(f"imagefolder:{tmp_path}", image_size=16, val_size=2)
    assert data.class_names == ("cat", "dog")
    assert (len(data.train), len(data.val), len(data.test)) == (6, 2, 4)
    assert data.input_shape == (3, 16, 16)
    red = data.test.x[data.test.y == 0]
    assert red[:, 0].min() == 255 and red[:, 2].max() == 0


@pytest.mark.realdata
def test_cifar10_val_from_test_is_half_of_it(data_dir: Path) -> None:
    data = get_data("cifar10", data_dir=data_dir, val_source="test")
    assert (len(data.train), len(data.val), len(data.test)) == (50_000, 5_000, 5_000)
    assert torch.bincount(data.val.y).tolist() == [500] * 10
    assert data.class_names[0] == "airplane"
    carved = get_data("cifar10", data_dir=data_dir)
    assert (len(carved.train), len(carved.val), len(carved.test)) == (45_000, 5_000, 10_000)
