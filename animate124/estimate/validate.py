"""Validation of the estimator: the same step, traced on fake tensors and run for real.

- CPU: :func:`measure_cpu_peak` runs a function under ``torch.profiler`` with ``profile_memory=True`` and returns the
  peak of the running sum of the allocator's allocation / free events (not tracemalloc, which does not see torch's
  allocations, nor RSS, which is allocator noise).
- GPU (when one is available): :func:`measure_cuda_peak` returns ``torch.cuda.max_memory_allocated`` and
  ``max_memory_reserved`` of one call.
"""

from __future__ import annotations

from typing import Any, Callable

import torch


def _allocations(prof: Any) -> list[tuple[int, int]]:
    from torch._C._profiler import _EventType

    out: list[tuple[int, int]] = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        e = stack.pop()
        if e.tag == _EventType.Allocation and e.extra_fields.device.type == "cpu":
            out.append((e.start_time_ns, int(e.extra_fields.alloc_size)))
        stack.extend(e.children)
    return sorted(out)


def measure_cpu_peak(fn: Callable[[], Any]) -> int:
    """Peak bytes allocated on the CPU during ``fn()`` above what was live before (torch's allocator events)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0
    for _, delta in _allocations(prof):
        live += delta
        peak = max(peak, live)
    return peak


def measure_cuda_peak(fn: Callable[[], Any], device: str = "cuda") -> dict[str, int]:
    """``max_memory_allocated`` / ``max_memory_reserved`` of one ``fn()`` call (bytes, including what was live)."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return {"allocated": int(torch.cuda.max_memory_allocated(device)),
            "reserved": int(torch.cuda.max_memory_reserved(device))}
