// The run's metrics, status, stragglers and traces (see observer.hpp). Only rank 0 writes
// metrics.prom and status.json; each rank writes its own trace file.
#include "observer.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "daa/core/error.hpp"
#include "daa/core/timeline.hpp"
#include "daa/obs/process.hpp"
#include "daa/obs/trace.hpp"

namespace daa::train {
namespace {

std::int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Per rank and observation window, gathered on rank 0.
enum Gathered : std::size_t {
  compute_seconds,
  window_steps,
  resident_bytes,
  device_bytes,  // -1 off GPUs
  kGathered
};

// Below this, a "slower" rank is timer and scheduling noise (sub-millisecond steps, more ranks
// than cores), not a node worth naming.
constexpr double kStragglerMinExcessMs = 1.0;
// A rank must be behind in this many consecutive windows: a descheduled moment in one short
// window is not a slow node.
constexpr int kStragglerWindows = 2;

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  const auto middle = values.begin() + std::ptrdiff_t(values.size() / 2);
  std::nth_element(values.begin(), middle, values.end());
  if (values.size() % 2 == 1) return *middle;
  return (*middle + *std::max_element(values.begin(), middle)) / 2;
}

}  // namespace

RunObserver::RunObserver(const core::Config& config, const parallel::Topology& topology,
                         const RobustTraining& robust, obs::ProgressLog& log, std::string run_dir,
                         std::int64_t total_steps)
    : config_(config),
      topology_(topology),
      robust_(robust),
      log_(log),
      run_dir_(std::move(run_dir)),
      total_steps_(total_steps),
      hosts_(topology.world().all_gather(obs::host_name())) {
  if (config.observe.trace_steps > 0 && !run_dir_.empty()) {
    trace_first_ = config.observe.trace_first_step;
    trace_last_ = trace_first_ + config.observe.trace_steps - 1;
  }
  const parallel::Layout& layout = topology.layout();
  status_.run = config.run.name;
  status_.state = "starting";
  status_.health = "ok";
  status_.total_steps = total_steps;
  status_.ranks = topology.world().size();
  status_.pipeline_stages = layout.pipeline_stages;
  status_.data_parallel = layout.data_parallel;
  status_.expert_parallel = layout.expert_parallel;
  status_.micro_batches = config.parallel.micro_batches;
}

void RunObserver::started(std::int64_t start_step) {
  {
    std::lock_guard lock(status_mutex_);
    status_.state = "training";
    status_.step = start_step;
  }
  if (topology_.world().is_root() && !run_dir_.empty() && config_.observe.every_steps > 0)
    write_status();
}

void RunObserver::step_begin(std::int64_t done) {
  core::Timeline& timeline = core::Timeline::process();
  timeline.set_step(done);
  if (done == trace_first_ && !tracing_) {
    tracing_ = true;
    trace_epoch_us_ = std::chrono::duration_cast<std::chrono::microseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
    timeline.clear();
    timeline.start_recording();
  }
}

void RunObserver::step_end(const StepFigures& step, const PhaseTotals& phases) {
  window_steps_ += 1;
  window_compute_ += step.compute_seconds;
  window_seconds_ += step.seconds;
  window_loss_ += step.loss;
  window_accuracy_ += step.train_accuracy;
  window_imbalance_ += step.imbalance;
  window_samples_ += step.samples;
  dropped_total_ += step.dropped;
  step_seconds_.observe(step.seconds);
  {
    std::lock_guard lock(status_mutex_);
    status_.state = "training";
    status_.step = step.done;
    status_.epoch = step.epoch;
  }
  const int every = config_.observe.every_steps;
  if (every > 0 && (step.done % every == 0 || step.done == total_steps_)) observe(phases);
  core::Timeline::process().add(core::Track::step, "step", step.began,
                                std::chrono::steady_clock::now());
  if (tracing_ && step.done == trace_last_) write_trace();
}

void RunObserver::checkpoint_written(std::int64_t step, const std::string& path) {
  std::lock_guard lock(status_mutex_);
  status_.last_checkpoint_step = step;
  status_.last_checkpoint = path;
}

