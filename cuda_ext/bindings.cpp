// Python bindings of the animate124 kernels (module animate124._C). ALL torch code lives here: input checks,
// allocation, the current CUDA stream, dtype/shape dispatch. The kernels in src/*.cu see raw pointers only.
// Inputs arrive from animate124/ops/_cuda.py already validated, float32 and contiguous; the checks below guard
// against direct misuse of the extension.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <optional>
#include <string>
#include <tuple>

#include "composite.cuh"
#include "grid.cuh"
#include "hashgrid.cuh"
#include "raymarch.cuh"

namespace {

using torch::Tensor;

void check_cuda(const Tensor& t, const char* name, at::ScalarType dtype) {
  TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
  TORCH_CHECK(t.scalar_type() == dtype, name, " must be ", c10::toString(dtype), ", got ", t.scalar_type());
}

void check_rows(const Tensor& t, const char* name, int64_t rows, int64_t cols) {
  TORCH_CHECK(t.size(0) == rows && (cols < 0 || (t.dim() == 2 && t.size(1) == cols)), name, " has shape ",
              t.sizes(), ", expected [", rows, cols < 0 ? "" : ", " + std::to_string(cols), "]");
}

cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

void check_launch() { C10_CUDA_KERNEL_LAUNCH_CHECK(); }

a124::MarchGeom make_geom(double bound, int64_t grid_res, double dt, int64_t max_steps) {
  TORCH_CHECK(bound > 0 && dt > 0 && max_steps >= 1, "need bound > 0, dt > 0, max_steps >= 1");
  TORCH_CHECK(grid_res >= 1 && grid_res <= 1024, "grid_res must be in [1, 1024]");
  return a124::MarchGeom{static_cast<float>(bound), static_cast<float>(static_cast<double>(grid_res) / (2.0 * bound)),
                         static_cast<float>(dt), static_cast<int>(grid_res), static_cast<int>(max_steps)};
}

// ------------------------------------------------------------------------------------------------------ raymarch
std::tuple<Tensor, Tensor> near_far_from_aabb(const Tensor& rays_o, const Tensor& rays_d, const Tensor& aabb,
                                              double min_near) {
  check_cuda(rays_o, "rays_o", at::kFloat);
  check_cuda(rays_d, "rays_d", at::kFloat);
  check_cuda(aabb, "aabb", at::kFloat);
  const int64_t n = rays_o.size(0);
  check_rows(rays_o, "rays_o", n, 3);
  check_rows(rays_d, "rays_d", n, 3);
  TORCH_CHECK(aabb.numel() == 6, "aabb must have 6 entries");
  const c10::cuda::CUDAGuard guard(rays_o.device());
  Tensor nears = torch::empty({n}, rays_o.options()), fars = torch::empty({n}, rays_o.options());
  a124::launch_near_far_from_aabb(rays_o.data_ptr<float>(), rays_d.data_ptr<float>(), aabb.data_ptr<float>(), n,
                                  static_cast<float>(min_near), nears.data_ptr<float>(), fars.data_ptr<float>(),
                                  stream());
  check_launch();
  return {nears, fars};
}

void check_march_inputs(const Tensor& rays_o, const Tensor& rays_d, const Tensor& nears, const Tensor& fars,
                        const Tensor& bitfield, const Tensor& slots, const a124::MarchGeom& g) {
  const int64_t n = rays_o.size(0);
  check_cuda(rays_o, "rays_o", at::kFloat);
  check_cuda(rays_d, "rays_d", at::kFloat);
  check_cuda(nears, "nears", at::kFloat);
  check_cuda(fars, "fars", at::kFloat);
  check_cuda(bitfield, "bitfield", at::kByte);
  check_cuda(slots, "slots", at::kLong);
  check_rows(rays_o, "rays_o", n, 3);
  check_rows(rays_d, "rays_d", n, 3);
  check_rows(nears, "nears", n, -1);
  check_rows(fars, "fars", n, -1);
  check_rows(slots, "slots", n, -1);
  const int64_t cells = static_cast<int64_t>(g.res) * g.res * g.res;
  TORCH_CHECK(bitfield.dim() == 2 && bitfield.size(1) * 8 == cells, "bitfield must be [S, grid_res^3 / 8]");
}

std::tuple<Tensor, Tensor, Tensor, Tensor> march_rays_train(const Tensor& rays_o, const Tensor& rays_d,
                                                            const Tensor& nears, const Tensor& fars,
                                                            const Tensor& bitfield, const Tensor& slots,
                                                            const Tensor& noise, double bound, int64_t grid_res,
                                                            double dt, int64_t max_steps) {
  const a124::MarchGeom g = make_geom(bound, grid_res, dt, max_steps);
  check_march_inputs(rays_o, rays_d, nears, fars, bitfield, slots, g);
  check_cuda(noise, "noise", at::kFloat);
  const int64_t n = rays_o.size(0);
  check_rows(noise, "noise", n, -1);
  const c10::cuda::CUDAGuard guard(rays_o.device());
  const auto fopt = rays_o.options();
  Tensor counts = torch::zeros({n}, fopt.dtype(at::kInt));
  a124::launch_march_rays_train_count(rays_o.data_ptr<float>(), rays_d.data_ptr<float>(), nears.data_ptr<float>(),
                                      fars.data_ptr<float>(), bitfield.data_ptr<uint8_t>(), bitfield.size(1),
                                      slots.data_ptr<int64_t>(), noise.data_ptr<float>(), n, g,
                                      counts.data_ptr<int32_t>(), stream());
  check_launch();
  const Tensor csum = torch::cumsum(counts, 0, at::kLong);
  const int64_t m = n > 0 ? csum[n - 1].item<int64_t>() : 0;  // one host sync: the output size
  TORCH_CHECK(m < (int64_t{1} << 31), "march_rays_train: ", m, " samples overflow the int32 ray offsets");
  const Tensor offsets = (csum - counts).to(at::kInt);
  Tensor xyzs = torch::empty({m, 3}, fopt), dirs = torch::empty({m, 3}, fopt), ts = torch::empty({m, 2}, fopt);
  Tensor rays = torch::empty({n, 2}, fopt.dtype(at::kInt));
  a124::launch_march_rays_train_write(rays_o.data_ptr<float>(), rays_d.data_ptr<float>(), nears.data_ptr<float>(),
                                      fars.data_ptr<float>(), bitfield.data_ptr<uint8_t>(), bitfield.size(1),
                                      slots.data_ptr<int64_t>(), noise.data_ptr<float>(), n, g,
                                      offsets.data_ptr<int32_t>(), xyzs.data_ptr<float>(), dirs.data_ptr<float>(),
                                      ts.data_ptr<float>(), rays.data_ptr<int32_t>(), stream());
  check_launch();
  return {xyzs, dirs, ts, rays};
}

std::tuple<Tensor, Tensor, Tensor> march_rays(const Tensor& rays_o, const Tensor& rays_d, const Tensor& nears,
                                              const Tensor& fars, const Tensor& bitfield, const Tensor& slots,
                                              const std::optional<Tensor>& noise, const Tensor& alive,
                                              Tensor rays_k, Tensor rays_n, double bound, int64_t grid_res,
                                              double dt, int64_t n_step, int64_t max_steps) {
  const a124::MarchGeom g = make_geom(bound, grid_res, dt, max_steps);
  check_march_inputs(rays_o, rays_d, nears, fars, bitfield, slots, g);
  const int64_t n = rays_o.size(0);
  check_cuda(alive, "alive", at::kLong);
  check_cuda(rays_k, "rays_k", at::kInt);
  check_cuda(rays_n, "rays_n", at::kInt);
  check_rows(rays_k, "rays_k", n, -1);
  check_rows(rays_n, "rays_n", n, -1);
  TORCH_CHECK(n_step >= 1, "n_step must be >= 1");
  const float* noise_ptr = nullptr;
  if (noise.has_value()) {
    check_cuda(*noise, "noise", at::kFloat);
    check_rows(*noise, "noise", n, -1);
    noise_ptr = noise->data_ptr<float>();
  }
  const c10::cuda::CUDAGuard guard(rays_o.device());
  const int64_t n_alive = alive.size(0);
  const auto fopt = rays_o.options();
  Tensor xyzs = torch::zeros({n_alive, n_step, 3}, fopt), dirs = torch::zeros({n_alive, n_step, 3}, fopt);
  Tensor ts = torch::zeros({n_alive, n_step, 2}, fopt);
  a124::launch_march_rays(rays_o.data_ptr<float>(), rays_d.data_ptr<float>(), nears.data_ptr<float>(),
                          fars.data_ptr<float>(), bitfield.data_ptr<uint8_t>(), bitfield.size(1),
                          slots.data_ptr<int64_t>(), noise_ptr, alive.data_ptr<int64_t>(), n_alive,
                          static_cast<int>(n_step), g, rays_k.data_ptr<int32_t>(), rays_n.data_ptr<int32_t>(),
                          xyzs.data_ptr<float>(), dirs.data_ptr<float>(), ts.data_ptr<float>(), stream());
  check_launch();
  return {xyzs, dirs, ts};
}

// ----------------------------------------------------------------------------------------------------- composite
void check_samples(const Tensor& sigmas, const Tensor& rgbs, const Tensor& ts) {
  check_cuda(sigmas, "sigmas", at::kFloat);
  check_cuda(rgbs, "rgbs", at::kFloat);
  check_cuda(ts, "ts", at::kFloat);
  TORCH_CHECK(rgbs.dim() == 2 && rgbs.size(0) == sigmas.size(0), "rgbs must be [M, C]");
  check_rows(ts, "ts", sigmas.size(0), 2);
}

std::tuple<Tensor, Tensor, Tensor, Tensor> composite_rays_train_forward(const Tensor& sigmas, const Tensor& rgbs,
                                                                        const Tensor& ts, const Tensor& rays,
                                                                        double t_thresh) {
  check_samples(sigmas, rgbs, ts);
  check_cuda(rays, "rays", at::kInt);
  const int64_t n = rays.size(0), c = rgbs.size(1);
  check_rows(rays, "rays", n, 2);
  const c10::cuda::CUDAGuard guard(sigmas.device());
  Tensor weights = torch::zeros_like(sigmas), weights_sum = torch::zeros({n}, sigmas.options());
  Tensor depth = torch::zeros({n}, sigmas.options()), image = torch::zeros({n, c}, sigmas.options());
  a124::launch_composite_rays_train_forward(sigmas.data_ptr<float>(), rgbs.data_ptr<float>(), ts.data_ptr<float>(),
                                            rays.data_ptr<int32_t>(), n, static_cast<int>(c),
                                            static_cast<float>(t_thresh), weights.data_ptr<float>(),
                                            weights_sum.data_ptr<float>(), depth.data_ptr<float>(),
                                            image.data_ptr<float>(), stream());
  check_launch();
  return {weights, weights_sum, depth, image};
}

std::tuple<Tensor, Tensor> composite_rays_train_backward(const Tensor& grad_weights, const Tensor& grad_weights_sum,
                                                         const Tensor& grad_depth, const Tensor& grad_image,
                                                         const Tensor& sigmas, const Tensor& rgbs, const Tensor& ts,
                                                         const Tensor& rays, double t_thresh) {
  check_samples(sigmas, rgbs, ts);
  check_cuda(rays, "rays", at::kInt);
  const int64_t n = rays.size(0), c = rgbs.size(1);
  check_cuda(grad_weights, "grad_weights", at::kFloat);
  check_cuda(grad_weights_sum, "grad_weights_sum", at::kFloat);
  check_cuda(grad_depth, "grad_depth", at::kFloat);
  check_cuda(grad_image, "grad_image", at::kFloat);
  check_rows(grad_weights, "grad_weights", sigmas.size(0), -1);
  check_rows(grad_weights_sum, "grad_weights_sum", n, -1);
  check_rows(grad_depth, "grad_depth", n, -1);
  check_rows(grad_image, "grad_image", n, c);
  const c10::cuda::CUDAGuard guard(sigmas.device());
  Tensor grad_sigmas = torch::zeros_like(sigmas), grad_rgbs = torch::zeros_like(rgbs);
  a124::launch_composite_rays_train_backward(
      grad_weights.data_ptr<float>(), grad_weights_sum.data_ptr<float>(), grad_depth.data_ptr<float>(),
      grad_image.data_ptr<float>(), sigmas.data_ptr<float>(), rgbs.data_ptr<float>(), ts.data_ptr<float>(),
      rays.data_ptr<int32_t>(), n, static_cast<int>(c), static_cast<float>(t_thresh), grad_sigmas.data_ptr<float>(),
      grad_rgbs.data_ptr<float>(), stream());
  check_launch();
  return {grad_sigmas, grad_rgbs};
}

void composite_rays(const Tensor& sigmas, const Tensor& rgbs, const Tensor& ts, const Tensor& alive,
                    Tensor optical_depth, Tensor weights_sum, Tensor depth, Tensor image, double t_thresh) {
  check_cuda(alive, "alive", at::kLong);
  const int64_t n_alive = alive.size(0);
  TORCH_CHECK(sigmas.dim() == 2 && sigmas.size(0) == n_alive, "sigmas must be [n_alive, n_step]");
  const int64_t n_step = sigmas.size(1), c = image.size(1);
  check_cuda(sigmas, "sigmas", at::kFloat);
  check_cuda(rgbs, "rgbs", at::kFloat);
  check_cuda(ts, "ts", at::kFloat);
  TORCH_CHECK(rgbs.dim() == 3 && rgbs.size(0) == n_alive && rgbs.size(1) == n_step && rgbs.size(2) == c,
              "rgbs must be [n_alive, n_step, C]");
  TORCH_CHECK(ts.dim() == 3 && ts.size(0) == n_alive && ts.size(1) == n_step && ts.size(2) == 2,
              "ts must be [n_alive, n_step, 2]");
  const int64_t n = optical_depth.size(0);
  check_cuda(optical_depth, "optical_depth", at::kDouble);
  check_cuda(weights_sum, "weights_sum", at::kFloat);
  check_cuda(depth, "depth", at::kFloat);
  check_cuda(image, "image", at::kFloat);
  check_rows(weights_sum, "weights_sum", n, -1);
  check_rows(depth, "depth", n, -1);
  check_rows(image, "image", n, c);
  const c10::cuda::CUDAGuard guard(sigmas.device());
  a124::launch_composite_rays(sigmas.data_ptr<float>(), rgbs.data_ptr<float>(), ts.data_ptr<float>(),
                              alive.data_ptr<int64_t>(), n_alive, static_cast<int>(n_step), static_cast<int>(c),
                              static_cast<float>(t_thresh), optical_depth.data_ptr<double>(),
                              weights_sum.data_ptr<float>(), depth.data_ptr<float>(), image.data_ptr<float>(),
                              stream());
  check_launch();
}

// ---------------------------------------------------------------------------------------------------------- grid
Tensor morton3d(const Tensor& coords) {
  check_cuda(coords, "coords", at::kLong);
  check_rows(coords, "coords", coords.size(0), 3);
  const c10::cuda::CUDAGuard guard(coords.device());
  Tensor codes = torch::empty({coords.size(0)}, coords.options());
  a124::launch_morton3d(coords.data_ptr<int64_t>(), coords.size(0), codes.data_ptr<int64_t>(), stream());
  check_launch();
  return codes;
}

Tensor morton3d_invert(const Tensor& codes) {
  check_cuda(codes, "codes", at::kLong);
  const c10::cuda::CUDAGuard guard(codes.device());
  Tensor coords = torch::empty({codes.size(0), 3}, codes.options());
  a124::launch_morton3d_invert(codes.data_ptr<int64_t>(), codes.size(0), coords.data_ptr<int64_t>(), stream());
  check_launch();
  return coords;
}

Tensor packbits(const Tensor& grid, const Tensor& thresh) {
  check_cuda(grid, "grid", at::kFloat);
  check_cuda(thresh, "thresh", at::kFloat);
  TORCH_CHECK(grid.dim() == 2 && grid.size(1) % 8 == 0, "grid must be [S, cells] with cells % 8 == 0");
  TORCH_CHECK(thresh.numel() == grid.size(0), "thresh must have one entry per slot");
  const c10::cuda::CUDAGuard guard(grid.device());
  Tensor bits = torch::empty({grid.size(0), grid.size(1) / 8}, grid.options().dtype(at::kByte));
  a124::launch_packbits(grid.data_ptr<float>(), thresh.data_ptr<float>(), grid.size(0), grid.size(1),
                        bits.data_ptr<uint8_t>(), stream());
  check_launch();
  return bits;
}

// ------------------------------------------------------------------------------------------------------ hashgrid
a124::GridEncodeArgs grid_args(const Tensor& x, int64_t keyframes, int64_t total, const Tensor& offsets,
                               const Tensor& resolutions, bool hash, const std::optional<Tensor>& t, int64_t features) {
  check_cuda(x, "x", at::kFloat);
  check_cuda(offsets, "offsets", at::kLong);
  check_cuda(resolutions, "resolutions", at::kLong);
  TORCH_CHECK(x.dim() == 2 && (x.size(1) == 3 || x.size(1) == 4), "x must be [N, 3] or [N, 4]");
  TORCH_CHECK(features == 1 || features == 2 || features == 4 || features == 8, "features per level must be 1/2/4/8");
  TORCH_CHECK(offsets.numel() == resolutions.numel() + 1, "offsets must have L + 1 entries");
  const float* t_ptr = nullptr;
  if (keyframes > 1) {
    TORCH_CHECK(t.has_value(), "t is required with ", keyframes, " keyframes");
    check_cuda(*t, "t", at::kFloat);
    TORCH_CHECK(t->numel() == x.size(0), "t must be [N]");
    t_ptr = t->data_ptr<float>();
  }
  return a124::GridEncodeArgs{x.data_ptr<float>(), t_ptr, offsets.data_ptr<int64_t>(),
                              resolutions.data_ptr<int64_t>(), x.size(0), static_cast<int>(resolutions.numel()),
                              static_cast<int>(keyframes), total, hash};
}

Tensor grid_encode_forward(const Tensor& x, const Tensor& embeddings, const Tensor& offsets, const Tensor& resolutions,
                           bool hash, const std::optional<Tensor>& t) {
  check_cuda(embeddings, "embeddings", at::kFloat);
  TORCH_CHECK(embeddings.dim() == 3, "embeddings must be [K, total, F]");
  const int64_t f = embeddings.size(2);
  const auto a = grid_args(x, embeddings.size(0), embeddings.size(1), offsets, resolutions, hash, t, f);
  const c10::cuda::CUDAGuard guard(x.device());
  Tensor out = torch::empty({x.size(0), resolutions.numel() * f}, x.options());
  a124::launch_grid_encode_forward(a, static_cast<int>(x.size(1)), static_cast<int>(f), embeddings.data_ptr<float>(),
                                   out.data_ptr<float>(), stream());
  check_launch();
  return out;
}

Tensor grid_encode_backward(const Tensor& grad_out, const Tensor& x, int64_t keyframes, int64_t total,
                            int64_t features, const Tensor& offsets, const Tensor& resolutions, bool hash,
                            const std::optional<Tensor>& t) {
  const auto a = grid_args(x, keyframes, total, offsets, resolutions, hash, t, features);
  check_cuda(grad_out, "grad_out", at::kFloat);
  check_rows(grad_out, "grad_out", x.size(0), resolutions.numel() * features);
  const c10::cuda::CUDAGuard guard(x.device());
  Tensor grad = torch::zeros({keyframes, total, features}, x.options());
  a124::launch_grid_encode_backward(a, static_cast<int>(x.size(1)), static_cast<int>(features),
                                    grad_out.data_ptr<float>(), grad.data_ptr<float>(), stream());
  check_launch();
  return grad;
}

// Returns the float64 sum of squared differences (the caller divides by (K - 1) * total).
Tensor keyframe_tv_forward(const Tensor& embeddings) {
  check_cuda(embeddings, "embeddings", at::kFloat);
  TORCH_CHECK(embeddings.dim() == 3, "embeddings must be [K, total, F]");
  const c10::cuda::CUDAGuard guard(embeddings.device());
  Tensor out = torch::zeros({}, embeddings.options().dtype(at::kDouble));
  a124::launch_keyframe_tv_forward(embeddings.data_ptr<float>(), static_cast<int>(embeddings.size(0)),
                                   embeddings.size(1) * embeddings.size(2), out.data_ptr<double>(), stream());
  check_launch();
  return out;
}

// grad = scale * d/dE sum (E[k+1] - E[k])^2, scale a float32 CUDA scalar (the incoming gradient / count).
Tensor keyframe_tv_backward(const Tensor& embeddings, const Tensor& scale) {
  check_cuda(embeddings, "embeddings", at::kFloat);
  check_cuda(scale, "scale", at::kFloat);
  TORCH_CHECK(embeddings.dim() == 3 && scale.numel() == 1, "embeddings must be [K, total, F], scale a scalar");
  const c10::cuda::CUDAGuard guard(embeddings.device());
  Tensor grad = torch::empty_like(embeddings);
  a124::launch_keyframe_tv_backward(embeddings.data_ptr<float>(), static_cast<int>(embeddings.size(0)),
                                    embeddings.size(1) * embeddings.size(2), scale.data_ptr<float>(),
                                    grad.data_ptr<float>(), stream());
  check_launch();
  return grad;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "animate124 CUDA kernels (use through animate124.ops, not directly)";
  m.def("near_far_from_aabb", &near_far_from_aabb);
  m.def("march_rays_train", &march_rays_train);
  m.def("march_rays", &march_rays);
  m.def("composite_rays_train_forward", &composite_rays_train_forward);
  m.def("composite_rays_train_backward", &composite_rays_train_backward);
  m.def("composite_rays", &composite_rays);
  m.def("morton3d", &morton3d);
  m.def("morton3d_invert", &morton3d_invert);
  m.def("packbits", &packbits);
  m.def("grid_encode_forward", &grid_encode_forward);
  m.def("grid_encode_backward", &grid_encode_backward);
  m.def("keyframe_tv_forward", &keyframe_tv_forward);
  m.def("keyframe_tv_backward", &keyframe_tv_backward);
}
