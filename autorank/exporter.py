"""Take one trial of a run away as a model directory, and load it back as plain torch.

An export directory holds:

- ``plan.json``: the plan (dotted layer name -> method and rank), read by ``ar.plan_from_json``;
  for a multi-stage strategy's model (``autorank compress --strategy musco``) the list of
  stages, ``{"stages": [{"plan": ..., "fuse": ...}, ...]}``;
- ``model.safetensors``: the weights;
- ``export.json``: the registered model it was built from, the input it expects, the layout
  of every factorized layer (``nn.Sequential`` of ``Conv2d``/``Linear`` constructor arguments)
  and what was measured at export;
- ``config.yaml``: the run's resolved configuration;
- ``README.md``: the model card;
- ``model.onnx``: with ``onnx=True``.

:func:`load_exported` builds the dense model from the registry, puts the recorded factorized
modules in place of the layers the plan names, and loads the weights. It does not factorize
anything again: a CP decomposition of one 64-channel conv takes about 100 s on 2 CPU cores,
and the weights it would compute are overwritten anyway. The recorded layout is checked
against the plan (each layer's parameter count against the method's closed form; for a
multi-stage model, whose layers were factorized again inside, the strict weight load checks
every shape).

This module is not ``autorank/export.py`` so that ``ar.export`` stays a function: importing
a submodule named ``export`` would rebind that attribute of the package.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .decompose import get_method, set_submodule
from .errors import UserError
from .metrics import count_flops, count_params, measure_latency
from .types import Plan, plan_from_json, plan_to_json

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
# onnxruntime's float32 kernels sum in another order than torch's: logits agree to ~1e-6 on
# tiny_cnn; the check allows |onnx - torch| <= ONNX_ATOL + ONNX_RTOL * |torch|.
ONNX_ATOL = 1e-4
ONNX_RTOL = 1e-4
FILES = ("plan.json", "model.safetensors", "export.json", "config.yaml", "README.md", "model.onnx")
_MODULES: dict[str, Callable[..., nn.Module]] = {"Conv2d": nn.Conv2d, "Linear": nn.Linear}


@dataclass(frozen=True)
class Exported:
    """What :func:`export` wrote: the directory and the contents of its ``export.json``."""

    path: Path
    info: dict[str, Any]


def module_spec(module: nn.Module) -> dict[str, Any]:
    """The constructor arguments of a factorized layer, JSON-ready.

    Raises:
        TypeError: a module other than ``nn.Sequential``, ``nn.Conv2d`` or ``nn.Linear``.
    """
    if type(module) is nn.Sequential:
        return {"type": "Sequential", "children": [module_spec(m) for m in module]}
    if type(module) is nn.Conv2d:
        return {"type": "Conv2d", "in_channels": module.in_channels,
                "out_channels": module.out_channels, "kernel_size": list(module.kernel_size),
                "stride": list(module.stride),
                "padding": module.padding if isinstance(module.padding, str) else list(module.padding),
                "dilation": list(module.dilation), "groups": module.groups,
                "bias": module.bias is not None, "padding_mode": module.padding_mode}
    if type(module) is nn.Linear:
        return {"type": "Linear", "in_features": module.in_features,
                "out_features": module.out_features, "bias": module.bias is not None}
    raise TypeError(f"cannot export a {type(module).__name__}: a factorized layer is an "
                    "nn.Sequential of nn.Conv2d/nn.Linear")


def build_module(spec: Mapping[str, Any]) -> nn.Module:
    """The module :func:`module_spec` describes, freshly initialised.

    Raises:
        ValueError: an unknown module type or bad arguments.
    """
    kind = spec.get("type")
    if kind == "Sequential":
        return nn.Sequential(*(build_module(child) for child in spec.get("children", [])))
    if kind not in _MODULES:
        raise ValueError(f"unknown module type {kind!r}; expected Sequential or one of {sorted(_MODULES)}")
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items() if k != "type"}
    try:
        return _MODULES[kind](**args)
    except TypeError as err:
        raise ValueError(f"bad {kind} arguments {args}: {err}") from None


def _read_json(path: Path) -> Any:
    if not path.exists():
        raise UserError(f"{str(path.parent)!r} is not an autorank export: no {path.name}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{str(path)!r} is not valid JSON: {err}") from None


def _read_plan(folder: Path) -> tuple[Plan, list[tuple[Plan, bool]] | None]:
    """The plan of ``plan.json`` and, for a multi-stage model, all its stages (plan, fused);
    the layers replaced in the dense model are those of the first stage."""
    data = _read_json(folder / "plan.json")
    try:
        if isinstance(data, dict) and isinstance(data.get("stages"), list) and data["stages"]:
            stages = [(plan_from_json(s["plan"]), bool(s.get("fuse", False))) for s in data["stages"]]
            return stages[0][0], (stages if len(stages) > 1 or stages[0][1] else None)
        return plan_from_json(data), None
    except (ValueError, TypeError, KeyError) as err:
        if isinstance(err, UserError):
            raise
        raise UserError(f"{str(folder / 'plan.json')!r}: {err}") from None


def _check_layers(model: nn.Module, plan: Plan, folder: Path, model_name: str) -> None:
    names = {n for n, _ in model.named_modules()}
    missing = sorted(set(plan) - names)
    if missing:
        known = sorted(n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear))
        raise UserError(f"{str(folder / 'plan.json')!r} names layer(s) {missing} that do not exist "
                        f"in {model_name!r}; its conv/linear layers are {known}")


def _factorized(model: nn.Module, name: str, choice: Any, spec: Any, check: bool = True) -> nn.Module:
    """The recorded module for layer ``name``, checked against the plan's method and rank
    (unless ``check`` is false: a layer factorized again by later stages)."""
    dense = model.get_submodule(name)
    try:
        method = get_method(choice.method)
        rank = method.check_rank(dense, choice.rank)
        module = build_module(spec)
    except ValueError as err:
        raise UserError(f"exported layer {name!r}: {err}") from None
    expected, got = method.num_params(dense, rank), count_params(module)
    if check and expected != got:
        raise UserError(f"exported layer {name!r}: the plan says {choice.method} {rank} "
                        f"({expected} params) but export.json records {got}; plan.json and "
                        "export.json disagree")
    return module


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.exists():
        raise UserError(f"{str(path.parent)!r} is not an autorank export: no {path.name}")
    return dict(load_file(str(path)))


def load_exported(path: str | os.PathLike[str]) -> nn.Module:
    """Rebuild an exported model: registry model, recorded factorized layers, saved weights.

    The result is plain torch (``nn.Sequential`` of ``nn.Conv2d``/``nn.Linear`` in place of
    each factorized layer), in eval mode on the CPU, and gives outputs bit-identical to the
    model that was exported.

    Raises:
        UserError: not an export directory, a plan that names layers the model does not have
            (the message lists them), or weights that do not fit.
    """
    from .models import get_model

    folder = Path(path).expanduser()
    info = _read_json(folder / "export.json")
    plan, stages = _read_plan(folder)
    model = get_model(info["model_name"], num_classes=int(info["num_classes"]),
                      input_size=int(info["input_shape"][-1]))
    _check_layers(model, plan, folder, info["model_name"])
    modules = info.get("modules", {})
    for name, choice in plan.items():
        if choice.method == "keep":
            continue
        if name not in modules:
            raise UserError(f"export.json records no module for layer {name!r} of plan.json")
        set_submodule(model, name, _factorized(model, name, choice, modules[name],
                                               check=stages is None))
    try:
        model.load_state_dict(_read_weights(folder / "model.safetensors"))
    except RuntimeError as err:
        raise UserError(f"the weights in {str(folder)!r} do not fit the model its plan "
                        f"builds: {str(err).splitlines()[0]}") from None
    return model.eval()


def check_out(out: str | os.PathLike[str]) -> Path:
    """``out`` resolved, refused when it is a file or holds files other than an earlier export's
    (checked before any long work, and again by :func:`prepare_out`).

    Raises:
        UserError: as above.
    """
    target = Path(out).expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise UserError(f"--out {str(target)!r} is a file; give a directory")
    if target.exists() and any(target.iterdir()) and not (target / "export.json").exists():
        raise UserError(f"--out {str(target)!r} holds other files; give a new or empty directory "
                        "(an earlier export there is replaced)")
    return target


def prepare_out(out: str | os.PathLike[str]) -> Path:
    """Create ``out`` (see :func:`check_out`) and remove an earlier export's files from it."""
    target = check_out(out)
    target.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        (target / name).unlink(missing_ok=True)
    return target


