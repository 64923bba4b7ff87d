// Multiresolution grid encoding (hash or tiled tables) with an optional keyframe axis, and the temporal TV of the
// keyframe tables (launchers implemented in src/hashgrid.cu).
//
// Layout (identical to the torch reference): embeddings [K, total, F]; level l uses rows [offsets[l], offsets[l+1])
// of every keyframe table; output [N, L * F] with level l in columns [l F, (l + 1) F).
// Level l: pos = x R_l, corner = clamp(floor(pos), 0, R_l - 1), frac = pos - corner, (R_l + 1) vertices per axis,
// d-linear weights. Vertex index: 'tiled' -> dense x + y (R+1) + z (R+1)^2 (+ w (R+1)^3) modulo the level size;
// 'hash' -> dense when (R+1)^D <= level size, else x*1 ^ y*2654435761 ^ z*805459861 ^ w*3674653429 (uint32
// products) modulo the level size. Keyframes (K > 1): g = clamp(t (K - 1), 0, K - 1), i0 = clamp(floor g, 0, K - 1), i1 = min(i0 + 1, K - 1),
// w = g - i0, features = (1 - w) E_i0 + w E_i1.
#pragma once

#include "a124_common.cuh"

namespace a124 {

struct GridEncodeArgs {
  const float* x;           // [N, D] in [0, 1]
  const float* t;           // [N] in [0, 1], or null when K == 1
  const int64_t* offsets;   // [L + 1] row offsets of the levels
  const int64_t* res;       // [L] resolutions
  int64_t n;                // points
  int levels;               // L
  int keyframes;            // K
  int64_t total;            // rows per keyframe table
  bool hash;                // 'hash' (true) or 'tiled' (false)
};

// out [N, L F]; dims in {3, 4}; features in {1, 2, 4, 8}.
void launch_grid_encode_forward(const GridEncodeArgs& args, int dims, int features, const float* embeddings,
                                float* out, cudaStream_t stream);

// grad_embeddings [K, total, F] must be zero-initialised by the caller (accumulated with atomics).
void launch_grid_encode_backward(const GridEncodeArgs& args, int dims, int features, const float* grad_out,
                                 float* grad_embeddings, cudaStream_t stream);

// out[0] (float64, zero-initialised by the caller) += sum_{k < K-1, p} (E[k+1, p] - E[k, p])^2, p over total*F.
void launch_keyframe_tv_forward(const float* embeddings, int keyframes, int64_t per_frame, double* out,
                                cudaStream_t stream);

// grad = scale * dTV/dE for TV = sum (E[k+1] - E[k])^2; scale read from the device scalar `scale`.
void launch_keyframe_tv_backward(const float* embeddings, int keyframes, int64_t per_frame, const float* scale,
                                 float* grad, cudaStream_t stream);

// ---------------------------------------------------------------------------------------------------------------
// Per-element bodies (also run on the host by the test harness).

A124_HD uint64_t grid_vertex_index(const uint32_t* v, int dims, uint64_t res, uint64_t size, bool hash) {
  const uint64_t side = res + 1;
  uint64_t dense = 1;
  for (int d = 0; d < dims; ++d) dense *= side;
  uint64_t idx = 0;
  if (!hash || dense <= size) {
    uint64_t stride = 1;
    for (int d = 0; d < dims; ++d) {
      idx += static_cast<uint64_t>(v[d]) * stride;
      stride *= side;
    }
  } else {
    const uint32_t primes[4] = {1u, 2654435761u, 805459861u, 3674653429u};
    uint32_t h = 0;
    for (int d = 0; d < dims; ++d) h ^= v[d] * primes[d];  // uint32 products wrap mod 2^32
    idx = h;
  }
  return (size & (size - 1)) == 0 ? (idx & (size - 1)) : (idx % size);
}

struct KeyframeLerp {
  int i0, i1;
  float w;
};

A124_HD KeyframeLerp keyframe_lerp(const float* t, int64_t i, int keyframes) {
  if (keyframes <= 1) return {0, 0, 0.0f};
  const float g = clampf(t[i] * static_cast<float>(keyframes - 1), 0.0f, static_cast<float>(keyframes - 1));
  const int i0 = clampi(static_cast<int>(floorf(g)), 0, keyframes - 1);
  const int i1 = i0 + 1 < keyframes ? i0 + 1 : keyframes - 1;
  return {i0, i1, g - static_cast<float>(i0)};
}

// Corner coordinates and fractional offsets of point i at level l.
template <int D>
A124_HD void grid_cell(const GridEncodeArgs& a, int64_t i, int l, uint32_t* corner, float* frac) {
  const int64_t r = a.res[l];
  for (int d = 0; d < D; ++d) {
    const float pos = a.x[i * D + d] * static_cast<float>(r);
    int64_t c = static_cast<int64_t>(floorf(pos));
    c = c < 0 ? 0 : (c > r - 1 ? r - 1 : c);
    corner[d] = static_cast<uint32_t>(c);
    frac[d] = pos - static_cast<float>(c);
  }
}

// Corner `corner_bits` (bit d = upper neighbour along axis d) of the cell: its table row and d-linear weight.
template <int D>
A124_HD float grid_corner(const uint32_t* corner, const float* frac, int corner_bits, uint64_t res, uint64_t size,
                          bool hash, uint64_t* row) {
  uint32_t v[D];
  float weight = 1.0f;
  for (int d = 0; d < D; ++d) {
    const bool up = (corner_bits >> d) & 1;
    v[d] = corner[d] + (up ? 1u : 0u);
    weight *= up ? frac[d] : 1.0f - frac[d];
  }
  *row = grid_vertex_index(v, D, res, size, hash);
  return weight;
}

template <int D, int F>
A124_HD void grid_encode_forward_one(const GridEncodeArgs& a, const float* emb, int64_t i, int l, float* out) {
  uint32_t corner[D];
  float frac[D];
  grid_cell<D>(a, i, l, corner, frac);
  const KeyframeLerp kf = keyframe_lerp(a.t, i, a.keyframes);
  const int64_t off = a.offsets[l];
  const uint64_t size = static_cast<uint64_t>(a.offsets[l + 1] - off);
  const uint64_t res = static_cast<uint64_t>(a.res[l]);
  const float* e0 = emb + (kf.i0 * a.total + off) * F;
  const float* e1 = emb + (kf.i1 * a.total + off) * F;
  float acc[F];
  for (int f = 0; f < F; ++f) acc[f] = 0.0f;
  for (int corner_bits = 0; corner_bits < (1 << D); ++corner_bits) {
    uint64_t row;
    const float weight = grid_corner<D>(corner, frac, corner_bits, res, size, a.hash, &row);
    for (int f = 0; f < F; ++f) {
      const float val = kf.w == 0.0f ? e0[row * F + f] : (1.0f - kf.w) * e0[row * F + f] + kf.w * e1[row * F + f];
      acc[f] += weight * val;
    }
  }
  float* o = out + i * (static_cast<int64_t>(a.levels) * F) + l * F;
  for (int f = 0; f < F; ++f) o[f] = acc[f];
}

template <int D, int F>
A124_HD void grid_encode_backward_one(const GridEncodeArgs& a, const float* grad_out, int64_t i, int l,
                                      float* grad_emb) {
  uint32_t corner[D];
  float frac[D];
  grid_cell<D>(a, i, l, corner, frac);
  const KeyframeLerp kf = keyframe_lerp(a.t, i, a.keyframes);
  const int64_t off = a.offsets[l];
  const uint64_t size = static_cast<uint64_t>(a.offsets[l + 1] - off);
  const uint64_t res = static_cast<uint64_t>(a.res[l]);
  float* g0 = grad_emb + (kf.i0 * a.total + off) * F;
  float* g1 = grad_emb + (kf.i1 * a.total + off) * F;
  const float* go = grad_out + i * (static_cast<int64_t>(a.levels) * F) + l * F;
  float g[F];
  for (int f = 0; f < F; ++f) g[f] = go[f];
  for (int corner_bits = 0; corner_bits < (1 << D); ++corner_bits) {
    uint64_t row;
    const float weight = grid_corner<D>(corner, frac, corner_bits, res, size, a.hash, &row);
    for (int f = 0; f < F; ++f) {
      if (kf.w == 0.0f) {
        atomic_add(g0 + row * F + f, weight * g[f]);
      } else {
        atomic_add(g0 + row * F + f, (1.0f - kf.w) * weight * g[f]);
        atomic_add(g1 + row * F + f, kf.w * weight * g[f]);
      }
    }
  }
}

A124_HD float keyframe_tv_grad_one(const float* emb, int keyframes, int64_t per_frame, int64_t j) {
  const int k = static_cast<int>(j / per_frame);
  const float e = emb[j];
  float g = 0.0f;
  if (k > 0) g += 2.0f * (e - emb[j - per_frame]);
  if (k < keyframes - 1) g -= 2.0f * (emb[j + per_frame] - e);
  return g;
}

}  // namespace a124
