// The training loop (see trainer.hpp), readable top to bottom: each step loads its micro-batches,
// runs them through the pipeline schedule, aggregates the gradients in robust rounds, clips and
// updates, then does what the step's number asks for (progress line, consensus round,
// evaluation, checkpoint). The model and the task are behind interfaces; phases are timed
// separately so the progress line and the summary split a step into compute and communication.
#include "daa/train/trainer.hpp"

#include <fmt/format.h>

#include <chrono>
#include <climits>
#include <cmath>
#include <csignal>
#include <filesystem>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "checkpointing.hpp"
#include "daa/core/clock.hpp"
#include "daa/core/error.hpp"
#include "daa/core/text.hpp"
#include "daa/core/timeline.hpp"
#include "daa/core/watchdog.hpp"
#include "daa/kernels/linalg.hpp"
#include "daa/obs/process.hpp"
#include "daa/parallel/pipeline.hpp"
#include "daa/parallel/topology.hpp"
#include "daa/train/memory_budget.hpp"
#include "daa/train/optimizer.hpp"
#include "observer.hpp"
#include "robust_training.hpp"
#include "routing_book.hpp"
#include "run_log.hpp"
#include "training_step.hpp"

namespace daa::train {
namespace {

using core::Clock;
constexpr auto since = core::seconds_since;

using core::ScopedSpan;
using core::Track;

// Set by SIGUSR1/SIGTERM; read once per step and agreed on by all ranks with the step's metrics.
volatile std::sig_atomic_t g_checkpoint_signal = 0;
extern "C" void on_checkpoint_signal(int signal) {
  g_checkpoint_signal = signal;
}

// Rank 0 creates the run directory (config.toml, log.txt, checkpoints/ without the leftovers of
// writes that never completed); a failure there ends every rank. Returns the progress log.
std::unique_ptr<obs::ProgressLog> open_run_directory(const core::Config& config,
                                                     const parallel::Communicator& world,
                                                     const TrainOptions& options,
                                                     const std::filesystem::path& run_dir) {
  return world.agreed([&] {
    std::string log_path;
    if (options.write_run_directory && world.is_root()) {
      std::error_code ec;
      std::filesystem::create_directories(run_dir, ec);
      if (ec)
        throw InputError("cannot create run directory '" + run_dir.string() + "': " + ec.message());
      obs::write_text_file((run_dir / "config.toml").string(), core::to_toml(config));
      log_path = (run_dir / "log.txt").string();
      // Found now, not at the first checkpoint an hour into the run.
      const std::filesystem::path checkpoints = run_dir / "checkpoints";
      std::filesystem::create_directories(checkpoints, ec);
      if (ec)
        throw InputError("cannot create checkpoint directory '" + checkpoints.string() +
                         "': " + ec.message());
      for (const auto& entry : std::filesystem::directory_iterator(checkpoints))
        if (entry.path().extension() == ".tmp") std::filesystem::remove(entry.path(), ec);
    }
    return std::make_unique<obs::ProgressLog>(world.is_root() && options.print_progress, log_path,
                                              !options.restart.empty());
  });
}

// The checksum of this rank's own parameters (equal within a replica group).
std::string local_checksum(const model::ParamStore<float>& params) {
  auto host = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), params.values());
  return parameter_checksum(std::vector<float>(host.data(), host.data() + host.extent(0)));
}

// Seconds of training (evaluation left out) since the loop began and since its steady state
// began: the first steps allocate workspaces and touch fresh pages, and peers that skip their
// warm-up steps compare like for like with the steady figure.
struct TrainingClock {
  static constexpr std::int64_t kSteadyAfter = 20;  // steps
  Clock::time_point start = Clock::now(), steady_start = start;
  double eval_at_steady_start = 0;
  void step_done(std::int64_t steps_run, const obs::PhaseTimes& phases) {
    if (steps_run != kSteadyAfter) return;
    steady_start = Clock::now();
    eval_at_steady_start = phases.eval;
  }
  double seconds(const obs::PhaseTimes& phases) const { return since(start) - phases.eval; }
  double steady_seconds(const obs::PhaseTimes& phases) const {
    return since(steady_start) - (phases.eval - eval_at_steady_start);
  }
};

