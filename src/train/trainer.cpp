// The training loop (see trainer.hpp), readable top to bottom: each step loads its micro-batches,
// runs them through the pipeline schedule, aggregates the gradients in robust rounds, clips and
// updates, then does what the step's number asks for (progress line, consensus round,
// evaluation, checkpoint). The model and the task are behind interfaces; phases are timed
// separately so the progress line and the summary split a step into compute and communication.
#include "daa/train/trainer.hpp"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <map>
#include <numeric>
#include <optional>
#include <sstream>
#include <thread>

#include "checkpointing.hpp"
#include "daa/core/clock.hpp"
#include "daa/core/error.hpp"
#include "daa/core/text.hpp"
#include "daa/core/timeline.hpp"
#include "daa/core/watchdog.hpp"
#include "daa/io/checkpoint.hpp"
#include "daa/kernels/linalg.hpp"
#include "daa/obs/process.hpp"
#include "daa/parallel/expert_registry.hpp"
#include "daa/parallel/pipeline.hpp"
#include "daa/parallel/topology.hpp"
#include "daa/train/optimizer.hpp"
#include "observer.hpp"
#include "robust_training.hpp"

namespace daa::train {
namespace {

using core::Clock;
constexpr auto since = core::seconds_since;

using core::ScopedSpan;
using core::Track;

// A step's figures summed over its micro-batches on this rank, then over the world in one
// all-reduce: the loss and hits of the rows the last stages scored, the aux losses, dropped
// token-slots, the checkpoint signal, and each MoE layer's expert load.
struct StepTotals {
  double loss_sum = 0, aux_loss = 0, correct = 0, scored = 0, dropped = 0, signal = 0;
  std::vector<double> expert_load;  // [moe layers][experts], kept token-slots

