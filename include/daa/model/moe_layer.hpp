// The Mixture-of-Experts layer, composed as Megatron-Core composes it: a Router (softmax over
// experts, top-k with group limits and the consensus bias, aux and z losses), the parallel
// TokenDispatcher (all-to-all over the expert-parallel group), an Experts object that runs every
// local expert in one call, and the gate-weighted combine. Input and output are [tokens, d_model];
// norms and residuals belong to the block around it. What each expert serves is reported to a
// RoutingObserver, keyed by whatever the caller knows about its tokens: the layer knows nothing.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "daa/core/config.hpp"
#include "daa/kernels/views.hpp"
#include "daa/model/layer.hpp"
#include "daa/model/routing_bookkeeping.hpp"
#include "daa/parallel/communicator.hpp"
#include "daa/parallel/token_dispatcher.hpp"

namespace daa::model {

// GELU MLP with biases (x W1 + b1 -> GELU -> W2 + b2) or SwiGLU without biases (Mixtral's
// shape: (silu(x W1) * x W3) W2).
enum class ExpertFfn { gelu, swiglu };

struct MoeShape {
  int d_model = 128;
  int experts = 8;
  int top_k = 2;
  int d_ff = 256;
  ExpertFfn ffn = ExpertFfn::gelu;
  bool normalize_gates = true;
  double aux_loss_coef = 0.01;
  double z_loss_coef = 0.0;
  bool capacity_mode = false;
  double capacity_factor = 1.25;
  // Group-limited routing: experts in `expert_groups` contiguous groups; each token uses at most
  // max_groups_per_token of them (0: no limit).
  int expert_groups = 1;
  int max_groups_per_token = 0;
  // Expert parallelism: this rank holds experts [ep_rank * experts / ep_size, ...).
  int ep_size = 1;
  int ep_rank = 0;
  int local_experts() const { return experts / ep_size; }
  int first_local_expert() const { return ep_rank * local_experts(); }
  bool operator==(const MoeShape&) const = default;
};

// The MoE layers' shape an input describes, for rank ep_rank of an expert-parallel group of
// ep_size ([moe] expert_groups = 0: one group per expert-parallel rank).
MoeShape moe_shape_from_config(const core::Config& config, int ep_size = 1, int ep_rank = 0);

// Throws daa::Error naming `where` when the shape cannot route or shard.
void validate(const MoeShape& shape, const std::string& where);

// Sums `count` doubles over the data-parallel group in place. The load-balancing loss needs the
// global batch's routing fractions so that the optimization does not depend on the rank count; an
// empty reducer means "this process is the whole batch".
using StatsReducer = std::function<void(double* values, std::size_t count)>;

// One layer's routing of one (micro-)batch, on the host: choice[t * top_k + s] is the expert of
// token t's s-th slot, or -1 where capacity dropped it.
struct RoutingEvent {
  int layer = 0;
  std::size_t tokens = 0;
  int top_k = 0;
  std::span<const int> choice;
};
using RoutingObserver = std::function<void(const RoutingEvent&)>;

// Routing figures of one MoE layer for one batch (local tokens of this rank), and its costs.
struct MoeStats {
  int layer = 0;                                // global MoE layer index
  std::vector<std::int64_t> tokens_per_expert;  // kept token-slots this rank sends per expert
  std::vector<double> gate_sum_per_expert;      // sum of their gate values
  std::int64_t dropped = 0;                     // token-slots dropped by capacity
  double aux_loss = 0;                          // global-batch Switch loss (weighted)
  double imbalance = 0;       // max expert load / mean load over the global (micro-)batch, pre-drop
  double z_loss = 0;          // local router z-loss (weighted)
  double expert_seconds = 0;  // this rank's expert FFNs, forward and backward
  double expert_flops = 0;    // their GEMM flops
  double dispatch_seconds = 0;  // token all-to-all
};

// The router: logits = x W_r (W_r dense, "<name>.router.w" [d, E]), probs = softmax(logits),
// top-k on probs + bias (the bias moves selection only; consensus rounds set it). Stateless
// between calls: the MoE layer keeps what a backward needs.
template <class T>
class Router {
 public:
  using IntMatrix = Kokkos::View<int**, Kokkos::LayoutRight, kernels::MemSpace>;
  Router(ParamStore<T>& store, const std::string& name, int layer, const MoeShape& shape);
  // probs [n, E] (softmax), lse [n] (log-sum-exp of the logits), choice and gate [n, k].
  void forward(const kernels::Matrix<T>& x, const kernels::Matrix<T>& probs,
               const kernels::Vector<T>& lse, const IntMatrix& choice,
               const kernels::Matrix<T>& gate) const;
  // From the gates' gradient plus the load-balancing gradient per expert (aux_grad) and the
  // z-loss scale: the router weight's gradient, and dx += the input gradient. dprobs is scratch.
  void backward(const kernels::Matrix<T>& x, const kernels::Matrix<T>& probs,
                const kernels::Vector<T>& lse, const IntMatrix& choice,
                const kernels::Matrix<T>& gate, const kernels::Matrix<T>& dgate,
                const kernels::Vector<T>& aux_grad, T z_scale, const kernels::Matrix<T>& dprobs,
                const kernels::Matrix<T>& dx) const;
  kernels::Vector<T> bias() const { return bias_; }