void RunObserver::finish(const std::string& state, const PhaseTotals& phases) {
  if (tracing_) write_trace();
  {
    std::lock_guard lock(status_mutex_);
    status_.state = state;
  }
  if (config_.observe.every_steps > 0) observe(phases);
}

void RunObserver::mark_failed(const std::string& message) {
  if (!topology_.world().is_root() || run_dir_.empty() || config_.observe.every_steps == 0) return;
  std::lock_guard lock(status_mutex_);
  status_.state = "failed";
  status_.health = "failed";
  status_.message = message;
  status_.updated_unix_ms = unix_ms();
  try {
    obs::write_text_file(run_dir_ + "/status.json", obs::status_json(status_));
  } catch (const std::exception&) {
    // Already reported when it first failed; the run's own error is what matters now.
  }
}

void RunObserver::observe(const PhaseTotals& phases) {
  const core::ScopedSpan span(core::Track::metrics, "observe: gather, metrics.prom, status.json");
  const parallel::Communicator& world = topology_.world();
  double mine[kGathered] = {};
  mine[compute_seconds] = window_compute_;
  mine[window_steps] = double(window_steps_);
  mine[resident_bytes] = double(obs::resident_memory_bytes());
  mine[device_bytes] = double(obs::device_memory_used_bytes().value_or(-1));
  std::vector<double> gathered(world.is_root() ? kGathered * std::size_t(world.size()) : 0);
  DAA_MPI_CHECK(MPI_Gather(mine, int(kGathered), MPI_DOUBLE, gathered.data(), int(kGathered),
                           MPI_DOUBLE, 0, world.comm()));
  // Every rank has run the same steps: an empty window (the end of a run whose last step was
  // just observed) changes only the state.
  if (world.is_root() && !run_dir_.empty() && window_steps_ > 0) {
    std::vector<double>& compute_ms = rank_compute_ms_;
    compute_ms.assign(std::size_t(world.size()), 0.0);
    for (std::size_t r = 0; r < compute_ms.size(); ++r) {
      const double steps = gathered[r * kGathered + window_steps];
      compute_ms[r] = steps > 0 ? 1e3 * gathered[r * kGathered + compute_seconds] / steps : 0;
    }
    imbalance_ = window_imbalance_ / double(window_steps_);
    name_stragglers(compute_ms);
    {
      std::lock_guard lock(status_mutex_);
      const auto steps = double(std::max<std::int64_t>(window_steps_, 1));
      status_.loss = window_loss_ / steps;
      status_.train_accuracy = window_accuracy_ / steps;
      status_.seconds_per_step = window_seconds_ / steps;
      status_.samples_per_s = window_seconds_ > 0 ? double(window_samples_) / window_seconds_ : 0;
      status_.median_compute_ms = median(compute_ms);
      status_.stragglers.clear();
      for (int r : stragglers_)
        status_.stragglers.push_back({r, hosts_[std::size_t(r)], compute_ms[std::size_t(r)]});
      status_.suspects.clear();
      status_.quarantined.clear();
      if (const robust::Ledger* ledger = robust_.ledger()) {
        for (int r : ledger->suspects())
          status_.suspects.push_back(
              {r, hosts_[std::size_t(r)], ledger->accounts()[std::size_t(r)].reputation()});
        const std::vector<char>& quarantined = robust_.quarantined();
        for (std::size_t r = 0; r < quarantined.size(); ++r)
          if (quarantined[r]) status_.quarantined.push_back(int(r));
      }
      const bool degraded =
          !status_.stragglers.empty() || !status_.suspects.empty() || !status_.quarantined.empty();
      status_.health = degraded ? "degraded" : "ok";
    }
  }
  if (world.is_root() && !run_dir_.empty()) {
    write_metrics(phases, gathered);
    write_status();
  }
  window_steps_ = window_samples_ = 0;
  window_compute_ = window_seconds_ = window_loss_ = window_accuracy_ = window_imbalance_ = 0;
}

