"""The contract every decomposition method follows, and the geometry and caching shared by all."""

from __future__ import annotations

import abc
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

log = logging.getLogger(__name__)

Rank = tuple[int, ...]
T = TypeVar("T")

# Decompositions are computed in float64 on the CPU whatever the layer's dtype: float32 SVDs of
# wide unfoldings lose the exactness at full rank that the conformance tests demand.
_WORK_DTYPE = torch.float64


@dataclass(frozen=True)
class ConvGeometry:
    """Shape and sliding-window settings of a Conv2d, split per spatial axis."""

    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] | str
    dilation: tuple[int, int]
    padding_mode: str

    @classmethod
    def of(cls, conv: nn.Module) -> ConvGeometry:
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"expected a Conv2d, got {type(conv).__name__}")
        pad = conv.padding
        padding: tuple[int, int] | str = pad if isinstance(pad, str) else (int(pad[0]), int(pad[1]))
        return cls(
            in_channels=conv.in_channels,
            out_channels=conv.out_channels,
            kernel=(int(conv.kernel_size[0]), int(conv.kernel_size[1])),
            stride=(int(conv.stride[0]), int(conv.stride[1])),
            padding=padding,
            dilation=(int(conv.dilation[0]), int(conv.dilation[1])),
            padding_mode=conv.padding_mode,
        )

    def window(self, axes: str) -> dict[str, Any]:
        """Conv2d keyword arguments for a factor whose kernel spans ``axes`` ("hw", "h" or "w").

        A factor spanning only the height carries the layer's height stride, padding and
        dilation and none of the width's (and vice versa); padding acts per axis, so a chain of
        such factors computes exactly what the layer computes.
        """
        if axes == "hw":
            stride, padding, dilation = self.stride, self.padding, self.dilation
        else:
            i = 0 if axes == "h" else 1
            unit = [1, 1]
            unit[i] = self.stride[i]
            stride = (unit[0], unit[1])
            dil = [1, 1]
            dil[i] = self.dilation[i]
            dilation = (dil[0], dil[1])
            if isinstance(self.padding, str):
                padding = self.padding
            else:
                pad = [0, 0]
                pad[i] = self.padding[i]
                padding = (pad[0], pad[1])
        return {"stride": stride, "padding": padding, "dilation": dilation,
                "padding_mode": self.padding_mode}


def conv_like(
    layer: nn.Module,
    in_channels: int,
    out_channels: int,
    kernel: tuple[int, int],
    weight: torch.Tensor,
    *,
    groups: int = 1,
    bias: torch.Tensor | None = None,
    window: dict[str, Any] | None = None,
) -> nn.Conv2d:
    """A Conv2d holding ``weight`` (and ``bias``), on the device and in the dtype of ``layer``."""
    ref = next(layer.parameters())
    # skip_init: the weights are overwritten at once, and default init of a large conv is slow
    conv = nn.utils.skip_init(nn.Conv2d, in_channels, out_channels, kernel, groups=groups,
                              bias=bias is not None, device=ref.device, dtype=ref.dtype,
                              **(window or {}))
    with torch.no_grad():
        conv.weight.copy_(weight.reshape(conv.weight.shape))
        if bias is not None:
            assert conv.bias is not None
            conv.bias.copy_(bias)
    return conv


def linear_like(layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """A Linear holding ``weight`` (out x in) and ``bias``, on the device and dtype of ``layer``."""
    ref = next(layer.parameters())
    out_features, in_features = weight.shape
    lin = nn.utils.skip_init(nn.Linear, in_features, out_features, bias=bias is not None,
                             device=ref.device, dtype=ref.dtype)
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None:
            assert lin.bias is not None
            lin.bias.copy_(bias)
    return lin


def layer_bias(layer: nn.Module) -> torch.Tensor | None:
    """The layer's bias, detached, or None for a bias-free layer."""
    bias = getattr(layer, "bias", None)
    return None if bias is None else bias.detach()


def bias_params(layer: nn.Module) -> int:
    bias = getattr(layer, "bias", None)
    return 0 if bias is None else int(bias.numel())


def conv_or_linear_reason(layer: nn.Module, grouped: str = "is not supported") -> str | None:
    """Why ``layer`` is not a Linear or an ungrouped Conv2d (``grouped``: what is said of a
    grouped conv), or None when it is one."""
    if isinstance(layer, nn.Linear):
        return None
    if isinstance(layer, nn.Conv2d):
        return None if layer.groups == 1 else f"grouped/depthwise conv (groups={layer.groups}) {grouped}"
    return f"{type(layer).__name__} is neither a Conv2d nor a Linear"


def weight_of(layer: nn.Module) -> torch.Tensor:
    """The layer's ``weight`` parameter.

    Raises:
        TypeError: the layer has no weight tensor.
    """
    weight = getattr(layer, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{type(layer).__name__} has no weight tensor")
    return weight


def kernel_shape(layer: nn.Module) -> tuple[int, int, int, int]:
    """A conv's kernel shape ``(T, S, kh, kw)``."""
    t, s, kh, kw = (int(d) for d in weight_of(layer).shape)
    return t, s, kh, kw


def work_weight(layer: nn.Module) -> torch.Tensor:
    """The layer's weight as a float64 CPU tensor, detached (decompositions run on it)."""
    return weight_of(layer).detach().to(device="cpu", dtype=_WORK_DTYPE)


def fingerprint(tensor: torch.Tensor) -> str:
    """A content hash of a tensor: cached factors follow the weights, not the module object."""
    data = tensor.detach().to("cpu").contiguous()
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str((tuple(data.shape), str(data.dtype))).encode())
    digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


class FactorCache:
    """A bounded LRU map from a key to computed factors.

    The search factorizes the same baseline layers under many plans; keeping each layer's
    full SVDs (and each (layer, rank) CP/TT) lets a new plan reuse them.
    """

    def __init__(self, max_entries: int = 512) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[Any, ...], compute: Callable[[], T]) -> T:
        if key in self._data:
            self.hits += 1
            self._data.move_to_end(key)
            return self._data[key]
        self.misses += 1
        value = compute()
        self._data[key] = value
        if len(self._data) > self.max_entries:
            self._data.popitem(last=False)
        return value

    def clear(self) -> None:
        self._data.clear()
        self.hits = self.misses = 0


