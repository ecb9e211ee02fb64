// The training loop (see trainer.hpp). Phases are timed separately so the progress line and the
// summary can split a step into compute and communication.
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
#include "daa/core/error.hpp"
#include "daa/core/timeline.hpp"
#include "daa/core/watchdog.hpp"
#include "daa/io/checkpoint.hpp"
#include "daa/kernels/linalg.hpp"
#include "daa/model/moe_model.hpp"
#include "daa/obs/process.hpp"
#include "daa/parallel/expert_registry.hpp"
#include "daa/parallel/topology.hpp"
#include "daa/robust/attacks.hpp"
#include "daa/train/optimizer.hpp"
#include "observer.hpp"
#include "robust_training.hpp"

namespace daa::train {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

using Model = model::MoeModel<float>;
using core::ScopedSpan;
using core::Track;

// Device batch buffers plus their host staging twins (the same memory on host backends).
struct Batch {
  kernels::Matrix<float> x{"batch_x", 0, 0};
  Kokkos::View<int*, kernels::MemSpace> y{"batch_y", 0};

  // flip_labels: a simulated label-flipping rank trains on classes - 1 - label.
  void load(const io::ImageSet& set, std::span<const std::int64_t> indices,
            bool flip_labels = false) {
    kernels::ensure_extent(x, indices.size(), std::size_t(set.features()));
    kernels::ensure_extent(y, indices.size());
    auto x_host = Kokkos::create_mirror_view(x);
    auto y_host = Kokkos::create_mirror_view(y);
    io::fill_batch(set, indices, x_host.data(), y_host.data());
    if (flip_labels)
      for (std::size_t i = 0; i < indices.size(); ++i)
        y_host(i) = robust::flip_label(y_host(i), set.classes);
    Kokkos::deep_copy(x, x_host);
    Kokkos::deep_copy(y, y_host);
  }
};

struct EvalResult {
  double loss = 0;
  double accuracy = 0;
};

// Test-set evaluation: each data-parallel index takes a contiguous slice, in chunks, and runs it
// through the pipeline stages; the last stage sums loss and hits, reduced once over the world.
// Every rank makes the same number of model calls (some with zero rows), because with expert
// parallelism each call is collective over the expert-parallel group. A watchdog, if given,
// gets `timeout` seconds per chunk.
EvalResult evaluate(Model& model, const io::ImageSet& set, const parallel::Topology& topology,
                    int d_model, core::Watchdog* watchdog = nullptr, std::int64_t step = 0,
                    double timeout = 0) {
  const ScopedSpan span(Track::eval, "evaluation");
  const parallel::Communicator& world = topology.world();
  const int dp = topology.layout().data_parallel, index = topology.place().dp_index;
  const int stages = topology.layout().pipeline_stages, stage = topology.place().stage;
  const std::int64_t begin = set.count * index / dp;
  const std::int64_t end = set.count * (index + 1) / dp;
  constexpr std::int64_t chunk = 1000;
  const std::int64_t largest_slice = (set.count + dp - 1) / dp;
  const std::int64_t calls = (largest_slice + chunk - 1) / chunk;
  std::vector<std::int64_t> indices;
  Batch batch;
  kernels::Matrix<float> received("eval_received", 0, 0);
  double sums[3] = {0, 0, 0};  // loss, correct, samples
  for (std::int64_t c = 0; c < calls; ++c) {
    if (watchdog) watchdog->expect_progress("evaluation", step, timeout);
    indices.clear();
    for (std::int64_t i = begin + c * chunk; i < std::min(end, begin + (c + 1) * chunk); ++i)
      indices.push_back(i);
    batch.load(set, indices);
    if (stage > 0) {
      kernels::ensure_extent(received, indices.size(), std::size_t(d_model));
      DAA_MPI_CHECK(MPI_Recv(received.data(), int(received.size()), MPI_FLOAT,
                             topology.previous_stage_rank(), 0, world.comm(), MPI_STATUS_IGNORE));
    }
    const model::BatchStats stats =
        model.forward(0, stage == 0 ? batch.x : received, batch.y, /*train=*/false);
    if (stage + 1 < stages) {
      Kokkos::fence();
      const kernels::Matrix<float> out = model.output(0);
      DAA_MPI_CHECK(MPI_Send(out.data(), int(out.size()), MPI_FLOAT, topology.next_stage_rank(), 0,
                             world.comm()));
    }
    sums[0] += stats.loss_sum;
    sums[1] += double(stats.correct);
    sums[2] += double(stats.samples);
  }
  world.allreduce_sum(sums, 3);
  return {sums[0] / sums[2], sums[1] / sums[2]};
}

// All parameters in the order a one-rank model holds them, on rank 0 (empty elsewhere): each rank
// sends what it holds first (its dense parameters if it is data-parallel index 0 of its stage,
// its expert shard if it is the first holder), named, and rank 0 places them by name in the
// layout of a one-rank model. Independent of the layout, so checksums compare across layouts.
std::vector<float> gather_parameters(const model::ParamStore<float>& params,
                                     const parallel::Topology& topology,
                                     const model::ModelShape& whole_model) {
  const parallel::Communicator& world = topology.world();
  const parallel::RankPlace& place = topology.place();
  auto host = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), params.values());
  std::string names;
  std::vector<float> values;
  for (const model::ParamInfo& p : params.infos()) {
    const bool first_holder =
        p.kind == model::ParamKind::dense ? place.dp_index == 0 : place.edp_index == 0;
    if (!first_holder) continue;
    names += p.name + '\n';
    values.insert(values.end(), host.data() + p.offset, host.data() + p.offset + p.size());
  }
  // Counts and displacements on rank 0 for one MPI_Gatherv.
  auto layout_of = [&](int count, std::vector<int>& counts, std::vector<int>& displs) {
    counts.assign(world.size(), 0);
    displs.assign(world.size(), 0);
    DAA_MPI_CHECK(MPI_Gather(&count, 1, MPI_INT, counts.data(), 1, MPI_INT, 0, world.comm()));
    for (int r = 1; r < world.size(); ++r) displs[r] = displs[r - 1] + counts[r - 1];
  };
  std::vector<int> name_counts, name_displs, value_counts, value_displs;
  layout_of(int(names.size()), name_counts, name_displs);
  layout_of(int(values.size()), value_counts, value_displs);
  const bool root = world.rank() == 0;
  std::string all_names(root ? std::size_t(name_displs.back() + name_counts.back()) : 0, '\0');
  std::vector<float> all_values(root ? std::size_t(value_displs.back() + value_counts.back()) : 0);
  DAA_MPI_CHECK(MPI_Gatherv(names.data(), int(names.size()), MPI_CHAR, all_names.data(),
                            name_counts.data(), name_displs.data(), MPI_CHAR, 0, world.comm()));
  DAA_MPI_CHECK(MPI_Gatherv(values.data(), int(values.size()), MPI_FLOAT, all_values.data(),
                            value_counts.data(), value_displs.data(), MPI_FLOAT, 0, world.comm()));
  if (!root) return {};
  // The one-rank layout: names, offsets and sizes (its own values are not used).
  const Model layout(whole_model);
  std::map<std::string, const model::ParamInfo*> by_name;
  for (const model::ParamInfo& p : layout.params().infos()) by_name[p.name] = &p;
  std::vector<float> global(layout.params().size());
  std::size_t placed = 0, cursor = 0, start = 0;
  for (std::size_t end = all_names.find('\n'); end != std::string::npos;
       start = end + 1, end = all_names.find('\n', start)) {
    const auto it = by_name.find(all_names.substr(start, end - start));
    if (it == by_name.end() || cursor + it->second->size() > all_values.size())
      throw Error("train::gather_parameters: unexpected parameter '" +
                  all_names.substr(start, end - start) + "'");
    std::copy_n(all_values.begin() + std::ptrdiff_t(cursor), it->second->size(),
                global.begin() + std::ptrdiff_t(it->second->offset));
    cursor += it->second->size();
    placed += it->second->size();
  }
  if (placed != global.size())
    throw Error("train::gather_parameters: gathered " + std::to_string(placed) + " of " +
                std::to_string(global.size()) + " parameters");
  return global;
}

