"""Every phase's step traced "on CUDA" with fake tensors: device placement and host syncs of the GPU path (issue 11).

Each case of tests/_phase_steps.py is built with ``device=cuda`` under :func:`_fake_cuda.fake_cuda`: the guidance
models load through ``from_pretrained`` in the GPU run's dtype (fp16), the field, the occupancy grid and the renderer
are moved as the phase moves them, and the kernels are the shape twin of ``cuda_ext/bindings.cpp``. One forward of
the phase's own ``train_step`` then runs under ``torch.autocast("cuda", dtype=torch.float16)``, as
``phases.base.train`` runs it on a GPU. A CPU tensor meeting a CUDA one raises ``FakeTensorDeviceMismatchError``, an
op given a CPU tensor where the kernels need CUDA raises their ``must be a CUDA tensor``, and reading a CUDA value on
the host raises ``DataDependentOutputException``. Forward only: backward over fake CUDA tensors is not supported.

Needs a CUDA build of torch (no GPU): ``scripts/ci/cuda_venv.sh`` runs ``pytest -m fake_cuda`` in its venv.
"""

from __future__ import annotations

import pytest
import torch
from _fake_cuda import HAVE_CUDA_BUILD, SKIP_REASON, FakeExtension, extension_names, fake_cuda
from _phase_steps import EXPECTED_STATS, PHASE_STEPS, prepare
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor

pytestmark = [pytest.mark.fake_cuda, pytest.mark.skipif(not HAVE_CUDA_BUILD, reason=SKIP_REASON)]

CUDA = torch.device("cuda")
FAKE_CUDA_OVERRIDES = {
    # kornia's augmentations pick per-sample branches with boolean masks (data-dependent sizes: a host sync by
    # design, on the allow-list of tests/test_host_syncs.py) which fake tensors cannot trace; without them the step
    # still runs the picture buffer, the VAE, the text encoder and the UNet on CUDA (defect #2's path)
    "textual_inversion": ("phase.augment=false",),
}


def _modules(phase) -> dict[str, nn.Module]:
    """The phase's modules: field, occupancy, renderer(s) and every guidance model."""
    out: dict[str, nn.Module] = {}
    for name, value in vars(phase).items():
        if isinstance(value, nn.Module):
            out[name] = value
        elif isinstance(value, (list, tuple)):
            out.update({f"{name}[{i}]": v for i, v in enumerate(value) if isinstance(v, nn.Module)})
    return out


def _placement(phase) -> list[str]:
    """Parameters and buffers that are not fake CUDA tensors, and guidance weights not in fp16 (GPU dtype)."""
    wrong = []
    for mname, module in _modules(phase).items():
        for pname, t in [*module.named_parameters(), *module.named_buffers()]:
            if "image_encoder" in pname:  # moved to the CPU once the reference embedding is computed (by design)
                continue
            if not (isinstance(t, FakeTensor) and t.device.type == "cuda"):
                wrong.append(f"{mname}.{pname} on {t.device}")
    return wrong


def test_fake_extension_mirrors_the_bindings():
    """The twin provides exactly the functions ops/_cuda.py calls on the compiled extension."""
    import re
    from pathlib import Path

    import animate124.ops._cuda as cuda_py

    used = set(re.findall(r"_ext\(\)\.(\w+)", Path(cuda_py.__file__).read_text()))
    assert used and used == extension_names()
    assert len(extension_names()) == 13


def test_a_cpu_tensor_meeting_a_cuda_one_is_caught(monkeypatch):
    """The harness itself: the mismatch a GPU would raise is raised, CPU set-up stays real, host reads are caught."""
    from torch._subclasses.fake_tensor import DataDependentOutputException

    with fake_cuda(monkeypatch):
        cpu = torch.arange(6.0).reshape(2, 3)
        assert not isinstance(cpu, FakeTensor) and cpu.tolist()[1] == [3.0, 4.0, 5.0]
        gpu = cpu.to(CUDA)
        assert isinstance(gpu, FakeTensor) and gpu.device.type == "cuda"
        with pytest.raises(RuntimeError, match="devices"):  # FakeTensorDeviceMismatchError in newer torch
            gpu + cpu
        with pytest.raises(DataDependentOutputException):
            float(gpu.sum())
        with pytest.raises(RuntimeError, match="must be a CUDA tensor"):
            FakeExtension.morton3d(torch.zeros(4, 3, dtype=torch.long))
        lin = nn.Linear(3, 2).to(CUDA, torch.float16)
        assert isinstance(lin.weight, FakeTensor) and lin.weight.dtype == torch.float16
        with torch.autocast("cuda", dtype=torch.float16):
            assert torch.is_autocast_enabled("cuda")
            assert lin(gpu).dtype == torch.float16


@pytest.mark.parametrize("name", PHASE_STEPS)
def test_phase_step_on_fake_cuda(tmp_path, monkeypatch, name):
    case = prepare(name, tmp_path, FAKE_CUDA_OVERRIDES.get(name, ()))  # real files, real CPU tensors
    with fake_cuda(monkeypatch):
        phase = case.make(CUDA)
        assert phase.device == CUDA
        assert not _placement(phase), _placement(phase)
        unets = [p for m in _modules(phase).values() for pn, p in m.named_parameters() if "unet" in pn]
        if name != "fit":  # the generation phases' denoisers run in the GPU dtype
            assert unets and all(p.dtype == torch.float16 for p in unets), {p.dtype for p in unets}
        with torch.autocast("cuda", dtype=torch.float16):
            out = phase.train_step(case.step)
        assert isinstance(out.loss, FakeTensor) and out.loss.device.type == "cuda" and out.loss.shape == ()
        assert out.loss.requires_grad
        assert EXPECTED_STATS[name] <= set(out.stats), sorted(out.stats)
