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
  // Parameter ids of one MoE block this rank holds.
  struct LayerParams {
    int norm_gain = -1, router = -1;
    std::vector<int> w1, b1, w2, b2;  // per local expert
    Vector<T> bias{"routing_bias", 0};
  };
  // What one block's forward saves for its backward.
  struct LayerState {
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
    std::vector<double> fraction;              // host: global routed fraction per expert
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
  // One micro-batch in flight: its input and everything its backward needs.
  struct Slot {
    std::size_t n = 0;
    Matrix<T> input{"input", 0, 0};  // x (first stage) or the previous stage's output
    std::vector<LayerState> layers;
    std::vector<Matrix<T>> residual;  // residual[l]: input of held block l; [blocks]: output
    Matrix<T> input_pre{"input_pre", 0, 0};
    Matrix<T> logits{"logits", 0, 0};
    Matrix<T> dlogits{"dlogits", 0, 0};
    Matrix<T> input_grad{"input_grad", 0, 0};  // gradient sent to the previous stage
  };
  int w_in = -1, b_in = -1, w_out = -1, b_out = -1;
  std::vector<LayerParams> layers;
  std::vector<Slot> slots;
  Matrix<T> block_out{"block_out", 0, 0};
  // Backward scratch, shared by the layers.
  Matrix<T> dres{"dres", 0, 0}, dnormed{"dnormed", 0, 0};
  Matrix<T> dprobs{"dprobs", 0, 0}, dgate{"dgate", 0, 0};
  Vector<T> aux_grad{"aux_grad", 0};  // load-balancing loss gradient per expert
  Matrix<T> dexpert_out{"dexpert_out", 0, 0}, dpacked{"dpacked", 0, 0};  // packed order
  Matrix<T> dlocal_out{"dlocal_out", 0, 0}, dlocal_in{"dlocal_in", 0, 0}, dhidden{"dhidden", 0, 0};
  parallel::TokenDispatcher dispatcher;
  Vector<T> row_loss{"row_loss", 0};
  IntVector row_correct{"row_correct", 0};

  Slot& slot(std::size_t i) {
    if (slots.size() <= i) slots.resize(i + 1);
    return slots[i];
  }
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
  const int blocks = shape.held_blocks();
  // Dense parameters first, then experts, so each is one contiguous range of the flat buffer.
  if (shape.has_input()) {
    w.w_in = params_.declare(matrix("input.w", shape.inputs, d));
    w.b_in = params_.declare(vector("input.b", d));
  }
  w.layers.resize(blocks);
  for (int b = 0; b < blocks; ++b) {
    const int l = shape.first_block + b;
    const std::string prefix = "moe" + std::to_string(l) + ".";
    if (shape.rmsnorm)
      w.layers[b].norm_gain = params_.declare(vector(prefix + "norm.gain", d, l, ParamInit::ones));
    w.layers[b].router = params_.declare(matrix(prefix + "router.w", d, shape.experts, l));
  }
  if (shape.has_classifier()) {
    w.w_out = params_.declare(matrix("classifier.w", d, shape.classes));
    w.b_out = params_.declare(vector("classifier.b", shape.classes));
  }
  for (int b = 0; b < blocks; ++b) {
    const int l = shape.first_block + b;
    auto& layer = w.layers[b];
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
  return ws_->slot(0).logits;
}

template <class T>
kernels::Vector<T> MoeModel<T>::routing_bias(int layer) const {
  return ws_->layers.at(layer - shape_.first_block).bias;
}

template <class T>
kernels::Matrix<T> MoeModel<T>::output(int slot) const {
  return ws_->slot(slot).residual.back();
}

template <class T>
kernels::Matrix<T> MoeModel<T>::input_grad(int slot) const {
  return ws_->slot(slot).input_grad;
}

template <class T>
BatchStats MoeModel<T>::run(const Matrix<T>& x, const IntVector& labels, bool train,
                            const StatsReducer& reduce_stats) {
  if (!shape_.has_input() || !shape_.has_classifier())
    throw Error("model::MoeModel::run: a pipeline stage runs forward() and backward()");
  BatchStats stats = forward(0, x, labels, train, reduce_stats);
  if (train) backward(0, Matrix<T>("none", 0, 0), stats);
  return stats;
}

template <class T>
BatchStats MoeModel<T>::forward(int slot_index, const Matrix<T>& input, const IntVector& labels,
                                bool train, const StatsReducer& reduce_stats) {
  Workspace& w = *ws_;
  const ModelShape& s = shape_;
  auto& slot = w.slot(std::size_t(slot_index));
  const std::size_t n = input.extent(0), d = s.d_model, E = s.experts, k = s.top_k, F = s.d_ff;
  const std::size_t width = s.has_input() ? std::size_t(s.inputs) : d;
  if (input.extent(1) != width || (s.has_classifier() && labels.extent(0) != n))
    throw Error("model::MoeModel::forward: batch shape [" + std::to_string(n) + ", " +
                std::to_string(input.extent(1)) + "] does not match the stage's input width " +
                std::to_string(width));
  const int blocks = s.held_blocks();
  BatchStats stats;
  stats.samples = s.has_classifier() ? std::int64_t(n) : 0;
  stats.layers.resize(blocks);
  const auto& P = params_;
  slot.n = n;
  slot.input = input;
  slot.layers.resize(blocks);
  slot.residual.resize(blocks + 1);

  // ---- forward ----
  for (std::size_t r = s.has_input() ? 0 : 1; r < slot.residual.size(); ++r)
    kernels::ensure_extent(slot.residual[r], n, d);
  if (s.has_input()) {
    kernels::ensure_extent(slot.input_pre, n, d);
    kernels::gemm(Trans::no, Trans::no, T(1), input, P.value(w.w_in), T(0), slot.input_pre);
    kernels::add_bias(slot.input_pre, P.value_vec(w.b_in));
    kernels::gelu_forward(slot.input_pre, slot.residual[0]);
  } else {
    slot.residual[0] = input;  // the previous stage's output, kept alive by the caller
  }

  // Labels on the host once per call, for the expert-by-class counts of every layer.
  const bool labelled = labels.extent(0) == n;
  const auto C = std::size_t(s.classes);
  const auto labels_h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), labels);
  kernels::ensure_extent(w.block_out, n, d);
  for (int l = 0; l < blocks; ++l) {
    auto& Lp = w.layers[l];
    auto& L = slot.layers[l];
    const Matrix<T>& h = slot.residual[l];
    kernels::ensure_extent(L.normed, n, d);
    kernels::ensure_extent(L.inv_rms, n);
    if (s.rmsnorm)
      kernels::rmsnorm_forward(h, P.value_vec(Lp.norm_gain), T(1e-5), L.normed, L.inv_rms);
    else
      Kokkos::deep_copy(L.normed, h);

    kernels::ensure_extent(L.probs, n, E);
    kernels::ensure_extent(L.lse, n);
    kernels::gemm(Trans::no, Trans::no, T(1), L.normed, P.value(Lp.router), T(0), L.probs);
    kernels::softmax_rows(L.probs, L.lse);
    kernels::ensure_extent(L.choice, n, k);
    kernels::ensure_extent(L.gate, n, k);
    kernels::top_k_route(L.probs, kernels::VectorRef<T>(Lp.bias.data(), E), int(k),
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
    rs.layer = s.first_block + l;
    rs.tokens_per_expert.assign(kept.begin(), kept.end());
    rs.gate_sum_per_expert.assign(E, 0.0);
    auto gate_h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), L.gate);
    if (labelled) rs.tokens_per_expert_class.assign(E * C, 0);
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
        if (labelled && labels_h(t) >= 0 && std::size_t(labels_h(t)) < C)
          ++rs.tokens_per_expert_class[std::size_t(choice_h(t, slot)) * C +
                                       std::size_t(labels_h(t))];
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
      kernels::gemm(Trans::no, Trans::no, T(1), in, P.value(Lp.w1[j]), T(0), pre);
      kernels::add_bias(pre, P.value_vec(Lp.b1[j]));
      kernels::gelu_forward(pre, act);
      kernels::gemm(Trans::no, Trans::no, T(1), act, P.value(Lp.w2[j]), T(0), out);
      kernels::add_bias(out, P.value_vec(Lp.b2[j]));
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
    auto next = slot.residual[l + 1];
    auto out = w.block_out;
    Kokkos::parallel_for(
        "residual_add", kernels::Range(0, n), KOKKOS_LAMBDA(const int t) {
          for (std::size_t j = 0; j < d; ++j) next(t, j) = h(t, j) + out(t, j);
        });
  }
  if (s.has_classifier()) {
    kernels::ensure_extent(slot.logits, n, s.classes);
    kernels::gemm(Trans::no, Trans::no, T(1), slot.residual[blocks], P.value(w.w_out), T(0),
                  slot.logits);
    kernels::add_bias(slot.logits, P.value_vec(w.b_out));

    kernels::ensure_extent(w.row_loss, n);
    kernels::ensure_extent(w.row_correct, n);
    if (train) kernels::ensure_extent(slot.dlogits, n, s.classes);
    kernels::cross_entropy(slot.logits, labels, T(1) / T(n),
                           train ? slot.dlogits : Matrix<T>("none", 0, 0), w.row_loss,
                           w.row_correct);
    auto loss_h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), w.row_loss);
    auto correct_h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), w.row_correct);
    for (std::size_t t = 0; t < n; ++t) {
      stats.loss_sum += double(loss_h(t));
      stats.correct += correct_h(t);
    }
  }

  // Router z-loss (local mean over tokens) and the global-batch load-balancing statistics.
  std::vector<double> lse_sq_sum(blocks, 0.0);
  for (int l = 0; l < blocks && s.z_loss_coef > 0; ++l) {
    auto lse_h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), slot.layers[l].lse);
    for (std::size_t t = 0; t < n; ++t) lse_sq_sum[l] += double(lse_h(t)) * double(lse_h(t));
  }
  // Global fractions f_e (routed slots) and mean probs P_e: one reduction for all held blocks.
  std::vector<double> global(std::size_t(blocks) * 2 * E + 1, 0.0);
  for (int l = 0; l < blocks; ++l)
    for (std::size_t e = 0; e < E; ++e) {
      global[l * 2 * E + e] = slot.layers[l].routed[e];
      global[l * 2 * E + E + e] = slot.layers[l].prob_sum[e];
    }
  global.back() = double(n);
  if (train && reduce_stats && blocks > 0) reduce_stats(global.data(), global.size());
  const double n_global = global.back();
  for (int l = 0; l < blocks; ++l) {
    std::vector<double>& fraction = slot.layers[l].fraction;
    fraction.assign(E, 0.0);
    double aux = 0, largest = 0;
    for (std::size_t e = 0; e < E; ++e) {
      fraction[e] = n_global > 0 ? global[l * 2 * E + e] / (n_global * double(k)) : 0.0;
      aux += n_global > 0 ? fraction[e] * global[l * 2 * E + E + e] / n_global : 0.0;
      largest = std::max(largest, fraction[e]);
    }
    LayerRoutingStats& rs = stats.layers[l];
    rs.aux_loss = s.aux_loss_coef * double(E) * aux;
    rs.imbalance = largest * double(E);
    rs.z_loss = n > 0 ? s.z_loss_coef * lse_sq_sum[l] / double(n) : 0.0;
    stats.aux_loss += rs.aux_loss + rs.z_loss;
  }
  return stats;
}

