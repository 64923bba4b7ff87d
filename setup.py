"""Install animate124.

Installing never compiles anything unless a CUDA-enabled torch is importable at build time and
``BUILD_NO_CUDA`` is unset (use ``pip install --no-build-isolation -e .`` for such an AOT build).
Otherwise the kernels in ``cuda_ext/`` are JIT-built on first CUDA use (see ``animate124/ops/_backend.py``).
"""

import os

from setuptools import find_packages, setup


def _cuda_extension():
    """Return (ext_modules, cmdclass) for ``animate124._C`` or ([], {}) when it cannot/should not be built."""
    if os.environ.get("BUILD_NO_CUDA", "") not in ("", "0"):
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension
    except ImportError:
        return [], {}
    if CUDA_HOME is None or not torch.version.cuda:
        return [], {}
    here = os.path.dirname(os.path.abspath(__file__))
    src = os.path.join("cuda_ext", "src")
    sources = [os.path.join("cuda_ext", "bindings.cpp")]
    if os.path.isdir(os.path.join(here, src)):
        sources += sorted(os.path.join(src, f) for f in os.listdir(os.path.join(here, src)) if f.endswith(".cu"))
    archs = os.environ.get("ANIMATE124_CUDA_ARCHS", "70;75;80;86;89;90").split(";")
    if int(torch.version.cuda.split(".")[0]) >= 13:  # CUDA 13 dropped sm_70/sm_72 (Volta)
        archs = [a for a in archs if int(a) >= 75]
    # No -std flag (torch picks the C++ standard its headers need) and no --use_fast_math (the ray-marching lattice
    # must round exactly like the torch reference; compositing keeps IEEE expf).
    nvcc_flags = ["-O3"]
    nvcc_flags += [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    ext = CUDAExtension(
        name="animate124._C",
        sources=sources,
        include_dirs=[os.path.join(here, "cuda_ext", "include")],
        extra_compile_args={"cxx": ["-O3"], "nvcc": nvcc_flags},
    )
    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = _cuda_extension()

setup(
    name="animate124",
    version="0.1.0",
    description="Animate one image into a 4D dynamic scene (fast, tested re-implementation of Animate124).",
    python_requires=">=3.10",
    packages=find_packages(include=["animate124", "animate124.*"]) + ["animate124.configs"],
    package_dir={"animate124.configs": "configs"},
    package_data={"animate124.configs": ["*.yaml", "*/*.yaml", "*/*/*.yaml"]},
    include_package_data=True,
    # True floors (issue 11; the API behind each is listed in docs/dependencies.md):
    # torch 2.4: torch.amp.custom_fwd(device_type=), torch.is_autocast_enabled(device_type); 2.3: GradScaler("cuda").
    # transformers 4.56: from_pretrained(dtype=) (was torch_dtype); 4.46: resize_token_embeddings(mean_resizing=).
    # huggingface_hub 0.24: huggingface_hub.errors (GatedRepoError, EntryNotFoundError, HfHubHTTPError).
    install_requires=[
        "torch>=2.4",
        "numpy",
        "diffusers>=0.30",
        "transformers>=4.56",
        "huggingface_hub>=0.24",
        "accelerate",
        "safetensors",
        "kornia",
        "hydra-core>=1.3",
        "omegaconf>=2.3",
        "imageio>=2.30",
        "imageio-ffmpeg",
        "pillow",
        "nerfacc>=0.5.3",
        "rich",
        "tqdm",
        "tensorboard",
        "ninja",
    ],
    extras_require={
        "dev": ["pytest>=7", "ruff", "build", "wheel"],
        "rembg": ["rembg"],
        "slurm": ["hydra-submitit-launcher"],
        "joblib": ["hydra-joblib-launcher"],
    },
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
