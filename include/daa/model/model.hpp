// What the training loop and the pipeline schedule see of a model, whichever it is: one pipeline
// stage's forward and backward per micro-batch slot over a StageBatch, its parameters, and its
// MoE layers' routing bias. The Fashion-MNIST classifier and the transformer language model
// implement it; a task (train/) fills the batches and reads the statistics.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "daa/core/config.hpp"
#include "daa/kernels/views.hpp"
#include "daa/model/moe_layer.hpp"
#include "daa/model/params.hpp"
#include "daa/parallel/topology.hpp"

namespace daa::model {

template <class T>
class LanguageModel;

using TokenIds = Kokkos::View<int*, kernels::MemSpace>;

// One micro-batch as a stage sees it. The first stage reads `features` (classifier) or `tokens`
// (language model); the last scores `targets` (class labels or next tokens; -1: none).
struct StageBatch {
  kernels::Matrix<float> features{"batch_features", 0, 0};
  TokenIds tokens{"batch_tokens", 0};
  TokenIds targets{"batch_targets", 0};
  int seq_len = 1;       // rows per sequence (1 for the classifier)
  std::size_t rows = 0;  // rows of the micro-batch
  // Per row, the task's categories for the expert-specialization statistic (host): row r's
  // categories are categories[r * category_sets + s] for s < category_sets.
  std::vector<int> categories;
  int category_sets = 0;
};

// What one forward (plus its backward's costs) reports.
struct StepStats {
  std::int64_t scored = 0;   // rows with a target scored by this rank (samples or tokens)
  double loss_sum = 0;       // their cross-entropy, in nats
  std::int64_t correct = 0;  // top-1 hits
  double aux_loss = 0;       // aux + z losses of this rank's objective
  double expert_seconds = 0, expert_flops = 0, dispatch_seconds = 0;
  double attention_seconds = 0, attention_flops = 0;
  std::vector<MoeStats> moe;  // per MoE layer held, in order
  // Last stage, forward without train: each row's loss (0 without a target), for per-category
  // figures such as bits per byte by domain.
  std::vector<double> row_loss;
};

class Model {
 public:
  virtual ~Model() = default;
  // "classifier" or "language-model": recorded in checkpoints, which refuse another kind.
  virtual const char* kind() const = 0;
  virtual ParamStore<float>& params() = 0;
  virtual int width() const = 0;  // activation columns between stages (d_model)
  // `received` is the previous stage's output (unused on the first stage). With `train`, the
  // backward that follows starts from the mean loss over the global micro-batch's rows
  // (reduce_stats sums routing statistics over the data-parallel group).
  virtual StepStats forward(int slot, const StageBatch& batch,
                            const kernels::Matrix<float>& received, bool train,
                            const StatsReducer& reduce_stats, const RoutingObserver& observer) = 0;
  // Adds the backward's expert, dispatch and attention costs to `stats`.
  virtual void backward(int slot, const kernels::Matrix<float>& grad_output, StepStats& stats) = 0;
  virtual kernels::Matrix<float> output(int slot) const = 0;
  virtual kernels::Matrix<float> input_grad(int slot) const = 0;
  // Routing bias of MoE layer `moe_layer` (global index), held by this stage.
  virtual kernels::Vector<float> routing_bias(int moe_layer) const = 0;
  // The checkpoint path below /model/ of a parameter: stable names, independent of the layout.
  virtual std::string checkpoint_path(const ParamInfo& info) const = 0;
  // The language model behind the interface (generation needs its layers); null otherwise.
  virtual LanguageModel<float>* language_model() { return nullptr; }
  // Parameters that two pipeline stages hold (the language model's tied embedding table on the
  // first stage and its copy as the head on the last). Collective over Topology::end_stages();
  // no-ops for a model without such parameters. After the pipeline schedule's backward, before
  // any gradient is scaled, aggregated or clipped: the original's holder gets the sum of both
  // gradients and the copy's gradient becomes zero (so the copy adds nothing to a norm).
  virtual void share_tied_gradients() {}
  // After the optimizer's update: the copies take the originals' values, bit for bit.
  virtual void share_tied_parameters() {}
};

// The model the input describes, as the stage `place` of `topology` holds it (its blocks and
// expert shard), for data with `inputs` features and `outputs` classes (classifier) or a
// vocabulary of `outputs` tokens (language model). A one-rank topology gives the whole model.
std::unique_ptr<Model> make_model(const core::Config& config, const parallel::Topology& topology,
                                  int inputs, int outputs);
// The whole model's parameter layout (names, sizes, offsets) as one rank holds it, for placing
// gathered parameters in a layout-independent order. No communicator needed.
ParamStore<float> whole_model_params(const core::Config& config, int inputs, int outputs);
// Block costs for the pipeline split of the input's model.
parallel::StageCosts stage_costs(const core::Config& config, int inputs, int outputs);

}  // namespace daa::model