template <class T>
void MoeModel<T>::backward(int slot_index, const Matrix<T>& grad_output, BatchStats& stats) {
  Workspace& w = *ws_;
  const ModelShape& s = shape_;
  auto& slot = w.slot(std::size_t(slot_index));
  const std::size_t n = slot.n, d = s.d_model, E = s.experts, k = s.top_k, F = s.d_ff;
  const int blocks = s.held_blocks();
  const auto& P = params_;

  // ---- backward ---- (dres: the gradient w.r.t. the stage's output)
  kernels::ensure_extent(w.dres, n, d);
  if (s.has_classifier()) {
    kernels::gemm(Trans::yes, Trans::no, T(1), slot.residual[blocks], slot.dlogits, T(1),
                  P.grad(w.w_out));
    kernels::accumulate_bias_grad(slot.dlogits, P.grad_vec(w.b_out));
    kernels::gemm(Trans::no, Trans::yes, T(1), slot.dlogits, P.value(w.w_out), T(0), w.dres);
  } else {
    if (grad_output.extent(0) != n || grad_output.extent(1) != d)
      throw Error("model::MoeModel::backward: output gradient is [" +
                  std::to_string(grad_output.extent(0)) + ", " +
                  std::to_string(grad_output.extent(1)) + "], expected [" + std::to_string(n) +
                  ", " + std::to_string(d) + "]");
    Kokkos::deep_copy(w.dres, grad_output);
  }

  kernels::ensure_extent(w.dnormed, n, d);
  kernels::ensure_extent(w.dprobs, n, E);
  kernels::ensure_extent(w.dgate, n, k);
  for (int l = blocks - 1; l >= 0; --l) {
    auto& Lp = w.layers[l];
    auto& L = slot.layers[l];
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
      kernels::gemm(Trans::yes, Trans::no, T(1), act, dout, T(1), P.grad(Lp.w2[j]));
      kernels::accumulate_bias_grad(dout, P.grad_vec(Lp.b2[j]));
      kernels::gemm(Trans::no, Trans::yes, T(1), dout, P.value(Lp.w2[j]), T(0), dhid);
      kernels::gelu_backward(pre, dhid);
      kernels::gemm(Trans::yes, Trans::no, T(1), in, dhid, T(1), P.grad(Lp.w1[j]));
      kernels::accumulate_bias_grad(dhid, P.grad_vec(Lp.b1[j]));
      kernels::gemm(Trans::no, Trans::yes, T(1), dhid, P.value(Lp.w1[j]), T(0), din);
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
    kernels::ensure_extent(w.aux_grad, E);
    auto aux_grad = w.aux_grad;
    {
      auto aux_h = Kokkos::create_mirror_view(aux_grad);
      for (std::size_t e = 0; e < E; ++e)
        aux_h(e) = T(s.aux_loss_coef * double(E) * L.fraction[e] / double(n));
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
    kernels::gemm(Trans::yes, Trans::no, T(1), L.normed, w.dprobs, T(1), P.grad(Lp.router));
    kernels::gemm(Trans::no, Trans::yes, T(1), w.dprobs, P.value(Lp.router), T(1), w.dnormed);

    // Through the norm into the residual stream: dres (for residual[l]) += norm'(dnormed).
    if (s.rmsnorm)
      kernels::rmsnorm_backward(slot.residual[l], P.value_vec(Lp.norm_gain), L.inv_rms, w.dnormed,
                                w.dres, P.grad_vec(Lp.norm_gain));
    else {
      auto dres = w.dres;
      auto dn = w.dnormed;
      Kokkos::parallel_for(
          "residual_grad", kernels::Range(0, n), KOKKOS_LAMBDA(const int t) {
            for (std::size_t j = 0; j < d; ++j) dres(t, j) += dn(t, j);
          });
    }
  }
  if (s.has_input()) {
    // Input layer: dres is now d(residual[0]) = d gelu(input_pre).
    kernels::gelu_backward(slot.input_pre, w.dres);
    kernels::gemm(Trans::yes, Trans::no, T(1), slot.input, w.dres, T(1), P.grad(w.w_in));
    kernels::accumulate_bias_grad(w.dres, P.grad_vec(w.b_in));
  } else {
    // For the previous stage; a copy per slot, since its send may still be in flight.
    kernels::ensure_extent(slot.input_grad, n, d);
    Kokkos::deep_copy(slot.input_grad, w.dres);
  }
  Kokkos::fence();
}

template class MoeModel<float>;
template class MoeModel<double>;

}  // namespace daa::model
