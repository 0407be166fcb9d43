"""A checkpoint from elsewhere: a new head and a transfer fine-tune when its classes differ, a
stem of the other input-size form named with the flag that fits it, --num-classes checked
against the data, and image resizing said, never silent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cli import run  # the CLI in this process: (exit status, stdout, stderr)

from autorank.baseline import BaselineSpec, baseline_path, prepare_baseline, transfer_baseline
from autorank.config import SearchConfig
from autorank.errors import UserError
from autorank.models import get_model

# a search as small as it gets: one trial of one fine-tune step, in this process
TINY_SEARCH = ["--space", "tiny", "--finetune-steps", "1", "--budget", "1", "--runner", "local"]
TRANSFER = ["--transfer-head-epochs", "1", "--transfer-epochs", "1"]


@pytest.fixture(autouse=True)
def _here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTORANK_CACHE_DIR", str(tmp_path / "cache"))


def _checkpoint(path: Path, model: str, *, classes: int, input_size: int = 32) -> str:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        torch.save(get_model(model, num_classes=classes, input_size=input_size).state_dict(), path)
    return str(path)


def test_a_checkpoint_for_other_classes_gets_a_new_head_and_a_transfer(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 3-class checkpoint on 4-class data: a new fc, 1 epoch alone then 1 with all layers,
    announced in one line and recorded in baseline.json; compress then finds it cached."""
    ckpt = _checkpoint(tmp_path / "three.pt", "tiny_cnn", classes=3)
    code, _, err = run(["search", "--model", "tiny_cnn", "--dataset", "synthetic", "--checkpoint",
                        ckpt, *TRANSFER, *TINY_SEARCH, "--out", "run"], capsys)
    assert code == 0, err
    lines = err.splitlines()
    (start,) = [line for line in lines if "fitting the checkpoint" in line]
    assert start.startswith("fitting the checkpoint to 4 classes (its fc has 3): a new fc, "
                            "trained 1 epoch alone, then 1 with all layers: 2 epochs on "
                            "synthetic (512 images, cpu), about ")
    assert [line.split(":")[0] for line in lines if line.startswith("transfer epoch")] == [
        "transfer epoch 1/2", "transfer epoch 2/2"]
    record = json.loads((tmp_path / "run" / "baseline.json").read_text())["transfer"]
    assert {k: record[k] for k in ("from_classes", "to_classes", "head", "head_steps",
                                   "all_steps")} == {"from_classes": 3, "to_classes": 4,
                                                     "head": "fc", "head_steps": 4, "all_steps": 4}
    assert 0 <= record["val_before"] <= 1 and 0 <= record["val_after"] <= 1
    cached = sorted(p.name for p in (tmp_path / "cache" / "baselines").iterdir())
    assert len(cached) == 1 and "-transfer-h1a1-" in cached[0]  # no .partial left behind

    code, out, err = run(["compress", "--model", "tiny_cnn", "--dataset", "synthetic",
                          "--checkpoint", ckpt, *TRANSFER, "--strategy", "vbmf-tucker2",
                          "--finetune-steps", "1", "--bn-batches", "1", "--out", "c"], capsys)
    assert code == 0, err
    assert "fitting the checkpoint" not in err  # the same transfer, from the cache
    assert json.loads((tmp_path / "c" / "export.json").read_text())["transfer"] == record


