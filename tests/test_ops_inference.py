"""ops/inference.py on the reference path: the alive-ray loop renders exactly what the training ops render."""

import _kernel_cases as cases
import pytest
import torch

from animate124.ops import composite_rays_train, march_rays_train
from animate124.ops.inference import InferenceState, composite_rays, march_rays, render_rays_inference

ATOL = 1e-6
"""Same float32 operations in the same order on both paths: only the float64 optical-depth sums differ (≈1e-12)."""


def _field(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return 25.0 * (x.norm(dim=-1) < 0.6).float(), 0.5 * x + 0.5


@pytest.mark.parametrize("max_steps,max_n_step", [(1024, 8), (9, 3), (1024, 1)])
def test_inference_equals_training_render(max_steps, max_n_step):
    inp = cases.march_inputs(120, slots=2, res=32, seed=11)
    s = march_rays_train(**inp, bound=1.0, grid_res=32, dt=cases.DT, max_steps=max_steps)
    sig, rgb = _field(s.xyzs)
    _, ws, depth, image = composite_rays_train(sig, rgb, s.ts, s.rays)
    seen = []

    def fn(x, d, ray_index):
        seen.append(ray_index)
        return _field(x)

    st = render_rays_inference(inp["rays_o"], inp["rays_d"], inp["nears"], inp["fars"], inp["bitfield"],
                               inp["slots"], fn, bound=1.0, grid_res=32, dt=cases.DT, max_steps=max_steps,
                               max_n_step=max_n_step, noise=inp["noise"])
    torch.testing.assert_close(st.weights_sum, ws, rtol=0, atol=ATOL)
    torch.testing.assert_close(st.depth, depth, rtol=0, atol=ATOL)
    torch.testing.assert_close(st.image, image, rtol=0, atol=ATOL)
    if max_steps >= 1024:  # some rays hit the opaque sphere, so early termination happened
        assert float(ws.max()) > 0.99
    # inference never evaluates more samples than training, and strictly fewer once rays saturate
    assert sum(len(r) for r in seen) <= s.xyzs.shape[0]


def test_march_rays_state_machine():
    # a fully occupied grid, ray straight through the box along +x from x=-3: near 2, far 4
    o, d = torch.tensor([[-3.0, 0.1, 0.1]]), torch.tensor([[1.0, 0.0, 0.0]])
    bits = torch.full((1, 8 ** 3 // 8), 255, dtype=torch.uint8)
    nears, fars, slots = torch.tensor([2.0]), torch.tensor([4.0]), torch.zeros(1, dtype=torch.long)
    st = InferenceState.create(1, 3, "cpu")
    alive = torch.zeros(1, dtype=torch.long)
    # dt = 0.5 → lattice t = 2.0, 2.5, 3.0, 3.5 (4 points < far = 4)
    xyzs, dirs, ts = march_rays(o, d, nears, fars, bits, slots, alive, st.rays_k, st.rays_n, 1.0, 8, 0.5, 3, 100)
    assert ts[0, :, 0].tolist() == [2.0, 2.5, 3.0] and st.rays_k.tolist() == [3] and st.rays_n.tolist() == [3]
    assert xyzs[0, :, 0].tolist() == [-1.0, -0.5, 0.0] and torch.equal(dirs[0], d.expand(3, 3))
    xyzs, dirs, ts = march_rays(o, d, nears, fars, bits, slots, alive, st.rays_k, st.rays_n, 1.0, 8, 0.5, 3, 100)
    assert ts[0, :, 0].tolist() == [3.5, 0.0, 0.0] and ts[0, :, 1].tolist() == [0.5, 0.0, 0.0]
    assert st.rays_k.tolist() == [-1] and st.rays_n.tolist() == [4]


def test_composite_rays_hand_case():
    # one ray, σ = ln 2 / dt per sample → α = 0.5: w = 0.5, 0.25; T after = 0.25; depth = 0.5·1 + 0.25·2 = 1.0
    dt = 0.1
    sig = torch.full((1, 2), 0.6931471805599453 / dt)
    rgb = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    ts = torch.tensor([[[1.0, dt], [2.0, dt]]])
    st = InferenceState.create(1, 3, "cpu")
    composite_rays(sig, rgb, ts, torch.zeros(1, dtype=torch.long), st.optical_depth, st.weights_sum, st.depth,
                   st.image)
    torch.testing.assert_close(st.weights_sum, torch.tensor([0.75]))
    torch.testing.assert_close(st.depth, torch.tensor([1.0]))
    torch.testing.assert_close(st.image, torch.tensor([[0.5, 0.25, 0.0]]))
    torch.testing.assert_close(torch.exp(-st.optical_depth), torch.tensor([0.25], dtype=torch.float64))


def test_validation():
    st = InferenceState.create(2, 3, "cpu")
    with pytest.raises(ValueError, match="optical_depth"):
        composite_rays(torch.zeros(1, 2), torch.zeros(1, 2, 3), torch.zeros(1, 2, 2), torch.zeros(1, dtype=torch.long),
                       st.optical_depth.float(), st.weights_sum, st.depth, st.image)
    with pytest.raises(ValueError, match="rays_k"):
        march_rays(torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(2), torch.ones(2),
                   torch.zeros(1, 1, dtype=torch.uint8), torch.zeros(2, dtype=torch.long), torch.arange(2),
                   st.rays_k.long(), st.rays_n, 1.0, 2, 0.1, 2, 10)
