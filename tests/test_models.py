"""Model registry, builders, checkpoint loading (including refusing code), real checkpoints."""

from __future__ import annotations

import pickle
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision.models._api as tv_api
from torch import nn

import autorank as ar
from autorank import LayerChoice
from autorank.data import get_data
from autorank.engine import evaluate
from autorank.errors import UserError
from autorank.models import (
    CIFAR10_MEAN,
    IMAGENET_MEAN,
    IMAGENET_STD,
    get_model,
    get_model_spec,
    list_models,
    load_checkpoint,
    load_weights,
    register_model,
)

TORCHVISION = ["resnet18", "resnet34", "resnet50", "vgg11_bn", "vgg16", "vgg16_bn", "alexnet",
               "mobilenet_v2", "shufflenet_v2_x1_0", "densenet121", "densenet161"]
CIFAR_RESNETS = ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]
# The five models of the reference slides' table (Klyueva et al.), built for CIFAR-10.
REFERENCE_FIVE = ["alexnet", "resnet18", "vgg16", "shufflenet_v2_x1_0", "densenet161"]


def _forward(model: nn.Module, batch: int = 2, size: int = 32) -> torch.Tensor:
    with torch.inference_mode():
        return model.eval()(torch.randn(batch, 3, size, size))


def test_registry_lists_every_family() -> None:
    names = list_models()
    assert names == sorted(names)
    assert set(TORCHVISION + CIFAR_RESNETS + ["tiny_cnn"]) <= set(names)


def test_spec_round_trip() -> None:
    spec = get_model_spec("resnet20")
    assert (spec.name, spec.family, spec.input_size) == ("resnet20", "cifar_resnet", 32)
    assert (spec.mean, spec.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert get_model_spec("vgg16").mean == CIFAR10_MEAN
    assert get_model_spec("tiny_cnn").family == "tiny"


def test_unknown_model_lists_the_allowed_names() -> None:
    with pytest.raises(UserError, match=r"unknown model 'resnet9'; expected one of \[.*'resnet20'"):
        get_model("resnet9")
    with pytest.raises(ValueError, match="unknown model"):
        get_model_spec("nope")


def test_duplicate_registration_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model("tiny_cnn", family="tiny")(lambda **kw: nn.Identity())


@pytest.mark.parametrize("name", list_models())
def test_every_model_runs_forward(name: str) -> None:
    out = _forward(get_model(name), batch=1 if name in ("densenet161", "vgg16") else 2)
    assert out.shape[1] == 10
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", REFERENCE_FIVE)
def test_reference_five_build_for_cifar10(name: str) -> None:
    out = _forward(get_model(name, num_classes=10, input_size=32), batch=2)
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


def test_num_classes_and_width() -> None:
    assert _forward(get_model("resnet20", num_classes=100)).shape == (2, 100)
    tiny = get_model("tiny_cnn", num_classes=3, width=8)
    assert _forward(tiny).shape == (2, 3)
    assert 10_000 <= sum(p.numel() for p in get_model("tiny_cnn").parameters()) <= 20_000


def test_cifar_resnet_parameter_counts() -> None:
    # Counts from the akamaster checkpoints (He et al. 2016, Table 6).
    assert sum(p.numel() for p in get_model("resnet20").parameters()) == 269_722
    assert sum(p.numel() for p in get_model("resnet56").parameters()) == 853_018


def test_small_input_adaptation_keeps_spatial_resolution() -> None:
    resnet = get_model("resnet18")
    assert resnet.conv1.stride == (1, 1) and isinstance(resnet.maxpool, nn.Identity)
    assert get_model("resnet18", input_size=224).conv1.stride == (2, 2)
    assert _forward(get_model("resnet18", input_size=96), batch=1, size=96).shape == (1, 10)


def test_weights_need_the_unadapted_stem() -> None:
    with pytest.raises(UserError, match="input_size > 64"):
        get_model("resnet18", weights="IMAGENET1K_V1")
    with pytest.raises(UserError, match="unknown weights 'NOPE'"):
        get_model("resnet18", weights="NOPE", input_size=224)
    with pytest.raises(UserError, match="checkpoint=FILE"):
        get_model("resnet20", weights="IMAGENET1K_V1")


def test_weights_download_failure_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tv_api, "load_state_dict_from_url", offline)
    with pytest.raises(UserError, match="could not download torchvision weights"):
        get_model("resnet18", weights="IMAGENET1K_V1", input_size=224)


def test_pretrained_weights_get_a_new_head(monkeypatch: pytest.MonkeyPatch) -> None:
    imagenet = get_model("resnet18", num_classes=1000, input_size=224).state_dict()
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", lambda *a, **k: imagenet)
    model = get_model("resnet18", weights="IMAGENET1K_V1", input_size=224, num_classes=7)
    assert torch.equal(model.conv1.weight, imagenet["conv1.weight"])
    assert model.fc.out_features == 7
    assert _forward(model, batch=1, size=96).shape == (1, 7)