def save_weights(model: nn.Module, path: Path) -> None:
    """Write ``model``'s state dict as safetensors (tensors, never pickled code)."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(path))


def write_bundle(model: nn.Module, plan: Plan, folder: Path, info: Mapping[str, Any], *,
                 stages: Sequence[tuple[Plan, bool]] | None = None) -> dict[str, Any]:
    """Write ``plan.json``, ``model.safetensors`` and ``export.json`` (``info`` plus the layout of
    every factorized layer) into ``folder``; returns what ``export.json`` holds.

    ``info`` must name the registered model (``model_name``), ``num_classes`` and
    ``input_shape`` (C, H, W). ``stages`` (plan, fused), for a model several stages made:
    ``plan.json`` lists them all and ``plan`` must be the first stage's.
    """
    from .sweep.store import atomic_write, write_json

    modules = {name: module_spec(model.get_submodule(name))
               for name, choice in sorted(plan.items()) if choice.method != "keep"}
    full = {"format": FORMAT_VERSION, **info, "modules": modules}
    content: Any = json.loads(plan_to_json(plan))
    if stages:
        content = {"stages": [{"plan": json.loads(plan_to_json(p)), "fuse": fuse}
                              for p, fuse in stages]}
    atomic_write(folder / "plan.json", json.dumps(content, indent=2) + "\n")
    save_weights(model, folder / "model.safetensors")
    write_json(folder / "export.json", full)
    return full


def check_round_trip(model: nn.Module, folder: Path, x: torch.Tensor) -> None:
    """Load ``folder`` back and require outputs bit-identical to ``model``'s on ``x``.

    Raises:
        RuntimeError: they differ (a bug in export or load, never bad input).
    """
    loaded = load_exported(folder)
    model.eval()
    with torch.inference_mode():
        same = torch.equal(loaded(x), model(x))
    if not same:
        raise RuntimeError(f"the model loaded back from {str(folder)!r} does not reproduce the "
                           "exported model's outputs")


def export_onnx(model: nn.Module, path: Path, x: torch.Tensor) -> float:
    """Write ``model`` as ONNX (batch dimension dynamic) and check onnxruntime against torch.

    Returns:
        The largest absolute difference of the logits on ``x``.

    Raises:
        UserError: onnx or onnxruntime is not installed.
        RuntimeError: onnxruntime differs from torch by more than ``ONNX_ATOL + ONNX_RTOL * |torch|``.
    """
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError:
        raise UserError("ONNX export needs onnx and onnxruntime: pip install 'autorank[onnx]'") from None
    model = model.eval().cpu()
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of the dynamo one, which needs
        # onnxscript and takes seconds per model; torch is pinned, so the old one stays.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["input"],
                          output_names=["logits"], opset_version=17,
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    with torch.inference_mode():
        want = model(x).numpy()
    diff = float(np.abs(got - want).max())
    if not np.allclose(got, want, atol=ONNX_ATOL, rtol=ONNX_RTOL):
        raise RuntimeError(f"onnxruntime differs from torch by up to {diff:.3g} (allowed "
                           f"{ONNX_ATOL} + {ONNX_RTOL} x |logit|)")
    return diff


def cost(model: nn.Module, input_shape: tuple[int, ...], latency_batch: int) -> dict[str, Any]:
    """Params, FLOPs (multiply-add = 2) and median latency at batch 1 and ``latency_batch``."""
    shape = (1, *input_shape)
    return {"params": count_params(model), "flops": count_flops(model, shape),
            "latency_ms": measure_latency(model, shape, repeats=30, warmup=5),
            "latency_batch_ms": measure_latency(model, shape, batch_size=latency_batch,
                                                repeats=10, warmup=2)}


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()`` and the seconds it took."""
    start = time.perf_counter()
    return fn(), time.perf_counter() - start


