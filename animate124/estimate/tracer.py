"""A dispatch-level tracer of one training step: live bytes by category, FLOPs and bytes moved by component.

:class:`StepTracer` is a ``TorchDispatchMode`` that sees every aten op below autograd, so it works the same on real
tensors (the CPU validation) and on fake tensors (``FakeTensorMode``: nothing is allocated). For every op it

- tracks the storages of the outputs (one entry per storage: views and in-place ops add nothing) until Python frees
  them (a weakref finalizer on the storage), rounded up like the CUDA caching allocator's allocated bytes (512 B);
- counts FLOPs with the formulas of ``torch.utils.flop_counter`` (FlopCounterMode's registry), plus the CPU flash
  attention kernels that FlopCounterMode does not know (they would count as 0), and the bytes read and written (the
  op's tensor arguments and outputs: an upper bound of the memory traffic, as nothing is fused);
- logs which SDPA kernel each attention call dispatched to.

Categories of live bytes: ``weights`` and ``optimizer`` are registered by the caller; ``activations`` are the storages
autograd saved for backward (``saved_tensors_hooks``); everything else is ``transient`` (inputs, outputs, gradients,
workspaces). The split is recorded at the moment of the peak.

Components: the caller labels code regions (``with tracer.component("video/unet"):``); backward ops are attributed to
the component that saved the tensors the backward node unpacks (the unpack hook), with a ``/bwd`` suffix.
"""

from __future__ import annotations

import contextlib
import weakref
from collections import Counter, defaultdict
from typing import Any, Iterator, Optional

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry, sdpa_backward_flop, sdpa_flop

aten = torch.ops.aten

FLOPS: dict[Any, Any] = {
    **flop_registry,
    # Not in FlopCounterMode's registry (it would count 0): same formulas as the CUDA flash/efficient kernels.
    aten._scaled_dot_product_flash_attention_for_cpu: sdpa_flop,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: sdpa_backward_flop,
}
"""FLOP formulas per aten overload packet (torch.utils.flop_counter's, plus the CPU attention kernels)."""

_SKIP = {aten.detach.default, aten.view.default, aten._unsafe_view.default, aten.t.default, aten.transpose.int,
         aten.permute.default, aten.expand.default, aten.slice.Tensor, aten.select.int, aten.unsqueeze.default,
         aten.squeeze.dim, aten.alias.default, aten.as_strided.default}
"""Metadata-only ops: no bytes moved."""

CATEGORIES = ("weights", "optimizer", "activations", "transient")
CUDA_ROUND = 512
"""The CUDA caching allocator rounds every allocation up to a multiple of 512 bytes (allocated-bytes statistics)."""


def _round(n: int, to: int) -> int:
    return n if to <= 1 else -(-n // to) * to


def _tensors(tree: Any) -> list[Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, Tensor)]


