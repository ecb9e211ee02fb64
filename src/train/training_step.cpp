// One optimizer step (see training_step.hpp): forward and backward of every micro-batch through
// the 1F1B schedule, then aggregate, clip and update. Time inside the model's reductions and the
// token all-to-all counts as communication, the rest of forward/backward/update as compute.
#include "training_step.hpp"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <numeric>
#include <thread>

#include "daa/core/clock.hpp"
#include "daa/core/error.hpp"
#include "daa/core/timeline.hpp"

namespace daa::train {
namespace {

using core::Clock;
using core::Track;
constexpr auto since = core::seconds_since;

// A span of the trace window, ending now.
void trace(Track track, const char* name, Clock::time_point begin) {
  core::Timeline::process().add(track, name, begin, Clock::now());
}

}  // namespace

void StepTotals::reduce(const parallel::Communicator& world) {
  std::vector<double> packed = {loss_sum, aux_loss,    correct,    scored,
                                dropped,  stop_signal, out_of_time};
  packed.insert(packed.end(), expert_load.begin(), expert_load.end());
  world.allreduce_sum(packed.data(), packed.size());
  loss_sum = packed[0], aux_loss = packed[1], correct = packed[2], scored = packed[3];
  dropped = packed[4], stop_signal = packed[5], out_of_time = packed[6];
  std::copy(packed.begin() + 7, packed.end(), expert_load.begin());
}

double StepTotals::worst_imbalance(int experts) const {
  double worst = 0;
  for (std::size_t at = 0; at < expert_load.size(); at += std::size_t(experts)) {
    const auto first = expert_load.begin() + std::ptrdiff_t(at);
    const double sum = std::accumulate(first, first + experts, 0.0);
    if (sum > 0) worst = std::max(worst, *std::max_element(first, first + experts) * experts / sum);
  }
  return worst;
}

void KernelTotals::add(const model::StepStats& stats) {
  expert_seconds += stats.expert_seconds;
  expert_flops += stats.expert_flops;
  attention_seconds += stats.attention_seconds;
  attention_flops += stats.attention_flops;
  dispatch_seconds += stats.dispatch_seconds;
}

TrainingStep::TrainingStep(const core::Config& config, const Task& task,
                           const parallel::Topology& topology, model::Model& model,
                           parallel::PipelineSchedule& schedule, AdamW<float>& optimizer,
                           RobustTraining& robust, RoutingBook& routing, obs::PhaseTimes& phases,
                           std::int64_t total_steps)
    : config_(config),
      task_(task),
      topology_(topology),
      model_(model),
      schedule_(schedule),
      optimizer_(optimizer),
      robust_(robust),
      routing_(routing),
      phases_(phases),
      total_steps_(total_steps),
      micro_rows_(std::size_t(config.train.global_batch / config.parallel.micro_batches /
                              topology.data_parallel().size()) *
                  std::size_t(task.rows_per_unit())),
      // Micro-batches in flight on one stage: at most min(micro_batches, stages) under 1F1B.
      batches_(std::size_t(schedule.slots(config.parallel.micro_batches))),
      slot_stats_(batches_.size()) {}

StepResult TrainingStep::run(std::int64_t step, bool stop_signal,
                             const std::function<bool()>& out_of_time) {
  const parallel::Communicator& world = topology_.world();
  const int experts = config_.moe.experts, micro_batches = config_.parallel.micro_batches;
  const int dp = topology_.data_parallel().size(), dp_index = topology_.place().dp_index;
  StepResult result{.totals = StepTotals(std::size_t(topology_.layout().moe_layers() * experts))};
  StepTotals& totals = result.totals;
  totals.stop_signal = stop_signal ? 1 : 0;
  const double comm_before = phases_.comm;
  model_.params().zero_grads();

  // ---- forward and backward of every micro-batch, through the pipeline ----
  // Reductions inside the model (load-balancing statistics) count as communication.
  const model::StatsReducer reduce_stats = [&](double* values, std::size_t count) {
    const auto t = Clock::now();
    topology_.data_parallel().allreduce_sum(values, count);
    phases_.comm += since(t);
  };
  auto forward = [&](int micro, int slot, const kernels::Matrix<float>& received) {
    model::StageBatch& batch = batches_[std::size_t(slot)];
    auto t = Clock::now();
    task_.load(batch, step, micro, dp_index, dp, robust_.flips_labels());
    phases_.data += since(t);
    trace(Track::data, "batch", t);
    const double comm_inside = phases_.comm;
    t = Clock::now();
    model::StepStats& stats = slot_stats_[std::size_t(slot)];
    stats = model_.forward(slot, batch, received, /*train=*/true, reduce_stats,
                           routing_.category_counter(batch));
    Kokkos::fence();
    trace(Track::compute, "forward", t);
    result.compute += since(t) - (phases_.comm - comm_inside) - stats.dispatch_seconds;
    phases_.comm += stats.dispatch_seconds;
    totals.loss_sum += stats.loss_sum;
    totals.aux_loss += stats.aux_loss;
    totals.correct += double(stats.correct);
    totals.scored += double(stats.scored);
    for (const model::MoeStats& layer : stats.moe) totals.dropped += double(layer.dropped);
    result.imbalance += routing_.add(stats.moe, totals.expert_load) / micro_batches;
    return model_.output(slot);
  };
  auto backward = [&](int, int slot, const kernels::Matrix<float>& received_grad) {
    model::StepStats& stats = slot_stats_[std::size_t(slot)];
    const double dispatch_before = stats.dispatch_seconds;
    const auto t = Clock::now();
    model_.backward(slot, received_grad, stats);
    trace(Track::compute, "backward", t);
    const double dispatch = stats.dispatch_seconds - dispatch_before;
    result.compute += since(t) - dispatch;
    phases_.comm += dispatch;
    // The micro-batch's forward and backward costs, before its slot takes the next one.
    kernels_.add(stats);
    return model_.input_grad(slot);
  };
  parallel::PipelineTiming pipeline;
  schedule_.train_step(micro_batches, micro_rows_, forward, backward, pipeline);
  phases_.comm += pipeline.comm_seconds;
  auto t = Clock::now();
  model_.share_tied_gradients();  // a tied head's gradient joins the embedding's on stage 0
  phases_.comm += since(t);

  // ---- aggregate: robust rounds over the data-parallel and expert-data-parallel groups ----
  t = Clock::now();
  scale_gradients();
  auto& params = model_.params();
  // Rounds run on host memory: one counted staging step (none on host backends).
  robust_.aggregate(params.grads(), params.dense_size(), step,
                    double(config_.train.global_batch / dp));
  trace(Track::aggregation, "gradient rounds", t);
  const auto metrics_start = Clock::now();
  totals.out_of_time = out_of_time() ? 1 : 0;
  totals.reduce(world);
  trace(Track::metrics, "metrics all-reduce", metrics_start);
  phases_.comm += since(t);

  // Aux losses are global per layer and summed on every data-parallel rank of its stage.
  result.loss = totals.loss_sum / totals.scored + totals.aux_loss / (dp * micro_batches);
  result.accuracy = totals.correct / totals.scored;
  if (!std::isfinite(result.loss))
    throw DivergenceError(
        fmt::format("training diverged: loss is {} at step {}", result.loss, step + 1));

  // ---- update: global-norm clip, learning rate, AdamW ----
  t = Clock::now();
  double update_comm = 0;  // the norm's all-reduce and the tied copy's update: communication
  clip_gradients(params.grads(), config_.train.grad_clip,
                 {.dense_size = params.dense_size(),
                  .count_dense = topology_.place().dp_index == 0,
                  .count_expert = topology_.place().edp_index == 0,
                  .group = &world,
                  .reduce_seconds = &update_comm});
  result.lr = learning_rate(step, total_steps_, config_.train.warmup_steps, config_.train.lr,
                            config_.train.min_lr);
  optimizer_.update(params, result.lr, step + 1);
  const auto tied = Clock::now();
  model_.share_tied_parameters();  // stage 0's updated embedding replaces the head's copy
  update_comm += since(tied);
  if (const double delay = robust_.simulated_delay_seconds(); delay > 0)
    std::this_thread::sleep_for(std::chrono::duration<double>(delay));
  Kokkos::fence();
  result.compute += since(t) - update_comm;
  phases_.comm += update_comm;
  trace(Track::compute, "clip and update", t);
  phases_.compute += result.compute;
  result.communication = phases_.comm - comm_before;
  return result;
}

namespace {

// grads[i] *= dense_scale below `dense`, expert_scale from there. A free function: nvcc refuses a
// device lambda inside a private member function.
template <class Grads>
void scale_dense_and_experts(const Grads& grads, std::size_t dense, float dense_scale,
                             float expert_scale) {
  Kokkos::parallel_for(
      "gradient_scale", kernels::Range(0, grads.extent(0)),
      KOKKOS_LAMBDA(const std::size_t i) { grads(i) *= i < dense ? dense_scale : expert_scale; });
}

}  // namespace

void TrainingStep::scale_gradients() {
  // Each rank's gradient is a sum over micro-batches of mean-loss gradients, and an expert's
  // gradient on its home rank also sums the contributions of all ep ranks that sent it tokens:
  // scaled first, so that every contribution to a round is a mean gradient (the robust rules'
  // radii and distances then do not depend on the layout).
  const int micro_batches = config_.parallel.micro_batches;
  const int ep = topology_.layout().expert_parallel;
  if (micro_batches == 1 && ep == 1) return;
  auto grads = model_.params().grads();
  const std::size_t dense = model_.params().dense_size();
  const float dense_scale = 1.0f / float(micro_batches);
  const float expert_scale = 1.0f / float(micro_batches * ep);
  scale_dense_and_experts(grads, dense, dense_scale, expert_scale);
}

}  // namespace daa::train
