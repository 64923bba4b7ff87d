"""One train step of every phase under CPU bf16 autocast: the code path CUDA AMP takes (issue 11).

Each test builds the phase with tiny models (tests/_phase_steps.py, shared with the fake-CUDA traces), runs the
phase's own ``train_step`` inside ``torch.autocast("cpu", dtype=torch.bfloat16)`` exactly as ``phases.base.train``
does on CUDA (fp16 there), then the backward, and asserts a finite loss and finite, non-zero gradients. CPU autocast
casts a different op list than CUDA autocast (both cast matmul/conv/einsum/linear), so this catches the mixed-dtype
class of bugs, not fp16 overflow.
"""

import pytest
import torch
from _phase_steps import EXPECTED_STATS, PHASE_STEPS, prepare

from animate124.phases.base import Phase, StepOutput


def step_under_autocast(phase: Phase, step: int) -> StepOutput:
    """The phase's train_step under bf16 autocast → backward; checks loss and gradients."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = phase.train_step(step)
    assert out.loss.shape == () and torch.isfinite(out.loss.detach()), out.loss
    out.loss.backward()
    params = [p for g in phase.optimizer.param_groups for p in g["params"]]
    grads = [p.grad for p in params if p.grad is not None]
    assert grads, "no parameter received a gradient"
    assert all(torch.isfinite(g).all() for g in grads)
    assert any(bool(g.abs().sum() > 0) for g in grads)
    return out


@pytest.mark.parametrize("name", PHASE_STEPS)
def test_phase_step_under_autocast(tmp_path, name):
    case = prepare(name, tmp_path)
    out = step_under_autocast(case.make(torch.device("cpu")), case.step)
    assert EXPECTED_STATS[name] <= set(out.stats), sorted(out.stats)
