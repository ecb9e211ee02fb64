// Router, Experts and MoeLayer (see moe_layer.hpp). GEMMs go through the linalg adapter;
// element- and row-wise work is Kokkos kernels, routing bookkeeping included
// (routing_bookkeeping.cpp): only its per-expert counts come to the host, to size the expert
// GEMMs and the all-to-all.
#include "daa/model/moe_layer.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "daa/core/clock.hpp"
#include "daa/core/error.hpp"
#include "daa/kernels/linalg.hpp"
#include "daa/kernels/nn_kernels.hpp"
#include "daa/kernels/swiglu_kernels.hpp"

namespace daa::model {

using kernels::Matrix;
using kernels::Trans;
using kernels::Vector;

namespace {}  // namespace

MoeShape moe_shape_from_config(const core::Config& config, int ep_size, int ep_rank) {
  return MoeShape{
      .d_model = config.model.d_model,
      .experts = config.moe.experts,
      .top_k = config.moe.top_k,
      .d_ff = config.moe.d_ff,
      .ffn = config.moe.ffn == core::ExpertFfnKind::swiglu ? ExpertFfn::swiglu : ExpertFfn::gelu,
      .normalize_gates = config.moe.normalize_gates,
      .aux_loss_coef = config.moe.aux_loss_coef,
      .z_loss_coef = config.moe.z_loss_coef,
      .capacity_mode = config.moe.token_mode == core::TokenMode::capacity,
      .capacity_factor = config.moe.capacity_factor,
      // 0 groups: one group per expert-parallel rank, so a token visits at most that many ranks.
      .expert_groups = config.moe.expert_groups > 0 ? config.moe.expert_groups : ep_size,
      .max_groups_per_token = config.moe.max_groups_per_token,
      .ep_size = ep_size,
      .ep_rank = ep_rank};
}

void validate(const MoeShape& shape, const std::string& where) {
  if (shape.ep_size < 1 || shape.experts % shape.ep_size != 0 || shape.ep_rank < 0 ||
      shape.ep_rank >= shape.ep_size)
    throw Error(fmt::format("{}: {} experts cannot be sharded as rank {} of {}", where,
                            shape.experts, shape.ep_rank, shape.ep_size));
  if (shape.expert_groups < 1 || shape.expert_groups > 64 ||
      shape.experts % shape.expert_groups != 0 ||
      (shape.max_groups_per_token > 0 &&
       shape.top_k > shape.max_groups_per_token * (shape.experts / shape.expert_groups)))
    throw Error(fmt::format("{}: {} experts in {} groups cannot route top-{} within {} groups",
                            where, shape.experts, shape.expert_groups, shape.top_k,
                            shape.max_groups_per_token));
  if (shape.top_k < 1 || shape.top_k > shape.experts)
    throw Error(fmt::format("{}: top_k {} outside [1, {}]", where, shape.top_k, shape.experts));
}

// ---- Router -------------------------------------------------------------------------------------

template <class T>
Router<T>::Router(ParamStore<T>& store, const std::string& name, int layer, const MoeShape& shape)
    : store_(&store),
      shape_(shape),
      weight_(store.declare(weight_info(name + ".router.w", std::size_t(shape.d_model),
                                        std::size_t(shape.experts), {.layer = layer}))),
      bias_("routing_bias", std::size_t(shape.experts)) {}

template <class T>
void Router<T>::forward(const Matrix<T>& x, const Matrix<T>& probs, const Vector<T>& lse,
                        const IntMatrix& choice, const Matrix<T>& gate) const {
  // The router stays fp32 under mixed precision: its logits decide discrete routes.
  kernels::gemm(Trans::no, Trans::no, T(1), x, store_->value(weight_), T(0), probs,
                kernels::Precision::fp32);
  kernels::softmax_rows(probs, lse);
  kernels::top_k_route(probs, kernels::VectorRef<T>(bias_.data(), bias_.extent(0)), shape_.top_k,
                       shape_.normalize_gates, choice, gate, shape_.expert_groups,
                       shape_.max_groups_per_token);
}

template <class T>
void Router<T>::backward(const Matrix<T>& x, const Matrix<T>& probs, const Vector<T>& lse,
                         const IntMatrix& choice, const Matrix<T>& gate, const Matrix<T>& dgate,
                         const Vector<T>& aux_grad, T z_scale, const Matrix<T>& dprobs,
                         const Matrix<T>& dx) const {
  const std::size_t E = shape_.experts, k = shape_.top_k;
  const bool normalize = shape_.normalize_gates;
  Kokkos::parallel_for(
      "router_backward", kernels::Range(0, probs.extent(0)), KOKKOS_LAMBDA(const int t) {
        for (std::size_t e = 0; e < E; ++e) dprobs(t, e) = aux_grad(e);
        if (normalize) {
          // g_i = p_i / S  =>  dp_i += (dg_i - sum_j dg_j g_j) / S
          T total = 0, weighted = 0;
          for (std::size_t j = 0; j < k; ++j) {
            total += probs(t, choice(t, j));
            weighted += dgate(t, j) * gate(t, j);
          }
          for (std::size_t j = 0; j < k; ++j)
            dprobs(t, choice(t, j)) += (dgate(t, j) - weighted) / total;
        } else {
          for (std::size_t j = 0; j < k; ++j) dprobs(t, choice(t, j)) += dgate(t, j);
        }
        // Softmax backward in place, dr_e = p_e (dp_e - sum_j p_j dp_j), plus the z-loss term
        // 2 c lse p_e / n (z_scale = 2 c / n).
        T dot = 0;
        for (std::size_t e = 0; e < E; ++e) dot += probs(t, e) * dprobs(t, e);
        for (std::size_t e = 0; e < E; ++e)
          dprobs(t, e) = probs(t, e) * (dprobs(t, e) - dot) + z_scale * lse(t) * probs(t, e);
      });
  kernels::gemm(Trans::yes, Trans::no, T(1), x, dprobs, T(1), store_->grad(weight_),
                kernels::Precision::fp32);
  kernels::gemm(Trans::no, Trans::yes, T(1), dprobs, store_->value(weight_), T(1), dx,
                kernels::Precision::fp32);
}

// ---- Experts ------------------------------------------------------------------------------------

template <class T>
Experts<T>::Experts(ParamStore<T>& store, const std::string& name, int layer, const MoeShape& shape,
                    bool dense)
    : store_(&store), shape_(shape) {
  const auto d = std::size_t(shape.d_model), F = std::size_t(shape.d_ff);
  const int first = dense ? 0 : shape.first_local_expert();
  const int count = dense ? 1 : shape.local_experts();
  for (int e = first; e < first + count; ++e) {
    const std::string prefix = dense ? name + "." : name + ".expert" + std::to_string(e) + ".";
    const ParamPlace place =
        dense ? ParamPlace{.layer = layer}
              : ParamPlace{.kind = ParamKind::expert, .layer = layer, .expert = e};
    Local local;
    local.w1 = store.declare(weight_info(prefix + "w1", d, F, place));
    if (shape.ffn == ExpertFfn::gelu) {
      local.b1 = store.declare(vector_info(prefix + "b1", F, ParamInit::zeros, place));
      local.w2 = store.declare(weight_info(prefix + "w2", F, d, place));
      local.b2 = store.declare(vector_info(prefix + "b2", d, ParamInit::zeros, place));
    } else {
      local.w3 = store.declare(weight_info(prefix + "w3", d, F, place));
      local.w2 = store.declare(weight_info(prefix + "w2", F, d, place));
    }
    local_.push_back(local);
  }
}

template <class T>
double Experts<T>::forward_flops_per_row() const {
  const double matrices = shape_.ffn == ExpertFfn::swiglu ? 3.0 : 2.0;
  return 2.0 * matrices * double(shape_.d_model) * double(shape_.d_ff);
}

template <class T>
void Experts<T>::grouped_gemm(bool transpose_weight, std::span<const std::size_t> offset,
                              const Matrix<T>& a, int Local::*weight, T beta,
                              const Matrix<T>& c) const {
  std::vector<Matrix<T>> w;
  w.reserve(local_.size());
  for (const Local& e : local_) w.push_back(store_->value(e.*weight));
  kernels::expert_gemm(kernels::ExecSpace{}, transpose_weight ? Trans::yes : Trans::no, offset,
                       T(1), a, std::span<const Matrix<T>>(w), beta, c);
}

// Each GEMM runs over all local experts at once (kernels::expert_gemm: one grouped cuBLAS call
// on CUDA), and the element-wise kernels over all rows; only the per-expert biases and weight
// gradients, which differ per expert in their output, loop over the experts.
template <class T>
void Experts<T>::forward(int slot, const Matrix<T>& in, std::span<const std::size_t> offset,
                         const Matrix<T>& out) {
  State& s = states_[slot];
  const std::size_t rows = in.extent(0), F = shape_.d_ff;
  const bool swiglu = shape_.ffn == ExpertFfn::swiglu;
  s.in = in;
  s.offset.assign(offset.begin(), offset.end());
  kernels::ensure_extent(s.pre, rows, F);
  kernels::ensure_extent(s.act, rows, F);
  grouped_gemm(false, s.offset, in, &Local::w1, T(0), s.pre);
  if (swiglu) {
    kernels::ensure_extent(s.up, rows, F);
    grouped_gemm(false, s.offset, in, &Local::w3, T(0), s.up);
    kernels::swiglu_forward(s.pre, s.up, s.act);
    grouped_gemm(false, s.offset, s.act, &Local::w2, T(0), out);
  } else {
    for_each_expert(s.offset, [&](const Local& e, auto range) {
      kernels::add_bias(Kokkos::subview(s.pre, range, Kokkos::ALL), store_->value_vec(e.b1));
    });
    kernels::gelu_forward(s.pre, s.act);
    grouped_gemm(false, s.offset, s.act, &Local::w2, T(0), out);
    for_each_expert(s.offset, [&](const Local& e, auto range) {
      kernels::add_bias(Kokkos::subview(out, range, Kokkos::ALL), store_->value_vec(e.b2));
    });
  }
}

template <class T>
void Experts<T>::backward(int slot, const Matrix<T>& dout, const Matrix<T>& din) {
  State& s = states_[slot];
  const std::size_t rows = s.in.extent(0), F = shape_.d_ff;
  const bool swiglu = shape_.ffn == ExpertFfn::swiglu;
  const ParamStore<T>& P = *store_;
  kernels::ensure_extent(dhidden_, rows, F);
  // Weight gradients: expert j's rows only, accumulated into its own gradient.
  auto weight_grad = [&](const Matrix<T>& left, const Matrix<T>& right, int Local::*member) {
    for_each_expert(s.offset, [&](const Local& e, auto range) {
      kernels::gemm(Trans::yes, Trans::no, T(1), Kokkos::subview(left, range, Kokkos::ALL),
                    Kokkos::subview(right, range, Kokkos::ALL), T(1), P.grad(e.*member));
    });
  };
  weight_grad(s.act, dout, &Local::w2);
  if (!swiglu)
    for_each_expert(s.offset, [&](const Local& e, auto range) {
      kernels::accumulate_bias_grad(Kokkos::subview(dout, range, Kokkos::ALL), P.grad_vec(e.b2));
    });
  grouped_gemm(true, s.offset, dout, &Local::w2, T(0), dhidden_);
  if (swiglu) {
    // dhidden_ holds d(act); split it into d(pre) (in place) and d(up).
    kernels::ensure_extent(dup_, rows, F);
    kernels::swiglu_backward(s.pre, s.up, dhidden_, dhidden_, dup_);
    weight_grad(s.in, dhidden_, &Local::w1);
    weight_grad(s.in, dup_, &Local::w3);
    grouped_gemm(true, s.offset, dhidden_, &Local::w1, T(0), din);
    grouped_gemm(true, s.offset, dup_, &Local::w3, T(1), din);
  } else {
    kernels::gelu_backward(s.pre, dhidden_);
    weight_grad(s.in, dhidden_, &Local::w1);
    for_each_expert(s.offset, [&](const Local& e, auto range) {
      kernels::accumulate_bias_grad(Kokkos::subview(dhidden_, range, Kokkos::ALL),
                                    P.grad_vec(e.b1));
    });
    grouped_gemm(true, s.offset, dhidden_, &Local::w1, T(0), din);
  }
}

template <class T>
void Experts<T>::release(int slot) {
  states_[slot] = State{};
}

template <class T>
void Experts<T>::release_scratch() {
  dhidden_ = Matrix<T>("experts_dhidden", 0, 0);
  dup_ = Matrix<T>("experts_dup", 0, 0);
}

// ---- FeedForward --------------------------------------------------------------------------------

template <class T>
FeedForward<T>::FeedForward(ParamStore<T>& store, const std::string& name, const MoeShape& shape)
    : ffn_(store, name, -1, shape, /*dense=*/true) {}

template <class T>
void FeedForward<T>::forward(int slot, const Matrix<T>& x, const Matrix<T>& y) {
  const std::size_t rows[2] = {0, x.extent(0)};
  ffn_.forward(slot, x, rows, y);
}

template <class T>
void FeedForward<T>::backward(int slot, const Matrix<T>& dy, const Matrix<T>& dx, GradMode mode) {
  if (mode == GradMode::overwrite) {
    ffn_.backward(slot, dy, dx);
    return;
  }
  kernels::ensure_extent(dx_, dx.extent(0), dx.extent(1));
  ffn_.backward(slot, dy, dx_);
  write_grad(dx, dx_, GradMode::accumulate);
}

template <class T>
void FeedForward<T>::release_scratch() {
  ffn_.release_scratch();
  dx_ = Matrix<T>("ffn_dx", 0, 0);
}

// ---- MoeLayer -----------------------------------------------------------------------------------

template <class T>
MoeLayer<T>::MoeLayer(ParamStore<T>& store, const std::string& name, int layer,
                      const MoeShape& shape, const parallel::Communicator* expert_group)
    : store_(&store),
      layer_(layer),
      shape_((validate(shape, "model::MoeLayer '" + name + "'"), shape)),
      expert_group_(expert_group),
      router_(store, name, layer, shape),
      experts_(store, name, layer, shape) {
  if (shape.ep_size > 1 && (!expert_group || expert_group->size() != shape.ep_size ||
                            expert_group->rank() != shape.ep_rank))
    throw Error("model::MoeLayer '" + name +
                "': expert parallelism needs the expert-parallel communicator");
}

template <class T>
MoeStats MoeLayer<T>::forward(int slot, const Matrix<T>& x, const Matrix<T>& y, bool train,
                              const StatsReducer& reduce_stats, const RoutingObserver& observer) {
  State& L = states_[slot];
  const MoeShape& s = shape_;
  const std::size_t n = x.extent(0), d = s.d_model, E = s.experts, k = s.top_k;
  MoeStats stats;
  stats.layer = layer_;
  L.n = n;
  L.x = x;
  kernels::ensure_extent(L.probs, n, E);
  kernels::ensure_extent(L.lse, n);
  kernels::ensure_extent(L.choice, n, k);
  kernels::ensure_extent(L.gate, n, k);
  router_.forward(x, L.probs, L.lse, L.choice, L.gate);

  // Token-slots sorted by expert on the device (slot-major, the capacity policy's priority);
  // only the per-expert figures come to the host.
  std::vector<int> observed;
  const RoutingCounts counts = routing_.run(
      L.choice, L.gate, L.probs, expert_capacity(s.capacity_mode, s.capacity_factor, n, k, E),
      L.slot_pos, L.token_of, observer ? &observed : nullptr);
  L.expert_offset = counts.expert_offset;
  const std::size_t packed_rows = L.expert_offset[E];
  stats.tokens_per_expert = counts.kept;
  stats.gate_sum_per_expert = counts.gate_sum;
  stats.dropped = counts.dropped;
  if (observer) observer({.layer = layer_, .tokens = n, .top_k = int(k), .choice = observed});

  kernels::ensure_extent(L.packed_in, packed_rows, d);
  kernels::gather_rows(x, L.token_of, L.packed_in);
  // Expert parallelism: rows travel to the ranks holding their experts (collective over the
  // expert-parallel group, even for zero rows).
  if (s.ep_size > 1) {
    const auto t = core::Clock::now();
    const std::vector<std::size_t> kept(counts.kept.begin(), counts.kept.end());
    L.plan = parallel::DispatchPlan::build(*expert_group_, kept);
    dispatcher_.to_experts(*L.plan, L.packed_in, L.local_in);
    L.local_offset.assign(L.plan->local_expert_offset().begin(),
                          L.plan->local_expert_offset().end());
    stats.dispatch_seconds += core::seconds_since(t);
  } else {
    L.local_in = L.packed_in;
    L.local_offset = L.expert_offset;
  }
  const std::size_t local_rows = L.local_offset.back();
  kernels::ensure_extent(L.local_out, local_rows, d);
  Kokkos::fence();
  const auto expert_start = core::Clock::now();
  experts_.forward(slot, L.local_in, L.local_offset, L.local_out);
  Kokkos::fence();
  stats.expert_seconds += core::seconds_since(expert_start);
  stats.expert_flops += experts_.forward_flops_per_row() * double(local_rows);
  if (s.ep_size > 1) {
    const auto t = core::Clock::now();
    kernels::ensure_extent(L.expert_out, packed_rows, d);
    dispatcher_.to_sources(*L.plan, L.local_out, L.expert_out);
    stats.dispatch_seconds += core::seconds_since(t);
  } else {
    L.expert_out = L.local_out;
  }
  kernels::combine_rows(L.expert_out, L.slot_pos, L.gate, y);

  // Router z-loss (local mean over tokens) and the global batch's load-balancing figures: routed
  // fraction f_e and mean probability P_e per expert, reduced in one call.
  double lse_sq_sum = 0;
  if (s.z_loss_coef > 0) {
    auto lse_h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), L.lse);
    for (std::size_t t = 0; t < n; ++t) lse_sq_sum += double(lse_h(t)) * double(lse_h(t));
  }
  std::vector<double> global(2 * E + 1, 0.0);
  std::copy(counts.routed.begin(), counts.routed.end(), global.begin());
  std::copy(counts.prob_sum.begin(), counts.prob_sum.end(), global.begin() + std::ptrdiff_t(E));
  global.back() = double(n);
  if (train && reduce_stats) reduce_stats(global.data(), global.size());
  const double n_global = global.back();
  L.fraction.assign(E, 0.0);
  double aux = 0, largest = 0;
  for (std::size_t e = 0; e < E; ++e) {
    L.fraction[e] = n_global > 0 ? global[e] / (n_global * double(k)) : 0.0;
    aux += n_global > 0 ? L.fraction[e] * global[E + e] / n_global : 0.0;
    largest = std::max(largest, L.fraction[e]);
  }
  stats.aux_loss = s.aux_loss_coef * double(E) * aux;
  stats.imbalance = largest * double(E);
  stats.z_loss = n > 0 ? s.z_loss_coef * lse_sq_sum / double(n) : 0.0;
  return stats;
}

