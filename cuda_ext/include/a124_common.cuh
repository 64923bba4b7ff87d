// Shared helpers of the animate124 kernels. Plain CUDA only (no torch headers), so every .cu compiles with nvcc
// on a machine without a CUDA torch. Functions marked A124_HD run on the device and on the host (the host path
// lets the per-element logic be exercised on a CPU; see tests/test_cuda_kernels.py).
#pragma once

#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>

#define A124_HD __host__ __device__ __forceinline__

namespace a124 {

constexpr int kThreads = 256;

inline unsigned int num_blocks(int64_t n, int threads = kThreads) {
  const int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned int>(b > 0 ? b : 1);
}

// IEEE round-to-nearest add/multiply that the compiler may not fuse into an FMA. The ray-marching lattice and the
// occupancy cell of a sample are computed with these so that they round exactly like the torch reference
// (one rounding per operation, in the same order).
A124_HD float add_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  volatile float r = a + b;
  return r;
#endif
}

A124_HD float mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  volatile float r = a * b;
  return r;
#endif
}

A124_HD float clampf(float v, float lo, float hi) { return fminf(fmaxf(v, lo), hi); }

A124_HD int clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

// Atomic add on the device; a plain add on the host (host loops are sequential).
A124_HD void atomic_add(float* addr, float v) {
#ifdef __CUDA_ARCH__
  atomicAdd(addr, v);
#else
  *addr += v;
#endif
}

// Morton (Z-order) code of a cell with 10 bits per axis; x occupies the lowest bit of every triple.
A124_HD uint32_t spread_bits_10(uint32_t v) {
  v &= 0x000003ffu;
  v = (v ^ (v << 16)) & 0xff0000ffu;
  v = (v ^ (v << 8)) & 0x0300f00fu;
  v = (v ^ (v << 4)) & 0x030c30c3u;
  v = (v ^ (v << 2)) & 0x09249249u;
  return v;
}

A124_HD uint32_t gather_bits_10(uint32_t v) {
  v &= 0x09249249u;
  v = (v ^ (v >> 2)) & 0x030c30c3u;
  v = (v ^ (v >> 4)) & 0x0300f00fu;
  v = (v ^ (v >> 8)) & 0xff0000ffu;
  v = (v ^ (v >> 16)) & 0x000003ffu;
  return v;
}

A124_HD uint32_t morton3(uint32_t x, uint32_t y, uint32_t z) {
  return spread_bits_10(x) | (spread_bits_10(y) << 1) | (spread_bits_10(z) << 2);
}

}  // namespace a124