// A rank is a straggler when its compute time per step exceeds [observe] straggler_factor times
// the median of the other ranks of its pipeline stage (stages differ in work, replicas do not),
// and by at least kStragglerMinExcessMs.
// Logged when the set changes, so a slow node does not flood the log.
void RunObserver::name_stragglers(const std::vector<double>& compute_ms) {
  const double factor = config_.observe.straggler_factor;
  if (factor <= 0) return;
  const int dp = topology_.layout().data_parallel;
  std::vector<int> now;
  std::vector<double> reference(compute_ms.size(), 0.0);
  behind_windows_.resize(compute_ms.size(), 0);
  for (int r = 0; r < int(compute_ms.size()); ++r) {
    std::vector<double> others;
    for (int peer = (r / dp) * dp; peer < (r / dp + 1) * dp; ++peer)
      if (peer != r) others.push_back(compute_ms[std::size_t(peer)]);
    if (others.empty()) continue;
    reference[std::size_t(r)] = median(others);
    const double excess = compute_ms[std::size_t(r)] - reference[std::size_t(r)];
    const bool behind = compute_ms[std::size_t(r)] > factor * reference[std::size_t(r)] &&
                        excess >= kStragglerMinExcessMs;
    int& windows = behind_windows_[std::size_t(r)];
    windows = behind ? windows + 1 : 0;
    if (windows >= kStragglerWindows) now.push_back(r);
  }
  for (int r : now)
    if (std::find(stragglers_.begin(), stragglers_.end(), r) == stragglers_.end())
      log_.line(fmt::format(
          "straggler: rank {} ({}) computes {:.1f} ms per step, {:.1f}x the {:.1f} ms of the "
          "other ranks of its stage",
          r, hosts_[std::size_t(r)], compute_ms[std::size_t(r)],
          compute_ms[std::size_t(r)] / reference[std::size_t(r)], reference[std::size_t(r)]));
  for (int r : stragglers_)
    if (std::find(now.begin(), now.end(), r) == now.end())
      log_.line(fmt::format("straggler: rank {} ({}) caught up ({:.1f} ms per step, others {:.1f})",
                            r, hosts_[std::size_t(r)], compute_ms[std::size_t(r)],
                            reference[std::size_t(r)]));
  stragglers_ = std::move(now);
}

void RunObserver::write_metrics(const PhaseTotals& phases, const std::vector<double>& gathered) {
  const obs::Labels run = {{"run", config_.run.name}};
  auto with = [&](const char* key, const std::string& value) {
    obs::Labels labels = run;
    labels.emplace_back(key, value);
    return labels;
  };
  obs::PrometheusText prom;
  obs::RunStatus status;
  {
    std::lock_guard lock(status_mutex_);
    status = status_;
  }
  prom.gauge("daa_step", "steps done", double(status.step), run);
  prom.gauge("daa_total_steps", "steps the run will take", double(total_steps_), run);
  prom.gauge("daa_epoch", "current epoch (1-based)", double(status.epoch), run);
  prom.gauge("daa_loss", "global training loss, mean over the last observation window", status.loss,
             run);
  prom.gauge("daa_train_accuracy", "training accuracy, mean over the last observation window",
             status.train_accuracy, run);
  prom.gauge("daa_samples_per_second", "training samples per second, all ranks",
             status.samples_per_s, run);
  prom.histogram(
      "daa_step_seconds",
      "wall time of a training step on rank 0, with its evaluation or checkpoint if it has one",
      step_seconds_, run);
  const std::pair<const char*, double> phase_seconds[] = {{"compute", phases.compute},
                                                          {"all_to_all", phases.all_to_all},
                                                          {"aggregation", phases.aggregation},
                                                          {"consensus", phases.consensus},
                                                          {"staging", phases.staging},
                                                          {"checkpoint", phases.checkpoint},
                                                          {"communication", phases.communication},
                                                          {"data", phases.data},
                                                          {"eval", phases.eval}};
  for (const auto& [phase, seconds] : phase_seconds)
    prom.counter("daa_phase_seconds_total",
                 "rank 0's seconds per phase since the run began (all_to_all, aggregation and "
                 "staging are part of communication)",
                 seconds, with("phase", phase));
  prom.counter("daa_gradient_staging_bytes_total",
               "bytes rank 0 copied between the gradient's memory space and the host for the "
               "robust rounds (0 where that memory is host-accessible)",
               phases.staging_bytes, run);
  prom.gauge("daa_expert_load_imbalance",
             "busiest expert's token-slots over the mean, worst layer, mean over the window",
             imbalance_, run);
  prom.counter("daa_dropped_tokens_total", "token-slots dropped by expert capacity, all ranks",
               dropped_total_, run);
  if (const robust::Ledger* ledger = robust_.ledger()) {
    double lowest = 1;
    for (const robust::RankAccount& a : ledger->accounts())
      lowest = std::min(lowest, a.reputation());
    prom.gauge("daa_lowest_reputation", "lowest reputation in the contribution ledger", lowest,
               run);
  }
  prom.gauge("daa_suspects", "ranks the ledger suspects", double(status.suspects.size()), run);
  prom.gauge("daa_stragglers", "ranks computing far slower than their peers",
             double(status.stragglers.size()), run);
  prom.gauge("daa_last_checkpoint_step", "step of the newest checkpoint (-1: none yet)",
             double(status.last_checkpoint_step), run);
  for (const auto& [name, help, index] :
       {std::tuple{"daa_rank_resident_memory_bytes", "resident memory of the rank's process",
                   resident_bytes},
        std::tuple{"daa_rank_device_memory_bytes", "GPU memory in use on the rank's device",
                   device_bytes}}) {
    for (std::size_t r = 0; r < hosts_.size(); ++r) {
      const double value = gathered[r * kGathered + index];
      if (value < 0) continue;  // not on a GPU, or unreadable
      obs::Labels labels = with("rank", std::to_string(r));
      labels.emplace_back("host", hosts_[r]);
      prom.gauge(name, help, value, labels);
    }
  }
  for (std::size_t r = 0; r < rank_compute_ms_.size(); ++r) {
    obs::Labels labels = with("rank", std::to_string(r));
    labels.emplace_back("host", hosts_[r]);
    prom.gauge("daa_rank_compute_seconds_per_step",
               "the rank's compute time per step over the last window (stragglers stand out)",
               1e-3 * rank_compute_ms_[r], labels);
  }
  write_file(run_dir_ + "/metrics.prom", prom.text(), metrics_failing_);
}

