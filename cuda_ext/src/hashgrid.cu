// Multiresolution hash/tiled grid encoding with the fused keyframe lerp, and the keyframe temporal TV.
#include "hashgrid.cuh"

namespace a124 {
namespace {

// One thread per (point, level); blockIdx.y is the level so neighbouring threads read the same table.
template <int D, int F>
__global__ void grid_encode_forward_kernel(GridEncodeArgs a, const float* __restrict__ emb, float* __restrict__ out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < a.n) grid_encode_forward_one<D, F>(a, emb, i, blockIdx.y, out);
}

template <int D, int F>
__global__ void grid_encode_backward_kernel(GridEncodeArgs a, const float* __restrict__ grad_out,
                                            float* __restrict__ grad_emb) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < a.n) grid_encode_backward_one<D, F>(a, grad_out, i, blockIdx.y, grad_emb);
}

__global__ void keyframe_tv_forward_kernel(const float* __restrict__ emb, int64_t n_pairs, int64_t per_frame,
                                           double* __restrict__ out) {
  float acc = 0.0f;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < n_pairs; j += stride) {
    const float diff = emb[j + per_frame] - emb[j];
    acc += diff * diff;
  }
  for (int s = 16; s > 0; s >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, s);
  __shared__ float warp_sums[kThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = acc;
  __syncthreads();
  if (warp == 0) {
    acc = lane < static_cast<int>(blockDim.x >> 5) ? warp_sums[lane] : 0.0f;
    for (int s = 16; s > 0; s >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, s);
    if (lane == 0) atomicAdd(out, static_cast<double>(acc));
  }
}

__global__ void keyframe_tv_backward_kernel(const float* __restrict__ emb, int keyframes, int64_t per_frame,
                                            const float* __restrict__ scale, float* __restrict__ grad) {
  const int64_t n = static_cast<int64_t>(keyframes) * per_frame;
  const float s = *scale;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < n; j += stride) {
    grad[j] = s * keyframe_tv_grad_one(emb, keyframes, per_frame, j);
  }
}

template <int D, int F>
void encode_forward(const GridEncodeArgs& a, const float* emb, float* out, cudaStream_t stream) {
  const dim3 grid(num_blocks(a.n), static_cast<unsigned int>(a.levels));
  grid_encode_forward_kernel<D, F><<<grid, kThreads, 0, stream>>>(a, emb, out);
}

template <int D, int F>
void encode_backward(const GridEncodeArgs& a, const float* grad_out, float* grad_emb, cudaStream_t stream) {
  const dim3 grid(num_blocks(a.n), static_cast<unsigned int>(a.levels));
  grid_encode_backward_kernel<D, F><<<grid, kThreads, 0, stream>>>(a, grad_out, grad_emb);
}

template <int D>
bool encode_dispatch_f(bool forward, const GridEncodeArgs& a, int features, const float* in, float* out,
                       cudaStream_t stream) {
  switch (features) {
#define A124_CASE(FF)                                        \
  case FF:                                                   \
    if (forward) encode_forward<D, FF>(a, in, out, stream);  \
    else encode_backward<D, FF>(a, in, out, stream);         \
    return true;
    A124_CASE(1)
    A124_CASE(2)
    A124_CASE(4)
    A124_CASE(8)
#undef A124_CASE
    default:
      return false;
  }
}

void encode_dispatch(bool forward, const GridEncodeArgs& a, int dims, int features, const float* in, float* out,
                     cudaStream_t stream) {
  if (a.n == 0 || a.levels == 0) return;
  if (dims == 3) encode_dispatch_f<3>(forward, a, features, in, out, stream);
  else if (dims == 4) encode_dispatch_f<4>(forward, a, features, in, out, stream);
  // Unsupported dims/features are rejected in bindings.cpp before any launch.
}

unsigned int capped_blocks(int64_t n) {
  const unsigned int b = num_blocks(n);
  return b < 4096u ? b : 4096u;
}

}  // namespace

void launch_grid_encode_forward(const GridEncodeArgs& args, int dims, int features, const float* embeddings,
                                float* out, cudaStream_t stream) {
  encode_dispatch(true, args, dims, features, embeddings, out, stream);
}

void launch_grid_encode_backward(const GridEncodeArgs& args, int dims, int features, const float* grad_out,
                                 float* grad_embeddings, cudaStream_t stream) {
  encode_dispatch(false, args, dims, features, grad_out, grad_embeddings, stream);
}

void launch_keyframe_tv_forward(const float* embeddings, int keyframes, int64_t per_frame, double* out,
                                cudaStream_t stream) {
  const int64_t n_pairs = static_cast<int64_t>(keyframes - 1) * per_frame;
  if (n_pairs <= 0) return;
  keyframe_tv_forward_kernel<<<capped_blocks(n_pairs), kThreads, 0, stream>>>(embeddings, n_pairs, per_frame, out);
}

void launch_keyframe_tv_backward(const float* embeddings, int keyframes, int64_t per_frame, const float* scale,
                                 float* grad, cudaStream_t stream) {
  const int64_t n = static_cast<int64_t>(keyframes) * per_frame;
  if (n == 0) return;
  keyframe_tv_backward_kernel<<<capped_blocks(n), kThreads, 0, stream>>>(embeddings, keyframes, per_frame, scale,
                                                                          grad);
}

}  // namespace a124
