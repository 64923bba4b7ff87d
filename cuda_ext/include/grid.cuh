// Occupancy-grid helpers: Morton order and bit packing (launchers implemented in src/grid.cu).
#pragma once

#include "a124_common.cuh"

namespace a124 {

// codes[i] = Morton code of coords[i] (int64 [n, 3], each in [0, 1024)).
void launch_morton3d(const int64_t* coords, int64_t n, int64_t* codes, cudaStream_t stream);

// coords[i] = (x, y, z) of Morton code codes[i] (int64 [n] -> int64 [n, 3]).
void launch_morton3d_invert(const int64_t* codes, int64_t n, int64_t* coords, cudaStream_t stream);

// bitfield[s, i] bit j = grid[s, 8 i + j] > thresh[s]; grid float [n_slots, cells], cells a multiple of 8.
void launch_packbits(const float* grid, const float* thresh, int64_t n_slots, int64_t cells, uint8_t* bitfield,
                     cudaStream_t stream);

// Per-element bodies (also run on the host by the test harness).
A124_HD void morton3d_one(const int64_t* coords, int64_t i, int64_t* codes) {
  codes[i] = static_cast<int64_t>(morton3(static_cast<uint32_t>(coords[3 * i]), static_cast<uint32_t>(coords[3 * i + 1]),
                                          static_cast<uint32_t>(coords[3 * i + 2])));
}

A124_HD void morton3d_invert_one(const int64_t* codes, int64_t i, int64_t* coords) {
  const uint32_t c = static_cast<uint32_t>(codes[i]);
  coords[3 * i] = static_cast<int64_t>(gather_bits_10(c));
  coords[3 * i + 1] = static_cast<int64_t>(gather_bits_10(c >> 1));
  coords[3 * i + 2] = static_cast<int64_t>(gather_bits_10(c >> 2));
}

A124_HD void packbits_one(const float* grid, const float* thresh, int64_t bytes_per_slot, int64_t i, uint8_t* bitfield) {
  const float thr = thresh[i / bytes_per_slot];
  const float* g = grid + 8 * i;
  uint32_t byte = 0;
  for (int j = 0; j < 8; ++j) byte |= (g[j] > thr ? 1u : 0u) << j;
  bitfield[i] = static_cast<uint8_t>(byte);
}

}  // namespace a124
