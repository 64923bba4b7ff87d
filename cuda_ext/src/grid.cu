// Occupancy-grid kernels: Morton encode/decode and packing of a per-slot density grid into a bitfield.
#include "grid.cuh"

namespace a124 {
namespace {

__global__ void morton3d_kernel(const int64_t* __restrict__ coords, int64_t n, int64_t* __restrict__ codes) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) morton3d_one(coords, i, codes);
}

__global__ void morton3d_invert_kernel(const int64_t* __restrict__ codes, int64_t n, int64_t* __restrict__ coords) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) morton3d_invert_one(codes, i, coords);
}

__global__ void packbits_kernel(const float* __restrict__ grid, const float* __restrict__ thresh, int64_t n_bytes,
                                int64_t bytes_per_slot, uint8_t* __restrict__ bitfield) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n_bytes) packbits_one(grid, thresh, bytes_per_slot, i, bitfield);
}

}  // namespace

void launch_morton3d(const int64_t* coords, int64_t n, int64_t* codes, cudaStream_t stream) {
  if (n == 0) return;
  morton3d_kernel<<<num_blocks(n), kThreads, 0, stream>>>(coords, n, codes);
}

void launch_morton3d_invert(const int64_t* codes, int64_t n, int64_t* coords, cudaStream_t stream) {
  if (n == 0) return;
  morton3d_invert_kernel<<<num_blocks(n), kThreads, 0, stream>>>(codes, n, coords);
}

void launch_packbits(const float* grid, const float* thresh, int64_t n_slots, int64_t cells, uint8_t* bitfield,
                     cudaStream_t stream) {
  const int64_t bytes_per_slot = cells / 8;
  const int64_t n_bytes = n_slots * bytes_per_slot;
  if (n_bytes == 0) return;
  packbits_kernel<<<num_blocks(n_bytes), kThreads, 0, stream>>>(grid, thresh, n_bytes, bytes_per_slot, bitfield);
}

}  // namespace a124