// The summary's figures of the steps run (summary.steps already set), the final evaluation and
// the phases. Collective.
void summarize(obs::RunSummary& summary, const Task& task, const parallel::Communicator& world,
               const RunRecord& record, std::int64_t steps_run, const TrainingClock& clock,
               const obs::PhaseTimes& phases, const KernelTotals& kernels,
               const RobustTraining& robust, const Evaluation& test) {
  const auto global_batch = summary.global_batch;
  const std::int64_t steps_per_epoch = task.steps_per_epoch();
  summary.epochs = (summary.steps + steps_per_epoch - 1) / steps_per_epoch;
  summary.train_accuracy =
      record.epoch_samples > 0 ? record.epoch_correct / record.epoch_samples : 0;
  summary.test_loss = test.loss;
  summary.test_accuracy = test.accuracy;
  summary.bits_per_byte = test.bits_per_byte;
  for (std::size_t k = 0; k < test.domains.size(); ++k)
    summary.domain_bits_per_byte.emplace_back(test.domains[k], test.domain_bits_per_byte[k]);
  // Checkpoints count as training time: they are what the step loop pays for them. The slowest
  // rank sets the pace of a bulk-synchronous program.
  summary.train_seconds = world.allreduce_max(clock.seconds(phases));
  summary.samples_per_s = double(steps_run) * global_batch / summary.train_seconds;
  summary.tokens_per_s = summary.samples_per_s * task.rows_per_unit();
  const double steady_seconds = world.allreduce_max(clock.steady_seconds(phases));
  summary.steady_samples_per_s =
      steps_run > TrainingClock::kSteadyAfter
          ? double(steps_run - TrainingClock::kSteadyAfter) * global_batch / steady_seconds
          : summary.samples_per_s;
  summary.phases = phases;
  summary.phases.dispatch = kernels.dispatch_seconds;
  summary.expert_gflops =
      kernels.expert_seconds > 0 ? kernels.expert_flops / kernels.expert_seconds * 1e-9 : 0;
  summary.attention_gflops = kernels.attention_seconds > 0
                                 ? kernels.attention_flops / kernels.attention_seconds * 1e-9
                                 : 0;
  robust.fill_summary(summary);
  summary.aggregation_seconds = world.allreduce_max(robust.aggregation_seconds);
  summary.consensus_seconds = world.allreduce_max(robust.consensus_seconds);
  summary.staging_seconds = world.allreduce_max(robust.staging().total_seconds());
  summary.staging_bytes = world.allreduce_max(robust.staging().total_bytes());
}

// Seconds this rank has spent per phase since the run began, for the observer.
PhaseTotals phase_totals(const obs::PhaseTimes& phases, const KernelTotals& kernels,
                         const RobustTraining& robust, const obs::RunSummary& summary) {
  return PhaseTotals{.data = phases.data,
                     .compute = phases.compute,
                     .communication = phases.comm,
                     .all_to_all = kernels.dispatch_seconds,
                     .aggregation = robust.aggregation_seconds,
                     .consensus = robust.consensus_seconds,
                     .checkpoint = summary.checkpoint_seconds,
                     .eval = phases.eval,
                     .staging = robust.staging().total_seconds(),
                     .staging_bytes = double(robust.staging().total_bytes())};
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
  result.step = world.agreed(
      [&] { return load_checkpoint(parts, checkpoint, LoadScope::model_only, notes); });
  parallel::PipelineSchedule schedule(topology, model->width());
  result.evaluation = task.evaluate(*model, topology, schedule, [] {});
  return result;
}

void install_checkpoint_signals() {
  std::signal(SIGUSR1, on_checkpoint_signal);
  std::signal(SIGTERM, on_checkpoint_signal);
}

// [train] precision for every float product of this process (the router keeps fp32 by name).
void set_precision(core::Precision precision) {
  if (precision == core::Precision::bf16 && !kernels::bf16_available())
    throw Error(
        "config: [train] precision = \"bf16\" needs a CPU with AVX512_BF16 and a build for it "
        "(DAA_NATIVE_ARCH=ON on such a CPU) or the CUDA build; this build has neither",
        ExitCode::bad_input);
  kernels::set_default_precision(precision == core::Precision::bf16 ? kernels::Precision::bf16
                                                                    : kernels::Precision::fp32);
}

// Activation checkpointing frees a block's buffers after its forward and backward and allocates
// them again for the next: with glibc's defaults the freed top of the heap goes back to the OS
// and every step faults the same pages in again (measured: about 0.7 s of system time per step of
// the main job on one rank). Keeping freed memory in the heap reuses it; the peak stays that of
// the largest live set.
void keep_freed_memory() {
#if defined(__GLIBC__)
  mallopt(M_TRIM_THRESHOLD, INT_MAX);
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
#endif
}

std::string parameter_checksum(const std::vector<float>& values) {
  return core::hex64(core::fnv1a64(std::as_bytes(std::span(values))));
}