@pytest.mark.parametrize(("form", "flags", "message"), [
    (224, [], "checkpoint 'r18.pt' has resnet18's ImageNet stem (conv1 is 7x7, not 3x3 as at "
              "--input-size 32): pass --input-size 224 (or any size above 64; the images are "
              "resized to it)"),
    (32, ["--input-size", "72"], "checkpoint 'r18.pt' has resnet18's small-input stem (conv1 "
                                 "is 3x3, not 7x7 as at --input-size 72): pass --input-size 32 "
                                 "(or any size up to 64; the images are resized to it)"),
])
def test_a_stem_of_the_other_input_size_is_named_with_the_flag_that_fits(
        form: int, flags: list[str], message: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    _checkpoint(tmp_path / "r18.pt", "resnet18", classes=1000, input_size=form)
    code, _, err = run(["search", "--model", "resnet18", "--dataset", "synthetic",
                        "--checkpoint", "r18.pt", *flags, *TINY_SEARCH], capsys)
    assert code == 2
    assert err == f"autorank search: error: {message}\n"
    assert not (tmp_path / "runs").exists()  # nothing written
    with pytest.raises(UserError, match="stem"):  # the API says the same
        from autorank.sweep import search

        search(SearchConfig(model="resnet18", dataset="synthetic", checkpoint="r18.pt",
                            input_size=int(flags[1]) if flags else None, runner="local",
                            out=str(tmp_path / "api")))
    assert not (tmp_path / "api").exists()


def test_other_differences_stay_one_line(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    torch.save(get_model("tiny_cnn", num_classes=4, width=8).state_dict(), tmp_path / "w8.pt")
    code, _, err = run(["compress", "--model", "tiny_cnn", "--dataset", "synthetic", "--checkpoint",
                        "w8.pt", "--strategy", "vbmf-tucker2", "--out", "c"], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "'w8.pt' does not fit tiny_cnn at --input-size 32: shape mismatches 16 (conv1.weight " \
           "(8, 3, 3, 3) vs (16, 3, 3, 3)" in err
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("argv", [
    ["search", *TINY_SEARCH],
    ["compress", "--strategy", "vbmf-tucker2", "--out", "c"],
    ["train", "--epochs", "1", "--out", "c"],
])
def test_num_classes_must_be_the_data_sets(argv: list[str], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run([*argv, "--model", "tiny_cnn", "--dataset", "synthetic",
                        "--num-classes", "5"], capsys)
    assert code == 2
    assert err.endswith(": error: --num-classes 5 disagrees with synthetic, whose labels are 4 "
                        "classes (class0, class1, class2, class3); leave --num-classes out or "
                        "give 4\n") and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists() and not (tmp_path / "c").exists()


def _image_folder(root: Path, side: int) -> str:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 10), ("test", 3)):
        for label in ("a", "b", "c"):
            (root / split / label).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / label / f"{i}.png")
    return f"imagefolder:{root}"


def test_resizing_images_is_said_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _image_folder(tmp_path / "folder", 40)
    said = f"{data}: 39 of 39 images resized from 40x40 to 32x32; --input-size sets the size"
    code, _, err = run(["search", "--model", "tiny_cnn", "--dataset", data, "--baseline-epochs",
                        "1", *TINY_SEARCH, "--out", "run"], capsys)
    assert code == 0, err
    assert err.splitlines().count(said) == 1  # not again when the baseline is trained
    code, _, err = run(["train", "--model", "tiny_cnn", "--dataset", data, "--epochs", "1",
                        "--input-size", "48", "--out", "m.pt"], capsys)
    assert code == 0, err
    assert f"{data}: 39 of 39 images resized from 40x40 to 48x48; --input-size sets the size" \
        in err.splitlines()
    assert torch.load("m.pt", weights_only=True)["meta"]["input_size"] == 48
    code, _, err = run(["train", "--model", "tiny_cnn", "--dataset", data, "--epochs", "1",
                        "--input-size", "40", "--out", "n.pt"], capsys)
    assert code == 0 and "resized" not in err  # the images' own size


def test_a_stopped_transfer_resumes_to_the_same_weights(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped after its epoch 2 (the first with all layers), a transfer goes on from there and
    ends bit for bit where one that never stopped ends; the cache keys on the input size."""
    spec = BaselineSpec("tiny_cnn", "synthetic", checkpoint=_checkpoint(
        tmp_path / "three.pt", "tiny_cnn", classes=3), transfer_head_epochs=1, transfer_epochs=2)
    whole, record = transfer_baseline(prepare_baseline(spec), cache_dir=tmp_path / "a")
    monkeypatch.setenv("AUTORANK_INJECT_FAULT", "raise:transfer-epoch-2")
    with pytest.raises(RuntimeError, match="injected fault at transfer-epoch-2"):
        transfer_baseline(prepare_baseline(spec), cache_dir=tmp_path / "b")
    assert len(list((tmp_path / "b").glob(".*.partial"))) == 2  # the head's and all layers'
    monkeypatch.delenv("AUTORANK_INJECT_FAULT")
    events: list[object] = []
    resumed, again = transfer_baseline(prepare_baseline(spec), cache_dir=tmp_path / "b",
                                       on_progress=events.append)
    assert [getattr(e, "epoch", None) for e in events] == [2, 3]  # the start, then epoch 3
    assert again == record and not list((tmp_path / "b").glob(".*.partial"))
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    sizes = [baseline_path("resnet18", "cifar10", epochs=1, seed=0, lr=0.1, batch_size=128,
                           input_size=side) for side in (32, 224)]
    assert sizes[0] != sizes[1]