template <class T>
void MoeLayer<T>::backward(int slot, const Matrix<T>& dy, const Matrix<T>& dx, GradMode mode,
                           MoeStats& stats) {
  State& L = states_[slot];
  const MoeShape& s = shape_;
  const std::size_t n = L.n, d = s.d_model, E = s.experts, k = s.top_k;
  if (dy.extent(0) != n || dy.extent(1) != d)
    throw Error(
        fmt::format("model::MoeLayer::backward: output gradient is [{}, {}], expected "
                    "[{}, {}]",
                    dy.extent(0), dy.extent(1), n, d));
  const std::size_t packed_rows = L.expert_offset[E];
  const std::size_t local_rows = L.local_offset.back();
  kernels::ensure_extent(dexpert_out_, packed_rows, d);
  kernels::ensure_extent(dgate_, n, k);
  kernels::combine_rows_backward(L.expert_out, L.slot_pos, L.gate, dy, dexpert_out_, dgate_);
  if (s.ep_size > 1) {
    const auto t = core::Clock::now();
    dispatcher_.to_experts(*L.plan, dexpert_out_, dlocal_out_);
    stats.dispatch_seconds += core::seconds_since(t);
  } else {
    dlocal_out_ = dexpert_out_;
  }
  kernels::ensure_extent(dlocal_in_, local_rows, d);
  Kokkos::fence();
  const auto expert_start = core::Clock::now();
  experts_.backward(slot, dlocal_out_, dlocal_in_);
  Kokkos::fence();
  stats.expert_seconds += core::seconds_since(expert_start);
  stats.expert_flops += 2.0 * experts_.forward_flops_per_row() * double(local_rows);
  if (s.ep_size > 1) {
    const auto t = core::Clock::now();
    kernels::ensure_extent(dpacked_, packed_rows, d);
    dispatcher_.to_sources(*L.plan, dlocal_in_, dpacked_);
    stats.dispatch_seconds += core::seconds_since(t);
  } else {
    dpacked_ = dlocal_in_;
  }

  // dx = scatter of the experts' input gradients + the router's path.
  const Matrix<T>& target = mode == GradMode::overwrite ? dx : dx_;
  if (mode == GradMode::accumulate) kernels::ensure_extent(dx_, n, d);
  Kokkos::deep_copy(target, T(0));
  kernels::scatter_add_rows(dpacked_, L.slot_pos, target);
  kernels::ensure_extent(aux_grad_, E);
  {
    auto aux_h = Kokkos::create_mirror_view(aux_grad_);
    for (std::size_t e = 0; e < E; ++e)
      aux_h(e) = T(s.aux_loss_coef * double(E) * L.fraction[e] / double(n));
    Kokkos::deep_copy(aux_grad_, aux_h);
  }
  kernels::ensure_extent(dprobs_, n, E);
  router_.backward(L.x, L.probs, L.lse, L.choice, L.gate, dgate_, aux_grad_,
                   T(2.0 * s.z_loss_coef / double(n)), dprobs_, target);
  if (mode == GradMode::accumulate) write_grad(dx, dx_, GradMode::accumulate);
}

