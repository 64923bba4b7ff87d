"""Defects that broke a CUDA user at step 0 (issue 11), each caught on the CPU.

- fp16/bf16 rays under autocast (defect 1): the renderer and phase=fit build geometry with autocast off;
- textual inversion left its picture on the CPU (defect 2): checked on the ``meta`` device, which, like CUDA,
  refuses to mix with CPU tensors;
- the Zero-1-to-3 pose token's azimuth sign (defect 4): recomputed from our cameras' centres with Zero-1-to-3's own
  ``get_T``;
- the image-video term returned its loss on its own device (defect 7): fake CUDA images (FakeTensorMode works on the
  CPU-only torch as long as no convolution runs on the fake CUDA side).

Defect 3 (the zero123-xl layout) is in test_hub_layouts.py, defect 5 (nerfacc) in test_nerfacc_backend.py.
"""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from animate124.config.guidance import ImageVideoGuidanceConfig
from animate124.config.schema import FieldConfig, ModelsConfig, ModelsKind, RenderConfig
from animate124.fields import build_field
from animate124.render.cameras import Cameras, get_rays, reference_camera
from animate124.render.occupancy import OccupancyGrid
from animate124.render.volume import VolumeRenderer
from animate124.types import GuidanceContext, RenderRequest

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    return ModelsConfig(kind=ModelsKind.tiny, cache_dir=str(tmp_path_factory.mktemp("cache")))


# ------------------------------------------------------------------------------------------------------ defect 1
def test_rays_and_render_are_float32_under_autocast():
    cams = Cameras.from_spherical(torch.tensor([10.0, -20.0]), torch.tensor([30.0, 200.0]), 1.8, 8)
    ref_o, ref_d = get_rays(cams)
    with torch.autocast(**BF16):
        o, d = get_rays(cams)
        renderer = VolumeRenderer(build_field(FieldConfig(), dynamic=False), OccupancyGrid(16), RenderConfig(max_steps=32))
        out = renderer.render(reference_camera(8), None, RenderRequest(shading="lambertian", ambient=0.3))
    assert o.dtype == d.dtype == torch.float32
    torch.testing.assert_close(d, ref_d, rtol=0, atol=0)  # bit-identical: nothing geometric ran in bf16
    assert out.rgb.dtype == torch.float32 and torch.isfinite(out.rgb).all()