def _trial_row(result: Any, trial: int, need_weights: bool = True) -> Any:
    """The trials-table row of ``trial``, refused unless it completed and (``need_weights``) its
    weights were kept."""
    trials, weights = result.trials, result.path / "weights"
    kept = sorted(int(p.stem.split("-")[1]) for p in weights.glob("trial-*.pt")) \
        if weights.exists() else []
    choose = f"trials with weights: {kept}" if kept else "no trial's weights are kept in this run"
    if not need_weights:
        done = sorted(int(n) for n in trials.loc[trials["state"] == "complete", "number"])
        choose = f"completed trials: {done}" if done else "no trial completed in this run"
    if not len(trials) or trial not in set(trials["number"]):
        top = f"0..{int(trials['number'].max())}" if len(trials) else "none yet"
        raise UserError(f"run {str(result.path)!r} has no trial {trial} (its trials: {top}); {choose}")
    row = trials[trials["number"] == trial].iloc[0]
    if row["state"] != "complete":
        why = f": {row['error']}" if row.get("error") else ""
        raise UserError(f"trial {trial} did not complete ({row['state']}{why}); export a completed "
                        f"one, {choose}")
    if need_weights and trial not in kept:
        raise UserError(f"the weights of trial {trial} were not kept (a finished search keeps only "
                        f"the Pareto front's; --strategy trains any completed trial's plan from "
                        f"the baseline); {choose}")
    return row