template <class T>
void MoeLayer<T>::release(int slot) {
  State& L = states_[slot];
  std::vector<double> fraction = std::move(L.fraction);
  L = State{};
  L.fraction = std::move(fraction);
  experts_.release(slot);
}

template <class T>
void MoeLayer<T>::release_scratch() {
  experts_.release_scratch();
  dprobs_ = Matrix<T>("moe_dprobs", 0, 0);
  dgate_ = Matrix<T>("moe_dgate", 0, 0);
  aux_grad_ = Vector<T>("moe_aux_grad", 0);
  dexpert_out_ = Matrix<T>("moe_dexpert_out", 0, 0);
  dpacked_ = Matrix<T>("moe_dpacked", 0, 0);
  dlocal_out_ = Matrix<T>("moe_dlocal_out", 0, 0);
  dlocal_in_ = Matrix<T>("moe_dlocal_in", 0, 0);
  dx_ = Matrix<T>("moe_dx", 0, 0);
}

template <class T>
void MoeLayer<T>::recompute(int slot, const Matrix<T>& x, const Matrix<T>& y, MoeStats& stats) {
  // The training forward's fractions came from the data-parallel reduction; an unreduced rerun
  // would replace them with this rank's own, so they are kept across it.
  std::vector<double> fraction = states_[slot].fraction;
  const MoeStats rerun = forward(slot, x, y, /*train=*/false);
  states_[slot].fraction = std::move(fraction);
  stats.expert_seconds += rerun.expert_seconds;
  stats.expert_flops += rerun.expert_flops;
  stats.dispatch_seconds += rerun.dispatch_seconds;
}

template class FeedForward<float>;
template class FeedForward<double>;
template class Router<float>;
template class Router<double>;
template class Experts<float>;
template class Experts<double>;
template class MoeLayer<float>;
template class MoeLayer<double>;

}  // namespace daa::model