// Set by SIGUSR1/SIGTERM; read once per step and agreed on by all ranks with the step's metrics.
volatile std::sig_atomic_t g_checkpoint_signal = 0;
extern "C" void on_checkpoint_signal(int signal) {
  g_checkpoint_signal = signal;
}

// --restart: the checkpoint to continue from, loaded into `parts`; returns its step (0: none).
// With "auto", rank 0 lists the run directory's checkpoints and every rank tries them in that
// order, skipping (with a warning) those that fail verification. Collective; every error is
// thrown on every rank alike.
std::int64_t resume(const TrainingParts& parts, const std::string& restart, const std::string& dir,
                    obs::ProgressLog& log) {
  const parallel::Communicator& world = parts.topology.world();
  std::vector<std::string> candidates;
  if (restart == "auto") {
    std::vector<std::string> notes;
    std::string listed;
    if (world.is_root())
      for (const io::CheckpointCandidate& c : io::restart_candidates(dir, notes))
        listed += c.path + "\n";
    for (const std::string& note : notes) log.line("restart: " + note);
    std::istringstream lines(world.broadcast(listed));
    for (std::string line; std::getline(lines, line);) candidates.push_back(line);
  } else {
    candidates.push_back(restart);
  }
  for (const std::string& file : candidates) {
    std::vector<std::string> notes;
    try {
      const std::int64_t step = load_checkpoint(parts, file, LoadScope::everything, notes);
      for (const std::string& note : notes) log.line(note);
      return step;
    } catch (const io::CheckpointError& e) {
      if (restart != "auto") throw;
      log.line(std::string("warning: ") + e.what() + "; trying the next older checkpoint");
    }
  }
  log.line("restart: no valid checkpoint in '" + dir + "'; starting from step 0");
  return 0;
}

}  // namespace

