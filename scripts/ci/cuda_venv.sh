#!/usr/bin/env bash
# The real build of animate124._C in CI: a CUDA torch in a venv cached outside the clone, a wheel built from a copy of
# the tree (no build artefacts land in the clone), an import + export check, then `pytest -m fake_cuda` in that venv.
#
# Usage: bash scripts/ci/cuda_venv.sh
#   A124_CUDA_TORCH   torch requirement (default torch==2.11.0: the GPU machine's minor; on PyPI it is the CUDA 13.0 build)
#   A124_CUDA_VENV    venv folder (default ~/.cache/animate124/cuda-venv-<torch>-py<XY>, keyed by the torch version)
#   ANIMATE124_CUDA_ARCHS  archs for the CI build (default 8.0;9.0 -> sm_80, sm_90 + compute_90 PTX)
# No toolkit on the machine: prints why and exits 0 (the CPU suite still ran); any other failure exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo="$(pwd)"
t0=$(date +%s)
spec="${A124_CUDA_TORCH:-torch==2.11.0}"
py="${PYTHON:-python3}"
pyver="$("$py" -c 'import sys; print("%d%d" % sys.version_info[:2])')"
venv="${A124_CUDA_VENV:-$HOME/.cache/animate124/cuda-venv-$(echo "$spec" | sed -e 's/==/-/' -e 's/[^A-Za-z0-9.-]/_/g')-py$pyver}"
vpy="$venv/bin/python"
log() { echo "[cuda_venv $(( $(date +%s) - t0 ))s] $*"; }

if ! cuda_home="$("$py" -c 'import importlib.util as u, sys
s = u.spec_from_file_location("tk", "animate124/ops/_toolkit.py"); m = u.module_from_spec(s); s.loader.exec_module(m)
try:
    print(m.find_cuda_home()[0])
except m.CudaToolkitNotFound as e:
    print(e, file=sys.stderr); sys.exit(3)')"; then
  log "SKIPPED: no CUDA toolkit on this machine (see above); the real _C build needs nvcc"
  exit 0
fi
log "toolkit $cuda_home (CUDA_HOME in the environment: ${CUDA_HOME:-unset}); venv $venv"

# 1. The venv with a CUDA torch, made once per torch version. The machine's pip configuration prefers a local CPU
#    wheel (find-links + a constraint file), so torch comes from the registry with that configuration bypassed.
if [ ! -f "$venv/.torch-ok" ]; then
  log "creating the venv (cold: downloads the CUDA torch, ~4.7 GB on disk)"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$py" -m venv "$venv"
  env -u PIP_FIND_LINKS -u PIP_CONSTRAINT -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null \
    "$vpy" -m pip install -q "$spec" setuptools wheel ninja
  "$vpy" -c 'import sys, torch; v = torch.version.cuda; print("torch", torch.__version__, "CUDA", v)
sys.exit(0 if v and int(v.split(".")[0]) >= 12 else "not a CUDA build of torch: " + torch.__version__)'
  touch "$venv/.torch-ok"
fi
torch_version="$("$vpy" -c 'import torch; print(torch.__version__)')"
cons="$venv/torch-constraint.txt"  # the distribution's version (2.11.0), not torch.__version__ (2.11.0+cu130)
"$vpy" -c 'import importlib.metadata as m; print("torch==" + m.version("torch"))' >"$cons"

# 2. Build a wheel from a copy of the tree (tracked + untracked-not-ignored files), so the clone stays clean. The wheel
#    is kept per hash of its inputs (setup.py, _toolkit.py, cuda_ext/, torch, archs): the same sources are not rebuilt
#    (A124_CUDA_REBUILD=1 forces a build).
archs="${ANIMATE124_CUDA_ARCHS:-8.0;9.0}"
key="$( { cat setup.py animate124/ops/_toolkit.py; find cuda_ext -type f | LC_ALL=C sort | xargs cat; echo "$torch_version $archs"; } \
  | sha256sum | cut -c1-16)"
cached="$venv/builds/$key"
work="$(mktemp -d "${TMPDIR:-/tmp}/a124_cuda_build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
if [ -z "${A124_CUDA_REBUILD:-}" ] && compgen -G "$cached/animate124-*.whl" >/dev/null; then
  log "reusing the _C build of these sources (key $key, built $(date -r "$cached" -u +%FT%TZ)); A124_CUDA_REBUILD=1 rebuilds"
else
  mkdir "$work/src"
  git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    [ -e "$f" ] && printf '%s\0' "$f"
  done | xargs -0 cp --parents -t "$work/src"
  log "building the wheel (archs $archs) with CUDA_HOME unset"
  ( cd "$work/src" && env -u CUDA_HOME -u CUDA_PATH -u BUILD_NO_CUDA ANIMATE124_CUDA_ARCHS="$archs" \
      "$vpy" -m pip wheel -v --no-build-isolation --no-deps -w "$work/dist" . ) >"$work/build.log" 2>&1 \
    || { grep -v "is ignored" "$work/build.log" | tail -60; log "FAILED: the wheel build"; exit 1; }
  grep -h "animate124 setup.py:" "$work/build.log" || true
  rm -rf "$venv/builds" && mkdir -p "$cached"
  cp "$work"/dist/animate124-*.whl "$work/build.log" "$cached/"
  find "$work/src/build" -name build.ninja -exec cp {} "$cached/" \; 2>/dev/null || true
  log "built $(basename "$cached"/animate124-*.whl) (key $key)"
fi
wheel="$(ls "$cached"/animate124-*.whl)"

# 3. Install it (dependencies only where missing; torch pinned to the venv's CUDA build), import, check exports.
"$vpy" -m pip uninstall -q -y animate124 >/dev/null 2>&1 || true
"$vpy" -m pip install -q -c "$cons" "$wheel[dev]"
( cd "$work" && "$vpy" "$repo/scripts/ci/check_ext.py" --cuda-py "$repo/animate124/ops/_cuda.py" --ninja "$cached/build.ninja" )

# 4. The fake-CUDA traces of every phase's step (tests/test_fake_cuda_phases.py) need a CUDA build of torch: run them
#    on the clone's code, installed editable (as the CPU venv has it) without building anything.
BUILD_NO_CUDA=1 "$vpy" -m pip install -q --no-deps --no-build-isolation -e .
log "pytest -m fake_cuda"
set +e
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 "$vpy" -m pytest -q -p no:cacheprovider -m fake_cuda \
  >"$work/fake_cuda.log" 2>&1
rc=$?
set -e
tail -30 "$work/fake_cuda.log"
[ "$rc" = 0 ] || { log "FAILED: pytest -m fake_cuda (exit $rc; 5 = no test collected)"; exit "$rc"; }
log "OK (torch $torch_version)"
