"""Without a GPU: the CUDA op module imports without touching the extension, and the backend says it is unused."""

import importlib
import sys

import pytest
import torch

from animate124.ops import _backend


def test_cuda_module_imports_without_extension():
    sys.modules.pop("animate124.ops._cuda", None)
    mod = importlib.import_module("animate124.ops._cuda")
    assert "animate124._C" not in sys.modules
    for name in ("near_far_from_aabb", "march_rays_train", "composite_rays_train", "morton3d", "morton3d_invert",
                 "packbits", "grid_encode", "keyframe_tv", "march_rays", "composite_rays"):
        assert callable(getattr(mod, name)), name


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU behaviour")
def test_backend_reports_unavailable_without_gpu():
    info = _backend.backend_info()
    assert info["available"] is False and info["how"] == "no CUDA device"
    assert not _backend.use_cuda(torch.zeros(1))
