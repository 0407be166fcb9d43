"""A latency model of the target: every layer's latency under every choice, measured once, in
isolation, with its real input shape, and a model's latency predicted as their sum.

The search cannot steer on a latency measured per trial: on shared cores one reading can be
200x another. Instead (after HALOC, Xiao et al. 2023, and NetAdapt, Yang et al. 2018, which
use per-layer tables measured on the target):

- every conv and linear of the dense model is a *slot*: its geometry and its input's spatial
  size, taken by a forward pass at batch 1;
- a plan gives each slot a *candidate*: the slot's geometry with its output channels cut (the
  slot is pruned) or its input channels cut (the layer feeding it is), a method and a rank;
  channel counts and ranks are rounded *up* to a bucket (exact to 8, multiples of 4 to 32, of
  8 to 128, of 16 to 512, of 32 beyond) so that the table stays small;
- a candidate's latency is measured once, on the target (device, threads, batch, backend),
  on a module of its structure with random weights (:meth:`Method.skeleton`), interleaved
  with the other candidates measured at the same time (:func:`~.timing.time_interleaved`);
  the table lives on disk, keyed by the target and the library versions, shared by every
  model with the same layer shapes and every run; entries measured later (lazily, as plans
  ask for them) are timed beside the dense model again and scaled by its drift, so that a
  busier machine at one call does not put those entries on another scale;
- the *remainder* (activations, pooling, BatchNorm, residual adds, the framework's overhead)
  is the dense model's measured latency minus the sum of its slots' dense latencies;
- a plan's predicted latency is the remainder plus the sum of its candidates' latencies.

What the sum leaves out: a pruned layer's BatchNorm and activation get cheaper too (the
remainder stays the dense one's), and layers do not run in isolation (caches, fusion across
layers on onnxruntime). ``bench/latency.py`` measures how far the prediction is from the
truth: on 30 random plans per target, the predicted speed-up of plans with a pruned layer
is at most a few percent lower (against the measured one) than other plans', inside the
plans' spread (``bench/results/latency.md``), so the remainder is not split per layer.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import platform
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import _env
from .._io import atomic_write
from ..decompose import channel_consumers, get_method
from ..types import Plan
from .timing import backend_versions, compile_call, time_interleaved

__all__ = ["Candidate", "LatencyModel", "LatencyTable", "Target", "bucket", "measure_models"]


@dataclass(frozen=True)
class Target:
    """Where latency is measured: the device, torch/onnxruntime threads, batch and backend."""

    device: str = "cpu"
    threads: int = 1
    batch: int = 1
    backend: str = "torch"

    def about(self) -> dict[str, Any]:
        """Everything a timing depends on: the target, the hardware's name, library versions."""
        if self.device.startswith("cuda"):
            hardware = torch.cuda.get_device_name(torch.device(self.device))
        else:
            hardware = _cpu_name()
        return {**asdict(self), "hardware": hardware, **backend_versions(self.backend)}

    def key(self) -> str:
        """The table's cache key: a hash of :meth:`about`."""
        text = json.dumps(self.about(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def bucket(value: int, cap: int | None = None) -> int:
    """``value`` rounded up to its bucket (see the module doc), at most ``cap``."""
    step = 1 if value <= 8 else 4 if value <= 32 else 8 if value <= 128 else 16 if value <= 512 else 32
    out = step * math.ceil(value / step)
    return min(out, cap) if cap is not None else out


@dataclass(frozen=True)
class Candidate:
    """One layer's structure under a plan: a conv's or linear's geometry, its input's spatial
    size, the method and rank (``keep``: the plain layer)."""

    kind: str  # "conv" or "linear"
    in_channels: int
    out_channels: int
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    bias: bool = False
    spatial: tuple[int, ...] = ()  # a conv's input (H, W); a linear's leading dims after batch
    method: str = "keep"
    rank: tuple[int, ...] = ()

    def key(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    def layer(self, device: str | None = None) -> nn.Module:
        """The dense layer of this geometry, random weights (``"meta"``: shapes only)."""
        if self.kind == "linear":
            return nn.Linear(self.in_channels, self.out_channels, bias=self.bias, device=device)
        return nn.Conv2d(self.in_channels, self.out_channels, self.kernel, stride=self.stride,
                         padding=self.padding, dilation=self.dilation, groups=self.groups,
                         bias=self.bias, device=device)

    def module(self) -> nn.Module:
        """A module of this candidate's structure (:meth:`Method.skeleton`), random weights."""
        layer = self.layer()
        if self.method in ("keep", "prune"):
            return layer
        return get_method(self.method).skeleton(layer, self.rank)

    def example(self, batch: int, device: str) -> torch.Tensor:
        if self.kind == "linear":
            return torch.randn(batch, *self.spatial, self.in_channels, device=device)
        return torch.randn(batch, self.in_channels, *self.spatial, device=device)

    def with_choice(self, method: str, rank: Sequence[int]) -> Candidate:
        """This geometry under ``method`` at ``rank``, each entry bucketed and clipped to the
        method's maximum for the (possibly cut) layer."""
        if method in ("keep", "prune"):
            return replace(self, method="keep", rank=())
        top = get_method(method).max_rank(self.layer("meta"))
        return replace(self, method=method,
                       rank=tuple(bucket(int(r), cap) for r, cap in zip(rank, top, strict=True)))


class LatencyTable:
    """Per-candidate latencies of one :class:`Target`, on disk at ``<cache>/latency/<key>.json``
    (``$AUTORANK_CACHE_DIR`` or ``~/.cache/autorank``), and the dense models' totals."""

    def __init__(self, target: Target, cache_dir: str | Path | None = None, *,
                 repeats: int = 15) -> None:
        self.target = target
        self.repeats = repeats
        root = Path(cache_dir) if cache_dir is not None else (
            Path(_env.cache_dir() or Path.home() / ".cache" / "autorank"))
        self.path = root.expanduser() / "latency" / f"{target.key()}.json"
        self.layers: dict[str, float] = {}
        self.models: dict[str, float] = {}
        self.measured = 0  # candidates this object measured (the rest came from the file)
        self._load()

    def _load(self) -> None:
        if self.path.exists():
            with contextlib.suppress(ValueError, OSError):
                data = json.loads(self.path.read_text())
                self.layers.update(data.get("layers", {}))
                self.models.update(data.get("models", {}))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _save(self, layers: Mapping[str, float], models: Mapping[str, float]) -> None:
        with self._locked():  # another process may have added entries since we read
            self._load()
            self.layers.update(layers)
            self.models.update(models)
            atomic_write(self.path, json.dumps({"about": self.target.about(), "layers": self.layers,
                                                "models": self.models}, indent=0, sort_keys=True))

    def __getitem__(self, candidate: Candidate) -> float:
        return self.layers[candidate.key()]

    def ensure(self, candidates: Iterable[Candidate],
               models: Mapping[str, nn.Module] | None = None,
               input_shape: Sequence[int] = ()) -> None:
        """Measure every candidate (and whole ``models`` by key, at ``input_shape`` (C, H, W))
        not in the table yet, all interleaved, and store them."""
        todo = {c.key(): c for c in candidates if c.key() not in self.layers}
        whole = {k: m for k, m in (models or {}).items() if k not in self.models}
        if not todo and not whole:
            return
        t = self.target
        calls: dict[Any, Any] = {}
        # A model already in the table is timed again beside the new entries: the load of the
        # machine drifts between calls, and new entries are scaled by how far the reference
        # moved since it was first measured, so that the table stays one consistent scale.
        ref = next((k for k in (models or {}) if k in self.models), None) if todo else None
        if ref is not None:
            calls[("ref", ref)] = _model_call(models[ref], input_shape, t)  # type: ignore[index]
        for key, cand in todo.items():
            module = cand.module().to(t.device)
            x = cand.example(t.batch, t.device)
            calls[("layer", key)] = compile_call(module, x, t.backend, t.threads)
        for key, model in whole.items():
            calls[("model", key)] = _model_call(model, input_shape, t)
        times = time_interleaved(calls, threads=t.threads, repeats=self.repeats)
        scale = self.models[ref] / times[("ref", ref)] if ref is not None else 1.0
        self.measured += len(todo)
        self._save({k: v * scale for (kind, k), v in times.items() if kind == "layer"},
                   {k: v for (kind, k), v in times.items() if kind == "model"})


def _slots(model: nn.Module, input_shape: Sequence[int]) -> dict[str, Candidate]:
    """Every conv and linear of ``model`` with its input's shape, by a forward pass at batch 1."""
    found: dict[str, Candidate] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and not isinstance(module.padding, str):
            def conv_hook(m: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
                assert isinstance(m, nn.Conv2d)
                found[name] = Candidate(
                    "conv", m.in_channels, m.out_channels, tuple(m.kernel_size),  # type: ignore[arg-type]
                    tuple(m.stride), tuple(m.padding), tuple(m.dilation),  # type: ignore[arg-type]
                    m.groups, m.bias is not None, tuple(args[0].shape[2:]))
            hooks.append(module.register_forward_pre_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            def linear_hook(m: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
                assert isinstance(m, nn.Linear)
                found[name] = Candidate("linear", m.in_features, m.out_features,
                                        bias=m.bias is not None, spatial=tuple(args[0].shape[1:-1]))
            hooks.append(module.register_forward_pre_hook(linear_hook))
    ref = next(iter(model.parameters()))
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape, device=ref.device, dtype=ref.dtype))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return found


def _arch_key(model: nn.Module, input_shape: Sequence[int]) -> str:
    """A model's architecture (its modules' repr, not its weights) and input shape."""
    return hashlib.sha256(f"{model!r}|{tuple(input_shape)}".encode()).hexdigest()[:16]


class LatencyModel:
    """The predicted latency of plans over one dense ``model`` on one :class:`Target`.

    ``predict(plan)`` measures what the table lacks first (lazily: only the candidates plans
    ask for), so the first plans over a new target cost seconds and later ones nothing.
    """

    def __init__(self, model: nn.Module, input_shape: Sequence[int], target: Target,
                 cache_dir: str | Path | None = None, *, table: LatencyTable | None = None) -> None:
        self.model = model
        self.input_shape = tuple(input_shape)
        self.table = table or LatencyTable(target, cache_dir)
        self.slots = _slots(model, input_shape)
        self._consumers: dict[str, set[str]] | None = None
        self.arch = _arch_key(model, input_shape)

    def consumers(self) -> dict[str, set[str]]:
        if self._consumers is None:
            self._consumers = channel_consumers(self.model, (1, *self.input_shape))
        return self._consumers

    def candidates(self, plan: Plan) -> dict[str, Candidate]:
        """Each slot's candidate under ``plan`` (unnamed slots: ``keep``, inputs cut where a
        pruned layer feeds them)."""
        cut_inputs: dict[str, int] = {}
        for name, choice in plan.items():
            if choice.kept_channels is not None:
                for consumer in self.consumers().get(name, ()):
                    cut_inputs[consumer] = choice.kept_channels
        out = {}
        for name, slot in self.slots.items():
            cand = slot
            if name in cut_inputs and slot.groups == 1:
                cand = replace(cand, in_channels=bucket(cut_inputs[name], slot.in_channels))
            if (c := plan.get(name)) is not None:
                if c.kept_channels is not None:
                    cand = replace(cand, out_channels=bucket(c.kept_channels, slot.out_channels))
                cand = cand.with_choice(c.method, c.rank)
            out[name] = cand
        return out

    def remainder(self) -> float:
        """The dense model's measured latency minus its slots' (ms): what no plan changes."""
        self.table.ensure(self.slots.values(), {self.arch: self.model}, self.input_shape)
        return self.table.models[self.arch] - sum(self.table[c] for c in self.slots.values())

    def breakdown(self, plan: Plan) -> dict[str, float]:
        """Each slot's latency under ``plan`` (ms), and ``""``: the remainder."""
        cands = self.candidates(plan)
        self.table.ensure(list(cands.values()) + list(self.slots.values()),
                          {self.arch: self.model}, self.input_shape)
        return {"": self.remainder(), **{n: self.table[c] for n, c in cands.items()}}

    def predict(self, plan: Plan) -> float:
        """Predicted latency of ``apply_plan(model, plan)`` in ms on the target."""
        return sum(self.breakdown(plan).values())


def measure_models(models: Mapping[str, nn.Module], input_shape: Sequence[int], target: Target, *,
                   repeats: int = 15) -> dict[str, float]:
    """Whole models' median latency (ms) on ``target``, by the table's protocol, interleaved."""
    calls = {key: _model_call(model, input_shape, target) for key, model in models.items()}
    return time_interleaved(calls, threads=target.threads, repeats=repeats)


def _model_call(model: nn.Module, input_shape: Sequence[int], target: Target) -> Any:
    """One forward pass of a whole model on ``target`` at its batch, as a no-argument call."""
    x = torch.randn(target.batch, *input_shape, device=target.device)
    return compile_call(model.to(target.device), x, target.backend, target.threads)