  explicit StepTotals(std::size_t loads) : expert_load(loads, 0.0) {}
  void reduce(const parallel::Communicator& world) {
    std::vector<double> packed = {loss_sum, aux_loss, correct, scored, dropped, signal};
    packed.insert(packed.end(), expert_load.begin(), expert_load.end());
    world.allreduce_sum(packed.data(), packed.size());
    loss_sum = packed[0], aux_loss = packed[1], correct = packed[2], scored = packed[3];
    dropped = packed[4], signal = packed[5];
    std::copy(packed.begin() + 6, packed.end(), expert_load.begin());
  }
  // The most loaded expert over its layer's mean, worst layer.
  double worst_imbalance(int experts) const {
    double worst = 0;
    for (std::size_t at = 0; at < expert_load.size(); at += std::size_t(experts)) {
      const auto first = expert_load.begin() + std::ptrdiff_t(at);
      const double sum = std::accumulate(first, first + experts, 0.0);
      if (sum > 0)
        worst = std::max(worst, *std::max_element(first, first + experts) * experts / sum);
    }
    return worst;
  }
};

// Sums over the steps of one progress-line window.
struct Window {
  double loss = 0, correct = 0, scored = 0, compute = 0, comm = 0, imbalance = 0, dropped = 0;
  double steps = 0;
  Clock::time_point start = Clock::now();
};

// Set by SIGUSR1/SIGTERM; read once per step and agreed on by all ranks with the step's metrics.
volatile std::sig_atomic_t g_checkpoint_signal = 0;
extern "C" void on_checkpoint_signal(int signal) {
  g_checkpoint_signal = signal;
}

}  // namespace

CheckpointEvaluation evaluate_checkpoint(const core::Config& config, const Task& task,
                                         const parallel::Communicator& world,
                                         const std::string& checkpoint) {
  const parallel::Topology topology(world, config,
                                    model::stage_costs(config, task.inputs(), task.outputs()));
  const std::unique_ptr<model::Model> model =
      model::make_model(config, topology, task.inputs(), task.outputs());
  const TrainingParts parts{config, topology, *model};
  std::vector<std::string> notes;
  CheckpointEvaluation result;
  std::exception_ptr error;
  try {
    result.step = load_checkpoint(parts, checkpoint, LoadScope::model_only, notes);
  } catch (...) {
    error = std::current_exception();
  }
  world.agree_on_failure(error);
  parallel::PipelineSchedule schedule(topology, model->width());
  result.evaluation = task.evaluate(*model, topology, schedule, [] {});
  return result;
}

void install_checkpoint_signals() {
  std::signal(SIGUSR1, on_checkpoint_signal);
  std::signal(SIGTERM, on_checkpoint_signal);
}

std::string parameter_checksum(const std::vector<float>& values) {
  return core::hex64(core::fnv1a64(std::as_bytes(std::span(values))));
}

TrainResult run_training(const core::Config& config, const Task& task,
                         const parallel::Communicator& world, const TrainOptions& options) {
  const auto run_start = Clock::now();
  // Validates the layout; the model's block costs decide the split over pipeline stages.
  const parallel::Topology topology(world, config,
                                    model::stage_costs(config, task.inputs(), task.outputs()));
  const parallel::RankPlace& place = topology.place();
  const int ep = topology.layout().expert_parallel;
  const int micro_batches = config.parallel.micro_batches;
  kernels::set_blas_threads(config.runtime.blas_threads);

  const bool root = world.is_root();
  std::string log_path;
  const bool checkpointing = options.write_run_directory;
  const std::string run_dir =
      (std::filesystem::path(config.run.output_dir) / config.run.name).string();
  const std::string checkpoint_dir = run_dir + "/checkpoints";
  // Only rank 0 touches the run directory; a failure there must still end every rank.
  std::exception_ptr setup_error;
  std::optional<obs::ProgressLog> log;
  try {
    if (options.write_run_directory && root) {
      const std::filesystem::path dir = run_dir;
      std::error_code ec;
      std::filesystem::create_directories(dir, ec);
      if (ec)
        throw InputError("cannot create run directory '" + dir.string() + "': " + ec.message());
      obs::write_text_file((dir / "config.toml").string(), core::to_toml(config));
      log_path = (dir / "log.txt").string();
      // Found now, not at the first checkpoint an hour into the run.
      std::filesystem::create_directories(checkpoint_dir, ec);
      if (ec)
        throw InputError("cannot create checkpoint directory '" + checkpoint_dir +
                         "': " + ec.message());
      // Leftovers of writes that never completed (a crash or a full disk).
      for (const auto& entry : std::filesystem::directory_iterator(checkpoint_dir))
        if (entry.path().extension() == ".tmp") std::filesystem::remove(entry.path(), ec);
    }
    log.emplace(root && options.print_progress, log_path, !options.restart.empty());
  } catch (...) {
    setup_error = std::current_exception();
  }
  world.agree_on_failure(setup_error);

  const int global_batch = config.train.global_batch;
  const std::int64_t steps_per_epoch = task.steps_per_epoch();
  const std::int64_t total_steps =
      config.train.max_steps > 0 ? config.train.max_steps : config.train.epochs * steps_per_epoch;

  const std::unique_ptr<model::Model> model_owner =
      model::make_model(config, topology, task.inputs(), task.outputs());
  model::Model& model = *model_owner;
  parallel::PipelineSchedule schedule(topology, model.width());
  auto& params = model.params();
  AdamW<float> optimizer(params, {config.train.beta1, config.train.beta2, config.train.eps,
                                  config.train.weight_decay});
  // Collective: every rank builds it at the same point.
  RobustTraining robust(config, topology);
  RunObserver observer(config, topology, robust, *log, options.write_run_directory ? run_dir : "",
                       total_steps);
  // After the observer: stopped before it goes.
  core::Watchdog watchdog(world.rank(), obs::host_name(), [&observer](const std::string& message) {
    observer.mark_failed(message);
  });
  const core::WatchdogConfig& limits = config.watchdog;
  watchdog.expect_progress("start-up", 0, limits.checkpoint_timeout_s);
  // status.json says "failed" when an error leaves the run (every rank throws alike).
  struct FailureMark {
    RunObserver& observer;
    const int uncaught = std::uncaught_exceptions();
    ~FailureMark() {
      if (std::uncaught_exceptions() > uncaught)
        observer.mark_failed("an error ended the run; the failing rank printed it on stderr");
    }
  } failure_mark{observer};
  // Spans of the trace window, ending now.
  auto trace = [](Track track, const char* name, Clock::time_point begin) {
    core::Timeline::process().add(track, name, begin, Clock::now());
  };
  obs::RunSummary summary;
  summary.name = config.run.name;
  summary.model = model.kind();
  summary.ranks = world.size();
  summary.global_batch = global_batch;
  summary.unit = task.unit();
  // Parameter counts of the whole model: every stage's dense part and all expert shards.
  double counts[2] = {
      place.dp_index == 0 ? double(params.dense_size() - params.tied_copy_size()) : 0.0,
      place.edp_index == 0 ? double(params.size() - params.dense_size()) : 0.0};
  world.allreduce_sum(counts, 2);
  const auto expert_parameters = std::int64_t(counts[1]);
  summary.parameters = std::int64_t(counts[0]) + expert_parameters;
  const int stages = topology.layout().pipeline_stages;
  log->line(fmt::format(
      "daa-swarm: {} on {} ranks ({} pipeline stage{}, expert parallelism {}) | {} parameters ({} "
      "dense, {} in experts) | {} | {} steps of {} {}",
      config.run.name, world.size(), stages, stages == 1 ? "" : "s", ep, summary.parameters,
      summary.parameters - expert_parameters, expert_parameters, task.describe(), total_steps,
      global_batch, task.unit()));

  obs::PhaseTimes phases;
  double expert_seconds = 0, expert_flops = 0, dispatch_seconds = 0;
  double attention_seconds = 0, attention_flops = 0;
  // Reductions inside the model (load-balancing statistics) count as communication.
  const model::StatsReducer reduce_stats = [&](double* values, std::size_t count) {
    const auto t = Clock::now();
    topology.data_parallel().allreduce_sum(values, count);
    phases.comm += since(t);
  };

  // MoE layers of the whole model, and those this stage holds.
  const int layers = topology.layout().moe_layers(), experts = config.moe.experts;
  const int first_layer = place.first_moe_layer, local_layers = place.last_moe_layer - first_layer;
  // This rank's rows of the expert registry for the current log window: what its tokens sent to
  // every expert, and itself as a home of its local experts.
  std::vector<parallel::ExpertEntry> registry_rows;
  for (int l = 0; l < layers; ++l)
    for (int e = 0; e < experts; ++e) {
      parallel::ExpertEntry row;
      row.layer = l;
      row.expert = e;
      if (l >= first_layer && l < place.last_moe_layer && e >= place.first_expert &&
          e < place.first_expert + place.local_experts)
        row.home_ranks.push_back(world.rank());
      registry_rows.push_back(std::move(row));
    }
  // This rank's token counts per (local MoE layer, expert) since the last consensus round.
  std::vector<double> consensus_counts(std::size_t(local_layers * experts), 0.0);
  const std::vector<std::string> categories = task.category_names();
  RunRecord record(layers, experts, categories);
  const TrainingParts parts{config,  topology,          model,           &optimizer, &robust,
                            &record, &consensus_counts, steps_per_epoch, total_steps};
  std::int64_t start_step = 0;
  if (!options.restart.empty()) {
    std::exception_ptr restart_error;
    try {
      start_step = resume(parts, options.restart, checkpoint_dir, *log);
    } catch (...) {
      restart_error = std::current_exception();
    }
    world.agree_on_failure(restart_error);
    if (start_step >= total_steps)
      log->line(
          fmt::format("restart: the checkpoint is at step {}, the input's last step is {}: "
                      "nothing left to train",
                      start_step, total_steps));
  }
  summary.start_step = start_step;
  observer.started(start_step);
  const auto loop_start = Clock::now();
  // Steady-state throughput leaves out the first steps, which allocate workspaces and touch
  // fresh pages (benchmarks against peers that skip their warm-up steps compare like for like).
  constexpr std::int64_t kSteadyAfter = 20;
  auto steady_start = loop_start;
  double steady_eval_before = 0;
  double last_loss = record.loss.empty() ? 0 : record.loss.back();
  bool stopped_by_signal = false;

  auto write_checkpoint = [&](std::int64_t done) {
    watchdog.expect_progress("checkpoint write", done, limits.checkpoint_timeout_s);
    const ScopedSpan span(Track::checkpoint, "checkpoint");
    const auto t = Clock::now();
    SavedCheckpoint saved;
    std::exception_ptr error;  // the same on every rank: one of them reports it
    try {
      saved = save_checkpoint(parts, done, checkpoint_dir);
    } catch (...) {
      error = std::current_exception();
    }
    world.agree_on_failure(error);
    const double seconds = since(t);
    summary.checkpoint_seconds += seconds;
    summary.checkpoints += 1;
    summary.last_checkpoint = saved.path;
    observer.checkpoint_written(done, saved.path);
    log->line(fmt::format("checkpoint: step {} -> {} ({:.1f} MB in {:.2f} s, {:.0f} MB/s)", done,
                          saved.path, double(saved.bytes) * 1e-6, seconds,
                          double(saved.bytes) * 1e-6 / seconds));
    return seconds;
  };
  auto evaluate = [&](std::int64_t done) {
    const auto t = Clock::now();
    const ScopedSpan span(Track::eval, "evaluation");
    const Evaluation result = task.evaluate(model, topology, schedule, [&] {
      watchdog.expect_progress("evaluation", done, limits.timeout_s);
    });
    phases.eval += since(t);
    return result;
  };

  // Rank 0's rows for the end of a log window: routing bias of every layer (held by the first
  // data-parallel rank of its stage) and the ledger's reputation per rank. Collective.
  auto record_window = [&](std::int64_t done) {
    std::vector<float> bias(std::size_t(layers * experts), 0.0f);
    if (place.dp_index == 0)
      for (int l = first_layer; l < place.last_moe_layer; ++l) {
        const auto host =
            Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), model.routing_bias(l));
        std::copy_n(host.data(), experts, bias.begin() + std::ptrdiff_t(l * experts));
      }
    world.allreduce_sum(bias.data(), bias.size());
    if (!root) return;
    record.window_step.push_back(done);
    record.window_bias.insert(record.window_bias.end(), bias.begin(), bias.end());
    if (!robust.keeps_ledger()) return;
    for (const robust::RankAccount& a : robust.state().ledger->accounts()) {
      record.reputation_step.push_back(done);
      record.reputation_rank.push_back(a.rank);
      record.reputation_rounds.push_back(a.rounds);
      record.reputation_accepted.push_back(a.accepted);
      record.reputation.push_back(a.reputation());
      record.reputation_reward.push_back(a.reward);
    }
  };
  auto record_evaluation = [&](std::int64_t done, const Evaluation& e) {
    if (!root) return;
    record.eval_step.push_back(done);
    record.eval_epoch.push_back((done + steps_per_epoch - 1) / steps_per_epoch);
    record.test_loss.push_back(e.loss);
    record.test_accuracy.push_back(e.accuracy);
  };
  auto evaluation_line = [&](const char* what, const Evaluation& e) {
    if (e.domains.empty())
      return fmt::format("{} | test loss {:.4f} | test accuracy {:.2f}%", what, e.loss,
                         100 * e.accuracy);
    std::string domains;
    for (std::size_t k = 0; k < e.domains.size(); ++k)
      domains += fmt::format("{}{} {:.3f}", k ? ", " : "", e.domains[k], e.domain_bits_per_byte[k]);
    return fmt::format(
        "{} | validation loss {:.4f} | {:.3f} bits/byte ({}) | next-token accuracy {:.2f}%", what,
        e.loss, e.bits_per_byte, domains, 100 * e.accuracy);
  };

  auto phase_totals = [&] {
    return PhaseTotals{.data = phases.data,
                       .compute = phases.compute,
                       .communication = phases.comm,
                       .all_to_all = dispatch_seconds,
                       .aggregation = robust.aggregation_seconds,
                       .consensus = robust.consensus_seconds,
                       .checkpoint = summary.checkpoint_seconds,
                       .eval = phases.eval};
  };

  const int dp = topology.data_parallel().size();
  const std::size_t micro_rows =
      std::size_t(global_batch / micro_batches / dp) * std::size_t(task.rows_per_unit());
  // Micro-batches in flight on one stage: at most min(micro_batches, stages) under 1F1B.
  std::vector<model::StageBatch> batches(std::size_t(schedule.slots(micro_batches)));
  std::vector<model::StepStats> slot_stats(batches.size());
  Window window;
  std::int64_t step = start_step;
  for (; step < total_steps; ++step) {
    watchdog.expect_progress("training step", step + 1, limits.timeout_s);
    observer.step_begin(step + 1);
    const auto step_start = Clock::now();
    const std::int64_t epoch = step / steps_per_epoch;
    // A restart inside an epoch keeps the epoch's counts from the checkpoint.
    if (step % steps_per_epoch == 0) record.epoch_correct = record.epoch_samples = 0;
    StepTotals totals(std::size_t(layers * experts));
    totals.signal = g_checkpoint_signal != 0 ? 1.0 : 0.0;
    double step_imbalance = 0;  // worst layer's max/mean expert load, averaged over micro-batches
    double compute = 0;
    const double comm_before = phases.comm;
    params.zero_grads();

    // ---- forward and backward of every micro-batch, through the pipeline ----
    auto forward = [&](int micro, int slot, const kernels::Matrix<float>& received) {
      model::StageBatch& batch = batches[std::size_t(slot)];
      auto t = Clock::now();
      task.load(batch, step, micro, place.dp_index, dp, robust.flips_labels());
      phases.data += since(t);
      trace(Track::data, "batch", t);
      // Expert x category counts of this micro-batch, from the MoE layers' routing.
      const model::RoutingObserver count_categories = [&](const model::RoutingEvent& event) {
        const std::size_t sets = std::size_t(batch.category_sets), C = categories.size();
        for (std::size_t row = 0; row < event.tokens; ++row)
          for (int k = 0; k < event.top_k; ++k) {
            const int e = event.choice[row * std::size_t(event.top_k) + std::size_t(k)];
            if (e < 0) continue;
            for (std::size_t s = 0; s < sets; ++s) {
              const int c = batch.categories[row * sets + s];
              if (c >= 0 && std::size_t(c) < C)
                ++record.specialization[(std::size_t(event.layer * experts + e)) * C +
                                        std::size_t(c)];
            }
          }
      };
      const double comm_inside = phases.comm;
      t = Clock::now();
      model::StepStats& stats = slot_stats[std::size_t(slot)];
      stats = model.forward(slot, batch, received, /*train=*/true, reduce_stats, count_categories);
      Kokkos::fence();
      trace(Track::compute, "forward", t);
      compute += since(t) - (phases.comm - comm_inside) - stats.dispatch_seconds;
      phases.comm += stats.dispatch_seconds;
      totals.loss_sum += stats.loss_sum;
      totals.aux_loss += stats.aux_loss;
      totals.correct += double(stats.correct);
      totals.scored += double(stats.scored);
      double worst = 0;
      for (const model::MoeStats& layer : stats.moe) {
        for (int e = 0; e < experts; ++e) {
          const auto tokens = double(layer.tokens_per_expert[std::size_t(e)]);
          consensus_counts[std::size_t((layer.layer - first_layer) * experts + e)] += tokens;
          totals.expert_load[std::size_t(layer.layer * experts + e)] += tokens;
          record.registry_gate_sum[std::size_t(layer.layer * experts + e)] +=
              layer.gate_sum_per_expert[std::size_t(e)];
          parallel::ExpertEntry& row = registry_rows[std::size_t(layer.layer * experts + e)];
          row.tokens += layer.tokens_per_expert[std::size_t(e)];
          row.gate_sum += layer.gate_sum_per_expert[std::size_t(e)];
        }
        totals.dropped += double(layer.dropped);
        worst = std::max(worst, layer.imbalance);
      }
      step_imbalance += worst / micro_batches;
      return model.output(slot);
    };
    auto backward = [&](int, int slot, const kernels::Matrix<float>& received_grad) {
      model::StepStats& stats = slot_stats[std::size_t(slot)];
      const double dispatch_before = stats.dispatch_seconds;
      const auto t = Clock::now();
      model.backward(slot, received_grad, stats);
      trace(Track::compute, "backward", t);
      const double dispatch = stats.dispatch_seconds - dispatch_before;
      compute += since(t) - dispatch;
      phases.comm += dispatch;
      // The micro-batch's forward and backward costs, before its slot takes the next one.
      expert_seconds += stats.expert_seconds;
      expert_flops += stats.expert_flops;
      dispatch_seconds += stats.dispatch_seconds;
      attention_seconds += stats.attention_seconds;
      attention_flops += stats.attention_flops;
      return model.input_grad(slot);
    };
    parallel::PipelineTiming pipeline;
    schedule.train_step(micro_batches, micro_rows, forward, backward, pipeline);
    model.share_tied_gradients();
    phases.comm += pipeline.comm_seconds;

    // ---- aggregate: robust rounds over the data-parallel and expert-data-parallel groups ----
    auto t = Clock::now();
    auto grads = params.grads();
    const std::size_t dense = params.dense_size();
    // Each rank's gradient is a sum over micro-batches of mean-loss gradients, and an expert's
    // gradient on its home rank also sums the contributions of all ep ranks that sent it tokens:
    // scaled first, so that every contribution to a round is a mean gradient (the robust rules'
    // radii and distances then do not depend on the layout).
    if (micro_batches > 1 || ep > 1) {
      const float dense_scale = 1.0f / float(micro_batches);
      const float expert_scale = 1.0f / float(micro_batches * ep);
      Kokkos::parallel_for(
          "gradient_scale", kernels::Range(0, grads.extent(0)), KOKKOS_LAMBDA(const std::size_t i) {
            grads(i) *= i < dense ? dense_scale : expert_scale;
          });
    }
    {
      // Rounds run on host memory (the same memory on host backends).
      auto host = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), grads);
      robust.aggregate(std::span<float>(host.data(), host.extent(0)), dense, step,
                       double(global_batch / dp));
      Kokkos::deep_copy(grads, host);
    }
    trace(Track::aggregation, "gradient rounds", t);
    const auto metrics_start = Clock::now();
    totals.reduce(world);
    trace(Track::metrics, "metrics all-reduce", metrics_start);
    phases.comm += since(t);
    stopped_by_signal = totals.signal > 0;

    // Aux losses are global per layer and summed on every data-parallel rank of its stage.
    const double loss = totals.loss_sum / totals.scored + totals.aux_loss / (dp * micro_batches);
    if (!std::isfinite(loss)) {
      const std::string message =
          fmt::format("training diverged: loss is {} at step {}", loss, step + 1);
      observer.mark_failed(message);
      throw DivergenceError(message);
    }

    // ---- update: global-norm clip, learning rate, AdamW ----
    t = Clock::now();
    double norm_reduce = 0;
    clip_gradients(grads, config.train.grad_clip,
                   {.dense_size = dense,
                    .count_dense = place.dp_index == 0,
                    .count_expert = place.edp_index == 0,
                    .group = &world,
                    .reduce_seconds = &norm_reduce});
    const double lr = learning_rate(step, total_steps, config.train.warmup_steps, config.train.lr,
                                    config.train.min_lr);
    optimizer.update(params, lr, step + 1);
    model.share_tied_parameters();
    if (const double delay = robust.simulated_delay_seconds(); delay > 0)
      std::this_thread::sleep_for(std::chrono::duration<double>(delay));
    Kokkos::fence();
    compute += since(t) - norm_reduce;
    phases.comm += norm_reduce;
    trace(Track::compute, "clip and update", t);
    phases.compute += compute;

    // ---- what this step's number asks for ----
    last_loss = loss;
    const double accuracy = totals.correct / totals.scored;
    record.epoch_correct += totals.correct;
    record.epoch_samples += totals.scored;
    if (root) {
      record.step.push_back(step + 1);
      record.loss.push_back(loss);
      record.train_accuracy.push_back(accuracy);
      record.learning_rate.push_back(lr);
      record.samples_per_s.push_back(global_batch / since(step_start));
      record.dropped_tokens.push_back(std::int64_t(totals.dropped));
      record.imbalance.push_back(totals.worst_imbalance(experts));
      for (const double load : totals.expert_load) record.expert_load.push_back(std::int64_t(load));
    }
    window.loss += loss;
    window.correct += totals.correct;
    window.scored += totals.scored;
    window.compute += compute;
    window.comm += phases.comm - comm_before;
    window.imbalance += step_imbalance;
    window.dropped += totals.dropped;
    window.steps += 1;
    const std::int64_t done = step + 1;
    if (robust.consensus_due(done) && local_layers > 0) {
      const ScopedSpan span(Track::consensus, "consensus round");
      std::vector<float> bias(consensus_counts.size());
      std::vector<Kokkos::View<float*, Kokkos::HostSpace>> host_bias;
      for (int l = 0; l < local_layers; ++l) {
        host_bias.push_back(Kokkos::create_mirror_view_and_copy(
            Kokkos::HostSpace(), model.routing_bias(first_layer + l)));
        std::copy_n(host_bias.back().data(), experts, bias.begin() + std::ptrdiff_t(l) * experts);
      }
      robust.consensus(consensus_counts, bias, step);
      for (int l = 0; l < local_layers; ++l) {
        std::copy_n(bias.begin() + std::ptrdiff_t(l) * experts, experts,
                    host_bias[std::size_t(l)].data());
        Kokkos::deep_copy(model.routing_bias(first_layer + l), host_bias[std::size_t(l)]);
      }
      std::fill(consensus_counts.begin(), consensus_counts.end(), 0.0);
    }
    if (done == start_step + kSteadyAfter) {
      steady_start = Clock::now();
      steady_eval_before = phases.eval;
    }
    const bool epoch_end = done % steps_per_epoch == 0;
    if (done % config.log.every_steps == 0 || done == total_steps) {
      const ScopedSpan span(Track::metrics, "progress line and registry");
      const double elapsed = since(window.start);
      const double per_step = elapsed / window.steps;
      log->line(fmt::format(
          "step {:>{}}/{} | epoch {} | loss {:.4f} | acc {:5.1f}% | lr {:.2e} | expert load "
          "max/mean {:.2f}, dropped {:.0f} | {:.0f} {}/s | {:.1f} ms/step (compute {:.1f}, "
          "comm {:.1f}) | ETA {}",
          done, std::to_string(total_steps).size(), total_steps, epoch + 1,
          window.loss / window.steps, 100 * window.correct / window.scored, lr,
          window.imbalance / window.steps, window.dropped / window.steps,
          window.steps * global_batch / elapsed, task.unit(), 1e3 * per_step,
          1e3 * window.compute / window.steps, 1e3 * window.comm / window.steps,
          obs::format_duration(per_step * double(total_steps - done))));
      window = Window{};
      // Every rank reaches this step: the registry exchange is collective.
      const auto registry = parallel::ExpertRegistry::all_gather(world, registry_rows);
      if (layers > 0) log->line(registry.summary_line());
      if (robust.keeps_ledger()) log->line(robust.progress_line());
      for (parallel::ExpertEntry& row : registry_rows) row.tokens = 0, row.gate_sum = 0;
      record_window(done);
      window.start = Clock::now();
    }
    if (epoch_end && config.train.eval_each_epoch && done != total_steps) {
      t = Clock::now();
      const Evaluation test = evaluate(done);
      summary.test_accuracy_per_epoch.push_back(test.accuracy);
      record_evaluation(done, test);
      log->line(evaluation_line(fmt::format("epoch {} done", epoch + 1).c_str(), test));
      // The window's step figures leave the evaluation out, and keep the steps before it.
      window.start += Clock::now() - t;
    }
    const int every = config.checkpoint.every_steps;
    if (checkpointing && done != total_steps &&
        ((every > 0 && done % every == 0) || stopped_by_signal))
      window.start += std::chrono::duration_cast<Clock::duration>(
          std::chrono::duration<double>(write_checkpoint(done)));
    // The step as the outside sees it: its evaluation and checkpoint included.
    observer.step_end({.done = done,
                       .epoch = epoch + 1,
                       .loss = loss,
                       .train_accuracy = accuracy,
                       .seconds = since(step_start),
                       .compute_seconds = compute,
                       .imbalance = step_imbalance,
                       .dropped = totals.dropped,
                       .samples = global_batch,
                       .began = step_start},
                      phase_totals());
    if (stopped_by_signal && done != total_steps) {
      log->line(
          fmt::format("stopping after step {}: SIGUSR1/SIGTERM received{}; exit code {} "
                      "asks to resubmit",
                      done, checkpointing ? ", checkpoint written" : "", int(ExitCode::resubmit)));
      ++step;
      break;
    }
  }
  stopped_by_signal = stopped_by_signal && step < total_steps;
  // A signalled run stops as soon as its checkpoint is safe: the allocation may end any moment.
  Evaluation test;
  test.loss = test.accuracy = std::nan("");
  if (!stopped_by_signal) {
    test = evaluate(step);
    summary.test_accuracy_per_epoch.push_back(test.accuracy);
    log->line(evaluation_line("final", test));
    // The last checkpoint holds the final evaluation too; a restart that had nothing left to
    // train leaves the existing one as it is.
    if (checkpointing && step > start_step) {
      record_evaluation(step, test);
      write_checkpoint(step);
    }
  }

  watchdog.expect_progress("finishing", step, limits.checkpoint_timeout_s);
  // Checkpoints count as training time: they are what the step loop pays for them.
  summary.train_seconds = since(loop_start) - phases.eval;
  double steady_seconds = since(steady_start) - (phases.eval - steady_eval_before);
  const std::int64_t steps_run = step - start_step;
  summary.steps = step;
  summary.stopped_by_signal = stopped_by_signal;
  summary.epochs = (step + steps_per_epoch - 1) / steps_per_epoch;
  summary.final_loss = last_loss;
  summary.train_accuracy =
      record.epoch_samples > 0 ? record.epoch_correct / record.epoch_samples : 0;
  summary.test_loss = test.loss;
  summary.test_accuracy = test.accuracy;
  summary.bits_per_byte = test.bits_per_byte;
  for (std::size_t k = 0; k < test.domains.size(); ++k)
    summary.domain_bits_per_byte.emplace_back(test.domains[k], test.domain_bits_per_byte[k]);
  // The slowest rank sets the pace of a bulk-synchronous program.
  summary.train_seconds = world.allreduce_max(summary.train_seconds);
  summary.samples_per_s = double(steps_run) * global_batch / summary.train_seconds;
  summary.tokens_per_s = summary.samples_per_s * task.rows_per_unit();
  steady_seconds = world.allreduce_max(steady_seconds);
  summary.steady_samples_per_s =
      steps_run > kSteadyAfter ? double(steps_run - kSteadyAfter) * global_batch / steady_seconds
                               : summary.samples_per_s;
  summary.phases = phases;
  summary.expert_gflops = expert_seconds > 0 ? expert_flops / expert_seconds * 1e-9 : 0;
  summary.attention_gflops = attention_seconds > 0 ? attention_flops / attention_seconds * 1e-9 : 0;

  summary.phases.dispatch = dispatch_seconds;
  robust.fill_summary(summary);
  summary.aggregation_seconds = world.allreduce_max(robust.aggregation_seconds);
  summary.consensus_seconds = world.allreduce_max(robust.consensus_seconds);
  if (robust.keeps_ledger()) log->line(robust.ledger_report());

  TrainResult result;
  {
    auto local = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), params.values());
    result.local_checksum =
        parameter_checksum(std::vector<float>(local.data(), local.data() + local.extent(0)));
  }
  std::vector<float> values = gather_parameters(
      params, topology, model::whole_model_params(config, task.inputs(), task.outputs()));
  if (world.is_root()) summary.parameter_checksum = parameter_checksum(values);
  observer.finish(stopped_by_signal ? "stopped-for-resubmit" : "finished", phase_totals());
  watchdog.disarm();
  summary.wall_seconds = world.allreduce_max(since(run_start));
  log->line(obs::summary_text(summary));
  if (options.keep_parameters) result.parameters = std::move(values);
  result.summary = std::move(summary);
  return result;
}

}  // namespace daa::train
