// AdamW, schedule and clipping (see optimizer.hpp).
#include "daa/train/optimizer.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "daa/core/clock.hpp"
#include "daa/core/timeline.hpp"
#include "daa/kernels/kokkos_compat.hpp"

namespace daa::train {

double learning_rate(std::int64_t step, std::int64_t total, std::int64_t warmup, double lr,
                     double min_lr) {
  if (step < warmup) return lr * double(step + 1) / double(warmup);
  if (total <= warmup) return lr;
  const double progress = std::min(1.0, double(step - warmup) / double(total - warmup));
  return min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(std::numbers::pi * progress));
}

template <class T>
AdamW<T>::AdamW(const model::ParamStore<T>& params, const AdamWSettings& settings)
    : settings_(settings), m_("adam_m", params.size()), v_("adam_v", params.size()) {
  // Runs of neighbouring parameters with the same decay flag: one kernel each, no mask array.
  for (const auto& p : params.infos()) {
    if (!segments_.empty() && segments_.back().decay == p.decay && segments_.back().end == p.offset)
      segments_.back().end = p.offset + p.size();
    else
      segments_.push_back({p.offset, p.offset + p.size(), p.decay});
  }
}

template <class T>
void AdamW<T>::update(model::ParamStore<T>& params, double lr, std::int64_t step) {
  const T b1 = T(settings_.beta1), b2 = T(settings_.beta2), eps = T(settings_.eps);
  const T step_lr = T(lr);
  const T correction1 = T(1.0 - std::pow(settings_.beta1, double(step)));
  const T correction2 = T(1.0 - std::pow(settings_.beta2, double(step)));
  auto w = params.values();
  auto g = params.grads();
  auto m = m_;
  auto v = v_;
  for (const Segment& segment : segments_) {
    const T decay = segment.decay ? T(lr * settings_.weight_decay) : T(0);
    Kokkos::parallel_for(
        "adamw", kernels::Range(segment.begin, segment.end), KOKKOS_LAMBDA(const std::size_t i) {
          const T grad = g(i);
          m(i) = b1 * m(i) + (T(1) - b1) * grad;
          v(i) = b2 * v(i) + (T(1) - b2) * grad * grad;
          const T m_hat = m(i) / correction1;
          const T v_hat = v(i) / correction2;
          w(i) -= decay * w(i) + step_lr * m_hat / (kernels::kmath::sqrt(v_hat) + eps);
        });
  }
}

template <class T>
double gradient_norm_squared(const kernels::Vector<T>& grads, std::size_t begin, std::size_t end) {
  // Fixed chunks, each summed in a fixed order with 8 interleaved accumulators (vectorizable),
  // then the chunk sums added in index order: the same result for any thread count.
  constexpr std::size_t chunk = 4096;
  const std::size_t chunks = (end - begin + chunk - 1) / chunk;
  kernels::Vector<double> partial("grad_norm_partial", chunks);
  Kokkos::parallel_for(
      "grad_norm_partial", kernels::Range(0, chunks), KOKKOS_LAMBDA(const std::size_t c) {
        const std::size_t first = begin + c * chunk,
                          last = first + chunk < end ? first + chunk : end;
        double acc[8] = {};
        std::size_t i = first;
        for (; i + 8 <= last; i += 8)
          for (int lane = 0; lane < 8; ++lane)
            acc[lane] += double(grads(i + lane)) * double(grads(i + lane));
        for (; i < last; ++i) acc[0] += double(grads(i)) * double(grads(i));
        partial(c) =
            ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
      });
  auto host = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), partial);
  double sum = 0;
  for (std::size_t c = 0; c < chunks; ++c) sum += host(c);
  return sum;
}

template <class T>
double gradient_norm_squared(const kernels::Vector<T>& grads) {
  return gradient_norm_squared(grads, 0, grads.extent(0));
}

template <class T>
double clip_gradients(const kernels::Vector<T>& grads, double max_norm, const NormShares& shares) {
  const std::size_t dense = std::min(shares.dense_size, grads.extent(0));
  double squares = 0;
  if (shares.count_dense) squares += gradient_norm_squared(grads, 0, dense);
  if (shares.count_expert) squares += gradient_norm_squared(grads, dense, grads.extent(0));
  if (shares.group && shares.group->size() > 1) {
    const core::ScopedSpan span(core::Track::metrics, "gradient norm all-reduce");
    const auto start = core::Clock::now();
    shares.group->allreduce_sum(&squares, 1);
    if (shares.reduce_seconds) *shares.reduce_seconds += core::seconds_since(start);
  }
  const double norm = std::sqrt(squares);
  if (max_norm > 0 && norm > max_norm) {
    const T scale = T(max_norm / (norm + 1e-6));
    Kokkos::parallel_for(
        "clip", kernels::Range(0, grads.extent(0)),
        KOKKOS_LAMBDA(const std::size_t i) { grads(i) *= scale; });
  }
  return norm;
}

template class AdamW<float>;
template class AdamW<double>;
template double gradient_norm_squared<float>(const kernels::Vector<float>&);
template double gradient_norm_squared<double>(const kernels::Vector<double>&);
template double clip_gradients<float>(const kernels::Vector<float>&, double, const NormShares&);
template double clip_gradients<double>(const kernels::Vector<double>&, double, const NormShares&);

}  // namespace daa::train