CheckpointEvaluation evaluate_checkpoint(const core::Config& config, const io::Dataset& data,
                                         const parallel::Communicator& world,
                                         const std::string& checkpoint) {
  const parallel::Topology topology(world, config, data.train.features(), data.train.classes);
  const parallel::RankPlace& place = topology.place();
  model::ModelShape shape =
      model::shape_from_config(config, data.train.features(), data.train.classes,
                               topology.layout().expert_parallel, place.ep_rank);
  shape.first_block = place.first_block;
  shape.last_block = place.last_block;
  Model model(shape, &topology.expert_parallel());
  const TrainingParts parts{config, topology, model};
  std::vector<std::string> notes;
  CheckpointEvaluation result;
  std::exception_ptr error;
  try {
    result.step = load_checkpoint(parts, checkpoint, LoadScope::model_only, notes);
  } catch (...) {
    error = std::current_exception();
  }
  world.agree_on_failure(error);
  const EvalResult test = evaluate(model, data.test, topology, config.model.d_model);
  result.test_loss = test.loss;
  result.test_accuracy = test.accuracy;
  return result;
}

void install_checkpoint_signals() {
  std::signal(SIGUSR1, on_checkpoint_signal);
  std::signal(SIGTERM, on_checkpoint_signal);
}

std::string parameter_checksum(const std::vector<float>& values) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  const auto* bytes = reinterpret_cast<const unsigned char*>(values.data());
  for (std::size_t i = 0; i < values.size() * sizeof(float); ++i)
    h = (h ^ bytes[i]) * 0x100000001b3ULL;
  return fmt::format("{:016x}", h);
}

void check_data_fits(const core::Config& config, const io::Dataset& data) {
  if (data.train.count < config.train.global_batch)
    throw ConfigError(fmt::format("[train] global_batch = {} exceeds the {} training samples",
                                  config.train.global_batch, data.train.count));
}

