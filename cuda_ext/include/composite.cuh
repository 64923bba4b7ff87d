// Front-to-back volume compositing (launchers implemented in src/composite.cu).
//
// For the samples of one ray in order: alpha_i = 1 - exp(-sigma_i dt_i) and T_i = exp(-sum_{j<i} sigma_j dt_j) (the
// optical depth summed in float64 as in the torch reference; equal to prod_{j<i} (1 - alpha_j)). Sample i contributes (w_i = alpha_i T_i) iff T_i >= t_thresh; with sigma >= 0, T never
// increases, so compositing of a ray stops at the first sample with T_i < t_thresh.
// weights_sum = sum w, depth = sum w t, image = sum w c.
#pragma once

#include "a124_common.cuh"

namespace a124 {

// Outputs must be zero-initialised by the caller (samples after the early stop keep weight 0).
void launch_composite_rays_train_forward(const float* sigmas, const float* rgbs, const float* ts, const int32_t* rays,
                                         int64_t n_rays, int channels, float t_thresh, float* weights,
                                         float* weights_sum, float* depth, float* image, cudaStream_t stream);

// grad_sigmas / grad_rgbs must be zero-initialised by the caller.
void launch_composite_rays_train_backward(const float* grad_weights, const float* grad_weights_sum,
                                          const float* grad_depth, const float* grad_image, const float* sigmas,
                                          const float* rgbs, const float* ts, const int32_t* rays, int64_t n_rays,
                                          int channels, float t_thresh, float* grad_sigmas, float* grad_rgbs,
                                          cudaStream_t stream);

// Inference: composites the n_step samples of row a (rows of sigmas/rgbs/ts) into ray alive[a] in place; a row
// ends at the first sample with dt == 0 (unused). optical_depth [N] (float64) carries sum sigma dt between calls
// (start at 0), so T = exp(-optical_depth) exactly as in the training kernel.
void launch_composite_rays(const float* sigmas, const float* rgbs, const float* ts, const int64_t* alive,
                           int64_t n_alive, int n_step, int channels, float t_thresh, double* optical_depth,
                           float* weights_sum, float* depth, float* image, cudaStream_t stream);

// ---------------------------------------------------------------------------------------------------------------
// Per-ray bodies (also run on the host by the test harness). C > 0: compile-time channel count; C == 0: `channels`.

// The optical depth is summed in float64 (like the reference's cumsum); the exponential is taken in float32
// (a float64 exp per sample is slow on GPUs with reduced FP64 rate; the two differ by ~1 ulp of od in T).
A124_HD float transmittance_of(double optical_depth) { return expf(-static_cast<float>(optical_depth)); }

template <int C>
A124_HD void composite_forward_one(const float* sigmas, const float* rgbs, const float* ts, const int32_t* rays,
                                   int channels, float t_thresh, int64_t i, float* weights, float* weights_sum,
                                   float* depth, float* image) {
  const int nc = C > 0 ? C : channels;
  const int64_t off = rays[2 * i];
  const int cnt = rays[2 * i + 1];
  double od = 0.0;
  float ws = 0.0f, dep = 0.0f;
  float* img = image + i * nc;
  for (int j = 0; j < cnt; ++j) {
    const float T = transmittance_of(od);
    if (T < t_thresh) break;
    const int64_t s = off + j;
    const float sd = mul_rn(sigmas[s], ts[2 * s + 1]);
    const float w = (1.0f - expf(-sd)) * T;
    weights[s] = w;
    ws += w;
    dep += w * ts[2 * s];
    for (int c = 0; c < nc; ++c) img[c] += w * rgbs[s * nc + c];
    od += static_cast<double>(sd);
  }
  weights_sum[i] = ws;
  depth[i] = dep;
}

// dL/dw_i = g_i = gw_i + gws + gd t_i + <gimg, c_i>;  dL/dc_i = gimg w_i;
// dL/dsigma_k = dt_k (g_k T_k exp(-sigma_k dt_k) - sum_{i>k} g_i w_i), the suffix sum being the total
// sum_i g_i w_i (pass 1) minus the running prefix (pass 2).
template <int C>
A124_HD void composite_backward_one(const float* grad_weights, const float* grad_weights_sum, const float* grad_depth,
                                    const float* grad_image, const float* sigmas, const float* rgbs, const float* ts,
                                    const int32_t* rays, int channels, float t_thresh, int64_t i,
                                    float* grad_sigmas, float* grad_rgbs) {
  const int nc = C > 0 ? C : channels;
  const int64_t off = rays[2 * i];
  const int cnt = rays[2 * i + 1];
  const float gws = grad_weights_sum[i], gd = grad_depth[i];
  const float* gimg = grad_image + i * nc;
  float total = 0.0f;
  double od = 0.0;
  for (int j = 0; j < cnt; ++j) {  // pass 1: total = sum_i g_i w_i
    const float T = transmittance_of(od);
    if (T < t_thresh) break;
    const int64_t s = off + j;
    const float sd = mul_rn(sigmas[s], ts[2 * s + 1]);
    float g = grad_weights[s] + gws + gd * ts[2 * s];
    for (int c = 0; c < nc; ++c) g += gimg[c] * rgbs[s * nc + c];
    total += g * ((1.0f - expf(-sd)) * T);
    od += static_cast<double>(sd);
  }
  float prefix = 0.0f;
  od = 0.0;
  for (int j = 0; j < cnt; ++j) {  // pass 2: gradients
    const float T = transmittance_of(od);
    if (T < t_thresh) break;
    const int64_t s = off + j;
    const float dt = ts[2 * s + 1];
    const float sd = mul_rn(sigmas[s], dt);
    const float e = expf(-sd);
    const float w = (1.0f - e) * T;
    float g = grad_weights[s] + gws + gd * ts[2 * s];
    for (int c = 0; c < nc; ++c) {
      g += gimg[c] * rgbs[s * nc + c];
      grad_rgbs[s * nc + c] = gimg[c] * w;
    }
    prefix += g * w;
    grad_sigmas[s] = dt * (g * T * e - (total - prefix));
    od += static_cast<double>(sd);
  }
}

template <int C>
A124_HD void composite_infer_one(const float* sigmas, const float* rgbs, const float* ts, const int64_t* alive,
                                 int n_step, int channels, float t_thresh, int64_t a, double* optical_depth,
                                 float* weights_sum, float* depth, float* image) {
  const int nc = C > 0 ? C : channels;
  const int64_t r = alive[a];
  double od = optical_depth[r];
  float ws = weights_sum[r], dep = depth[r];
  float* img = image + r * nc;
  for (int j = 0; j < n_step; ++j) {
    const int64_t s = a * n_step + j;
    const float dt = ts[2 * s + 1];
    const float T = transmittance_of(od);
    if (dt == 0.0f || T < t_thresh) break;
    const float sd = mul_rn(sigmas[s], dt);
    const float w = (1.0f - expf(-sd)) * T;
    ws += w;
    dep += w * ts[2 * s];
    for (int c = 0; c < nc; ++c) img[c] += w * rgbs[s * nc + c];
    od += static_cast<double>(sd);
  }
  optical_depth[r] = od;
  weights_sum[r] = ws;
  depth[r] = dep;
}

}  // namespace a124
