// Ray/box intersection and occupancy-guided ray marching (training: two passes; inference: alive rays).
#include "raymarch.cuh"

namespace a124 {
namespace {

__global__ void near_far_kernel(const float* __restrict__ rays_o, const float* __restrict__ rays_d,
                                const float* __restrict__ aabb, int64_t n, float min_near, float* __restrict__ nears,
                                float* __restrict__ fars) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) near_far_one(rays_o, rays_d, aabb, min_near, i, nears, fars);
}

__global__ void march_train_count_kernel(const float* __restrict__ rays_o, const float* __restrict__ rays_d,
                                         const float* __restrict__ nears, const float* __restrict__ fars,
                                         const uint8_t* __restrict__ bitfield, int64_t bytes_per_slot,
                                         const int64_t* __restrict__ slots, const float* __restrict__ noise,
                                         int64_t n, MarchGeom g, int32_t* __restrict__ counts) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) march_train_count_one(rays_o, rays_d, nears, fars, bitfield, bytes_per_slot, slots, noise, g, i, counts);
}

__global__ void march_train_write_kernel(const float* __restrict__ rays_o, const float* __restrict__ rays_d,
                                         const float* __restrict__ nears, const float* __restrict__ fars,
                                         const uint8_t* __restrict__ bitfield, int64_t bytes_per_slot,
                                         const int64_t* __restrict__ slots, const float* __restrict__ noise,
                                         int64_t n, MarchGeom g, const int32_t* __restrict__ offsets,
                                         float* __restrict__ xyzs, float* __restrict__ dirs, float* __restrict__ ts,
                                         int32_t* __restrict__ rays) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) {
    march_train_write_one(rays_o, rays_d, nears, fars, bitfield, bytes_per_slot, slots, noise, g, offsets, i, xyzs,
                          dirs, ts, rays);
  }
}

__global__ void march_infer_kernel(const float* __restrict__ rays_o, const float* __restrict__ rays_d,
                                   const float* __restrict__ nears, const float* __restrict__ fars,
                                   const uint8_t* __restrict__ bitfield, int64_t bytes_per_slot,
                                   const int64_t* __restrict__ slots, const float* __restrict__ noise,
                                   const int64_t* __restrict__ alive, int64_t n_alive, int n_step, MarchGeom g,
                                   int32_t* __restrict__ rays_k, int32_t* __restrict__ rays_n,
                                   float* __restrict__ xyzs, float* __restrict__ dirs, float* __restrict__ ts) {
  const int64_t a = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (a < n_alive) {
    march_infer_one(rays_o, rays_d, nears, fars, bitfield, bytes_per_slot, slots, noise, alive, n_step, g, a, rays_k,
                    rays_n, xyzs, dirs, ts);
  }
}

}  // namespace

void launch_near_far_from_aabb(const float* rays_o, const float* rays_d, const float* aabb, int64_t n_rays,
                               float min_near, float* nears, float* fars, cudaStream_t stream) {
  if (n_rays == 0) return;
  near_far_kernel<<<num_blocks(n_rays), kThreads, 0, stream>>>(rays_o, rays_d, aabb, n_rays, min_near, nears, fars);
}

void launch_march_rays_train_count(const float* rays_o, const float* rays_d, const float* nears, const float* fars,
                                   const uint8_t* bitfield, int64_t bytes_per_slot, const int64_t* slots,
                                   const float* noise, int64_t n_rays, MarchGeom geom, int32_t* counts,
                                   cudaStream_t stream) {
  if (n_rays == 0) return;
  march_train_count_kernel<<<num_blocks(n_rays), kThreads, 0, stream>>>(rays_o, rays_d, nears, fars, bitfield,
                                                                         bytes_per_slot, slots, noise, n_rays, geom,
                                                                         counts);
}

void launch_march_rays_train_write(const float* rays_o, const float* rays_d, const float* nears, const float* fars,
                                   const uint8_t* bitfield, int64_t bytes_per_slot, const int64_t* slots,
                                   const float* noise, int64_t n_rays, MarchGeom geom, const int32_t* offsets,
                                   float* xyzs, float* dirs, float* ts, int32_t* rays, cudaStream_t stream) {
  if (n_rays == 0) return;
  march_train_write_kernel<<<num_blocks(n_rays), kThreads, 0, stream>>>(rays_o, rays_d, nears, fars, bitfield,
                                                                         bytes_per_slot, slots, noise, n_rays, geom,
                                                                         offsets, xyzs, dirs, ts, rays);
}

void launch_march_rays(const float* rays_o, const float* rays_d, const float* nears, const float* fars,
                       const uint8_t* bitfield, int64_t bytes_per_slot, const int64_t* slots, const float* noise,
                       const int64_t* alive, int64_t n_alive, int n_step, MarchGeom geom, int32_t* rays_k,
                       int32_t* rays_n, float* xyzs, float* dirs, float* ts, cudaStream_t stream) {
  if (n_alive == 0) return;
  march_infer_kernel<<<num_blocks(n_alive), kThreads, 0, stream>>>(rays_o, rays_d, nears, fars, bitfield,
                                                                   bytes_per_slot, slots, noise, alive, n_alive,
                                                                   n_step, geom, rays_k, rays_n, xyzs, dirs, ts);
}

}  // namespace a124