void RunObserver::write_status() {
  std::string text;
  {
    std::lock_guard lock(status_mutex_);
    status_.updated_unix_ms = unix_ms();
    text = obs::status_json(status_);
  }
  write_file(run_dir_ + "/status.json", text, status_failing_);
}

void RunObserver::write_file(const std::string& path, const std::string& text, bool& failing) {
  try {
    obs::write_text_file(path, text);
    if (failing) log_.line("observe: '" + path + "' is written again");
    failing = false;
  } catch (const std::exception& e) {
    if (!failing)
      log_.line(std::string("warning: ") + e.what() +
                "; training goes on, the file is tried again every observation window");
    failing = true;
  }
}

// Every rank writes its own file; the ranks then agree on the first failure, which rank 0
// reports once.
void RunObserver::write_trace() {
  core::Timeline& timeline = core::Timeline::process();
  timeline.stop_recording();
  tracing_ = false;
  const parallel::Communicator& world = topology_.world();
  const std::string dir = run_dir_ + "/trace";
  const std::string path = fmt::format("{}/rank{}.json", dir, world.rank());
  std::string error;
  try {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw Error("cannot create trace directory '" + dir + "': " + ec.message());
    std::vector<core::Span> spans = timeline.spans();
    // Wall-clock microseconds: the ranks' files line up when opened together.
    for (core::Span& s : spans)
      s.begin_us += double(trace_epoch_us_), s.end_us += double(trace_epoch_us_);
    obs::write_chrome_trace(path, spans, world.rank(), hosts_[std::size_t(world.rank())]);
  } catch (const std::exception& e) {
    error = fmt::format("rank {}: {}", world.rank(), e.what());
  }
  timeline.clear();
  const std::string failure = world.agree_on_message(error);
  const std::int64_t last = std::min(trace_last_, status_.step);
  if (failure.empty())
    log_.line(fmt::format("trace: steps {}-{} -> {}/rank*.json ({} files, one per rank)",
                          trace_first_, last, dir, world.size()));
  else
    log_.line("warning: trace not written (" + failure + "); training goes on");
}

}  // namespace daa::train