def _test_batch(data: Any, size: int = 16) -> torch.Tensor:
    x, _ = next(data.batches("test", batch_size=size))
    return x.cpu()


def _longer_finetune(model: nn.Module, teacher: nn.Module, data: Any, cfg: Any, epochs: float,
                     device: str) -> float:
    """Fine-tune the chosen model for ``epochs`` (distilling from the baseline when the run's
    fine-tune does); seconds."""
    from .engine import finetune

    ft = cfg.space.finetune
    _, seconds = timed(lambda: finetune(
        model, data, epochs=epochs, lr=ft.lr, batch_size=ft.batch_size,
        teacher=teacher if ft.distill else None,
        kd_alpha=ft.kd_alpha, kd_temperature=ft.kd_temperature, device=device, seed=cfg.seed))
    return float(seconds)


def describe(model: nn.Module, baseline: nn.Module, data: Any, *, model_name: str, dataset: str,
             latency_batch: int, baseline_accuracy: Mapping[str, Any],
             **extra: Any) -> dict[str, Any]:
    """What ``export.json`` says of any exported model: what it is built from and expects, and
    its params, FLOPs and latency against the dense baseline's, measured now; ``extra`` (the
    accuracies, where it comes from) is added as given."""
    from .models import get_model_spec

    shape = data.input_shape
    mine = cost(model.cpu(), shape, latency_batch)
    dense = cost(baseline.cpu(), shape, latency_batch)
    spec = get_model_spec(model_name)
    return {
        "model_name": model_name, "num_classes": data.num_classes, "input_shape": list(shape),
        "mean": list(spec.mean), "std": list(spec.std), "dataset": dataset,
        "test_images": data.num_examples("test"), "val_source": data.val_source,
        "latency_batch": latency_batch, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "baseline": {**dense, **baseline_accuracy},
        **mine, **extra,
        "params_ratio": dense["params"] / mine["params"],
        "flops_ratio": dense["flops"] / mine["flops"] if mine["flops"] else None,
    }


def _retrain(strategy: str, plan: Plan, baseline: nn.Module, data: Any, cfg: Any, epochs: float,
             admm_steps: int, device: str) -> tuple[nn.Module, dict[str, Any]]:
    """``plan`` trained from the dense baseline by ``strategy``'s recipe (autorank.strategies),
    with the run's fine-tune settings for ``epochs``."""
    from .engine import FinetuneConfig
    from .strategies import AdmmOptions, CompressConfig, StrategyContext, train_plan

    ft = cfg.space.finetune
    config = CompressConfig(
        finetune=FinetuneConfig(epochs=epochs, lr=ft.lr, batch_size=ft.batch_size,
                                kd_alpha=ft.kd_alpha, kd_temperature=ft.kd_temperature,
                                seed=cfg.seed),
        distill=ft.distill, bn_batches=ft.bn_batches, device=device,
        admm=AdmmOptions(steps=admm_steps, plan=plan))
    ctx = StrategyContext(baseline.eval(), data, config, (1, *data.input_shape))
    out, seconds = timed(lambda: train_plan(strategy, ctx, plan))
    return out.model, {"strategy": strategy, "accuracy_after": out.accuracy_after,
                       "finetune_s": float(seconds), "strategy_extra": out.extra,
                       **({"admm_steps": admm_steps} if strategy == "admm" else {})}


