// One optimizer step of this rank (private to the train module): its micro-batches through the
// pipeline schedule, the gradients' robust rounds over the data-parallel groups, the global-norm
// clip and the AdamW update, with the step's figures reduced over the world in one all-reduce.
// The time it spends is split into data, compute and communication here, once.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "daa/core/config.hpp"
#include "daa/model/model.hpp"
#include "daa/obs/report.hpp"
#include "daa/parallel/pipeline.hpp"
#include "daa/parallel/topology.hpp"
#include "daa/train/optimizer.hpp"
#include "daa/train/task.hpp"
#include "robust_training.hpp"
#include "routing_book.hpp"

namespace daa::train {

// A step's figures summed over its micro-batches on this rank, then over the world in one
// all-reduce: the loss and hits of the rows the last stages scored, the aux losses, dropped
// token-slots, the stop votes, and each MoE layer's expert load.
struct StepTotals {
  double loss_sum = 0, aux_loss = 0, correct = 0, scored = 0, dropped = 0;
  double stop_signal = 0;           // ranks that got SIGUSR1/SIGTERM
  double out_of_time = 0;           // ranks past [train] max_seconds
  std::vector<double> expert_load;  // [moe layers][experts], kept token-slots

  explicit StepTotals(std::size_t loads = 0) : expert_load(loads, 0.0) {}
  void reduce(const parallel::Communicator& world);
  // The most loaded expert over its layer's mean, worst layer.
  double worst_imbalance(int experts) const;
};

// What a step tells the loop; every field but the times is the same on every rank.
struct StepResult {
  StepTotals totals;
  double loss = 0;           // mean cross-entropy of the scored rows plus the aux losses
  double accuracy = 0;       // top-1 hits over scored rows
  double lr = 0;             // the learning rate the update used
  double imbalance = 0;      // worst layer's max/mean expert load, mean over micro-batches
  double compute = 0;        // seconds of this rank's computing in the step
  double communication = 0;  // seconds of this rank's communication in the step
  bool stop_signal() const { return totals.stop_signal > 0; }
  bool out_of_time() const { return totals.out_of_time > 0; }
};

// Forward and backward FLOPs and seconds of the expert FFNs and of attention, and the token
// all-to-all's seconds, summed over the run: the summary's kernel rates.
struct KernelTotals {
  double expert_seconds = 0, expert_flops = 0, attention_seconds = 0, attention_flops = 0;
  double dispatch_seconds = 0;
  void add(const model::StepStats& stats);
};

class TrainingStep {
 public:
  // `phases` accumulates this rank's seconds per phase over the run (the loop adds evaluation).
  TrainingStep(const core::Config& config, const Task& task, const parallel::Topology& topology,
               model::Model& model, parallel::PipelineSchedule& schedule, AdamW<float>& optimizer,
               RobustTraining& robust, RoutingBook& routing, obs::PhaseTimes& phases,
               std::int64_t total_steps);

  // Step `step` (0-based). `stop_signal` is this rank's vote to stop after it; `out_of_time`,
  // asked once the step's work is done, its vote that the time budget is spent. Collective over
  // the world; throws DivergenceError on every rank when the loss is not finite.
  StepResult run(std::int64_t step, bool stop_signal, const std::function<bool()>& out_of_time);

  const KernelTotals& kernels() const { return kernels_; }

 private:
  // Divides the summed gradients so that every contribution to a robust round is a mean.
  void scale_gradients();

  const core::Config& config_;
  const Task& task_;
  const parallel::Topology& topology_;
  model::Model& model_;
  parallel::PipelineSchedule& schedule_;
  AdamW<float>& optimizer_;
  RobustTraining& robust_;
  RoutingBook& routing_;
  obs::PhaseTimes& phases_;
  const std::int64_t total_steps_;
  const std::size_t micro_rows_;            // rows of one micro-batch on this rank
  std::vector<model::StageBatch> batches_;  // per slot of the schedule
  std::vector<model::StepStats> slot_stats_;
  KernelTotals kernels_;
};

}  // namespace daa::train
