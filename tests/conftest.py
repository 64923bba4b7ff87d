"""Shared test setup: offline hub, seeded torch, temp caches, the `requires_cuda` marker."""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HOME", os.path.join(tempfile.gettempdir(), "a124_hf_home"))
os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(tempfile.gettempdir(), "a124_torch_ext"))
os.environ.setdefault("ANIMATE124_CACHE", os.path.join(tempfile.gettempdir(), "a124_cache"))

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
BENCHMARK = SHARED / "animate124-benchmark"

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
requires_benchmark = pytest.mark.skipif(not BENCHMARK.is_dir(), reason="../shared/animate124-benchmark not present")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