 private:
  ParamStore<T>* store_;
  MoeShape shape_;
  int weight_ = -1;
  kernels::Vector<T> bias_{"routing_bias", 0};
};

// Every local expert of one layer, run in one call over rows grouped by local expert: rows
// [offset[j], offset[j+1]) go to local expert j. The place where a grouped GEMM goes. With
// `dense`, one replicated FFN named "<name>.w1" ... (a transformer's dense FFN block).
template <class T>
class Experts {
 public:
  Experts(ParamStore<T>& store, const std::string& name, int layer, const MoeShape& shape,
          bool dense = false);
  void forward(int slot, const kernels::Matrix<T>& in, std::span<const std::size_t> offset,
               const kernels::Matrix<T>& out);
  // Input gradient overwritten into din (sized like in).
  void backward(int slot, const kernels::Matrix<T>& dout, const kernels::Matrix<T>& din);
  // GEMM flops of one row through one expert, forward only.
  double forward_flops_per_row() const;
  // Activation checkpointing: drop what slot's forward saved / the backward's scratch.
  void release(int slot);
  void release_scratch();

 private:
  struct Local {
    int w1 = -1, b1 = -1, w2 = -1, b2 = -1, w3 = -1;
  };
  struct State {
    kernels::Matrix<T> in{"experts_in", 0, 0};
    std::vector<std::size_t> offset;
    kernels::Matrix<T> pre{"experts_pre", 0, 0};  // x W1 (+ b1)
    kernels::Matrix<T> up{"experts_up", 0, 0};    // x W3 (SwiGLU)
    kernels::Matrix<T> act{"experts_act", 0, 0};  // the hidden activation fed to W2
  };
  // c = a W + beta c (a W^T with transpose_weight) over every local expert at once, W being
  // each expert's `weight` (kernels::expert_gemm: one grouped call on CUDA).
  void grouped_gemm(bool transpose_weight, std::span<const std::size_t> offset,
                    const kernels::Matrix<T>& a, int Local::*weight, T beta,
                    const kernels::Matrix<T>& c) const;
  // fn(local expert, row range) for each local expert with rows under `offset`.
  template <class Fn>
  void for_each_expert(const std::vector<std::size_t>& offset, Fn&& fn) const {
    for (std::size_t j = 0; j < local_.size(); ++j)
      if (offset[j] != offset[j + 1]) fn(local_[j], std::make_pair(offset[j], offset[j + 1]));
  }

  ParamStore<T>* store_;
  MoeShape shape_;
  std::vector<Local> local_;
  SlotStates<State> states_;
  kernels::Matrix<T> dhidden_{"experts_dhidden", 0, 0};
  kernels::Matrix<T> dup_{"experts_dup", 0, 0};
};

template <class T>
class MoeLayer {
 public:
  // With shape.ep_size > 1, `expert_group` is the expert-parallel communicator (ep_size ranks,
  // this one at ep_rank); it must outlive the layer. `layer` is the global MoE layer index.
  MoeLayer(ParamStore<T>& store, const std::string& name, int layer, const MoeShape& shape,
           const parallel::Communicator* expert_group = nullptr);