TrainResult run_training(const core::Config& config, const io::Dataset& data,
                         const parallel::Communicator& world, const TrainOptions& options) {
  const auto run_start = Clock::now();
  // Validates the layout; the input layer's size weighs in the split over pipeline stages.
  const parallel::Topology topology(world, config, data.train.features(), data.train.classes);
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

  const io::ImageSet& train_set = data.train;
  const int global_batch = config.train.global_batch;
  const std::int64_t steps_per_epoch = train_set.count / global_batch;
  if (steps_per_epoch == 0)
    throw Error("train::run_training: no full batch per epoch; call check_data_fits first");
  const std::int64_t total_steps =
      config.train.max_steps > 0 ? config.train.max_steps : config.train.epochs * steps_per_epoch;

  model::ModelShape shape =
      model::shape_from_config(config, train_set.features(), train_set.classes, ep, place.ep_rank);
  shape.first_block = place.first_block;
  shape.last_block = place.last_block;
  Model model(shape, &topology.expert_parallel());
  const int stages = topology.layout().pipeline_stages;
  const bool first_stage = place.stage == 0, last_stage = place.stage == stages - 1;
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
  summary.ranks = world.size();
  summary.global_batch = global_batch;
  // Parameter counts of the whole model: every stage's dense part and all expert shards.
  double counts[2] = {place.dp_index == 0 ? double(params.dense_size()) : 0.0,
                      place.edp_index == 0 ? double(params.size() - params.dense_size()) : 0.0};
  world.allreduce_sum(counts, 2);
  const auto expert_parameters = std::int64_t(counts[1]);
  summary.parameters = std::int64_t(counts[0]) + expert_parameters;

  log->line(fmt::format(
      "daa-swarm: {} on {} ranks ({} pipeline stage{}, expert parallelism {}) | {} parameters ({} "
      "dense, {} in experts) | {} train / {} test samples | {} steps of {} samples",
      config.run.name, world.size(), stages, stages == 1 ? "" : "s", ep, summary.parameters,
      summary.parameters - expert_parameters, expert_parameters, train_set.count, data.test.count,
      total_steps, global_batch));

  obs::PhaseTimes phases;
  double expert_seconds = 0, expert_flops = 0, dispatch_seconds = 0;
  // Reductions inside the model (load-balancing statistics) count as communication.
  const model::StatsReducer reduce_stats = [&](double* values, std::size_t count) {
    const auto t = Clock::now();
    topology.data_parallel().allreduce_sum(values, count);
    phases.comm += since(t);
  };

  // Micro-batches in flight on one stage: at most min(micro_batches, stages) under 1F1B.
  const int slots = std::min(micro_batches, stages);
  std::vector<Batch> batches(slots);
  std::vector<kernels::Matrix<float>> received(slots, kernels::Matrix<float>("received", 0, 0));
  std::vector<kernels::Matrix<float>> received_grad(slots,
                                                    kernels::Matrix<float>("received_grad", 0, 0));
  std::vector<MPI_Request> sends(2 * std::size_t(slots), MPI_REQUEST_NULL);
  const int d_model = config.model.d_model;
  std::vector<std::int64_t> order;
  std::int64_t epoch = -1;
  double window_loss = 0, window_correct = 0, window_samples = 0, window_compute = 0,
         window_comm = 0, window_imbalance = 0, window_dropped = 0;
  // This rank's rows of the expert registry for the current log window: what its tokens sent to
  // every expert, and itself as a home of its local experts.
  std::vector<parallel::ExpertEntry> registry_rows;
  for (int l = 0; l < config.model.moe_layers; ++l)
    for (int e = 0; e < config.moe.experts; ++e) {
      parallel::ExpertEntry row;
      row.layer = l;
      row.expert = e;
      if (l >= place.first_block && l < place.last_block && e >= place.first_expert &&
          e < place.first_expert + place.local_experts)
        row.home_ranks.push_back(world.rank());
      registry_rows.push_back(std::move(row));
    }
  // This rank's token counts per (local MoE layer, expert) since the last consensus round.
  const int local_layers = place.last_block - place.first_block;
  std::vector<double> consensus_counts(std::size_t(local_layers * config.moe.experts), 0.0);
  const int layers = config.model.moe_layers, experts = config.moe.experts;
  RunRecord record(layers, experts, train_set.classes);
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
  auto window_start = Clock::now();
  const auto loop_start = Clock::now();
  // Steady-state throughput leaves out the first steps, which allocate workspaces and touch
  // fresh pages (benchmarks against peers that skip their warm-up steps compare like for like).
  constexpr std::int64_t kSteadyAfter = 20;
  auto steady_start = loop_start;
  double steady_eval_before = 0;
  double last_loss = record.loss.empty() ? 0 : record.loss.back();
  // Expert load of each step over the whole global batch, reduced with the step's metrics.
  constexpr std::size_t kMetrics = 6;  // loss, aux, correct, samples, dropped, signal
  std::vector<double> metrics(kMetrics + std::size_t(layers * experts));
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

  // Rank 0's rows for the end of a log window: routing bias of every layer (held by the first
  // data-parallel rank of its stage) and the ledger's reputation per rank. Collective.
  auto record_window = [&](std::int64_t done) {
    std::vector<float> bias(std::size_t(layers * experts), 0.0f);
    if (place.dp_index == 0)
      for (int l = place.first_block; l < place.last_block; ++l) {
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
  auto record_evaluation = [&](std::int64_t done, const EvalResult& test) {
    if (!root) return;
    record.eval_step.push_back(done);
    record.eval_epoch.push_back((done + steps_per_epoch - 1) / steps_per_epoch);
    record.test_loss.push_back(test.loss);
    record.test_accuracy.push_back(test.accuracy);
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

  std::int64_t step = start_step;
  for (; step < total_steps; ++step) {
    watchdog.expect_progress("training step", step + 1, limits.timeout_s);
    observer.step_begin(step + 1);
    const auto step_start = Clock::now();
    const std::int64_t step_epoch = step / steps_per_epoch;
    if (step_epoch != epoch) {
      epoch = step_epoch;
      order = io::epoch_permutation(train_set.count, config.run.seed, epoch);
      // A restart inside an epoch keeps the epoch's counts from the checkpoint.
      if (step % steps_per_epoch == 0) record.epoch_correct = record.epoch_samples = 0;
    }
    // Micro-batches accumulate gradients; the load-balancing statistics are per global
    // micro-batch, so the optimization does not depend on the layout.
    std::fill(metrics.begin(), metrics.end(), 0.0);
    metrics[5] = g_checkpoint_signal != 0 ? 1.0 : 0.0;
    double step_imbalance = 0;  // worst layer's max/mean expert load, averaged over micro-batches
    double compute = 0;
    const double comm_before = phases.comm;
    params.zero_grads();
    const std::int64_t batch_index = step % steps_per_epoch;
    const int dp = topology.data_parallel().size();
    const std::size_t micro_rows = std::size_t(global_batch / micro_batches / dp);
    // Activations go to the next stage with tag 2*micro, gradients come back with 2*micro + 1.
    auto forward = [&](int micro) {
      const int slot = micro % slots;
      auto t = Clock::now();
      DAA_MPI_CHECK(MPI_Wait(&sends[2 * slot], MPI_STATUS_IGNORE));  // slot's previous send
      Batch& batch = batches[slot];
      batch.load(train_set,
                 io::local_batch(order, batch_index, global_batch, place.dp_index, dp, micro,
                                 micro_batches),
                 robust.flips_labels());
      phases.data += since(t);
      trace(Track::data, "batch", t);
      t = Clock::now();
      if (!first_stage) {
        kernels::ensure_extent(received[slot], micro_rows, std::size_t(d_model));
        DAA_MPI_CHECK(MPI_Recv(received[slot].data(), int(micro_rows) * d_model, MPI_FLOAT,
                               topology.previous_stage_rank(), 2 * micro, world.comm(),
                               MPI_STATUS_IGNORE));
        trace(Track::pipeline, "receive activations", t);
      }
      phases.comm += since(t);
      const double comm_inside = phases.comm;
      t = Clock::now();
      const model::BatchStats stats = model.forward(slot, first_stage ? batch.x : received[slot],
                                                    batch.y, /*train=*/true, reduce_stats);
      Kokkos::fence();
      trace(Track::compute, "forward", t);
      compute += since(t) - (phases.comm - comm_inside) - stats.dispatch_seconds;
      phases.comm += stats.dispatch_seconds;
      expert_seconds += stats.expert_seconds;
      expert_flops += stats.expert_flops;
      dispatch_seconds += stats.dispatch_seconds;
      metrics[0] += stats.loss_sum;
      metrics[1] += stats.aux_loss;
      metrics[2] += double(stats.correct);
      metrics[3] += double(stats.samples);
      double worst = 0;
      for (const model::LayerRoutingStats& layer : stats.layers) {
        const auto at = std::size_t(layer.layer * experts);
        for (int e = 0; e < experts; ++e) {
          const auto tokens = layer.tokens_per_expert[std::size_t(e)];
          consensus_counts[std::size_t((layer.layer - place.first_block) * experts + e)] +=
              double(tokens);
          metrics[kMetrics + at + std::size_t(e)] += double(tokens);
          record.registry_gate_sum[at + std::size_t(e)] +=
              layer.gate_sum_per_expert[std::size_t(e)];
        }
        for (std::size_t i = 0; i < layer.tokens_per_expert_class.size(); ++i)
          record.specialization[at * std::size_t(train_set.classes) + i] +=
              layer.tokens_per_expert_class[i];
        metrics[4] += double(layer.dropped);
        worst = std::max(worst, layer.imbalance);
        for (int e = 0; e < config.moe.experts; ++e) {
          parallel::ExpertEntry& row = registry_rows[layer.layer * config.moe.experts + e];
          row.tokens += layer.tokens_per_expert[e];
          row.gate_sum += layer.gate_sum_per_expert[e];
        }
      }
      step_imbalance += worst / micro_batches;
      if (!last_stage) {
        const kernels::Matrix<float> out = model.output(slot);
        DAA_MPI_CHECK(MPI_Isend(out.data(), int(out.size()), MPI_FLOAT, topology.next_stage_rank(),
                                2 * micro, world.comm(), &sends[2 * slot]));
      }
    };
    auto backward = [&](int micro) {
      const int slot = micro % slots;
      auto t = Clock::now();
      if (!last_stage) {
        kernels::ensure_extent(received_grad[slot], micro_rows, std::size_t(d_model));
        DAA_MPI_CHECK(MPI_Recv(received_grad[slot].data(), int(micro_rows) * d_model, MPI_FLOAT,
                               topology.next_stage_rank(), 2 * micro + 1, world.comm(),
                               MPI_STATUS_IGNORE));
        trace(Track::pipeline, "receive gradients", t);
      }
      DAA_MPI_CHECK(MPI_Wait(&sends[2 * slot + 1], MPI_STATUS_IGNORE));
      phases.comm += since(t);
      model::BatchStats stats;
      t = Clock::now();
      model.backward(slot, received_grad[slot], stats);
      trace(Track::compute, "backward", t);
      compute += since(t) - stats.dispatch_seconds;
      phases.comm += stats.dispatch_seconds;
      expert_seconds += stats.expert_seconds;
      expert_flops += stats.expert_flops;
      dispatch_seconds += stats.dispatch_seconds;
      if (!first_stage) {
        const kernels::Matrix<float> grad = model.input_grad(slot);
        DAA_MPI_CHECK(MPI_Isend(grad.data(), int(grad.size()), MPI_FLOAT,
                                topology.previous_stage_rank(), 2 * micro + 1, world.comm(),
                                &sends[2 * slot + 1]));
      }
    };
    // 1F1B: stage s runs (stages - s - 1) forwards ahead, then alternates, then drains.
    const int warmup = std::min(stages - place.stage - 1, micro_batches);
    for (int micro = 0; micro < warmup; ++micro) forward(micro);
    for (int micro = warmup; micro < micro_batches; ++micro) {
      forward(micro);
      backward(micro - warmup);
    }
    for (int micro = micro_batches - warmup; micro < micro_batches; ++micro) backward(micro);
    {
      const auto t = Clock::now();
      DAA_MPI_CHECK(MPI_Waitall(int(sends.size()), sends.data(), MPI_STATUSES_IGNORE));
      phases.comm += since(t);
      if (stages > 1) trace(Track::pipeline, "wait for sends", t);
    }

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
    world.allreduce_sum(metrics.data(), metrics.size());
    trace(Track::metrics, "metrics all-reduce", metrics_start);
    phases.comm += since(t);
    stopped_by_signal = metrics[5] > 0;

    // Aux losses are global per layer and summed on every data-parallel rank of its stage.
    const double loss = metrics[0] / metrics[3] + metrics[1] / (dp * micro_batches);
    if (!std::isfinite(loss)) {
      const std::string message =
          fmt::format("training diverged: loss is {} at step {}", loss, step + 1);
      observer.mark_failed(message);
      throw DivergenceError(message);
    }

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
    if (const double delay = robust.simulated_delay_seconds(); delay > 0)
      std::this_thread::sleep_for(std::chrono::duration<double>(delay));
    Kokkos::fence();
    compute += since(t) - norm_reduce;
    phases.comm += norm_reduce;
    trace(Track::compute, "clip and update", t);
    phases.compute += compute;

    last_loss = loss;
    record.epoch_correct += metrics[2];
    record.epoch_samples += metrics[3];
    if (root) {
      record.step.push_back(step + 1);
      record.loss.push_back(loss);
      record.train_accuracy.push_back(metrics[2] / metrics[3]);
      record.learning_rate.push_back(lr);
      record.samples_per_s.push_back(global_batch / since(step_start));
      record.dropped_tokens.push_back(std::int64_t(metrics[4]));
      double worst = 0;  // the most loaded expert over its layer's mean, worst layer
      for (int l = 0; l < layers; ++l) {
        const auto first = metrics.begin() + std::ptrdiff_t(kMetrics + std::size_t(l * experts));
        const double sum = std::accumulate(first, first + experts, 0.0);
        if (sum > 0)
          worst = std::max(worst, *std::max_element(first, first + experts) * experts / sum);
      }
      record.imbalance.push_back(worst);
      for (std::size_t i = kMetrics; i < metrics.size(); ++i)
        record.expert_load.push_back(std::int64_t(metrics[i]));
    }
    window_loss += loss;
    window_correct += metrics[2];
    window_samples += metrics[3];
    window_compute += compute;
    window_comm += phases.comm - comm_before;
    window_imbalance += step_imbalance;
    window_dropped += metrics[4];
    const std::int64_t done = step + 1;
    if (robust.consensus_due(done) && local_layers > 0) {
      const ScopedSpan span(Track::consensus, "consensus round");
      std::vector<float> bias(consensus_counts.size());
      std::vector<Kokkos::View<float*, Kokkos::HostSpace>> host_bias;
      for (int l = 0; l < local_layers; ++l) {
        host_bias.push_back(Kokkos::create_mirror_view_and_copy(
            Kokkos::HostSpace(), model.routing_bias(place.first_block + l)));
        std::copy_n(host_bias.back().data(), config.moe.experts,
                    bias.begin() + std::ptrdiff_t(l) * config.moe.experts);
      }
      robust.consensus(consensus_counts, bias, step);
      for (int l = 0; l < local_layers; ++l) {
        std::copy_n(bias.begin() + std::ptrdiff_t(l) * config.moe.experts, config.moe.experts,
                    host_bias[std::size_t(l)].data());
        Kokkos::deep_copy(model.routing_bias(place.first_block + l), host_bias[std::size_t(l)]);
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
      const double elapsed = since(window_start);
      const auto window_steps = double(window_samples / global_batch);
      const double per_step = elapsed / window_steps;
      log->line(fmt::format(
          "step {:>{}}/{} | epoch {} | loss {:.4f} | acc {:5.1f}% | lr {:.2e} | expert load "
          "max/mean {:.2f}, dropped {:.0f} | {:.0f} samples/s | {:.1f} ms/step (compute {:.1f}, "
          "comm {:.1f}) | ETA {}",
          done, std::to_string(total_steps).size(), total_steps, epoch + 1,
          window_loss / window_steps, 100 * window_correct / window_samples, lr,
          window_imbalance / window_steps, window_dropped / window_steps, window_samples / elapsed,
          1e3 * per_step, 1e3 * window_compute / window_steps, 1e3 * window_comm / window_steps,
          obs::format_duration(per_step * double(total_steps - done))));
      window_loss = window_correct = window_samples = window_compute = window_comm = 0;
      window_imbalance = window_dropped = 0;
      // Every rank reaches this step: the registry exchange is collective.
      const auto registry = parallel::ExpertRegistry::all_gather(world, registry_rows);
      if (config.model.moe_layers > 0) log->line(registry.summary_line());
      if (robust.keeps_ledger()) log->line(robust.progress_line());
      for (parallel::ExpertEntry& row : registry_rows) row.tokens = 0, row.gate_sum = 0;
      record_window(done);
      window_start = Clock::now();
    }
    if (epoch_end && config.train.eval_each_epoch && done != total_steps) {
      t = Clock::now();
      const EvalResult test =
          evaluate(model, data.test, topology, d_model, &watchdog, done, limits.timeout_s);
      phases.eval += since(t);
      summary.test_accuracy_per_epoch.push_back(test.accuracy);
      record_evaluation(done, test);
      log->line(fmt::format("epoch {} done | test loss {:.4f} | test accuracy {:.2f}%", epoch + 1,
                            test.loss, 100 * test.accuracy));
      // The window's step figures leave the evaluation out, and keep the steps before it.
      window_start += Clock::now() - t;
    }
    const int every = config.checkpoint.every_steps;
    if (checkpointing && done != total_steps &&
        ((every > 0 && done % every == 0) || stopped_by_signal))
      window_start += std::chrono::duration_cast<Clock::duration>(
          std::chrono::duration<double>(write_checkpoint(done)));
    // The step as the outside sees it: its evaluation and checkpoint included.
    observer.step_end({.done = done,
                       .epoch = epoch + 1,
                       .loss = loss,
                       .train_accuracy = metrics[2] / metrics[3],
                       .seconds = since(step_start),
                       .compute_seconds = compute,
                       .imbalance = step_imbalance,
                       .dropped = metrics[4],
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
  EvalResult test{std::nan(""), std::nan("")};
  if (!stopped_by_signal) {
    auto t = Clock::now();
    test = evaluate(model, data.test, topology, d_model, &watchdog, step, limits.timeout_s);
    phases.eval += since(t);
    summary.test_accuracy_per_epoch.push_back(test.accuracy);
    log->line(fmt::format("final | test loss {:.4f} | test accuracy {:.2f}%", test.loss,
                          100 * test.accuracy));
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
  // The slowest rank sets the pace of a bulk-synchronous program.
  summary.train_seconds = world.allreduce_max(summary.train_seconds);
  summary.samples_per_s = double(steps_run) * global_batch / summary.train_seconds;
  steady_seconds = world.allreduce_max(steady_seconds);
  summary.steady_samples_per_s =
      steps_run > kSteadyAfter ? double(steps_run - kSteadyAfter) * global_batch / steady_seconds
                               : summary.samples_per_s;
  summary.phases = phases;
  summary.expert_gflops = expert_seconds > 0 ? expert_flops / expert_seconds * 1e-9 : 0;

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
      params, topology, model::shape_from_config(config, train_set.features(), train_set.classes));
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