TrainResult run_training(const core::Config& config, const Task& task,
                         const parallel::Communicator& world, const TrainOptions& options) {
  const auto run_start = Clock::now();
  // ---- set-up: layout, run directory, model, optimizer, robust rounds, record, observers ----
  // Validates the layout; the model's block costs decide the split over pipeline stages.
  const parallel::Topology topology(world, config,
                                    model::stage_costs(config, task.inputs(), task.outputs()));
  kernels::set_blas_threads(config.runtime.blas_threads);
  set_precision(config.train.precision);
  if (config.train.recompute != core::Recompute::none) keep_freed_memory();
  const auto run_dir = std::filesystem::path(config.run.output_dir) / config.run.name;
  const std::string checkpoint_dir = (run_dir / "checkpoints").string();
  const bool checkpointing = options.write_run_directory;
  const std::unique_ptr<obs::ProgressLog> progress =
      open_run_directory(config, world, options, run_dir);
  const std::int64_t steps_per_epoch = task.steps_per_epoch();
  const std::int64_t total_steps =
      config.train.max_steps > 0 ? config.train.max_steps : config.train.epochs * steps_per_epoch;

  const std::unique_ptr<model::Model> model_owner =
      model::make_model(config, topology, task.inputs(), task.outputs());
  model::Model& model = *model_owner;
  parallel::PipelineSchedule schedule(topology, model.width());
  AdamW<float> optimizer(model.params(), {config.train.beta1, config.train.beta2, config.train.eps,
                                          config.train.weight_decay});
  RobustTraining robust(config, topology);  // collective: every rank builds it here
  RunRecord record(topology.layout().moe_layers(), config.moe.experts, task.category_names());
  RoutingBook routing(topology, config.moe.experts, record);
  obs::PhaseTimes phases;
  TrainingStep training_step(config, task, topology, model, schedule, optimizer, robust, routing,
                             phases, total_steps);
  RunLog log(config, task, topology, record, *progress, total_steps);
  RunObserver observer(config, topology, robust, *progress, checkpointing ? run_dir.string() : "",
                       total_steps);
  // After the observer: stopped before it goes.
  core::Watchdog watchdog(world.rank(), obs::host_name(), [&observer](const std::string& message) {
    observer.mark_failed(message);
  });
  const core::WatchdogConfig& limits = config.watchdog;
  watchdog.expect_progress("start-up", 0, limits.checkpoint_timeout_s);
  const RunObserver::FailureMark failure_mark(observer);  // status.json says "failed" on errors

  obs::RunSummary summary = log.begin(model);  // collective: counts the parameters

  const TrainingParts parts{
      config,          topology,   model, &optimizer, &robust, &record, &routing.consensus_counts(),
      steps_per_epoch, total_steps};
  const std::int64_t start_step = options.restart.empty() ? 0 : world.agreed([&] {
    return resume(parts, options.restart, checkpoint_dir, *progress);
  });
  if (start_step >= total_steps)
    progress->line(fmt::format(
        "restart: the checkpoint is at step {}, the input's last step is {}: nothing left to train",
        start_step, total_steps));
  summary.start_step = start_step;
  observer.started(start_step);

  auto write_checkpoint = [&](std::int64_t done) {
    watchdog.expect_progress("checkpoint write", done, limits.checkpoint_timeout_s);
    const ScopedSpan span(Track::checkpoint, "checkpoint");
    const auto t = Clock::now();
    const SavedCheckpoint saved =
        world.agreed([&] { return save_checkpoint(parts, done, checkpoint_dir); });
    const double seconds = since(t);
    summary.checkpoint_seconds += seconds;
    summary.checkpoints += 1;
    summary.last_checkpoint = saved.path;
    observer.checkpoint_written(done, saved.path);
    progress->line(fmt::format("checkpoint: step {} -> {} ({:.1f} MB in {:.2f} s, {:.0f} MB/s)",
                               done, saved.path, double(saved.bytes) * 1e-6, seconds,
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
    summary.test_accuracy_per_epoch.push_back(result.accuracy);
    return result;
  };

  // ---- the steps; each ends with what its number asks for ----
  TrainingClock clock;
  const double max_seconds = config.train.max_seconds;
  const auto out_of_time = [&] { return max_seconds > 0 && clock.seconds(phases) >= max_seconds; };
  double last_loss = record.loss.empty() ? 0 : record.loss.back();
  bool stopped_by_signal = false, stopped_by_time = false;
  std::int64_t step = start_step;
  while (step < total_steps && !stopped_by_signal && !stopped_by_time) {
    const std::int64_t done = ++step;
    watchdog.expect_progress("training step", done, limits.timeout_s);
    observer.step_begin(done);
    const auto step_start = Clock::now();
    StepResult result;
    try {
      result = training_step.run(done - 1, g_checkpoint_signal != 0, out_of_time);
    } catch (const DivergenceError& e) {
      observer.mark_failed(e.what());
      throw;
    }
    last_loss = result.loss;
    stopped_by_signal = result.stop_signal() && done != total_steps;
    stopped_by_time = result.out_of_time() && !stopped_by_signal;
    if (robust.consensus_due(done)) {
      const ScopedSpan span(Track::consensus, "consensus round");
      routing.consensus_round(model, robust, done - 1);
    }
    clock.step_done(done - start_step, phases);
    log.step_done(done, result, since(step_start), routing, model, robust,
                  /*window_end=*/done % config.log.every_steps == 0 || done == total_steps ||
                      stopped_by_time);
    const std::int64_t epoch = (done - 1) / steps_per_epoch + 1;
    if (done % steps_per_epoch == 0 && config.train.eval_each_epoch && done != total_steps &&
        !stopped_by_time) {
      const auto t = Clock::now();
      log.evaluation(done, fmt::format("epoch {} done", epoch), evaluate(done));
      log.pause(since(t));  // the window's step figures leave the evaluation out
    }
    const int every = config.checkpoint.every_steps;
    if (checkpointing && (stopped_by_signal || (every > 0 && done % every == 0 &&
                                                done != total_steps && !stopped_by_time)))
      log.pause(write_checkpoint(done));
    // The step as the outside sees it: its evaluation and checkpoint included.
    observer.step_end({.done = done,
                       .epoch = epoch,
                       .loss = result.loss,
                       .train_accuracy = result.accuracy,
                       .seconds = since(step_start),
                       .compute_seconds = result.compute,
                       .imbalance = result.imbalance,
                       .dropped = result.totals.dropped,
                       .samples = config.train.global_batch,
                       .began = step_start},
                      phase_totals(phases, training_step.kernels(), robust, summary));
  }
  if (stopped_by_signal)
    progress->line(fmt::format(
        "stopping after step {}: SIGUSR1/SIGTERM received{}; exit code {} asks to resubmit", step,
        checkpointing ? ", checkpoint written" : "", int(ExitCode::resubmit)));
  if (stopped_by_time)
    progress->line(
        fmt::format("stopping after step {}: [train] max_seconds = {} reached", step, max_seconds));

  // ---- the end: final evaluation and checkpoint, summary, parameters ----
  // A signalled run stops as soon as its checkpoint is safe: the allocation may end any moment.
  Evaluation test;
  test.loss = test.accuracy = std::nan("");
  if (!stopped_by_signal) {
    test = evaluate(step);
    // The last checkpoint holds the final evaluation too; a restart that had nothing left to
    // train leaves the existing one as it is.
    const bool final_checkpoint = checkpointing && step > start_step;
    log.evaluation(step, "final", test, /*recorded=*/final_checkpoint);
    if (final_checkpoint) write_checkpoint(step);
  }
  watchdog.expect_progress("finishing", step, limits.checkpoint_timeout_s);
  summary.steps = step;
  summary.stopped_by_signal = stopped_by_signal;
  summary.final_loss = last_loss;
  summarize(summary, task, world, record, step - start_step, clock, phases, training_step.kernels(),
            robust, test);
  if (robust.keeps_ledger()) progress->line(robust.ledger_report());

  TrainResult result;
  result.local_checksum = local_checksum(model.params());
  std::vector<float> values = gather_parameters(
      model.params(), topology, model::whole_model_params(config, task.inputs(), task.outputs()));
  if (world.is_root()) summary.parameter_checksum = parameter_checksum(values);
  observer.finish(stopped_by_signal ? "stopped-for-resubmit" : "finished",
                  phase_totals(phases, training_step.kernels(), robust, summary));
  watchdog.disarm();
  summary.wall_seconds = world.allreduce_max(since(run_start));
  if (core::is_language_model(config)) {
    // Each rank's own slot, summed: every rank learns every rank's peak.
    summary.peak_resident_bytes.assign(std::size_t(world.size()), 0);
    summary.peak_resident_bytes[std::size_t(world.rank())] = obs::peak_resident_memory_bytes();
    world.allreduce_sum(summary.peak_resident_bytes.data(), summary.peak_resident_bytes.size());
    summary.memory_estimate_bytes =
        estimate_memory(config, topology.layout(), task.outputs(), config.parallel.micro_batches)
            .total_bytes();
    summary.memory_budget_bytes = config.train.memory_budget_gb * 1e9;
  }
  progress->line(obs::summary_text(summary));
  if (options.keep_parameters) result.parameters = std::move(values);
  result.summary = std::move(summary);
  return result;
}

}  // namespace daa::train
