"""The estimator (animate124/estimate): its fake-tensor trace of a step against the real step on CPU.

A reduced fp32 step (tiny SD-layout VAE + UNet for the SD and Zero123 terms, a small field) runs for real under
torch.profiler (allocator events) and is traced on fake tensors; the estimated peak must be within 15 %.
"""

import pytest
import torch

from animate124.config.schema import FieldConfig
from animate124.estimate.phase_steps import Variant, trace_render_step
from animate124.estimate.steps import SDSTerm, StepEnv
from animate124.estimate.tracer import StepTracer, fake_mode
from animate124.estimate.validate import measure_cpu_peak
from animate124.guidance import models as M

FIELD = FieldConfig(num_levels=4, log2_table_size=12, max_resolution=64, keyframes=1)
BUILDERS = {
    "sd_vae": lambda dt: M.tiny_vae().to(dt).requires_grad_(False),
    "sd_unet": lambda dt: M.tiny_unet().to(dt).requires_grad_(False),
    "z123_vae": lambda dt: M.tiny_vae().to(dt).requires_grad_(False),
    "z123_unet": lambda dt: M.tiny_unet(in_channels=8).to(dt).requires_grad_(False),
}
TERMS = [SDSTerm("sd", "sd_vae", "sd_unet", (160, 160), (1, 77, 32)),
         SDSTerm("zero123", "z123_vae", "z123_unet", (96, 96), (1, 1, 32), kind="zero123", cfg_scale=5.0)]
VARIANT = Variant("sds", 1.0, TERMS, frames=1, size=32)


def _trace(env):
    return trace_render_step(env, VARIANT, list(BUILDERS), FIELD, 2.0, False, 20_000, 0)


def test_estimated_peak_matches_the_cpu_allocator_within_15_percent():
    torch.manual_seed(0)
    real = StepEnv(BUILDERS, torch.float32, mode=None, round_to=1)
    real.prepare(list(BUILDERS))
    weights = sum(t.numel() * t.element_size() for p in real.params.values() for t in p.values())
    measured = weights + measure_cpu_peak(lambda: _trace(real))
    fake = StepEnv(BUILDERS, torch.float32, mode=fake_mode(), round_to=1)
    tr, _ = _trace(fake)
    assert measured > 20e6, "the reduced step should allocate a measurable amount"
    print(f"estimated {tr.peak / 1e6:.1f} MB, measured {measured / 1e6:.1f} MB, ratio {tr.peak / measured:.3f}")
    assert abs(tr.peak - measured) <= 0.15 * measured, (tr.peak, measured)
    assert tr.peak_by_cat["weights"] >= weights
    assert tr.flops["sd/unet"] > 0 and tr.flops["sd/vae/bwd"] > 0


def test_tracer_flops_equal_flop_counter_mode_and_memory_is_freed():
    from torch.utils.flop_counter import FlopCounterMode

    lin = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 8))
    x = torch.randn(32, 64)
    with FlopCounterMode(display=False) as fc:
        lin(x).sum().backward()
    tr = StepTracer(round_to=1)
    with tr, tr.saved_tensors():
        with tr.component("mlp"):
            y = lin(x).sum()
        saved = tr.by_cat["activations"]
        y.backward()
        del y
    assert sum(tr.flops.values()) == fc.get_total_flops()
    assert tr.flops["mlp"] == 2 * 32 * (64 * 128 + 128 * 8) and tr.flops["mlp/bwd"] > 0
    assert saved >= 32 * 128 * 4  # the ReLU output (and the inputs) saved for backward
    assert tr.by_cat["activations"] <= saved - 32 * 128 * 4 and tr.total < tr.peak  # ReLU output freed by backward


def test_sdpa_kernels_are_logged_and_counted():
    q = torch.randn(1, 2, 64, 16, requires_grad=True)
    tr = StepTracer(round_to=1)
    with fake_mode() as mode:
        qf = mode.from_tensor(q)
        with tr, tr.saved_tensors():
            out = torch.nn.functional.scaled_dot_product_attention(qf, qf, qf)
            out.sum().backward()
    assert any("scaled_dot_product" in k for k in tr.sdpa_kernels)
    assert sum(tr.flops.values()) >= 2 * 2 * 64 * 64 * 16 * 2  # QKᵀ and PV forward, plus backward


@pytest.mark.slow
def test_full_size_phase_all_estimate_runs(tmp_path):
    from animate124.estimate.__main__ import main

    assert main(["phase=all", f"run_dir={tmp_path}"]) == 0
    assert (tmp_path / "estimate.json").is_file()