class Method(abc.ABC):
    """A decomposition method over one layer (a "method"; "strategy" names a whole recipe).

    Subclasses set ``name``, ``rank_names`` (the order of the rank tuple) and
    ``seed_unfoldings`` (how EVBMF seeds the rank), and implement
    :meth:`max_rank`, :meth:`num_params` and :meth:`_factorize`; :meth:`unsupported_reason`
    says which layers they take.
    """

    name: ClassVar[str]
    rank_names: ClassVar[tuple[str, ...]]
    # For each rank entry, the kernel modes (of T, S, kh, kw) that form the rows of the matrix
    # whose EVBMF rank seeds it; None where no matrix gives the rank (CP).
    seed_unfoldings: ClassVar[tuple[tuple[int, ...], ...] | None] = None

    def __init__(self) -> None:
        self.cache = FactorCache()

    def unsupported_reason(self, layer: nn.Module) -> str | None:
        """Why this method cannot factorize ``layer``, or None when it can.

        The default accepts an ungrouped Conv2d with a kernel larger than 1x1.
        """
        if not isinstance(layer, nn.Conv2d):
            return f"{type(layer).__name__} is not a Conv2d"
        if layer.groups != 1:
            return f"grouped/depthwise conv (groups={layer.groups}) is not supported"
        if tuple(layer.kernel_size) == (1, 1):
            return "1x1 conv: use 'svd'"
        return None

    def supports(self, layer: nn.Module) -> bool:
        """True when :meth:`factorize` can take ``layer``; logs the reason when it cannot."""
        reason = self.unsupported_reason(layer)
        if reason is not None:
            log.debug("%s does not support %s: %s", self.name, type(layer).__name__, reason)
        return reason is None

    @abc.abstractmethod
    def max_rank(self, layer: nn.Module) -> Rank:
        """The rank tuple at which the factorization reproduces the layer exactly."""

    @abc.abstractmethod
    def num_params(self, layer: nn.Module, rank: Sequence[int]) -> int:
        """Parameters of the factorized layer at ``rank``, closed form (bias included)."""

    @abc.abstractmethod
    def _factorize(self, layer: nn.Module, rank: Rank) -> nn.Module:
        """Build the factorized module; ``rank`` has been validated."""

    def check_rank(self, layer: nn.Module, rank: Sequence[int]) -> Rank:
        """Validate ``rank`` for ``layer`` and return it as a tuple of ints.

        Raises:
            ValueError: unsupported layer, wrong rank length, or a rank outside 1..max.
        """
        reason = self.unsupported_reason(layer)
        if reason is not None:
            raise ValueError(f"method {self.name!r} cannot factorize this layer: {reason}")
        top = self.max_rank(layer)
        rank_t = tuple(int(r) for r in rank)
        if len(rank_t) != len(top):
            raise ValueError(
                f"method {self.name!r} takes a rank of {len(top)} value(s) "
                f"{self.rank_names}, got {rank_t}")
        for value, hi, what in zip(rank_t, top, self.rank_names, strict=True):
            if not 1 <= value <= hi:
                raise ValueError(
                    f"rank {what}={value} of method {self.name!r} is outside 1..{hi} "
                    f"(max rank {top})")
        return rank_t

    def skeleton(self, layer: nn.Module, rank: Sequence[int]) -> nn.Module:
        """The factorized module's structure at ``rank``, its weights arbitrary: what latency is
        measured on (:mod:`autorank.latency`). The default factorizes; methods whose
        factorization iterates (CP-ALS, TT) build their factors at random instead."""
        return self.factorize(layer, rank)

    def factorize(self, layer: nn.Module, rank: Sequence[int]) -> nn.Module:
        """Replace ``layer`` by its factorization at ``rank``: real small convs/linears.

        Raises:
            ValueError: see :meth:`check_rank`.
        """
        return self._factorize(layer, self.check_rank(layer, rank))


def balanced_svd(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Thin SVD split evenly: ``matrix = left @ right``, ``left = U sqrt(S)``, ``right = sqrt(S) Vh``.

    The first ``r`` columns of ``left`` and rows of ``right`` are the best rank-``r`` factors
    (Eckart-Young), so one SVD serves every rank. Splitting sqrt(S) onto both sides keeps the two
    factors on the same scale, which fine-tuning prefers.
    """
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    root = s.sqrt()
    return u * root, root[:, None] * vh
