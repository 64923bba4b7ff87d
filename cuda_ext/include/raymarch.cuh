// Ray/box intersection and occupancy-guided ray marching (launchers implemented in src/raymarch.cu).
//
// Lattice: sample k of a ray sits at t_k = near + (k + noise) * dt (k = 0, 1, ...) while t_k < far. Its position
// p = clamp(o + t_k d, -bound, bound) falls in cell floor((p + bound) * scale) (clamped to [0, R - 1]) with
// scale = R / (2 bound); it is emitted iff that cell's bit is set in the ray's time-slot bitfield (Morton order).
// Empty cells are skipped by jumping to a lattice index that is provably still inside the empty cell (see
// next_index_after_empty_cell), so the emitted set is exactly the one of a sample-by-sample walk.
#pragma once

#include "a124_common.cuh"
#include "grid.cuh"

namespace a124 {

struct MarchGeom {
  float bound;    // the scene is [-bound, bound]^3
  float scale;    // R / (2 bound), rounded to float once on the host
  float dt;       // lattice step
  int res;        // R, occupancy cells per axis
  int max_steps;  // at most this many samples emitted per ray
};

void launch_near_far_from_aabb(const float* rays_o, const float* rays_d, const float* aabb, int64_t n_rays,
                               float min_near, float* nears, float* fars, cudaStream_t stream);

// Pass 1: counts[i] = number of samples ray i emits.
void launch_march_rays_train_count(const float* rays_o, const float* rays_d, const float* nears, const float* fars,
                                   const uint8_t* bitfield, int64_t bytes_per_slot, const int64_t* slots,
                                   const float* noise, int64_t n_rays, MarchGeom geom, int32_t* counts,
                                   cudaStream_t stream);

// Pass 2: writes the samples of ray i at offsets[i] (exclusive scan of counts) and rays[i] = (offset, count).
void launch_march_rays_train_write(const float* rays_o, const float* rays_d, const float* nears, const float* fars,
                                   const uint8_t* bitfield, int64_t bytes_per_slot, const int64_t* slots,
                                   const float* noise, int64_t n_rays, MarchGeom geom, const int32_t* offsets,
                                   float* xyzs, float* dirs, float* ts, int32_t* rays, cudaStream_t stream);

// Inference: for each alive ray r = alive[a], emit up to n_step samples from lattice index rays_k[r] into rows
// [a * n_step, (a + 1) * n_step) of xyzs/dirs/ts (pre-zeroed by the caller; unused rows stay zero, so dt = 0).
// rays_k[r] becomes the next lattice index, or -1 when the ray is finished (past far or max_steps reached);
// rays_n[r] counts the samples emitted so far. noise may be null (= 0).
void launch_march_rays(const float* rays_o, const float* rays_d, const float* nears, const float* fars,
                       const uint8_t* bitfield, int64_t bytes_per_slot, const int64_t* slots, const float* noise,
                       const int64_t* alive, int64_t n_alive, int n_step, MarchGeom geom, int32_t* rays_k,
                       int32_t* rays_n, float* xyzs, float* dirs, float* ts, cudaStream_t stream);

// ---------------------------------------------------------------------------------------------------------------
// Per-ray bodies (also run on the host by the test harness).

A124_HD void near_far_one(const float* rays_o, const float* rays_d, const float* aabb, float min_near, int64_t i,
                          float* nears, float* fars) {
  float near = -FLT_MAX, far = FLT_MAX;
  for (int a = 0; a < 3; ++a) {
    const float o = rays_o[3 * i + a], inv = 1.0f / rays_d[3 * i + a];
    const float t0 = (aabb[a] - o) * inv, t1 = (aabb[a + 3] - o) * inv;
    near = fmaxf(near, fminf(t0, t1));
    far = fminf(far, fmaxf(t0, t1));
  }
  near = fmaxf(near, min_near);
  if (!(far > near)) near = far = FLT_MAX;
  nears[i] = near;
  fars[i] = far;
}

A124_HD float lattice_t(float near, int k, float noise, float dt) {
  return add_rn(near, mul_rn(add_rn(static_cast<float>(k), noise), dt));
}

// Position (clamped to the box) and occupancy cell of the sample at distance t.
A124_HD void sample_cell(const float* o, const float* d, float t, const MarchGeom& g, float* p, int* c) {
  for (int a = 0; a < 3; ++a) {
    p[a] = clampf(add_rn(o[a], mul_rn(t, d[a])), -g.bound, g.bound);
    const float u = floorf(mul_rn(add_rn(p[a], g.bound), g.scale));
    c[a] = clampi(static_cast<int>(u), 0, g.res - 1);
  }
}

// A lattice index k' > k such that every index in (k, k') maps to the same (empty) cell c as k.
// Every rounding step of lattice_t/sample_cell is monotone in k, so along each axis the cell index of later samples
// never goes back past c; it can only reach the next cell after the ray crosses the exit face. We jump to the last
// lattice index before the point where the exact ray is still kEps cells (far above the float rounding error) and
// one step dt short of the nearest exit face, so no skipped index can round into the next cell.
A124_HD int next_index_after_empty_cell(const float* o, const float* d, float near, float far, float noise,
                                        const int* c, const MarchGeom& g, int k) {
  constexpr float kEps = 1e-3f;
  float t_exit = far;
  for (int a = 0; a < 3; ++a) {
    if (d[a] == 0.0f) continue;
    const float face = d[a] > 0.0f ? static_cast<float>(c[a] + 1) - kEps : static_cast<float>(c[a]) + kEps;
    const float t_face = (face / g.scale - g.bound - o[a]) / d[a];
    t_exit = fminf(t_exit, t_face);
  }
  const float kf = floorf((t_exit - g.dt - near) / g.dt - noise);
  if (!(kf > static_cast<float>(k + 1))) return k + 1;  // also catches NaN
  return kf >= 1.0e9f ? 1000000000 : static_cast<int>(kf);
}

struct WalkResult {
  int k;        // next lattice index to look at
  int emitted;  // samples emitted by this walk
  bool ended;   // the lattice ran past far
};

// Walks ray (o, d) from lattice index k until `budget` samples are emitted or t >= far; calls
// emit(j, t, p) for the j-th emitted sample of this walk.
template <typename Emit>
A124_HD WalkResult march_walk(const float* o, const float* d, float near, float far, float noise,
                              const uint8_t* bits, const MarchGeom& g, int k, int budget, Emit& emit) {
  int emitted = 0;
  while (emitted < budget) {
    const float t = lattice_t(near, k, noise, g.dt);
    if (!(t < far)) return {k, emitted, true};
    float p[3];
    int c[3];
    sample_cell(o, d, t, g, p, c);
    const uint32_t m = morton3(static_cast<uint32_t>(c[0]), static_cast<uint32_t>(c[1]), static_cast<uint32_t>(c[2]));
    if (bits[m >> 3] & (1u << (m & 7u))) {
      emit(emitted, t, p);
      ++emitted;
      ++k;
    } else {
      k = next_index_after_empty_cell(o, d, near, far, noise, c, g, k);
    }
  }
  return {k, emitted, false};
}

struct CountEmit {
  A124_HD void operator()(int, float, const float*) {}
};

struct WriteEmit {
  float* xyzs;
  float* dirs;
  float* ts;
  const float* d;
  float dt;
  A124_HD void operator()(int j, float t, const float* p) {
    for (int a = 0; a < 3; ++a) {
      xyzs[3 * j + a] = p[a];
      dirs[3 * j + a] = d[a];
    }
    ts[2 * j] = t;
    ts[2 * j + 1] = dt;
  }
};

A124_HD void march_train_count_one(const float* rays_o, const float* rays_d, const float* nears, const float* fars,
                                   const uint8_t* bitfield, int64_t bytes_per_slot, const int64_t* slots,
                                   const float* noise, const MarchGeom& g, int64_t i, int32_t* counts) {
  CountEmit emit;
  const WalkResult r = march_walk(rays_o + 3 * i, rays_d + 3 * i, nears[i], fars[i], noise[i],
                                  bitfield + slots[i] * bytes_per_slot, g, 0, g.max_steps, emit);
  counts[i] = r.emitted;
}

A124_HD void march_train_write_one(const float* rays_o, const float* rays_d, const float* nears, const float* fars,
                                   const uint8_t* bitfield, int64_t bytes_per_slot, const int64_t* slots,
                                   const float* noise, const MarchGeom& g, const int32_t* offsets, int64_t i,
                                   float* xyzs, float* dirs, float* ts, int32_t* rays) {
  const int64_t off = offsets[i];
  WriteEmit emit{xyzs + 3 * off, dirs + 3 * off, ts + 2 * off, rays_d + 3 * i, g.dt};
  const WalkResult r = march_walk(rays_o + 3 * i, rays_d + 3 * i, nears[i], fars[i], noise[i],
                                  bitfield + slots[i] * bytes_per_slot, g, 0, g.max_steps, emit);
  rays[2 * i] = static_cast<int32_t>(off);
  rays[2 * i + 1] = r.emitted;
}

A124_HD void march_infer_one(const float* rays_o, const float* rays_d, const float* nears, const float* fars,
                             const uint8_t* bitfield, int64_t bytes_per_slot, const int64_t* slots,
                             const float* noise, const int64_t* alive, int n_step, const MarchGeom& g, int64_t a,
                             int32_t* rays_k, int32_t* rays_n, float* xyzs, float* dirs, float* ts) {
  const int64_t r = alive[a];
  const int k = rays_k[r];
  if (k < 0) return;
  const int n = rays_n[r];
  const int room = g.max_steps - n;
  const int budget = room < n_step ? (room > 0 ? room : 0) : n_step;
  const int64_t row = a * n_step;
  WriteEmit emit{xyzs + 3 * row, dirs + 3 * row, ts + 2 * row, rays_d + 3 * r, g.dt};
  const WalkResult w = march_walk(rays_o + 3 * r, rays_d + 3 * r, nears[r], fars[r], noise ? noise[r] : 0.0f,
                                  bitfield + slots[r] * bytes_per_slot, g, k, budget, emit);
  rays_k[r] = w.emitted == n_step ? w.k : -1;
  rays_n[r] = n + w.emitted;
}

}  // namespace a124