  // y = sum over the token's kept slots of gate * expert(x). Collective over the expert group
  // (also for zero rows), and over the data-parallel group through reduce_stats when training.
  MoeStats forward(int slot, const kernels::Matrix<T>& x, const kernels::Matrix<T>& y, bool train,
                   const StatsReducer& reduce_stats = {}, const RoutingObserver& observer = {});
  // Gradient of y (plus the aux and z losses) into the parameters and dx; adds its expert and
  // dispatch times to `stats`.
  void backward(int slot, const kernels::Matrix<T>& dy, const kernels::Matrix<T>& dx, GradMode mode,
                MoeStats& stats);
  // Activation checkpointing ([train] recompute = "block"): release(slot) drops what slot's
  // forward saved except the global routed fractions (the load-balancing gradient needs the
  // data-parallel reduction the training forward did); recompute(slot, x, y) reruns the forward
  // on the same x with the same kernels, routes and all-to-alls (collective over the expert
  // group like forward), neither reducing statistics nor calling the observer again, so the
  // backward that follows is bit-identical. Its expert and dispatch seconds go to `stats`.
  void release(int slot);
  void release_scratch();
  void recompute(int slot, const kernels::Matrix<T>& x, const kernels::Matrix<T>& y,
                 MoeStats& stats);

  kernels::Vector<T> routing_bias() const { return router_.bias(); }
  int layer() const { return layer_; }
  const MoeShape& shape() const { return shape_; }

 private:
  using IntMatrix = Kokkos::View<int**, Kokkos::LayoutRight, kernels::MemSpace>;
  using IntVector = Kokkos::View<int*, kernels::MemSpace>;
  // What one forward saves for its backward.
  struct State {
    std::size_t n = 0;
    kernels::Matrix<T> x{"moe_x", 0, 0};
    kernels::Matrix<T> probs{"moe_probs", 0, 0};
    kernels::Vector<T> lse{"moe_lse", 0};
    IntMatrix choice{"moe_choice", 0, 0};
    kernels::Matrix<T> gate{"moe_gate", 0, 0};
    IntMatrix slot_pos{"moe_slot_pos", 0, 0};  // packed row of each (token, slot); -1: dropped
    IntVector token_of{"moe_token_of", 0};     // token of each packed row
    std::vector<std::size_t> expert_offset;    // packed rows [offset[e], offset[e+1]) -> expert e
    std::vector<double> fraction;              // global routed fraction per expert
    kernels::Matrix<T> packed_in{"moe_packed_in", 0, 0};    // this rank's rows, by global expert
    kernels::Matrix<T> expert_out{"moe_expert_out", 0, 0};  // their expert outputs, same order
    // Rows this rank's experts process, grouped by local expert. Without expert parallelism
    // these alias packed_in / expert_out.
    std::optional<parallel::DispatchPlan> plan;
    std::vector<std::size_t> local_offset;
    kernels::Matrix<T> local_in{"moe_local_in", 0, 0};
    kernels::Matrix<T> local_out{"moe_local_out", 0, 0};
  };
  ParamStore<T>* store_;
  int layer_;
  MoeShape shape_;
  const parallel::Communicator* expert_group_;
  Router<T> router_;
  Experts<T> experts_;
  parallel::TokenDispatcher dispatcher_;
  RoutingBookkeeping routing_;
  SlotStates<State> states_;
  // Backward scratch.
  kernels::Matrix<T> dprobs_{"moe_dprobs", 0, 0}, dgate_{"moe_dgate", 0, 0};
  kernels::Vector<T> aux_grad_{"moe_aux_grad", 0};
  kernels::Matrix<T> dexpert_out_{"moe_dexpert_out", 0, 0}, dpacked_{"moe_dpacked", 0, 0};
  kernels::Matrix<T> dlocal_out_{"moe_dlocal_out", 0, 0}, dlocal_in_{"moe_dlocal_in", 0, 0};
  kernels::Matrix<T> dx_{"moe_dx", 0, 0};
};

// A dense feed-forward block [n, d] -> [n, d] of the experts' shape (GELU MLP or SwiGLU, width
// shape.d_ff), replicated over data parallelism.
template <class T>
class FeedForward {
 public:
  FeedForward(ParamStore<T>& store, const std::string& name, const MoeShape& shape);
  void forward(int slot, const kernels::Matrix<T>& x, const kernels::Matrix<T>& y);
  void backward(int slot, const kernels::Matrix<T>& dy, const kernels::Matrix<T>& dx,
                GradMode mode);
  double forward_flops_per_row() const { return ffn_.forward_flops_per_row(); }
  // Activation checkpointing: drop what slot's forward saved / the backward's scratch.
  void release(int slot) { ffn_.release(slot); }
  void release_scratch();

 private:
  Experts<T> ffn_;
  kernels::Matrix<T> dx_{"ffn_dx", 0, 0};
};

extern template class FeedForward<float>;
extern template class FeedForward<double>;
extern template class Router<float>;
extern template class Router<double>;
extern template class Experts<float>;
extern template class Experts<double>;
extern template class MoeLayer<float>;
extern template class MoeLayer<double>;

}  // namespace daa::model
