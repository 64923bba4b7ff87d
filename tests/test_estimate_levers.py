"""The exact memory levers give the same result: render checkpointing across frames (``render.checkpoint_frames``)
and diffusers' VAE gradient checkpointing (``models.vae_checkpointing``, applied by ``guidance.models.load``)."""

import dataclasses

import torch

from animate124.config.schema import FieldConfig, ModelsConfig, ModelsKind, RenderConfig
from animate124.fields import build_field
from animate124.render.cameras import Cameras, spherical_to_c2w
from animate124.render.occupancy import OccupancyGrid
from animate124.render.volume import VolumeRenderer
from animate124.types import RenderRequest

FIELD = FieldConfig(num_levels=4, log2_table_size=10, max_resolution=32, keyframes=4, init_scale=0.5)


def _render_grads(checkpoint_frames):
    torch.manual_seed(0)
    field = build_field(FIELD, dynamic=True)
    occ = OccupancyGrid(16, 4)
    cfg = RenderConfig(backend="torch", grid_resolution=16, max_steps=64, checkpoint_frames=checkpoint_frames)
    renderer = VolumeRenderer(field, occ, cfg)
    c2w = torch.cat([spherical_to_c2w(0.0, float(a), 1.8).reshape(1, 4, 4) for a in (0.0, 40.0, 80.0, 120.0)])
    cams = Cameras(c2w=c2w, fovy=torch.tensor(40.0), height=12, width=12)
    times = torch.linspace(0, 1, 4)[None]
    out = renderer.render(cams, times, RenderRequest(shading="lambertian", ambient=0.3, perturb=False))
    loss = out.rgb.square().sum() + out.sample_weights.sum() + out.normals.sum()
    loss.backward()
    return out.rgb.detach(), [p.grad.clone() for p in field.parameters()]


def test_render_checkpointing_is_exact():
    rgb, grads = _render_grads(None)
    rgb_c, grads_c = _render_grads(1)
    torch.testing.assert_close(rgb_c, rgb)
    assert any(g.abs().sum() > 0 for g in grads)
    for g, gc in zip(grads, grads_c):  # summation order differs (chunks): compare relative to the gradient's norm
        assert float((gc - g).norm()) <= 1e-4 * float(g.norm()) + 1e-12, float((gc - g).norm() / g.norm())


def test_vae_checkpointing_is_applied_and_exact(tmp_path):
    from diffusers import AutoencoderKL

    from animate124.guidance.base import vae_encode
    from animate124.guidance.models import load, tiny_vae

    base = ModelsConfig(kind=ModelsKind.tiny, cache_dir=str(tmp_path))
    results = []
    for on in (False, True):
        cfg = dataclasses.replace(base, vae_checkpointing=on)
        vae = load(AutoencoderKL, "tiny/vae-ckpt", "vae", "float32", cfg, tiny_builder=tiny_vae)
        assert vae.is_gradient_checkpointing == on
        x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1), requires_grad=True)
        z = vae_encode(vae, x, sample=False)
        z.square().sum().backward()
        results.append((z.detach(), x.grad.clone()))
    torch.testing.assert_close(results[1][0], results[0][0])
    torch.testing.assert_close(results[1][1], results[0][1])
