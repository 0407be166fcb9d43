"""The export format: a model directory that loads back as plain torch.

An export directory holds:

- ``plan.json``: the plan (dotted layer name -> method and rank), read by ``ar.plan_from_json``;
  for a multi-stage strategy's model (``autorank compress --strategy musco``) the list of
  stages, ``{"stages": [{"plan": ..., "fuse": ...}, ...]}``;
- ``model.safetensors``: the weights;
- ``export.json``: the registered model it was built from, the input it expects, the layout
  of every factorized layer (``nn.Sequential`` of ``Conv2d``/``Linear`` constructor arguments)
  and what was measured at export;
- ``config.yaml``: the run's resolved configuration (an export of a search trial);
- ``README.md``: the model card;
- ``model.onnx``: with ``onnx=True``.

:func:`load_exported` builds the dense model from the registry, puts the recorded factorized
modules in place of the layers the plan names, and loads the weights. It does not factorize
anything again: a CP decomposition of one 64-channel conv takes about 100 s on 2 CPU cores,
and the weights it would compute are overwritten anyway. The recorded layout is checked
against the plan (each layer's parameter count against the method's closed form; for a
multi-stage model, whose layers were factorized again inside, the strict weight load checks
every shape).

Who writes one: ``autorank.exporter`` (a trial of a search) and ``autorank.strategies``
(a strategy's model).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._deploy import deploy
from ._io import atomic_write, check_out, staged, write_json
from .data import DataBundle
from .decompose import get_method, set_submodule
from .errors import UserError
from .export_info import ExportInfo, describe
from .metrics import count_params
from .types import LayerChoice, Plan, plan_from_json, plan_to_json

log = logging.getLogger(__name__)

__all__ = [
    "FORMAT_VERSION",
    "ONNX_ATOL",
    "ONNX_RTOL",
    "ExportInfo",
    "Exported",
    "build_module",
    "check_onnx_available",
    "check_out",
    "check_round_trip",
    "describe",
    "export_onnx",
    "load_exported",
    "module_spec",
    "staged",
    "read_plan_file",
    "sample_inputs",
    "save_weights",
    "write_bundle",
]

FORMAT_VERSION = 1
# onnxruntime's float32 kernels sum in another order than torch's: logits agree to ~1e-6 on
# tiny_cnn; the check allows |onnx - torch| <= ONNX_ATOL + ONNX_RTOL * |torch|.
ONNX_ATOL = 1e-4
ONNX_RTOL = 1e-4
_NEEDED = ("export.json", "plan.json", "model.safetensors")  # what load_exported reads
_MODULES: dict[str, Callable[..., nn.Module]] = {"Conv2d": nn.Conv2d, "Linear": nn.Linear,
                                              "BatchNorm2d": nn.BatchNorm2d}

Stages = list[tuple[Plan, bool]]


@dataclass(frozen=True)
class Exported:
    """An export directory that was written, and the contents of its ``export.json``."""

    path: Path
    info: ExportInfo


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
    if type(module) is nn.BatchNorm2d:
        return {"type": "BatchNorm2d", "num_features": module.num_features, "eps": module.eps,
                "momentum": module.momentum, "affine": module.affine,
                "track_running_stats": module.track_running_stats}
    raise TypeError(f"cannot export a {type(module).__name__}: a compressed layer is an "
                    "nn.Sequential of nn.Conv2d/nn.Linear (or a pruned BatchNorm2d)")


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


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{what} {str(path)!r} is not valid JSON: {err}") from None


def read_plan_file(path: str | os.PathLike[str]) -> tuple[Plan, Stages]:
    """A plan file: a plan object, or the ``{"stages": [...]}`` that :func:`write_bundle`
    writes for a model several stages made.

    Returns:
        The first stage's plan (the layers replaced in the dense model) and every stage as
        (plan, fused); a plain plan is one unfused stage.

    Raises:
        UserError: missing file, bad JSON, or a malformed plan.
    """
    file = Path(path)
    if not file.is_file():
        raise UserError(f"plan file {str(file)!r} does not exist")
    data = _read_json(file, "plan file")
    try:
        if isinstance(data, dict) and isinstance(data.get("stages"), list) and data["stages"]:
            stages = [(plan_from_json(s["plan"]), bool(s.get("fuse", False))) for s in data["stages"]]
        else:
            stages = [(plan_from_json(data), False)]
    except (ValueError, TypeError, KeyError) as err:
        if isinstance(err, UserError):
            raise
        raise UserError(f"plan file {str(file)!r}: {err}") from None
    return stages[0][0], stages


def _check_layers(model: nn.Module, plan: Plan, folder: Path, model_name: str) -> None:
    names = {n for n, _ in model.named_modules()}
    missing = sorted(set(plan) - names)
    if missing:
        known = sorted(n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear))
        raise UserError(f"{str(folder / 'plan.json')!r} names layer(s) {missing} that do not exist "
                        f"in {model_name!r}; its conv/linear layers are {known}")


def _as_built(dense: nn.Module, module: nn.Module) -> nn.Module:
    """``dense`` with the input and output channels of the recorded ``module`` (pruning, here or
    in the layer feeding it, shrank them): the layer the plan's rank applies to."""
    if not isinstance(dense, nn.Conv2d | nn.Linear):
        return dense
    layers = [m for m in module.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    if not layers:
        return dense
    first, last = layers[0], layers[-1]
    c_in = first.in_channels if isinstance(first, nn.Conv2d) else first.in_features
    c_out = last.out_channels if isinstance(last, nn.Conv2d) else last.out_features
    if isinstance(dense, nn.Linear):
        return nn.Linear(c_in, c_out, bias=dense.bias is not None, device="meta")
    spec = {**module_spec(dense), "in_channels": c_in, "out_channels": c_out}
    with torch.device("meta"):  # shapes only: the closed forms read nothing else
        return build_module(spec)


def _factorized(model: nn.Module, name: str, choice: LayerChoice, spec: Any,
                check: bool = True) -> nn.Module:
    """The recorded module for layer ``name``, checked against the plan's method and rank
    (unless ``check`` is false: a layer factorized again by later stages)."""
    try:
        method = get_method(choice.method)
        module = build_module(spec)
        dense = _as_built(model.get_submodule(name), module)
        rank = method.check_rank(dense, choice.rank)
    except ValueError as err:
        raise UserError(f"exported layer {name!r}: {err}") from None
    expected, got = method.num_params(dense, rank), count_params(module)
    if check and expected != got:
        raise UserError(f"exported layer {name!r}: the plan says {choice.method} {rank} "
                        f"({expected} params) but export.json records {got}; plan.json and "
                        "export.json disagree")
    return module


def load_exported(path: str | os.PathLike[str]) -> nn.Module:
    """Rebuild an exported model: registry model, recorded factorized layers, saved weights.

    The result is plain torch (``nn.Sequential`` of ``nn.Conv2d``/``nn.Linear`` in place of
    each factorized layer), in eval mode on the CPU, and gives outputs bit-identical to the
    model that was exported.

    Raises:
        UserError: not an export directory, a plan that names layers the model does not have
            (the message lists them), or weights that do not fit.
    """
    from safetensors.torch import load_file

    from .models import get_model

    folder = Path(path).expanduser()
    for name in _NEEDED:
        if not (folder / name).exists():
            raise UserError(f"{str(folder)!r} is not an autorank export: no {name}")
    info = _read_json(folder / "export.json", "export file")
    plan, stages = read_plan_file(folder / "plan.json")
    model = get_model(info["model_name"], num_classes=int(info["num_classes"]),
                      input_size=int(info["input_shape"][-1]))
    _check_layers(model, plan, folder, info["model_name"])
    modules = info.get("modules", {})
    for name, spec in sorted(info.get("reshaped", {}).items()):  # shrunk by pruning elsewhere
        try:
            set_submodule(model, name, build_module(spec))
        except (ValueError, AttributeError) as err:
            raise UserError(f"export.json: reshaped module {name!r}: {err}") from None
    one_stage = len(stages) == 1 and not stages[0][1]
    for name, choice in plan.items():
        if choice.method == "keep":
            continue
        if name not in modules:
            raise UserError(f"export.json records no module for layer {name!r} of plan.json")
        set_submodule(model, name, _factorized(model, name, choice, modules[name], check=one_stage))
    try:
        model.load_state_dict(dict(load_file(str(folder / "model.safetensors"))))
    except RuntimeError as err:
        raise UserError(f"the weights in {str(folder)!r} do not fit the model its plan "
                        f"builds: {str(err).splitlines()[0]}") from None
    return model.eval()


def save_weights(model: nn.Module, path: Path) -> None:
    """Write ``model``'s state dict as safetensors (tensors, never pickled code)."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(path))
    # safetensors writes 0600 through a temporary file; give it the mode of its siblings
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def check_onnx_available() -> None:
    """Refuse an ONNX export before any work when its packages are missing.

    Raises:
        UserError: onnx or onnxruntime is not installed (with the install command).
    """
    import importlib.util

    missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"--onnx needs {' and '.join(missing)}, not installed here: "
                        "pip install 'autorank[onnx]'")


def _reshaped(model: nn.Module, plan: Plan, info: Mapping[str, Any]) -> dict[str, Any]:
    """Specs of the modules outside the plan's layers whose shapes pruning changed (the
    BatchNorm after a pruned conv, the conv that consumes its channels), by dotted name."""
    from .models import get_model

    if not any(c.kept_channels is not None for c in plan.values()):
        return {}
    dense = dict(get_model(info["model_name"], num_classes=int(info["num_classes"]),
                           input_size=int(info["input_shape"][-1])).named_modules())
    out = {}
    for name, module in model.named_modules():
        if any(name == p or name.startswith(p + ".") for p in plan) or name not in dense:
            continue
        if not isinstance(module, nn.Conv2d | nn.Linear | nn.BatchNorm2d):
            continue
        shapes = [tuple(t.shape) for t in module.state_dict().values()]
        if shapes != [tuple(t.shape) for t in dense[name].state_dict().values()]:
            out[name] = module_spec(module)
    return out


def write_bundle(model: nn.Module, plan: Plan, folder: Path, info: Mapping[str, Any], *,
                 stages: Sequence[tuple[Plan, bool]] | None = None) -> ExportInfo:
    """Write ``plan.json``, ``model.safetensors`` and ``export.json`` (``info`` plus the layout of
    every factorized layer) into ``folder``; returns what ``export.json`` holds.

    ``info`` must name the registered model (``model_name``), ``num_classes`` and
    ``input_shape`` (C, H, W). ``stages`` (plan, fused), for a model several stages made:
    ``plan.json`` lists them all and ``plan`` must be the first stage's.
    """
    modules = {name: module_spec(model.get_submodule(name))
               for name, choice in sorted(plan.items()) if choice.method != "keep"}
    full = {"format": FORMAT_VERSION, **info, "modules": modules,
            "reshaped": _reshaped(model, plan, info)}
    content: Any = json.loads(plan_to_json(plan))
    if stages:
        content = {"stages": [{"plan": json.loads(plan_to_json(p)), "fuse": fuse}
                              for p, fuse in stages]}
    atomic_write(folder / "plan.json", json.dumps(content, indent=2) + "\n")
    save_weights(model, folder / "model.safetensors")
    write_json(folder / "export.json", full)
    return ExportInfo.from_json(full)


def sample_inputs(data: DataBundle, size: int = 16) -> torch.Tensor:
    """The first ``size`` test images, on the CPU: what an export is checked on."""
    x, _ = next(data.batches("test", batch_size=size))
    return x.cpu()


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
    """Write ``model`` as ONNX (batch dimension dynamic), as deployed (:func:`autorank.deploy`:
    BatchNorm folded, factors merged) where ``torch.fx`` can trace it, and check onnxruntime
    against ``model`` in torch.

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
    try:
        graph: nn.Module = deploy(model, tuple(x.shape))
    except Exception as err:  # fx cannot trace data-dependent control flow: export as it is
        log.info("exporting the model undeployed: %s", err)
        graph = model
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of the dynamo one, which needs
        # onnxscript and takes seconds per model; torch is pinned, so the old one stays.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=UserWarning)  # its notes on tracing, not on the model
        torch.onnx.export(graph, (x,), str(path), dynamo=False, input_names=["input"],
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