def export(run_dir: str | os.PathLike[str], trial: int, out: str | os.PathLike[str], *,
           finetune_epochs: float = 0, onnx: bool = False, strategy: str | None = None,
           admm_steps: int = 200) -> Exported:
    """Export trial ``trial`` of the run in ``run_dir`` to the directory ``out``.

    By default the trial's fine-tuned weights are loaded onto its plan; with
    ``finetune_epochs`` the model is then fine-tuned that much longer, distilling from the
    dense baseline (the run's fine-tune settings otherwise). With ``strategy`` the trial's
    plan is instead trained from the dense baseline by that strategy's recipe
    (``autorank.strategies.train_plan``): ``vbmf-tucker2`` factorizes at once and fine-tunes
    ``finetune_epochs``; ``admm`` first trains the dense model ``admm_steps`` steps towards the
    plan's ranks (Yin et al. 2021). Test accuracy, params, FLOPs and latency of the model and
    the baseline are measured now and written to ``export.json`` and the model card.

    Args:
        run_dir: a run directory written by ``ar.search``.
        trial: a completed trial whose weights the run kept (the front's, once it finished);
            with ``strategy``, any completed trial.
        out: a new or empty directory, or one holding an earlier export (replaced).
        finetune_epochs: epochs of extra fine-tuning (0: none; > 0 with ``strategy``).
        onnx: also write ``model.onnx`` and check onnxruntime against torch.
        strategy: a name from ``autorank.strategies.plan_strategies()``, or None.
        admm_steps: ADMM training steps of the dense model (``strategy="admm"`` only).

    Raises:
        UserError: unknown, failed or pruned trial; ``out`` holds other files; negative epochs;
            an unknown strategy, or one without fine-tune epochs.
    """
    from ._card import model_card
    from .config import save_config
    from .engine import evaluate
    from .strategies import plan_strategies
    from .sweep import load_run
    from .sweep.runner import _device, _front_model, _load_baseline
    from .sweep.store import RunDir, atomic_write, write_json

    if finetune_epochs < 0:
        raise UserError(f"--finetune-epochs must be >= 0, got {finetune_epochs}")
    if strategy is not None and strategy not in plan_strategies():
        raise UserError(f"--strategy {strategy!r} cannot train a chosen plan; expected one of "
                        f"{plan_strategies()} (musco picks its own ranks: autorank compress)")
    if strategy is not None and not finetune_epochs:
        raise UserError(f"--strategy {strategy} trains the plan from the dense baseline: give "
                        "--finetune-epochs > 0")
    if admm_steps < 0:
        raise UserError(f"--admm-steps must be >= 0, got {admm_steps}")
    result = load_run(run_dir)
    row = _trial_row(result, trial, need_weights=strategy is None)
    check_out(out)
    cfg, device = result.config, _device(result.config)
    baseline, data = _load_baseline(cfg)
    plan = plan_from_json(str(row["plan"]))
    weights = RunDir(result.path).weights / f"trial-{trial}.pt"
    model = _front_model(baseline, str(row["plan"]), weights)
    accuracy: dict[str, Any] = {"val_accuracy_search": float(row["val_accuracy"]),
                                "finetune_epochs": finetune_epochs}
    if model is not None and finetune_epochs:
        accuracy["test_accuracy_trial"] = evaluate(model, data, "test", device=device)
    if strategy is not None:
        model, how = _retrain(strategy, plan, baseline, data, cfg, finetune_epochs, admm_steps,
                              device)
        accuracy.update(how)
    elif finetune_epochs:
        assert model is not None  # _trial_row checked the weights exist
        accuracy["finetune_s"] = _longer_finetune(model, baseline, data, cfg, finetune_epochs, device)
    assert model is not None
    accuracy["test_accuracy"] = evaluate(model, data, "test", device=device)
    target = prepare_out(out)
    info = write_bundle(model.cpu(), plan, target, describe(
        model, baseline, data, model_name=cfg.model, dataset=cfg.dataset,
        latency_batch=cfg.space.latency_batch,
        baseline_accuracy={"val_accuracy": result.baseline.get("val_accuracy"),
                           "test_accuracy": result.baseline.get("test_accuracy")},
        run=str(result.path), trial=int(row["number"]), **accuracy))
    save_config(cfg, target / "config.yaml")
    x = _test_batch(data)
    check_round_trip(model, target, x)
    if onnx:
        info["onnx"] = {"file": "model.onnx", "max_abs_diff": export_onnx(model, target / "model.onnx", x),
                        "atol": ONNX_ATOL, "rtol": ONNX_RTOL}
        write_json(target / "export.json", info)
    atomic_write(target / "README.md", model_card(info, plan))
    return Exported(target, info)
