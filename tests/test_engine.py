"""Engine: evaluate, fine-tune (plain, distilled, deterministic), BN recalibration."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autorank.data import DataBundle
from autorank.engine import (
    FinetuneConfig,
    NonFiniteLossError,
    TeacherCache,
    configure_threads,
    distillation_loss,
    evaluate,
    finetune,
    recalibrate_bn,
    resolve_device,
)
from autorank.errors import UserError
from autorank.models import get_model

# Measured: 100 steps of 64 at lr 0.2 take tiny_cnn on digits from 10 % to 85-90 % test accuracy.
DIGITS_RECIPE = {"steps": 100, "lr": 0.2, "batch_size": 64, "augment": False}


def _tiny(seed: int = 0, num_classes: int = 10) -> nn.Module:
    torch.manual_seed(seed)
    return get_model("tiny_cnn", num_classes=num_classes)


@pytest.fixture(scope="module")
def trained(digits: DataBundle) -> tuple[nn.Module, float, float]:
    """tiny_cnn fine-tuned on digits, with its test accuracy before and after."""
    model = _tiny()
    before = evaluate(model, digits)
    finetune(model, digits, **DIGITS_RECIPE)
    return model, before, evaluate(model, digits)


def test_finetune_learns_digits(trained: tuple[nn.Module, float, float]) -> None:
    _, before, after = trained
    assert before < 0.3
    assert after > 0.7


def test_evaluate_restores_mode_and_honours_limit(digits: DataBundle) -> None:
    model = _tiny().train()
    accuracy = evaluate(model, digits, "val", limit=50)
    assert model.training
    assert 0.0 <= accuracy <= 1.0 and round(accuracy * 50) == accuracy * 50
    with pytest.raises(UserError, match="no images"):
        evaluate(model, digits, "val", limit=0)


def test_finetune_result_and_epochs(synthetic: DataBundle) -> None:
    result = finetune(_tiny(num_classes=4), synthetic, epochs=2, batch_size=64, log_every=2)
    assert result.steps == 2 * 4  # 230 training images -> 4 batches of 64 per epoch
    assert result.seconds > 0 and result.images_per_s > 0
    assert result.final_loss == pytest.approx(result.final_loss) and result.final_loss > 0


def test_finetune_is_deterministic_for_a_seed(synthetic: DataBundle) -> None:
    def weights(seed: int) -> dict[str, torch.Tensor]:
        model = _tiny(num_classes=4)
        finetune(model, synthetic, steps=6, batch_size=32, lr=0.05, seed=seed)
        return model.state_dict()

    first, again, other = weights(1), weights(1), weights(2)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["conv1.weight"], other["conv1.weight"])


def test_channels_last_trains_the_same_model_and_leaves_it_nchw(synthetic: DataBundle) -> None:
    seen: dict[str, set[bool]] = {}

    def run(fmt: str) -> nn.Module:
        model = _tiny(num_classes=4)
        layouts = seen.setdefault(fmt, set())
        model.conv1.register_forward_pre_hook(lambda m, args: layouts.add(
            args[0].is_contiguous(memory_format=torch.channels_last)
            and m.weight.is_contiguous(memory_format=torch.channels_last)))
        finetune(model, synthetic, steps=6, batch_size=32, lr=0.05, memory_format=fmt)
        return model

    nhwc, auto, nchw = run("channels_last"), run("auto"), run("contiguous")
    assert seen == {"channels_last": {True}, "auto": {True}, "contiguous": {False}}  # auto on CPU
    for (name, a), b, c in zip(nhwc.state_dict().items(), auto.state_dict().values(),
                               nchw.state_dict().values(), strict=True):
        assert a.is_contiguous() and torch.equal(a, b), name
        # other conv kernels, the same arithmetic: equal up to float rounding
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-5, msg=name)
    with pytest.raises(UserError, match="unknown memory_format 'nhwc'"):
        FinetuneConfig(steps=1, memory_format="nhwc")


def test_evaluate_in_either_layout_leaves_the_models_own(
        trained: tuple[nn.Module, float, float], digits: DataBundle) -> None:
    model = copy.deepcopy(trained[0])

    def nhwc() -> bool:
        return not model.conv1.weight.is_contiguous()

    nchw_acc = evaluate(model, digits, memory_format="contiguous")
    assert evaluate(model, digits) == pytest.approx(nchw_acc, abs=2 / digits.num_examples("test"))
    assert not nhwc()
    finetune(model, digits, steps=1, batch_size=8, memory_format="contiguous")  # still trainable
    model.to(memory_format=torch.channels_last)  # as inside a fine-tune, when a hook evaluates
    evaluate(model, digits, memory_format="auto")
    assert nhwc()
    with pytest.raises(UserError, match="unknown memory_format 'nhwc'"):
        evaluate(model, digits, memory_format="nhwc")


def test_finetune_leaves_global_rng_alone(synthetic: DataBundle) -> None:
    model = _tiny(num_classes=4)
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    finetune(model, synthetic, steps=1, batch_size=16)
    assert torch.equal(torch.rand(1), expected)


def test_finetune_option_errors(synthetic: DataBundle) -> None:
    model = _tiny(num_classes=4)
    with pytest.raises(UserError, match="exactly one of steps and epochs"):
        finetune(model, synthetic)
    with pytest.raises(UserError, match="exactly one of steps and epochs"):
        finetune(model, synthetic, steps=1, epochs=1)
    with pytest.raises(UserError, match=r"unknown fine-tune options \['lrr'\]"):
        finetune(model, synthetic, steps=1, lrr=0.1)
    with pytest.raises(UserError, match="unknown schedule 'step'"):
        finetune(model, synthetic, FinetuneConfig(steps=1, schedule="step"))


def test_non_finite_loss_raises_at_once(synthetic: DataBundle) -> None:
    model = _tiny(num_classes=4)
    with torch.no_grad():
        model.fc.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="loss is nan at step 1/50"):
        finetune(model, synthetic, steps=50, batch_size=16)


def test_distillation_loss_terms() -> None:
    torch.manual_seed(0)
    student, teacher = torch.randn(8, 5), torch.randn(8, 5)
    target = torch.randint(0, 5, (8,))
    ce = F.cross_entropy(student, target)
    assert distillation_loss(student, teacher, target, alpha=0.0, t=4.0) == pytest.approx(ce)
    assert distillation_loss(student, student, target, alpha=1.0, t=4.0).abs() < 1e-6
    kl = F.kl_div(F.log_softmax(student / 2, 1), F.softmax(teacher / 2, 1), reduction="batchmean")
    assert distillation_loss(student, teacher, target, alpha=1.0, t=2.0) == pytest.approx(4 * kl)


def test_distillation_finetune_runs(
    digits: DataBundle, trained: tuple[nn.Module, float, float]
) -> None:
    teacher, _, teacher_accuracy = trained
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        student.fc.weight.mul_(0.5)
    result = finetune(student, digits, teacher=teacher, steps=20, lr=0.01, batch_size=64,
                      augment=False, log_every=5)
    assert 0.0 < result.final_loss < 10.0
    assert evaluate(student, digits) > teacher_accuracy - 0.1
    assert not teacher.training


def test_teacher_cache_gives_the_same_weights_without_the_teacher(
    synthetic: DataBundle,
) -> None:
    teacher = _tiny(seed=3, num_classes=4)
    calls = []
    teacher.register_forward_hook(lambda *_: calls.append(1))
    recipe = {"steps": 5, "batch_size": 32, "lr": 0.05, "seed": 4}

    def student_after(given: nn.Module | TeacherCache, **kw: object) -> dict[str, torch.Tensor]:
        model = _tiny(seed=5, num_classes=4)
        finetune(model, synthetic, teacher=given, **{**recipe, **kw})
        return model.state_dict()

    plain = student_after(teacher)
    assert len(calls) == 5
    cache = TeacherCache(teacher)
    first, again = student_after(cache), student_after(cache)
    assert len(calls) == 10 and cache.hits == 5  # the second fine-tune never ran the teacher
    for weights in (first, again):
        assert all(torch.equal(plain[k], weights[k]) for k in plain)
    # another stream (seed, batch size, augmentation or data) is computed afresh, not served
    other = student_after(cache, seed=7)
    assert len(calls) == 15 and cache.hits == 5
    assert all(torch.equal(other[k], student_after(teacher, seed=7)[k]) for k in other)
    student_after(cache, seed=7, augment=False)
    assert cache.hits == 5


def test_recalibrate_bn_repairs_corrupted_stats(
    digits: DataBundle, trained: tuple[nn.Module, float, float]
) -> None:
    model = copy.deepcopy(trained[0])
    accuracy = trained[2]
    with torch.no_grad():
        model.bn2.running_mean.add_(3.0)
        model.bn2.running_var.mul_(30.0)
    corrupted = model.bn2.running_mean.clone()
    assert evaluate(model, digits) < accuracy - 0.2
    # the fixture was trained on un-augmented digits: recalibrate on the same distribution
    assert recalibrate_bn(model, digits, batches=5, batch_size=128, augment=False) == 3
    assert not torch.allclose(model.bn2.running_mean, corrupted)
    assert model.bn2.momentum == 0.1 and not model.training
    assert evaluate(model, digits) > accuracy - 0.05


def test_recalibrate_bn_without_bn(digits: DataBundle) -> None:
    assert recalibrate_bn(nn.Sequential(nn.Flatten(), nn.Linear(3072, 10)), digits) == 0


def test_threads_and_devices() -> None:
    before = torch.get_num_threads()
    assert configure_threads(None) == before
    assert configure_threads(1) == 1
    with pytest.raises(UserError, match="threads must be >= 1"):
        configure_threads(0)
    assert resolve_device("auto").type in ("cpu", "cuda")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UserError, match="unknown device 'tpu9'"):
        resolve_device("tpu9")