def _akamaster_style(model: nn.Module) -> dict[str, object]:
    state = {f"module.{k}": v for k, v in model.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    return {"best_prec1": 91.73, "state_dict": state}


def test_checkpoint_round_trip_strips_module_prefix(tmp_path: Path) -> None:
    source = get_model("resnet20")
    path = tmp_path / "r20.th"
    torch.save(_akamaster_style(source), path)
    loaded = get_model("resnet20", checkpoint=path)
    for key, value in source.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(loaded.state_dict()[key], value), key


@pytest.mark.parametrize("wrap", ["bare", "model", "state_dict"])
def test_load_checkpoint_layouts(tmp_path: Path, wrap: str) -> None:
    state = get_model("tiny_cnn").state_dict()
    obj = state if wrap == "bare" else {wrap: state, "epoch": 3}
    torch.save(obj, tmp_path / "c.pt")
    assert set(load_checkpoint(tmp_path / "c.pt")) == set(state)


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.pt")


class _Evil:
    """Unpickling this would create the marker file: a checkpoint that runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_malicious_pickle_is_not_executed(tmp_path: Path, writer: str) -> None:
    marker, path = tmp_path / "pwned", tmp_path / "evil.pt"
    if writer == "torch":
        torch.save({"state_dict": _Evil(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(_Evil(marker), protocol=2))
    with pytest.raises(UserError, match=r"evil\.pt.*not a plain tensor checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


def test_pickled_module_refused(tmp_path: Path) -> None:
    torch.save(get_model("tiny_cnn"), tmp_path / "whole.pt")
    with pytest.raises(UserError, match="not a plain tensor checkpoint"):
        get_model("tiny_cnn", checkpoint=tmp_path / "whole.pt")


def test_non_state_dict_refused(tmp_path: Path) -> None:
    torch.save({"epoch": 3, "acc": 0.5}, tmp_path / "meta.pt")
    with pytest.raises(UserError, match="holds no state dict"):
        load_checkpoint(tmp_path / "meta.pt")


def test_wrong_architecture_names_keys(tmp_path: Path) -> None:
    torch.save(get_model("resnet20").state_dict(), tmp_path / "r20.pt")
    with pytest.raises(UserError, match=r"r20\.pt.*missing keys 60 \(layer1\.3\.conv1\.weight"):
        get_model("resnet32", checkpoint=tmp_path / "r20.pt")
    with pytest.raises(UserError, match=r"unexpected keys \d+ \(.*, \.\.\.\)"):
        get_model("tiny_cnn", checkpoint=tmp_path / "r20.pt")
    with pytest.raises(UserError, match=r"shape mismatches 2 \(linear\.weight \(10, 64\) vs"):
        get_model("resnet20", num_classes=100, checkpoint=tmp_path / "r20.pt")


def test_load_weights_accepts_a_state_dict() -> None:
    source, target = get_model("tiny_cnn"), get_model("tiny_cnn")
    load_weights(target, {f"module.{k}": v for k, v in source.state_dict().items()})
    assert torch.equal(target.fc.weight, source.fc.weight)


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("name", "file", "accuracy"),
    # ResNet-56's full test pass takes ~85 s on 2 cores: slow; ResNet-20 checks the same path
    [("resnet20", "resnet20-12fca82f.th", 0.9173),
     pytest.param("resnet56", "resnet56-4bfd9763.th", 0.9339, marks=pytest.mark.slow)],
)
def test_checkpoints_reproduce_published_accuracy(
    data_dir: Path, weights_dir: Path, name: str, file: str, accuracy: float
) -> None:
    spec = get_model_spec(name)
    data = get_data("cifar10", data_dir=data_dir, val_size=0, mean=spec.mean, std=spec.std)
    model = get_model(name, checkpoint=weights_dir / file)
    assert data.num_examples("test") == 10_000
    assert evaluate(model, data, "test") == pytest.approx(accuracy, abs=5e-5)


@pytest.mark.parametrize("name", REFERENCE_FIVE)
def test_reference_five_factorize_at_vbmf_ranks(name: str) -> None:
    # The slides' recipe (Kim et al. 2016): every k x k conv to tucker2 at its EVBMF ranks,
    # 1x1 convs and linears to svd at theirs. Random init: ranks are tiny, the wiring is the test.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = get_model(name, num_classes=10, input_size=32).eval()
    rows = ar.inventory(model, (1, 3, 32, 32))
    plan = {
        r.name: LayerChoice("tucker2", r.vbmf_ranks["tucker2"]) if "tucker2" in r.max_rank
        else LayerChoice("svd", r.vbmf_ranks["svd"])
        for r in rows
    }
    assert any(c.method == "tucker2" for c in plan.values())
    compressed = ar.apply_plan(model, plan)
    out = _forward(compressed, batch=1)
    assert out.shape == (1, 10)
    assert torch.isfinite(out).all()
    assert ar.count_params(compressed) < ar.count_params(model)
