"""Install animate124.

Installing never compiles anything unless a CUDA-enabled torch is importable at build time and
``BUILD_NO_CUDA`` is unset (use ``pip install --no-build-isolation -e .`` for such an AOT build).
Otherwise the kernels in ``cuda_ext/`` are JIT-built on first CUDA use (see ``animate124/ops/_backend.py``).
"""

import importlib.util
import os
import sys

from setuptools import find_packages, setup


def _toolkit():
    """``animate124/ops/_toolkit.py`` loaded by path (stdlib only; importing the package would need its dependencies)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "animate124", "ops", "_toolkit.py")
    spec = importlib.util.spec_from_file_location("_animate124_toolkit", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cuda_extension():
    """Return (ext_modules, cmdclass) for ``animate124._C`` or ([], {}) when it should not be built.

    Builds when a CUDA torch is importable and ``BUILD_NO_CUDA`` is unset. CUDA_HOME is found by ``_toolkit``
    (wrapper nvcc scripts are followed); no toolkit stops the build with a message naming the fix. Arch list:
    ``ANIMATE124_CUDA_ARCHS`` (e.g. ``8.0;9.0;9.0a`` or ``80;90``), plus PTX for the highest plain arch.
    """
    if os.environ.get("BUILD_NO_CUDA", "") not in ("", "0"):
        return [], {}
    try:
        import torch
    except ImportError:
        return [], {}
    if not torch.version.cuda:
        return [], {}
    tk = _toolkit()
    try:
        cuda_home, how = tk.find_cuda_home(prefer=torch.version.cuda)
        archs = tk.parse_arch_list(os.environ.get(tk.ARCH_ENV, tk.DEFAULT_ARCHS))
        gencode = tk.gencode_flags(archs, int(torch.version.cuda.split(".")[0]))
    except (tk.CudaToolkitNotFound, ValueError) as exc:
        sys.exit(f"animate124 setup.py: {exc} (or set BUILD_NO_CUDA=1 to skip the AOT build; the kernels then JIT-build "
                 "on first CUDA use)")
    os.environ["CUDA_HOME"] = cuda_home  # torch reads it when cpp_extension is first imported
    import torch.utils.cpp_extension as cpp

    cpp.CUDA_HOME = cuda_home  # in case cpp_extension was imported (and guessed) before
    print(f"animate124 setup.py: building animate124._C with CUDA_HOME={cuda_home} ({how}), {' '.join(gencode)}",
          file=sys.stderr)
    here = os.path.dirname(os.path.abspath(__file__))
    src = os.path.join("cuda_ext", "src")
    sources = [os.path.join("cuda_ext", "bindings.cpp")]
    if os.path.isdir(os.path.join(here, src)):
        sources += sorted(os.path.join(src, f) for f in os.listdir(os.path.join(here, src)) if f.endswith(".cu"))
    # No -std flag (torch picks the C++ standard its headers need) and no --use_fast_math (the ray-marching lattice
    # must round exactly like the torch reference; compositing keeps IEEE expf).
    ext = cpp.CUDAExtension(
        name="animate124._C",
        sources=sources,
        include_dirs=[os.path.join(here, "cuda_ext", "include")],
        extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3", *gencode]},
    )
    return [ext], {"build_ext": cpp.BuildExtension}


ext_modules, cmdclass = _cuda_extension()

setup(
    name="animate124",
    version="0.1.0",
    description="Animate one image into a 4D dynamic scene (fast, tested re-implementation of Animate124).",
    python_requires=">=3.10",
    packages=find_packages(include=["animate124", "animate124.*"]) + ["animate124.configs"],
    package_dir={"animate124.configs": "configs"},
    package_data={"animate124.configs": ["*.yaml", "*/*.yaml", "*/*/*.yaml"],
                  "animate124.export": ["viewer_assets/*.html", "viewer_assets/*.js"]},
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
        "PyMCubes>=0.1.6",  # first wheels built for numpy 2
        "trimesh>=4.4",  # 4.0 cannot convert vertex colours under numpy 2 (tested)
        "scipy>=1.13",  # numpy 2; cg(rtol=)
        "pygltflib>=1.16",
    ],
    extras_require={
        "dev": ["pytest>=7", "ruff", "pyright>=1.1.380", "build", "wheel", "playwright>=1.65", "xatlas>=0.0.11"],
        "texture": ["xatlas>=0.0.11"],
        "rembg": ["rembg"],
        "slurm": ["hydra-submitit-launcher>=1.2.0", "submitit>=1.4.6"],  # 1.4.4+ reads SUBMITIT_PREEMPT_SIGNAL
        "joblib": ["hydra-joblib-launcher>=1.2.0", "joblib>=0.14"],
    },
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
