#!/usr/bin/env bash
# Download the exact wheels the GPU machine lacks (scripts/gpu/wheels.txt) for CPython 3.12 / manylinux x86-64 into
# .whl/ (git-ignored), then check them (one per package, < 64 MiB, dependencies carried or on the device, offline
# install into a python3.12 target). Downloads are cached in ~/.cache/animate124/wheels, so a rerun is offline.
#
# Usage: bash scripts/gpu/wheels.sh [--dest .whl]
set -euo pipefail
shopt -s nocaseglob  # wheel names keep the project's case (PyMCubes-0.1.6-...)
cd "$(dirname "$0")/../.."
dest=.whl
[ "${1:-}" = "--dest" ] && dest="$2"
py="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
cache="${A124_WHEEL_CACHE:-$HOME/.cache/animate124/wheels}"
mkdir -p "$cache" "$dest"
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
mapfile -t specs < <(sed -e 's/#.*//' -e '/^\s*$/d' scripts/gpu/wheels.txt)
for spec in "${specs[@]}"; do
  name="${spec%%==*}"; version="${spec##*==}"
  pattern="$(echo "$name" | tr 'A-Z.-' 'a-z__')-${version}-*.whl"
  if compgen -G "$cache/$pattern" >/dev/null; then continue; fi
  if [ "$name" = "antlr4-python3-runtime" ]; then  # no wheel on the registry (pure Python): build one
    "$py" -m pip wheel -q --no-deps --no-binary "$name" -w "$cache" "$spec"
  else
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" \
      -d "$cache" "$spec"
  fi
done
rm -f "$dest"/*.whl
for spec in "${specs[@]}"; do
  name="${spec%%==*}"; version="${spec##*==}"
  cp "$cache"/"$(echo "$name" | tr 'A-Z.-' 'a-z__')"-"$version"-*.whl "$dest"/
done
"$py" scripts/gpu/verify_wheels.py --dir "$dest" --install-test