class StepTracer(TorchDispatchMode):
    """Trace live bytes, FLOPs and bytes moved of the ops run inside it (module docstring).

    Args:
        round_to: allocation granularity in bytes (512 = CUDA's; 1 = exact, for comparisons with the CPU allocator).
    """

    def __init__(self, round_to: int = CUDA_ROUND) -> None:
        super().__init__()
        self.round_to = round_to
        self._live: dict[int, list] = {}
        self.by_cat: dict[str, int] = {c: 0 for c in CATEGORIES}
        self.total = 0
        self.peak = 0
        self.peak_by_cat: dict[str, int] = dict(self.by_cat)
        self.peak_component = ""
        self.flops: dict[str, float] = defaultdict(float)
        self.bytes_moved: dict[str, float] = defaultdict(float)
        self.ops: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
        """Per component: (flops, bytes, element size) of every op with a cost (for the per-op roofline)."""
        self.sdpa_kernels: Counter = Counter()
        self._labels: list[str] = ["other"]
        self._bwd_label = "other"

    # ------------------------------------------------------------------ labels

    @contextlib.contextmanager
    def component(self, name: str) -> Iterator[None]:
        """Attribute the ops (and their backward) run inside to component ``name``."""
        self._labels.append(name)
        try:
            yield
        finally:
            self._labels.pop()

    @property
    def label(self) -> str:
        if torch._C._current_graph_task_id() != -1:  # inside a backward pass
            return self._bwd_label + "/bwd"
        return self._labels[-1]

    @contextlib.contextmanager
    def saved_tensors(self) -> Iterator[None]:
        """Mark what autograd saves as ``activations`` and attribute backward nodes to the saving component."""

        def pack(t: Tensor) -> tuple[str, Tensor]:
            self._mark(t, "activations")
            return self._labels[-1], t

        def unpack(packed: tuple[str, Tensor]) -> Tensor:
            self._bwd_label = packed[0]
            return packed[1]

        with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
            yield

    # ------------------------------------------------------------------ memory

    def register(self, tensors: Any, category: str) -> None:
        """Track the storages of ``tensors`` (created outside the tracer) under ``category``."""
        for t in _tensors(tensors):
            self._track(t, category)

    def _track(self, t: Tensor, category: str = "transient") -> None:
        try:
            st = t.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return
        key = st._cdata
        if key in self._live:
            if category != "transient":
                self._move(key, category)
            return
        n = _round(int(st.nbytes()), self.round_to)
        if n == 0:
            return
        self._live[key] = [n, category]
        self.by_cat[category] += n
        self.total += n
        weakref.finalize(st, self._free, key)
        self._update_peak()

    def _mark(self, t: Tensor, category: str) -> None:
        try:
            key = t.untyped_storage()._cdata
        except (RuntimeError, NotImplementedError):
            return
        if key in self._live and self._live[key][1] == "transient":
            self._move(key, category)
        elif key not in self._live:
            self._track(t, category)

    def _move(self, key: int, category: str) -> None:
        entry = self._live[key]
        if entry[1] in ("weights", "optimizer"):
            return
        self.by_cat[entry[1]] -= entry[0]
        entry[1] = category
        self.by_cat[category] += entry[0]

    def _free(self, key: int) -> None:
        entry = self._live.pop(key, None)
        if entry is not None:
            self.by_cat[entry[1]] -= entry[0]
            self.total -= entry[0]

    def _update_peak(self) -> None:
        if self.total > self.peak:
            self.peak = self.total
            self.peak_by_cat = dict(self.by_cat)
            self.peak_component = self.label

    def reset_peak(self) -> None:
        """Start a new peak measurement from the bytes live now."""
        self.peak = self.total
        self.peak_by_cat = dict(self.by_cat)

    # ------------------------------------------------------------------ dispatch

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in _SKIP:
            return out
        packet = func._overloadpacket
        name = packet.__name__
        if "scaled_dot_product" in name:
            self.sdpa_kernels[name] += 1
        label = self.label
        flops = 0.0
        if packet in FLOPS:
            flops = float(FLOPS[packet](*args, **kwargs, out_val=out))
        outs = _tensors(out)
        moved = sum(t.numel() * t.element_size() for t in _tensors((args, kwargs)) + outs)
        self.flops[label] += flops
        self.bytes_moved[label] += moved
        if flops or moved:
            size = max((t.element_size() for t in outs if t.is_floating_point()), default=4)
            self.ops[label].append((flops, float(moved), size))
        for t in outs:
            self._track(t)
        return out

    # ------------------------------------------------------------------ results

    def summary(self) -> dict[str, Any]:
        """Peak (bytes, split by category), FLOPs and bytes per component, SDPA kernels."""
        return {
            "peak_bytes": self.peak,
            "peak_by_category": dict(self.peak_by_cat),
            "peak_during": self.peak_component,
            "flops": dict(self.flops),
            "bytes_moved": dict(self.bytes_moved),
            "sdpa_kernels": dict(self.sdpa_kernels),
        }


def fake_mode() -> "torch._subclasses.FakeTensorMode":
    """A FakeTensorMode that accepts real constants (e.g. a scheduler's ᾱ table) by converting them."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    return FakeTensorMode(allow_non_fake_inputs=True)


def live_bytes(tracer: Optional[StepTracer]) -> int:
    return 0 if tracer is None else tracer.total
