// Forward and backward of the MoE classifier (see moe_model.hpp). GEMMs go through the linalg
// adapter; everything element- or row-wise is a Kokkos kernel from nn_kernels.hpp. Routing
// bookkeeping (counting sort of token-slots by expert) runs on a host mirror: it is n*k integers,
// and the per-expert token counts are needed on the host anyway to size the expert GEMMs.
#include "daa/model/moe_model.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>
#include <string>

#include "daa/core/error.hpp"
#include "daa/core/rng.hpp"
#include "daa/kernels/linalg.hpp"
#include "daa/kernels/nn_kernels.hpp"
#include "daa/parallel/token_dispatcher.hpp"

namespace daa::model {

using kernels::Matrix;
using kernels::MemSpace;
using kernels::Trans;
using kernels::Vector;
using IntMatrix = Kokkos::View<int**, Kokkos::LayoutRight, MemSpace>;
using IntVector = Kokkos::View<int*, MemSpace>;

ModelShape shape_from_config(const core::Config& config, int inputs, int classes, int ep_size,
                             int ep_rank) {
  ModelShape s;
  s.ep_size = ep_size;
  s.ep_rank = ep_rank;
  s.inputs = inputs;
  s.classes = classes;
  s.d_model = config.model.d_model;
  s.moe_layers = config.model.moe_layers;
  s.rmsnorm = config.model.norm == core::NormKind::rmsnorm;
  s.init_std = config.model.init_std;
  s.experts = config.moe.experts;
  s.top_k = config.moe.top_k;
  s.d_ff = config.moe.d_ff;
  s.normalize_gates = config.moe.normalize_gates;
  s.aux_loss_coef = config.moe.aux_loss_coef;
  s.z_loss_coef = config.moe.z_loss_coef;
  s.capacity_mode = config.moe.token_mode == core::TokenMode::capacity;
  s.capacity_factor = config.moe.capacity_factor;
  s.seed = config.run.seed;
  // 0 groups: one group per expert-parallel rank, so a token visits at most that many ranks.
  s.expert_groups = config.moe.expert_groups > 0 ? config.moe.expert_groups : ep_size;
  s.max_groups_per_token = config.moe.max_groups_per_token;
  return s;
}

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

template <class T>
struct MoeModel<T>::Workspace {
  struct Layer {
    int norm_gain = -1, router = -1;
    std::vector<int> w1, b1, w2, b2;  // per local expert
    Vector<T> bias{"routing_bias", 0};
    // Saved activations of the last forward.
    Matrix<T> normed{"normed", 0, 0};
    Vector<T> inv_rms{"inv_rms", 0};
    Matrix<T> probs{"probs", 0, 0};
    Vector<T> lse{"lse", 0};
    IntMatrix choice{"choice", 0, 0};
    Matrix<T> gate{"gate", 0, 0};
    IntMatrix slot_pos{"slot_pos", 0, 0};
    IntVector token_of{"token_of", 0};
    std::vector<std::size_t> expert_offset;    // host: packed rows [offset[e], offset[e+1])
    std::vector<double> routed;                // host: token-slots routed per expert, pre-drop
    std::vector<double> prob_sum;              // host: sum over tokens of probs per expert
    Matrix<T> packed_in{"packed_in", 0, 0};    // this rank's token rows, by global expert
    Matrix<T> expert_out{"expert_out", 0, 0};  // their expert outputs, same order
    // Rows this rank's experts process: rows [local_offset[j], local_offset[j+1]) go to local
    // expert j. Without expert parallelism these alias packed_in / expert_out.
    std::optional<parallel::DispatchPlan> plan;
    std::vector<std::size_t> local_offset;
    Matrix<T> local_in{"local_in", 0, 0};
    Matrix<T> local_out{"local_out", 0, 0};
    Matrix<T> hidden_pre{"hidden_pre", 0, 0};
    Matrix<T> hidden_act{"hidden_act", 0, 0};
  };
  int w_in = -1, b_in = -1, w_out = -1, b_out = -1;
  std::vector<Layer> layers;
  std::vector<Matrix<T>> residual;  // residual[l]: input of block l; residual[L]: classifier input
  Matrix<T> input_pre{"input_pre", 0, 0};
  Matrix<T> logits{"logits", 0, 0};
  Matrix<T> block_out{"block_out", 0, 0};
  // Backward scratch, shared by the layers.
  Matrix<T> dlogits{"dlogits", 0, 0}, dres{"dres", 0, 0}, dnormed{"dnormed", 0, 0};
  Matrix<T> dprobs{"dprobs", 0, 0}, dgate{"dgate", 0, 0};
  Matrix<T> dexpert_out{"dexpert_out", 0, 0}, dpacked{"dpacked", 0, 0};  // packed order
  Matrix<T> dlocal_out{"dlocal_out", 0, 0}, dlocal_in{"dlocal_in", 0, 0}, dhidden{"dhidden", 0, 0};
  parallel::TokenDispatcher dispatcher;
  Vector<T> row_loss{"row_loss", 0};
  IntVector row_correct{"row_correct", 0};
};

template <class T>
MoeModel<T>::MoeModel(const ModelShape& shape, const parallel::Communicator* expert_group)
    : shape_(shape), expert_group_(expert_group), ws_(std::make_unique<Workspace>()) {
  if (shape.ep_size < 1 || shape.experts % shape.ep_size != 0 || shape.ep_rank < 0 ||
      shape.ep_rank >= shape.ep_size)
    throw Error(fmt::format("model::MoeModel: {} experts cannot be sharded as rank {} of {}",
                            shape.experts, shape.ep_rank, shape.ep_size));
  if (shape.expert_groups < 1 || shape.expert_groups > 64 ||
      shape.experts % shape.expert_groups != 0 ||
      (shape.max_groups_per_token > 0 &&
       shape.top_k > shape.max_groups_per_token * (shape.experts / shape.expert_groups)))
    throw Error(
        fmt::format("model::MoeModel: {} experts in {} groups cannot route top-{} within {} "
                    "groups",
                    shape.experts, shape.expert_groups, shape.top_k, shape.max_groups_per_token));
  if (shape.ep_size > 1 && (!expert_group || expert_group->size() != shape.ep_size ||
                            expert_group->rank() != shape.ep_rank))
    throw Error("model::MoeModel: expert parallelism needs the expert-parallel communicator");
  if (shape.top_k < 1 || shape.top_k > shape.experts)
    throw Error("model::MoeModel: top_k " + std::to_string(shape.top_k) + " outside [1, " +
                std::to_string(shape.experts) + "]");
  const std::size_t d = shape.d_model;
  auto matrix = [](std::string name, std::size_t r, std::size_t c, int layer = -1) {
    return ParamInfo{.name = std::move(name),
                     .layer = layer,
                     .rows = r,
                     .cols = c,
                     .decay = true,
                     .init = ParamInit::normal};
  };
  auto vector = [](std::string name, std::size_t n, int layer = -1,
                   ParamInit init = ParamInit::zeros) {
    return ParamInfo{.name = std::move(name), .layer = layer, .rows = n, .cols = 1, .init = init};
  };
  Workspace& w = *ws_;
  // Dense parameters first, then experts, so each is one contiguous range of the flat buffer.
  w.w_in = params_.declare(matrix("input.w", shape.inputs, d));
  w.b_in = params_.declare(vector("input.b", d));
  w.layers.resize(shape.moe_layers);
  for (int l = 0; l < shape.moe_layers; ++l) {
    const std::string prefix = "moe" + std::to_string(l) + ".";
    if (shape.rmsnorm)
      w.layers[l].norm_gain = params_.declare(vector(prefix + "norm.gain", d, l, ParamInit::ones));
    w.layers[l].router = params_.declare(matrix(prefix + "router.w", d, shape.experts, l));
  }
  w.w_out = params_.declare(matrix("classifier.w", d, shape.classes));
  w.b_out = params_.declare(vector("classifier.b", shape.classes));
  for (int l = 0; l < shape.moe_layers; ++l) {
    auto& layer = w.layers[l];
    for (int e = shape.first_local_expert(); e < shape.first_local_expert() + shape.local_experts();
         ++e) {
      const std::string prefix = "moe" + std::to_string(l) + ".expert" + std::to_string(e) + ".";
      auto expert = [&](const std::string& name, std::size_t r, std::size_t c, bool matrix) {
        return params_.declare(ParamInfo{.name = prefix + name,
                                         .kind = ParamKind::expert,
                                         .layer = l,
                                         .expert = e,
                                         .rows = r,
                                         .cols = c,
                                         .decay = matrix,
                                         .init = matrix ? ParamInit::normal : ParamInit::zeros});
      };
      layer.w1.push_back(expert("w1", d, shape.d_ff, true));
      layer.b1.push_back(expert("b1", shape.d_ff, 1, false));
      layer.w2.push_back(expert("w2", shape.d_ff, d, true));
      layer.b2.push_back(expert("b2", d, 1, false));
    }
    layer.bias = Vector<T>("routing_bias", shape.experts);
  }
  params_.allocate();
  w.residual.resize(shape.moe_layers + 1);
  initialize();
}

template <class T>
MoeModel<T>::~MoeModel() = default;

template <class T>
void MoeModel<T>::initialize() {
  auto host = Kokkos::create_mirror_view(params_.values());
  for (const ParamInfo& p : params_.infos()) {
    const std::uint64_t stream = core::name_hash(p.name.c_str());
    const double std_dev = shape_.init_std > 0 ? shape_.init_std : 1.0 / std::sqrt(double(p.rows));
    for (std::size_t i = 0; i < p.size(); ++i) {
      double v = p.init == ParamInit::ones ? 1.0 : 0.0;
      if (p.init == ParamInit::normal)
        v = std_dev * core::counter_normal(shape_.seed, core::RngPurpose::init, stream, i);
      host(p.offset + i) = static_cast<T>(v);
    }
  }
  Kokkos::deep_copy(params_.values(), host);
}

template <class T>
kernels::Matrix<T> MoeModel<T>::logits() const {
  return ws_->logits;
}

template <class T>
kernels::Vector<T> MoeModel<T>::routing_bias(int layer) const {
  return ws_->layers.at(layer).bias;
}

template <class T>
BatchStats MoeModel<T>::run(const Matrix<T>& x, const IntVector& labels, bool train,
                            const StatsReducer& reduce_stats) {
  Workspace& w = *ws_;
  const ModelShape& s = shape_;
  const std::size_t n = x.extent(0), d = s.d_model, E = s.experts, k = s.top_k, F = s.d_ff;
  if (x.extent(1) != std::size_t(s.inputs) || labels.extent(0) != n)
    throw Error("model::MoeModel::run: batch shape [" + std::to_string(n) + ", " +
                std::to_string(x.extent(1)) + "] does not match inputs " +
                std::to_string(s.inputs));
  BatchStats stats;
  stats.samples = n;
  stats.layers.resize(s.moe_layers);
  const auto& P = params_;

  // ---- forward ----
  kernels::ensure_extent(w.input_pre, n, d);
  for (auto& r : w.residual) kernels::ensure_extent(r, n, d);
  kernels::gemm(Trans::no, Trans::no, T(1), x, P.value(w.w_in), T(0), w.input_pre);
  kernels::add_bias(w.input_pre, P.value_vec(w.b_in));
  kernels::gelu_forward(w.input_pre, w.residual[0]);

  kernels::ensure_extent(w.block_out, n, d);
  for (int l = 0; l < s.moe_layers; ++l) {
    auto& L = w.layers[l];
    const Matrix<T>& h = w.residual[l];
    kernels::ensure_extent(L.normed, n, d);
    kernels::ensure_extent(L.inv_rms, n);
    if (s.rmsnorm)
      kernels::rmsnorm_forward(h, P.value_vec(L.norm_gain), T(1e-5), L.normed, L.inv_rms);
    else
      Kokkos::deep_copy(L.normed, h);

    kernels::ensure_extent(L.probs, n, E);
    kernels::ensure_extent(L.lse, n);
    kernels::gemm(Trans::no, Trans::no, T(1), L.normed, P.value(L.router), T(0), L.probs);
    kernels::softmax_rows(L.probs, L.lse);
    kernels::ensure_extent(L.choice, n, k);
    kernels::ensure_extent(L.gate, n, k);
    kernels::top_k_route(L.probs, kernels::VectorRef<T>(L.bias.data(), E), int(k),
                         s.normalize_gates, L.choice, L.gate, s.expert_groups,
                         s.max_groups_per_token);
    Kokkos::fence();

    // Counting sort of token-slots by expert, slot-major (all first choices in token order,
    // then all second choices, ...): that order is also the capacity policy's priority.
    auto choice_h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), L.choice);
    auto probs_h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), L.probs);
    const std::size_t capacity =
        s.capacity_mode ? std::size_t(std::ceil(s.capacity_factor * double(n * k) / double(E)))
                        : n * k;
    std::vector<std::size_t> kept(E, 0);
    std::vector<int> rank_in_expert(n * k, -1);
    L.routed.assign(E, 0.0);
    L.prob_sum.assign(E, 0.0);
    for (std::size_t slot = 0; slot < k; ++slot)
      for (std::size_t t = 0; t < n; ++t) {
        const int e = choice_h(t, slot);
        L.routed[e] += 1;
        if (kept[e] < capacity) rank_in_expert[t * k + slot] = int(kept[e]++);
      }
    for (std::size_t t = 0; t < n; ++t)
      for (std::size_t e = 0; e < E; ++e) L.prob_sum[e] += probs_h(t, e);
    L.expert_offset.assign(E + 1, 0);
    for (std::size_t e = 0; e < E; ++e) L.expert_offset[e + 1] = L.expert_offset[e] + kept[e];
    const std::size_t packed_rows = L.expert_offset[E];
    kernels::ensure_extent(L.slot_pos, n, k);
    kernels::ensure_extent(L.token_of, packed_rows);
    auto slot_pos_h = Kokkos::create_mirror_view(L.slot_pos);
    auto token_of_h = Kokkos::create_mirror_view(L.token_of);
    LayerRoutingStats& rs = stats.layers[l];
    rs.tokens_per_expert.assign(kept.begin(), kept.end());
    rs.gate_sum_per_expert.assign(E, 0.0);
    auto gate_h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), L.gate);
    for (std::size_t t = 0; t < n; ++t)
      for (std::size_t slot = 0; slot < k; ++slot) {
        const int r = rank_in_expert[t * k + slot];
        if (r < 0) {
          slot_pos_h(t, slot) = -1;
          ++rs.dropped;
          continue;
        }
        const std::size_t pos = L.expert_offset[choice_h(t, slot)] + r;
        slot_pos_h(t, slot) = int(pos);
        token_of_h(pos) = int(t);
        rs.gate_sum_per_expert[choice_h(t, slot)] += double(gate_h(t, slot));
      }
    Kokkos::deep_copy(L.slot_pos, slot_pos_h);
    Kokkos::deep_copy(L.token_of, token_of_h);

    kernels::ensure_extent(L.packed_in, packed_rows, d);
    kernels::gather_rows(L.normed, L.token_of, L.packed_in);
    // Expert parallelism: rows travel to the ranks holding their experts (collective over the
    // expert-parallel group, even for zero rows).
    if (shape_.ep_size > 1) {
      const auto t = std::chrono::steady_clock::now();
      L.plan = parallel::DispatchPlan::build(*expert_group_, kept);
      w.dispatcher.to_experts(*L.plan, L.packed_in, L.local_in);
      L.local_offset.assign(L.plan->local_expert_offset().begin(),
                            L.plan->local_expert_offset().end());
      stats.dispatch_seconds += seconds_since(t);
    } else {
      L.local_in = L.packed_in;
      L.local_offset = L.expert_offset;
    }
    const std::size_t local_rows = L.local_offset.back();
    kernels::ensure_extent(L.hidden_pre, local_rows, F);
    kernels::ensure_extent(L.hidden_act, local_rows, F);
    kernels::ensure_extent(L.local_out, local_rows, d);
    Kokkos::fence();
    const auto expert_start = std::chrono::steady_clock::now();
    for (int j = 0; j < s.local_experts(); ++j) {
      const auto rows = std::make_pair(L.local_offset[j], L.local_offset[j + 1]);
      if (rows.first == rows.second) continue;
      auto in = Kokkos::subview(L.local_in, rows, Kokkos::ALL);
      auto pre = Kokkos::subview(L.hidden_pre, rows, Kokkos::ALL);
      auto act = Kokkos::subview(L.hidden_act, rows, Kokkos::ALL);
      auto out = Kokkos::subview(L.local_out, rows, Kokkos::ALL);
      kernels::gemm(Trans::no, Trans::no, T(1), in, P.value(L.w1[j]), T(0), pre);
      kernels::add_bias(pre, P.value_vec(L.b1[j]));
      kernels::gelu_forward(pre, act);
      kernels::gemm(Trans::no, Trans::no, T(1), act, P.value(L.w2[j]), T(0), out);
      kernels::add_bias(out, P.value_vec(L.b2[j]));
    }
    Kokkos::fence();
    stats.expert_seconds += seconds_since(expert_start);
    stats.expert_flops += 4.0 * double(local_rows) * double(d) * double(F);
    if (shape_.ep_size > 1) {
      const auto t = std::chrono::steady_clock::now();
      kernels::ensure_extent(L.expert_out, packed_rows, d);
      w.dispatcher.to_sources(*L.plan, L.local_out, L.expert_out);
      stats.dispatch_seconds += seconds_since(t);
    } else {
      L.expert_out = L.local_out;
    }
    kernels::combine_rows(L.expert_out, L.slot_pos, L.gate, w.block_out);
    // residual[l+1] = residual[l] + block_out
    auto next = w.residual[l + 1];
    auto out = w.block_out;
    Kokkos::parallel_for(
        "residual_add", kernels::Range(0, n), KOKKOS_LAMBDA(const int t) {
          for (std::size_t j = 0; j < d; ++j) next(t, j) = h(t, j) + out(t, j);
        });
  }
  kernels::ensure_extent(w.logits, n, s.classes);
  kernels::gemm(Trans::no, Trans::no, T(1), w.residual[s.moe_layers], P.value(w.w_out), T(0),
                w.logits);
  kernels::add_bias(w.logits, P.value_vec(w.b_out));

  kernels::ensure_extent(w.row_loss, n);
  kernels::ensure_extent(w.row_correct, n);
  if (train) kernels::ensure_extent(w.dlogits, n, s.classes);
  kernels::cross_entropy(w.logits, labels, T(1) / T(n), train ? w.dlogits : Matrix<T>("none", 0, 0),
                         w.row_loss, w.row_correct);
  {
    auto loss_h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), w.row_loss);
    auto correct_h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), w.row_correct);
    for (std::size_t t = 0; t < n; ++t) {
      stats.loss_sum += double(loss_h(t));
      stats.correct += correct_h(t);
    }
  }

  // Router z-loss (local mean over tokens) and the global-batch load-balancing statistics.
  std::vector<double> lse_sq_sum(s.moe_layers, 0.0);
  for (int l = 0; l < s.moe_layers && s.z_loss_coef > 0; ++l) {
    auto lse_h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), w.layers[l].lse);
    for (std::size_t t = 0; t < n; ++t) lse_sq_sum[l] += double(lse_h(t)) * double(lse_h(t));
  }
  // Global fractions f_e (routed slots) and mean probs P_e: one reduction for all layers.
  std::vector<double> global(std::size_t(s.moe_layers) * 2 * E + 1, 0.0);
  for (int l = 0; l < s.moe_layers; ++l)
    for (std::size_t e = 0; e < E; ++e) {
      global[l * 2 * E + e] = w.layers[l].routed[e];
      global[l * 2 * E + E + e] = w.layers[l].prob_sum[e];
    }
  global.back() = double(n);
  if (train && reduce_stats) reduce_stats(global.data(), global.size());
  const double n_global = global.back();
  std::vector<std::vector<double>> fraction(s.moe_layers, std::vector<double>(E));
  for (int l = 0; l < s.moe_layers; ++l) {
    double aux = 0, largest = 0;
    for (std::size_t e = 0; e < E; ++e) {
      fraction[l][e] = n_global > 0 ? global[l * 2 * E + e] / (n_global * double(k)) : 0.0;
      aux += n_global > 0 ? fraction[l][e] * global[l * 2 * E + E + e] / n_global : 0.0;
      largest = std::max(largest, fraction[l][e]);
    }
    LayerRoutingStats& rs = stats.layers[l];
    rs.aux_loss = s.aux_loss_coef * double(E) * aux;
    rs.imbalance = largest * double(E);
    rs.z_loss = n > 0 ? s.z_loss_coef * lse_sq_sum[l] / double(n) : 0.0;
    stats.aux_loss += rs.aux_loss + rs.z_loss;
  }
  if (!train) return stats;

  // ---- backward ----
  kernels::ensure_extent(w.dres, n, d);
  kernels::gemm(Trans::yes, Trans::no, T(1), w.residual[s.moe_layers], w.dlogits, T(1),
                P.grad(w.w_out));
  kernels::accumulate_bias_grad(w.dlogits, P.grad_vec(w.b_out));
  kernels::gemm(Trans::no, Trans::yes, T(1), w.dlogits, P.value(w.w_out), T(0), w.dres);

  kernels::ensure_extent(w.dnormed, n, d);
  kernels::ensure_extent(w.dprobs, n, E);
  kernels::ensure_extent(w.dgate, n, k);
  for (int l = s.moe_layers - 1; l >= 0; --l) {
    auto& L = w.layers[l];
    const std::size_t packed_rows = L.expert_offset[E];
    const std::size_t local_rows = L.local_offset.back();
    kernels::ensure_extent(w.dexpert_out, packed_rows, d);
    // dres is the gradient w.r.t. residual[l+1] = residual[l] + moe(norm(residual[l])).
    kernels::combine_rows_backward(L.expert_out, L.slot_pos, L.gate, w.dres, w.dexpert_out,
                                   w.dgate);
    if (shape_.ep_size > 1) {
      const auto t = std::chrono::steady_clock::now();
      w.dispatcher.to_experts(*L.plan, w.dexpert_out, w.dlocal_out);
      stats.dispatch_seconds += seconds_since(t);
    } else {
      w.dlocal_out = w.dexpert_out;
    }
    kernels::ensure_extent(w.dhidden, local_rows, F);
    kernels::ensure_extent(w.dlocal_in, local_rows, d);
    Kokkos::fence();
    const auto expert_start = std::chrono::steady_clock::now();
    for (int j = 0; j < s.local_experts(); ++j) {
      const auto rows = std::make_pair(L.local_offset[j], L.local_offset[j + 1]);
      if (rows.first == rows.second) continue;
      auto in = Kokkos::subview(L.local_in, rows, Kokkos::ALL);
      auto pre = Kokkos::subview(L.hidden_pre, rows, Kokkos::ALL);
      auto act = Kokkos::subview(L.hidden_act, rows, Kokkos::ALL);
      auto dout = Kokkos::subview(w.dlocal_out, rows, Kokkos::ALL);
      auto dhid = Kokkos::subview(w.dhidden, rows, Kokkos::ALL);
      auto din = Kokkos::subview(w.dlocal_in, rows, Kokkos::ALL);
      kernels::gemm(Trans::yes, Trans::no, T(1), act, dout, T(1), P.grad(L.w2[j]));
      kernels::accumulate_bias_grad(dout, P.grad_vec(L.b2[j]));
      kernels::gemm(Trans::no, Trans::yes, T(1), dout, P.value(L.w2[j]), T(0), dhid);
      kernels::gelu_backward(pre, dhid);
      kernels::gemm(Trans::yes, Trans::no, T(1), in, dhid, T(1), P.grad(L.w1[j]));
      kernels::accumulate_bias_grad(dhid, P.grad_vec(L.b1[j]));
      kernels::gemm(Trans::no, Trans::yes, T(1), dhid, P.value(L.w1[j]), T(0), din);
    }
    Kokkos::fence();
    stats.expert_seconds += seconds_since(expert_start);
    stats.expert_flops += 8.0 * double(local_rows) * double(d) * double(F);
    if (shape_.ep_size > 1) {
      const auto t = std::chrono::steady_clock::now();
      kernels::ensure_extent(w.dpacked, packed_rows, d);
      w.dispatcher.to_sources(*L.plan, w.dlocal_in, w.dpacked);
      stats.dispatch_seconds += seconds_since(t);
    } else {
      w.dpacked = w.dlocal_in;
    }

    // dnormed = scatter of the experts' input gradients + router path.
    Kokkos::deep_copy(w.dnormed, T(0));
    kernels::scatter_add_rows(w.dpacked, L.slot_pos, w.dnormed);

    // Gates -> probs (through the renormalization), plus aux and z-loss terms; then softmax.
    auto probs = L.probs;
    auto lse = L.lse;
    auto choice = L.choice;
    auto gate = L.gate;
    auto dgate = w.dgate;
    auto dprobs = w.dprobs;
    Vector<T> aux_grad("aux_grad", E);
    {
      auto aux_h = Kokkos::create_mirror_view(aux_grad);
      for (std::size_t e = 0; e < E; ++e)
        aux_h(e) = T(s.aux_loss_coef * double(E) * fraction[l][e] / double(n));
      Kokkos::deep_copy(aux_grad, aux_h);
    }
    const bool normalize = s.normalize_gates;
    const T z_scale = T(2.0 * s.z_loss_coef / double(n));
    Kokkos::parallel_for(
        "router_backward", kernels::Range(0, n), KOKKOS_LAMBDA(const int t) {
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
          // softmax backward in place: dr_e = p_e (dp_e - sum_j p_j dp_j), plus z-loss 2 c lse p_e
          // / n
          T dot = 0;
          for (std::size_t e = 0; e < E; ++e) dot += probs(t, e) * dprobs(t, e);
          for (std::size_t e = 0; e < E; ++e)
            dprobs(t, e) = probs(t, e) * (dprobs(t, e) - dot) + z_scale * lse(t) * probs(t, e);
        });
    kernels::gemm(Trans::yes, Trans::no, T(1), L.normed, w.dprobs, T(1), P.grad(L.router));
    kernels::gemm(Trans::no, Trans::yes, T(1), w.dprobs, P.value(L.router), T(1), w.dnormed);

    // Through the norm into the residual stream: dres (for residual[l]) += norm'(dnormed).
    if (s.rmsnorm)
      kernels::rmsnorm_backward(w.residual[l], P.value_vec(L.norm_gain), L.inv_rms, w.dnormed,
                                w.dres, P.grad_vec(L.norm_gain));
    else {
      auto dres = w.dres;
      auto dn = w.dnormed;
      Kokkos::parallel_for(
          "residual_grad", kernels::Range(0, n), KOKKOS_LAMBDA(const int t) {
            for (std::size_t j = 0; j < d; ++j) dres(t, j) += dn(t, j);
          });
    }
  }
  // Input layer: dres is now d(residual[0]) = d gelu(input_pre).
  kernels::gelu_backward(w.input_pre, w.dres);
  kernels::gemm(Trans::yes, Trans::no, T(1), x, w.dres, T(1), P.grad(w.w_in));
  kernels::accumulate_bias_grad(w.dres, P.grad_vec(w.b_in));
  Kokkos::fence();
  return stats;
}

template class MoeModel<float>;
template class MoeModel<double>;

}  // namespace daa::model
