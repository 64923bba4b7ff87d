"""CUDA toolkit discovery, arch-list parsing and the loud reference fallback, with fake toolkits in tmp_path (no GPU)."""

from __future__ import annotations

import logging
import os
import stat
import sys
import types
from pathlib import Path

import pytest
import torch

from animate124.io.report import environment_info
from animate124.ops import _backend
from animate124.ops._toolkit import CudaToolkitNotFound, find_cuda_home, gencode_flags, nvcc_toolkit, parse_arch_list


def make_toolkit(root: Path, name: str = "cuda-13.0") -> Path:
    """A folder that looks like a CUDA toolkit: include/cuda_runtime.h and an executable bin/nvcc (a real binary)."""
    home = root / name
    (home / "include").mkdir(parents=True)
    (home / "include" / "cuda_runtime.h").write_text("// fake\n")
    (home / "bin").mkdir()
    nvcc = home / "bin" / "nvcc"
    nvcc.write_bytes(b"\x7fELF\0fake")
    nvcc.chmod(nvcc.stat().st_mode | stat.S_IEXEC)
    return home


def make_wrapper(path: Path, target: Path) -> Path:
    """A shell wrapper ``exec <target> "$@"``, as found on PATH on the CI machine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\nexec {target} "$@"\n')
    path.chmod(0o755)
    return path


def which_from(nvcc: Path | None):
    return lambda name: str(nvcc) if nvcc is not None and name == "nvcc" else None


# ----------------------------------------------------------------------------------------------------- arch lists
@pytest.mark.parametrize("spec, expected", [
    ("8.0;9.0;9.0a", ["80", "90", "90a"]),
    ("70;75;80;86;89;90", ["70", "75", "80", "86", "89", "90"]),
    ("7.5, 8.6+PTX", ["75", "86"]),
    ("sm_90a compute_80", ["90a", "80"]),
    (" 9.0;9.0;90 ", ["90"]),
    ("10.0;12.0f", ["100", "120f"]),
])
def test_parse_arch_list(spec, expected):
    assert parse_arch_list(spec) == expected


@pytest.mark.parametrize("spec", ["9x", "9", "Hopper", "8.0;;abc", "", " ; "])
def test_parse_arch_list_rejects_with_a_hint(spec):
    with pytest.raises(ValueError, match="ANIMATE124_CUDA_ARCHS.*(8.0;9.0|arch list)"):
        parse_arch_list(spec)


def test_gencode_embeds_ptx_of_the_highest_plain_arch_and_drops_volta_on_cuda13():
    flags = gencode_flags(parse_arch_list("7.0;8.0;9.0;9.0a"), cuda_major=13)
    assert flags == ["-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90",
                     "-gencode=arch=compute_90a,code=sm_90a", "-gencode=arch=compute_90,code=compute_90"]
    assert "-gencode=arch=compute_70,code=sm_70" in gencode_flags(["70", "80"], cuda_major=12)
    assert gencode_flags(["90a"], cuda_major=13) == ["-gencode=arch=compute_90a,code=sm_90a"]  # no portable PTX
    with pytest.raises(ValueError, match="sm_75 or newer"):
        gencode_flags(["70", "72"], cuda_major=13)


# --------------------------------------------------------------------------------------------- CUDA_HOME discovery
def test_wrapper_nvcc_on_path_leads_to_the_toolkit(tmp_path):
    home = make_toolkit(tmp_path / "opt")
    wrapper = make_wrapper(tmp_path / "bin" / "nvcc", home / "bin" / "nvcc")
    assert find_cuda_home(env={}, which=which_from(wrapper), roots=()) == (str(home), f"nvcc on PATH ({wrapper})")


def test_chained_wrappers_and_symlinks_are_followed(tmp_path):
    home = make_toolkit(tmp_path / "opt")
    inner = make_wrapper(tmp_path / "w2" / "nvcc", home / "bin" / "nvcc")
    outer = make_wrapper(tmp_path / "w1" / "nvcc", inner)
    link = tmp_path / "links" / "nvcc"
    link.parent.mkdir()
    link.symlink_to(outer)
    assert nvcc_toolkit(link) == home
    assert find_cuda_home(env={}, which=which_from(link), roots=())[0] == str(home)


def test_cuda_home_variable_wins_and_a_wrong_one_is_named(tmp_path):
    home = make_toolkit(tmp_path / "a")
    other = make_toolkit(tmp_path / "b")
    wrapper = make_wrapper(tmp_path / "bin" / "nvcc", other / "bin" / "nvcc")
    assert find_cuda_home(env={"CUDA_HOME": str(home)}, which=which_from(wrapper), roots=()) == (str(home), "CUDA_HOME")
    assert find_cuda_home(env={"CUDA_PATH": str(home)}, which=which_from(None), roots=())[0] == str(home)
    with pytest.raises(CudaToolkitNotFound, match=r"CUDA_HOME=.*nowhere holds no include/cuda_runtime.h"):
        find_cuda_home(env={"CUDA_HOME": str(tmp_path / "nowhere")}, which=which_from(wrapper), roots=())


def test_conventional_folders_newest_first_or_torchs_release(tmp_path):
    root = tmp_path / "usr_local"
    for name in ("cuda-12.4", "cuda-13.0", "cuda-12.10"):
        make_toolkit(root, name)
    (root / "cuda-11.8").mkdir()  # not a toolkit (no headers): skipped
    assert find_cuda_home(env={}, which=which_from(None), roots=(str(root),)) == (str(root / "cuda-13.0"),
                                                                                  "conventional folder")
    assert find_cuda_home(env={}, which=which_from(None), roots=(str(root),), prefer="12.4")[0] == str(root / "cuda-12.4")
    assert find_cuda_home(env={}, which=which_from(None), roots=(str(root),), prefer="12.8")[0] == str(root / "cuda-12.10")
    make_toolkit(root, "cuda")
    assert find_cuda_home(env={}, which=which_from(None), roots=(str(root),))[0] == str(root / "cuda")


def test_a_wrapper_to_nowhere_falls_through_to_conventional_then_errors(tmp_path):
    wrapper = make_wrapper(tmp_path / "bin" / "nvcc", tmp_path / "gone" / "bin" / "nvcc")
    root = tmp_path / "usr_local"
    root.mkdir()
    with pytest.raises(CudaToolkitNotFound, match=r"nvcc on PATH is .*leads to no toolkit.*set CUDA_HOME"):
        find_cuda_home(env={}, which=which_from(wrapper), roots=(str(root),))
    home = make_toolkit(root, "cuda-13.0")
    assert find_cuda_home(env={}, which=which_from(wrapper), roots=(str(root),))[0] == str(home)
    with pytest.raises(CudaToolkitNotFound, match="no nvcc on PATH"):
        find_cuda_home(env={}, which=which_from(None), roots=(str(tmp_path / "empty"),))


# ------------------------------------------------------------------------------------------ JIT path and fallback
@pytest.fixture
def fresh_backend(monkeypatch):
    """A backend that believes a CUDA device is present, resolved afresh, and torch's CUDA_HOME restored after."""
    import torch.utils.cpp_extension as cpp

    _backend.reset()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(cpp, "CUDA_HOME", cpp.CUDA_HOME)
    for var in ("CUDA_HOME", "CUDA_PATH"):
        monkeypatch.delenv(var, raising=False)
    yield _backend
    _backend.reset()


