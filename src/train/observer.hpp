// The run seen from outside while it goes on (private to the train module; docs/operations.md):
// every [observe] every_steps rank 0 gathers each rank's compute time and memory, names the
// stragglers, and replaces metrics.prom (Prometheus text) and status.json; every rank records
// its window of steps on the process timeline and writes trace/rank<N>.json. A file that cannot
// be written is reported once and never stops the training.
#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <mutex>
#include <string>
#include <vector>

#include "daa/core/config.hpp"
#include "daa/obs/metrics.hpp"
#include "daa/obs/report.hpp"
#include "daa/obs/status.hpp"
#include "daa/parallel/topology.hpp"
#include "robust_training.hpp"

namespace daa::train {

// Seconds this rank has spent per phase since the run began.
struct PhaseTotals {
  double data = 0, compute = 0, communication = 0, all_to_all = 0, aggregation = 0, consensus = 0,
         checkpoint = 0, eval = 0;
  // The gradient's host staging around the rounds (robust::HostStaging; part of communication).
  double staging = 0, staging_bytes = 0;
};

// One finished step, as the step loop knows it.
struct StepFigures {
  std::int64_t done = 0;                        // its 1-based number
  std::int64_t epoch = 0;                       // 1-based
  double loss = 0, train_accuracy = 0;          // global
  double seconds = 0;                           // wall time of the step on this rank
  double compute_seconds = 0;                   // of which computing
  double imbalance = 0;                         // worst layer's busiest expert over the mean
  double dropped = 0;                           // token-slots dropped by capacity, all ranks
  std::int64_t samples = 0;                     // global batch
  std::chrono::steady_clock::time_point began;  // its trace span ends after the observation
};

class RunObserver {
 public:
  // `run_dir` empty: nothing is written (tests without a run directory). Collective: gathers
  // every rank's host name.
  RunObserver(const core::Config& config, const parallel::Topology& topology,
              const RobustTraining& robust, obs::ProgressLog& log, std::string run_dir,
              std::int64_t total_steps);

  // Once the run knows where it starts (after a restart): rank 0 writes the first status.json.
  void started(std::int64_t start_step);
  // Before step number `done` (1-based) runs: opens and closes the trace window.
  void step_begin(std::int64_t done);
  // After it: collective at the end of every observation window and of the trace window (the
  // same steps on every rank).
  void step_end(const StepFigures& step, const PhaseTotals& phases);
  void checkpoint_written(std::int64_t step, const std::string& path);
  // After the last step, on every rank: writes a trace still open, and the final metrics and
  // status with `state` ("finished", "stopped-for-resubmit"). Collective.
  void finish(const std::string& state, const PhaseTotals& phases);
  // Rank 0 marks status.json failed. Not collective: for errors, and for the watchdog's thread
  // while the training thread is stuck.
  void mark_failed(const std::string& message);

  // Marks status.json "failed" when an error leaves the scope it guards (every rank throws
  // alike, so every rank's guard fires).
  class FailureMark {
   public:
    explicit FailureMark(RunObserver& observer) : observer_(observer) {}
    ~FailureMark() {
      if (std::uncaught_exceptions() > uncaught_)
        observer_.mark_failed("an error ended the run; the failing rank printed it on stderr");
    }

   private:
    RunObserver& observer_;
    const int uncaught_ = std::uncaught_exceptions();
  };

 private:
  void observe(const PhaseTotals& phases);  // collective
  void name_stragglers(const std::vector<double>& compute_ms);
  void write_metrics(const PhaseTotals& phases, const std::vector<double>& gathered);
  void write_status();
  void write_trace();  // collective
  // Writes one of rank 0's files; reports the first failure and the recovery after it.
  void write_file(const std::string& path, const std::string& text, bool& failing);

  const core::Config& config_;
  const parallel::Topology& topology_;
  const RobustTraining& robust_;
  obs::ProgressLog& log_;
  const std::string run_dir_;
  const std::int64_t total_steps_;
  std::vector<std::string> hosts_;  // by world rank
  std::int64_t trace_first_ = 0, trace_last_ = -1;
  std::int64_t trace_epoch_us_ = 0;  // wall clock at the trace's origin, aligning the ranks
  bool tracing_ = false;

  // The current observation window on this rank.
  std::int64_t window_steps_ = 0;
  double window_compute_ = 0, window_seconds_ = 0, window_loss_ = 0, window_accuracy_ = 0,
         window_imbalance_ = 0;
  std::int64_t window_samples_ = 0;
  // Rank 0's figures of the last window that had steps, and of the run so far.
  std::vector<double> rank_compute_ms_;  // compute time per step, by world rank
  double imbalance_ = 0;
  obs::Histogram step_seconds_ = obs::Histogram::step_seconds();
  double dropped_total_ = 0;
  std::vector<int> stragglers_;
  std::vector<int> behind_windows_;  // consecutive windows each rank was behind, by world rank
  bool metrics_failing_ = false, status_failing_ = false;
  std::mutex status_mutex_;  // mark_failed may come from the watchdog's thread
  obs::RunStatus status_;
};

}  // namespace daa::train
