// The Mixture-of-Experts classifier with explicit forward and backward passes:
//   input linear + GELU -> N x [pre-RMSNorm -> router -> top-k experts -> combine, + residual]
//   -> classifier -> softmax cross-entropy (+ Switch load-balancing loss, + router z-loss).
// Templated on the scalar so gradient checks run in double and training in float.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "daa/core/config.hpp"
#include "daa/kernels/views.hpp"
#include "daa/model/moe_layer.hpp"
#include "daa/model/params.hpp"
#include "daa/parallel/communicator.hpp"
#include "daa/parallel/topology.hpp"

namespace daa::model {

struct ModelShape {
  int inputs = 784;
  int classes = 10;
  int d_model = 128;
  int moe_layers = 2;
  bool rmsnorm = true;
  double init_std = 0.0;      // 0: 1/sqrt(fan_in)
  std::uint64_t seed = 1234;  // [run] seed's default
  // Every MoE layer (moe.d_model must equal d_model), with this rank's expert shard.
  MoeShape moe;
  // Pipeline parallelism: this rank holds MoE blocks [first_block, last_block); the first stage
  // also holds the input layer, the last the classifier and the loss.
  int first_block = 0;
  int last_block = -1;  // -1: all blocks (set from moe_layers by shape_from_config)
  int held_blocks() const { return (last_block < 0 ? moe_layers : last_block) - first_block; }
  bool has_input() const { return first_block == 0; }
  bool has_classifier() const { return last_block < 0 || last_block == moe_layers; }
  bool operator==(const ModelShape&) const = default;
};

// The shape for one rank; ep_size and ep_rank describe its expert shard.
ModelShape shape_from_config(const core::Config& config, int inputs, int classes, int ep_size = 1,
                             int ep_rank = 0);

// Parameters per block (norm, router, experts) and of the input layer and the classifier, for
// the split over pipeline stages.
parallel::StageCosts classifier_stage_costs(const core::Config& config, int inputs, int classes);

// Routing figures of one MoE layer for one batch (see moe_layer.hpp).
using LayerRoutingStats = MoeStats;

struct BatchStats {
  std::int64_t samples = 0;
  double loss_sum = 0;        // sum over local samples of cross-entropy
  double aux_loss = 0;        // sum over layers of weighted aux + z losses (this rank's objective)
  std::int64_t correct = 0;   // argmax hits
  double expert_seconds = 0;  // time in this rank's expert FFNs (forward + backward)
  double expert_flops = 0;    // GEMM flops of this rank's expert FFNs
  double dispatch_seconds = 0;  // token all-to-all of expert parallelism
  std::vector<LayerRoutingStats> layers;
};

template <class T>
class MoeModel {
 public:
  // With shape.ep_size > 1, `expert_group` is the expert-parallel communicator (ep_size ranks,
  // this one at index ep_rank); tokens then travel to their experts' ranks and back. The model
  // keeps a reference: the communicator must outlive it.
  explicit MoeModel(const ModelShape& shape, const parallel::Communicator* expert_group = nullptr);
  ~MoeModel();
  MoeModel(const MoeModel&) = delete;
  MoeModel& operator=(const MoeModel&) = delete;

  const ModelShape& shape() const { return shape_; }
  ParamStore<T>& params() { return params_; }
  const ParamStore<T>& params() const { return params_; }

  // Writes the deterministic initial values (counter-based RNG keyed by parameter name).
  void initialize();

  // Forward pass and loss on a local batch x [n, inputs], labels [n] (n may be 0: with expert
  // parallelism every rank of the group must make the same calls). With `train`, also the
  // backward pass: gradients of (mean cross-entropy + aux losses) are accumulated into
  // params().grads() (callers zero them first). Only for a model that is a whole pipeline.
  BatchStats run(const kernels::Matrix<T>& x, const Kokkos::View<int*, kernels::MemSpace>& labels,
                 bool train, const StatsReducer& reduce_stats = {},
                 const RoutingObserver& observer = {});

  // One pipeline stage on micro-batch `slot` (slots let several micro-batches be in flight).
  // `input` is x [n, inputs] on the first stage, else the previous stage's output [n, d_model],
  // which must stay alive until backward(slot). The last stage computes the loss with `labels`.
  BatchStats forward(int slot, const kernels::Matrix<T>& input,
                     const Kokkos::View<int*, kernels::MemSpace>& labels, bool train,
                     const StatsReducer& reduce_stats = {}, const RoutingObserver& observer = {});
  // Backward of forward(slot): the last stage starts from its loss (grad_output unused), other
  // stages from the gradient of their output. Adds expert and dispatch times to `stats`.
  void backward(int slot, const kernels::Matrix<T>& grad_output, BatchStats& stats);
  kernels::Matrix<T> output(int slot) const;      // this stage's output of forward(slot)
  kernels::Matrix<T> input_grad(int slot) const;  // gradient w.r.t. its input (not first stage)

  // Logits of the last run() or forward(0) on the last stage, [n, classes].
  kernels::Matrix<T> logits() const;

  // Routing bias per layer (selection only, not gate values); zero until consensus rounds.
  kernels::Vector<T> routing_bias(int layer) const;

 private:
  struct Workspace;
  ModelShape shape_;
  const parallel::Communicator* expert_group_;
  ParamStore<T> params_;
  std::unique_ptr<Workspace> ws_;
};

extern template class MoeModel<float>;
extern template class MoeModel<double>;

}  // namespace daa::model