def test_jit_builds_with_nvcc_only_under_cuda_home(fresh_backend, monkeypatch, tmp_path):
    import torch.utils.cpp_extension as cpp

    home = make_toolkit(tmp_path)
    monkeypatch.setenv("CUDA_HOME", str(home))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no nvcc on PATH at all
    built = types.SimpleNamespace(name="fake _C")
    calls = []
    monkeypatch.setattr(cpp, "load", lambda **kw: calls.append((cpp.CUDA_HOME, kw["name"])) or built)
    assert fresh_backend.get() is built
    assert calls == [(str(home), "animate124_C")]
    info = fresh_backend.backend_info()
    assert info["how"] == "JIT build" and info["fallback"] is None and info["cuda_home"] == str(home)


def test_no_toolkit_falls_back_loudly_once_and_report_shows_it(fresh_backend, monkeypatch, tmp_path, caplog):
    def nothing(**kw):
        raise CudaToolkitNotFound("no CUDA toolkit found (no nvcc on PATH): set CUDA_HOME")

    monkeypatch.setattr(_backend, "find_cuda_home", nothing)
    with caplog.at_level(logging.WARNING, logger=_backend.log.name):
        assert fresh_backend.get() is None
        assert fresh_backend.get() is None
        assert not fresh_backend.available()
    warned = [r for r in caplog.records if r.name == _backend.log.name and r.levelno == logging.WARNING]
    assert len(warned) == 1 and "no CUDA toolkit" in warned[0].getMessage() and "set CUDA_HOME" in warned[0].getMessage()
    info = environment_info(torch.device("cpu"))["backend"]
    assert info["available"] is False and info["fallback"].startswith("no CUDA toolkit: ") and "set CUDA_HOME" in info["fallback"]


def test_failed_jit_build_is_named_in_the_fallback(fresh_backend, monkeypatch, tmp_path):
    import torch.utils.cpp_extension as cpp

    monkeypatch.setenv("CUDA_HOME", str(make_toolkit(tmp_path)))

    def broken(**kw):
        raise RuntimeError("Error building extension 'animate124_C'")

    monkeypatch.setattr(cpp, "load", broken)
    assert fresh_backend.get() is None
    assert fresh_backend.backend_info()["fallback"] == "JIT build failed: RuntimeError: Error building extension 'animate124_C'"


def test_broken_prebuilt_extension_is_recorded(fresh_backend, monkeypatch, tmp_path):
    import importlib.util

    import torch.utils.cpp_extension as cpp

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "animate124._C" else None)
    monkeypatch.setitem(sys.modules, "animate124._C", None)  # makes the import raise ImportError
    monkeypatch.setenv("CUDA_HOME", str(make_toolkit(tmp_path)))
    monkeypatch.setattr(cpp, "load", lambda **kw: types.SimpleNamespace())
    assert fresh_backend.get() is not None
    info = fresh_backend.backend_info()
    assert info["how"] == "JIT build" and "animate124._C" in info["prebuilt_error"]
    assert os.environ["CUDA_HOME"] == info["cuda_home"]
