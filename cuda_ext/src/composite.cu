// Volume compositing kernels: training forward/backward over packed samples, in-place inference compositing.
#include "composite.cuh"

namespace a124 {
namespace {

template <int C>
__global__ void composite_forward_kernel(const float* __restrict__ sigmas, const float* __restrict__ rgbs,
                                         const float* __restrict__ ts, const int32_t* __restrict__ rays, int64_t n,
                                         int channels, float t_thresh, float* __restrict__ weights,
                                         float* __restrict__ weights_sum, float* __restrict__ depth,
                                         float* __restrict__ image) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) composite_forward_one<C>(sigmas, rgbs, ts, rays, channels, t_thresh, i, weights, weights_sum, depth, image);
}

template <int C>
__global__ void composite_backward_kernel(const float* __restrict__ grad_weights,
                                          const float* __restrict__ grad_weights_sum,
                                          const float* __restrict__ grad_depth, const float* __restrict__ grad_image,
                                          const float* __restrict__ sigmas, const float* __restrict__ rgbs,
                                          const float* __restrict__ ts, const int32_t* __restrict__ rays, int64_t n,
                                          int channels, float t_thresh, float* __restrict__ grad_sigmas,
                                          float* __restrict__ grad_rgbs) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) {
    composite_backward_one<C>(grad_weights, grad_weights_sum, grad_depth, grad_image, sigmas, rgbs, ts, rays, channels,
                              t_thresh, i, grad_sigmas, grad_rgbs);
  }
}

template <int C>
__global__ void composite_infer_kernel(const float* __restrict__ sigmas, const float* __restrict__ rgbs,
                                       const float* __restrict__ ts, const int64_t* __restrict__ alive,
                                       int64_t n_alive, int n_step, int channels, float t_thresh,
                                       double* __restrict__ optical_depth, float* __restrict__ weights_sum,
                                       float* __restrict__ depth, float* __restrict__ image) {
  const int64_t a = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (a < n_alive) {
    composite_infer_one<C>(sigmas, rgbs, ts, alive, n_step, channels, t_thresh, a, optical_depth, weights_sum, depth,
                           image);
  }
}

}  // namespace

void launch_composite_rays_train_forward(const float* sigmas, const float* rgbs, const float* ts, const int32_t* rays,
                                         int64_t n_rays, int channels, float t_thresh, float* weights,
                                         float* weights_sum, float* depth, float* image, cudaStream_t stream) {
  if (n_rays == 0) return;
  const unsigned int nb = num_blocks(n_rays);
  if (channels == 3) {
    composite_forward_kernel<3><<<nb, kThreads, 0, stream>>>(sigmas, rgbs, ts, rays, n_rays, channels, t_thresh,
                                                             weights, weights_sum, depth, image);
  } else {
    composite_forward_kernel<0><<<nb, kThreads, 0, stream>>>(sigmas, rgbs, ts, rays, n_rays, channels, t_thresh,
                                                             weights, weights_sum, depth, image);
  }
}

void launch_composite_rays_train_backward(const float* grad_weights, const float* grad_weights_sum,
                                          const float* grad_depth, const float* grad_image, const float* sigmas,
                                          const float* rgbs, const float* ts, const int32_t* rays, int64_t n_rays,
                                          int channels, float t_thresh, float* grad_sigmas, float* grad_rgbs,
                                          cudaStream_t stream) {
  if (n_rays == 0) return;
  const unsigned int nb = num_blocks(n_rays);
  if (channels == 3) {
    composite_backward_kernel<3><<<nb, kThreads, 0, stream>>>(grad_weights, grad_weights_sum, grad_depth, grad_image,
                                                              sigmas, rgbs, ts, rays, n_rays, channels, t_thresh,
                                                              grad_sigmas, grad_rgbs);
  } else {
    composite_backward_kernel<0><<<nb, kThreads, 0, stream>>>(grad_weights, grad_weights_sum, grad_depth, grad_image,
                                                              sigmas, rgbs, ts, rays, n_rays, channels, t_thresh,
                                                              grad_sigmas, grad_rgbs);
  }
}

void launch_composite_rays(const float* sigmas, const float* rgbs, const float* ts, const int64_t* alive,
                           int64_t n_alive, int n_step, int channels, float t_thresh, double* optical_depth,
                           float* weights_sum, float* depth, float* image, cudaStream_t stream) {
  if (n_alive == 0) return;
  const unsigned int nb = num_blocks(n_alive);
  if (channels == 3) {
    composite_infer_kernel<3><<<nb, kThreads, 0, stream>>>(sigmas, rgbs, ts, alive, n_alive, n_step, channels,
                                                           t_thresh, optical_depth, weights_sum, depth, image);
  } else {
    composite_infer_kernel<0><<<nb, kThreads, 0, stream>>>(sigmas, rgbs, ts, alive, n_alive, n_step, channels,
                                                           t_thresh, optical_depth, weights_sum, depth, image);
  }
}

}  // namespace a124
