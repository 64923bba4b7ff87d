// Host-only harness: runs the per-element bodies of the kernels (the A124_HD functions in include/*.cuh) in plain
// CPU loops, so their arithmetic can be checked against the torch reference on a machine without a GPU
// (tests/test_cuda_host_logic.py builds this with `nvcc -shared` and loads it with ctypes). It launches nothing.
#include "composite.cuh"
#include "grid.cuh"
#include "hashgrid.cuh"
#include "raymarch.cuh"

using namespace a124;

namespace {

MarchGeom geom(float bound, float scale, float dt, int res, int max_steps) {
  return MarchGeom{bound, scale, dt, res, max_steps};
}

template <int D, int F>
void grid_loop(bool forward, const GridEncodeArgs& a, const float* in, float* out) {
  for (int l = 0; l < a.levels; ++l) {
    for (int64_t i = 0; i < a.n; ++i) {
      if (forward) grid_encode_forward_one<D, F>(a, in, i, l, out);
      else grid_encode_backward_one<D, F>(a, in, i, l, out);
    }
  }
}

template <int D>
int grid_dispatch(bool forward, const GridEncodeArgs& a, int features, const float* in, float* out) {
  switch (features) {
    case 1: grid_loop<D, 1>(forward, a, in, out); return 0;
    case 2: grid_loop<D, 2>(forward, a, in, out); return 0;
    case 4: grid_loop<D, 4>(forward, a, in, out); return 0;
    case 8: grid_loop<D, 8>(forward, a, in, out); return 0;
    default: return 1;
  }
}

}  // namespace

extern "C" {

void h_near_far(const float* o, const float* d, const float* aabb, int64_t n, float min_near, float* nears,
                float* fars) {
  for (int64_t i = 0; i < n; ++i) near_far_one(o, d, aabb, min_near, i, nears, fars);
}

void h_morton3d(const int64_t* coords, int64_t n, int64_t* codes) {
  for (int64_t i = 0; i < n; ++i) morton3d_one(coords, i, codes);
}

void h_morton3d_invert(const int64_t* codes, int64_t n, int64_t* coords) {
  for (int64_t i = 0; i < n; ++i) morton3d_invert_one(codes, i, coords);
}

void h_packbits(const float* grid, const float* thresh, int64_t n_slots, int64_t cells, uint8_t* bits) {
  for (int64_t i = 0; i < n_slots * cells / 8; ++i) packbits_one(grid, thresh, cells / 8, i, bits);
}

void h_march_count(const float* o, const float* d, const float* nears, const float* fars, const uint8_t* bitfield,
                   int64_t bytes_per_slot, const int64_t* slots, const float* noise, int64_t n, float bound,
                   float scale, float dt, int res, int max_steps, int32_t* counts) {
  const MarchGeom g = geom(bound, scale, dt, res, max_steps);
  for (int64_t i = 0; i < n; ++i)
    march_train_count_one(o, d, nears, fars, bitfield, bytes_per_slot, slots, noise, g, i, counts);
}

void h_march_write(const float* o, const float* d, const float* nears, const float* fars, const uint8_t* bitfield,
                   int64_t bytes_per_slot, const int64_t* slots, const float* noise, int64_t n, float bound,
                   float scale, float dt, int res, int max_steps, const int32_t* offsets, float* xyzs, float* dirs,
                   float* ts, int32_t* rays) {
  const MarchGeom g = geom(bound, scale, dt, res, max_steps);
  for (int64_t i = 0; i < n; ++i)
    march_train_write_one(o, d, nears, fars, bitfield, bytes_per_slot, slots, noise, g, offsets, i, xyzs, dirs, ts,
                          rays);
}

void h_march_infer(const float* o, const float* d, const float* nears, const float* fars, const uint8_t* bitfield,
                   int64_t bytes_per_slot, const int64_t* slots, const float* noise, const int64_t* alive,
                   int64_t n_alive, int n_step, float bound, float scale, float dt, int res, int max_steps,
                   int32_t* rays_k, int32_t* rays_n, float* xyzs, float* dirs, float* ts) {
  const MarchGeom g = geom(bound, scale, dt, res, max_steps);
  for (int64_t a = 0; a < n_alive; ++a)
    march_infer_one(o, d, nears, fars, bitfield, bytes_per_slot, slots, noise, alive, n_step, g, a, rays_k, rays_n,
                    xyzs, dirs, ts);
}

void h_composite_forward(const float* sigmas, const float* rgbs, const float* ts, const int32_t* rays, int64_t n,
                         int channels, float t_thresh, float* weights, float* weights_sum, float* depth,
                         float* image) {
  for (int64_t i = 0; i < n; ++i)
    composite_forward_one<0>(sigmas, rgbs, ts, rays, channels, t_thresh, i, weights, weights_sum, depth, image);
}

void h_composite_backward(const float* gw, const float* gws, const float* gd, const float* gimg, const float* sigmas,
                          const float* rgbs, const float* ts, const int32_t* rays, int64_t n, int channels,
                          float t_thresh, float* grad_sigmas, float* grad_rgbs) {
  for (int64_t i = 0; i < n; ++i)
    composite_backward_one<0>(gw, gws, gd, gimg, sigmas, rgbs, ts, rays, channels, t_thresh, i, grad_sigmas,
                              grad_rgbs);
}

void h_composite_infer(const float* sigmas, const float* rgbs, const float* ts, const int64_t* alive, int64_t n_alive,
                       int n_step, int channels, float t_thresh, double* optical_depth, float* weights_sum,
                       float* depth, float* image) {
  for (int64_t a = 0; a < n_alive; ++a)
    composite_infer_one<0>(sigmas, rgbs, ts, alive, n_step, channels, t_thresh, a, optical_depth, weights_sum, depth,
                           image);
}

int h_grid_encode(int forward, const float* x, const float* t, const int64_t* offsets, const int64_t* res, int64_t n,
                  int levels, int keyframes, int64_t total, int hash, int dims, int features, const float* in,
                  float* out) {
  const GridEncodeArgs a{x, t, offsets, res, n, levels, keyframes, total, hash != 0};
  if (dims == 3) return grid_dispatch<3>(forward != 0, a, features, in, out);
  if (dims == 4) return grid_dispatch<4>(forward != 0, a, features, in, out);
  return 1;
}

void h_keyframe_tv_grad(const float* emb, int keyframes, int64_t per_frame, float scale, float* grad) {
  for (int64_t j = 0; j < keyframes * per_frame; ++j) grad[j] = scale * keyframe_tv_grad_one(emb, keyframes, per_frame, j);
}

}  // extern "C"
