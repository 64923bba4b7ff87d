"""A training step reads no tensor values on the host beyond an explicit allow-list (issue 11).

Every case of tests/_phase_steps.py runs one ``train_step`` on CPU under :class:`_host_syncs.HostSyncRecorder`; any
``.item()`` / ``float`` / ``bool`` / ``.tolist()`` / ``nonzero`` / boolean-mask read made from animate124 code that
is not listed in ``ALLOWED`` fails the test with its file and function. On CPU every tensor is a host tensor, so the
list also names reads that are free by design (CPU generators); the fake-CUDA traces (test_fake_cuda_phases.py) check
that none of these reads touches a CUDA value.
"""

from __future__ import annotations

import pytest
import torch
from _host_syncs import HostSyncRecorder, SyncSite, unexpected
from _phase_steps import PHASE_STEPS, prepare

ALLOWED: dict[tuple[str, str], str] = {
    ("ops/_reference.py", "*"): "the pure-torch twin of the kernels (CPU path and test oracle): its sizes are read on "
                                "the host; on CUDA the kernels run, with one sync for march_rays_train's sample count",
    ("ops/_checks.py", "check_values"): "reads CPU tensors only; CUDA values get torch._assert_async (no sync)",
    ("data/time.py", "sample"): "the clip's frames come from a CPU generator (host numbers by design)",
    ("render/cameras.py", "moving_trajectory"): "whether the camera moves is drawn from a CPU generator",
    ("losses.py", "normal_blur_loss"): "kornia.filters.gaussian_blur2d checks its σ on the host (kornia 0.9: one "
                                       "scalar per step, on a tensor it builds itself)",
    ("guidance/textual_inversion.py", "forward"): "kornia's augmentations pick per-sample branches by boolean masks "
                                                  "(data-dependent sizes); textual inversion only, before the 3D phases",
}
"""``(file under animate124/, function or "*")`` → why that host read stays."""


def test_the_recorder_sees_a_host_read_and_names_its_site():
    """The guard itself: an .item() in animate124 code is recorded with its file and function; one in a test is not."""
    from animate124.metrics.image import psnr

    with HostSyncRecorder() as rec:
        psnr(torch.zeros(4), torch.ones(4) * 0.5)
        torch.ones(3).sum().item()  # test code: not ours to police
    assert SyncSite("metrics/image.py", "psnr", "float") in rec.sites
    assert all(s.file.endswith(".py") and not s.file.startswith("tests") for s in rec.sites)
    assert unexpected(rec.sites, ALLOWED) == ["metrics/image.py::psnr (float)"]
    with HostSyncRecorder() as rec:
        x = torch.arange(5.0)
        from animate124.ops._checks import check_values

        check_values(x[x > 2].sum() > 0, "unused")
    assert unexpected(rec.sites, ALLOWED) == []  # check_values is allowed; the mask indexing above is test code


@pytest.mark.parametrize("name", PHASE_STEPS)
def test_step_reads_nothing_on_the_host_beyond_the_allow_list(tmp_path, name):
    case = prepare(name, tmp_path)
    phase = case.make(torch.device("cpu"))
    with HostSyncRecorder() as rec:
        out = phase.train_step(case.step)
    assert not unexpected(rec.sites, ALLOWED), unexpected(rec.sites, ALLOWED)
    assert torch.isfinite(out.loss.detach())
