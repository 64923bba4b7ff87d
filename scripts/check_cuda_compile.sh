#!/usr/bin/env bash
# Compile every cuda_ext/src/*.cu with nvcc for sm_80 and sm_90 (no torch, no GPU needed); exit non-zero on failure.
# Usage: bash scripts/check_cuda_compile.sh   (ARCHS="80 90" and NVCC=nvcc can be overridden)
set -uo pipefail
cd "$(dirname "$0")/.."
NVCC="${NVCC:-nvcc}"
ARCHS="${ARCHS:-80 90}"
if ! command -v "$NVCC" >/dev/null 2>&1; then
  echo "check_cuda_compile: $NVCC not found" >&2
  exit 2
fi
out_dir="$(mktemp -d "${TMPDIR:-/tmp}/a124_nvcc.XXXXXX")"
trap 'rm -rf "$out_dir"' EXIT
shopt -s nullglob
sources=(cuda_ext/src/*.cu)
if [ ${#sources[@]} -eq 0 ]; then
  echo "check_cuda_compile: no sources in cuda_ext/src" >&2
  exit 1
fi
gencode=()
for a in $ARCHS; do gencode+=("-gencode=arch=compute_${a},code=sm_${a}"); done
pids=()
for src in "${sources[@]}"; do
  name="$(basename "$src" .cu)"
  ( "$NVCC" -c "$src" -o "$out_dir/$name.o" -I cuda_ext/include -std=c++17 -O3 -Xcompiler -Wall \
      "${gencode[@]}" >"$out_dir/$name.log" 2>&1 ) &
  pids+=("$!")
done
failed=()
for i in "${!sources[@]}"; do
  if ! wait "${pids[$i]}"; then failed+=("${sources[$i]}"); fi
done
for src in "${sources[@]}"; do
  log="$out_dir/$(basename "$src" .cu).log"
  if [ -s "$log" ]; then echo "--- $src"; cat "$log"; fi
done
if [ ${#failed[@]} -ne 0 ]; then
  echo "check_cuda_compile: FAILED ${#failed[@]}/${#sources[@]} (${failed[*]}) for sm_${ARCHS// /, sm_}"
  exit 1
fi
echo "check_cuda_compile: OK ${#sources[@]} files for sm_${ARCHS// /, sm_} ($("$NVCC" --version | tail -1))"