def test_fit_pixel_rays_are_float32_under_autocast(tmp_path):
    from animate124.data.dnerf import load_dnerf
    from animate124.data.synthetic import make_synthetic_scene
    from animate124.render.cameras import pixel_rays

    data = load_dnerf(make_synthetic_scene(tmp_path, size=8, n_train=2, n_test=1, n_val=0), "train")
    frame, pixel = torch.tensor([0, 1]), torch.tensor([3, 60])
    ref = pixel_rays(data.c2w[frame], pixel, data.width, data.height, data.focal)
    with torch.autocast(**BF16):
        got = pixel_rays(data.c2w[frame], pixel, data.width, data.height, data.focal)
    assert got[1].dtype == torch.float32
    torch.testing.assert_close(got[1], ref[1], rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------------ defect 4
def _zero123_get_T(target_centre: torch.Tensor, cond_centre: torch.Tensor) -> list[float]:
    """Zero-1-to-3's ``get_T`` (zero123/ldm/data/simple.py) on camera centres in a z-up world (float64)."""

    def spherical(c):
        x, y, z = (float(v) for v in c)
        xy = x * x + y * y
        return math.atan2(math.sqrt(xy), z), math.atan2(y, x), math.sqrt(xy + z * z)  # polar, azimuth, radius

    th_t, az_t, r_t = spherical(target_centre)
    th_c, az_c, r_c = spherical(cond_centre)
    d_az = (az_t - az_c) % (2 * math.pi)
    return [th_t - th_c, math.sin(d_az), math.cos(d_az), r_t - r_c]


def test_pose_token_equals_zero123_get_T():
    from animate124.guidance.zero123 import pose_token

    views = [(0.0, 90.0, 1.8), (0.0, -90.0, 1.8), (30.0, 0.0, 1.8), (-30.0, 0.0, 1.8), (30.0, 90.0, 2.0),
             (-30.0, -90.0, 1.6), (15.0, 135.0, 1.8), (-10.0, 180.0, 1.8), (45.0, -45.0, 2.2)]
    elev = torch.tensor([v[0] for v in views])
    azim = torch.tensor([v[1] for v in views])
    rad = torch.tensor([v[2] for v in views])
    cams = Cameras.from_spherical(elev.double(), azim.double(), rad.double())
    ref = reference_camera(8).origins[0].double()
    ctx = GuidanceContext(step=0, elevation=elev.view(-1, 1), azimuth=azim.view(-1, 1), radius=rad.view(-1, 1))
    ours = pose_token(ctx.delta_elevation[:, 0], ctx.delta_azimuth[:, 0], ctx.delta_radius[:, 0]).double()
    for k in range(len(views)):
        want = torch.tensor(_zero123_get_T(cams.origins[k], ref), dtype=torch.float64)
        torch.testing.assert_close(ours[k], want, atol=1e-5, rtol=0, msg=f"view {views[k]}")


# ------------------------------------------------------------------------------------------------------ defect 2
def test_textual_inversion_phase_keeps_everything_on_its_device(tmp_path, tiny_models):
    """The phase must move the picture with the models; 'meta', like CUDA, does not mix with CPU tensors."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    import animate124.config.store  # noqa: F401
    from animate124.phases.textual_inversion import TextualInversionPhase

    image = tmp_path / "cat.png"
    Image.fromarray((np.random.default_rng(0).random((24, 24, 3)) * 255).astype(np.uint8)).save(image)
    with initialize_config_module("animate124.configs", version_base="1.3"):
        cfg = OmegaConf.to_object(compose("run", overrides=[
            "phase=textual_inversion", "models=tiny", f"models.cache_dir={tiny_models.cache_dir}", f"image={image}",
            "phase.batch_size=1", "phase.resolution=64", "phase.augment=false", "prompt=a cat"]))
    phase = TextualInversionPhase(cfg, tmp_path / "run", device=torch.device("meta"))
    phase.build()
    assert phase.ti is not None
    tensors = dict(phase.ti.named_parameters()) | dict(phase.ti.named_buffers())
    misplaced = sorted(name for name, t in tensors.items() if t.device.type != "meta")
    assert not misplaced, f"not on the phase's device: {misplaced[:5]}"
    out = phase.train_step(0)  # the whole step runs on 'meta': no CPU tensor meets a model weight
    assert out.loss.device.type == "meta" and out.loss.shape == ()


# ------------------------------------------------------------------------------------------------------ defect 7
def test_image_video_loss_comes_back_on_the_images_device(tiny_models):
    from torch._subclasses.fake_tensor import FakeTensorMode

    from animate124.guidance.base import TermInputs
    from animate124.guidance.image_video import ImageVideoGuidance

    term = ImageVideoGuidance(ImageVideoGuidanceConfig(height=32, width=32),
                              TermInputs(models_cfg=tiny_models, reference=torch.rand(3, 32, 32)))
    e = torch.zeros(1, 2)
    ctx = GuidanceContext(step=0, elevation=e, azimuth=e, radius=e + 1.8, times=e)
    with FakeTensorMode(allow_non_fake_inputs=True):
        images = torch.rand(1, 2, 3, 32, 32, device="cuda")  # the run's device; the term sits on the CPU
        out = term(images, ctx)
        assert out.loss.device == images.device
        total = images.new_zeros(()) + out.loss
    assert total.device.type == "cuda"


# ------------------------------------- found by the fake-CUDA traces (tests/test_fake_cuda_phases.py), 2026-12-04
def test_renderer_is_born_on_its_grids_device():
    """The phases built the renderer without .to(device): its aabb stayed on the CPU and every render moved the
    cameras back there, so marching met a CUDA bitfield with CPU rays (ValueError at step 0 of every 3D phase)."""
    occ = OccupancyGrid(16).to("meta")
    renderer = VolumeRenderer(build_field(FieldConfig(), dynamic=False).to("meta"), occ, RenderConfig(max_steps=32))
    assert renderer.aabb.device.type == "meta"


def test_controlnet_term_keeps_its_schedule_with_the_models(tiny_models):
    """ControlNet-Tile registered the scheduler's ᾱ (a CPU tensor) as is: one host-to-device copy per step."""
    from torch import nn

    from animate124.config.guidance import ControlNetGuidanceConfig
    from animate124.guidance.controlnet import ControlNetTileGuidance

    unet = nn.Linear(2, 2).to("meta")
    term = ControlNetTileGuidance.from_parts(ControlNetGuidanceConfig(), nn.Identity(), unet, nn.Identity(),
                                             torch.linspace(0.99, 0.01, 1000), torch.zeros(2, 77, 8),
                                             torch.zeros(2, 77, 8))
    assert term.alphas_cumprod.device.type == "meta"


# ------------------------------------------------------------------------------------------------------ defect 8
def test_static_sds_balance_gradient_ratio(tmp_path):
    """original: SDS-step gradients are 2^-16 of corrected's (no scaler on the CPU); reference steps are unchanged."""
    import random

    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    import animate124.config.store  # noqa: F401
    from animate124.phases.static import StaticPhase

    yy, xx = np.mgrid[:32, :32]
    alpha = (((yy - 16) ** 2 + (xx - 16) ** 2) < 100).astype(np.uint8) * 255
    Image.fromarray(np.stack([alpha, alpha // 2, alpha // 3, alpha], -1).astype(np.uint8), "RGBA").save(tmp_path / "b.png")
    with initialize_config_module("animate124.configs", version_base="1.3"):
        cfg = OmegaConf.to_object(compose("run", overrides=[
            "phase=static", "models=tiny", "field=small", "render=fast", "render.grid_resolution=16",
            "render.max_steps=48", "phase.ref_size=16", "phase.render_size=16", f"image={tmp_path / 'b.png'}",
            "prompt=a ball", "guidance.sd.resolution=64", "guidance.zero123.enabled=false",
            "phase.known_iters=1", "phase.known_interval=100", "phase.regularisers.lambda_entropy=0",
            "phase.regularisers.lambda_orient=0", "phase.regularisers.lambda_normal_tv=0",
            "phase.regularisers.lambda_normal_blur=0"]))
    assert cfg.phase.sds_balance == "original"  # the static phase's default
    phase = StaticPhase(cfg, tmp_path / "run")
    phase.build()
    grads = {}
    for mode in ("original", "corrected"):
        phase.pcfg.sds_balance = mode
        for step in (0, 1):  # a reference step, then an SDS step (same draws in both modes)
            torch.manual_seed(10 + step)
            random.seed(10 + step)
            phase.optimizer.zero_grad(set_to_none=True)
            phase.train_step(step).loss.backward()
            grads[mode, step] = torch.cat([p.grad.flatten() for g in phase.optimizer.param_groups
                                           for p in g["params"] if p.grad is not None])
    ratio = {m: grads[m, 1].norm() / grads[m, 0].norm() for m in ("original", "corrected")}
    assert float(ratio["corrected"]) > 0
    assert float(ratio["original"] / ratio["corrected"]) == pytest.approx(2.0 ** -16, rel=1e-4)
    torch.testing.assert_close(grads["original", 0], grads["corrected", 0], rtol=0, atol=0)
    # with a running GradScaler the factor is 1/scale (read as a device tensor, no host sync)
    phase.grad_scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    phase.pcfg.sds_balance = "original"
    assert float(phase.sds_factor()) == 2.0 ** -10
