// What a run tells people: rank 0's progress lines (stdout and the run directory's log.txt) and
// the final summary (a human-readable block and the `--summary-json` document).
#pragma once

#include <cstdint>
#include <fstream>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace daa::obs {

// Seconds spent per phase of the step loop, as measured on rank 0 (max over ranks for `total`).
struct PhaseTimes {
  double data = 0;      // batch assembly and host->device copies
  double compute = 0;   // forward, backward, clipping, optimizer
  double comm = 0;      // all communication: aggregation, reductions, token all-to-all
  double dispatch = 0;  // of which the expert-parallel token all-to-all
  double eval = 0;      // test-set evaluation
};

// One rank's line of the contribution ledger at the end of a run.
struct LedgerRow {
  int rank = 0;
  std::string host;
  double reputation = 0;
  std::int64_t rounds = 0, accepted = 0, rejected = 0, accusations = 0;
  double reward = 0;
  bool quarantined = false;
  bool suspect = false;  // reputation below the suspicion threshold
};

struct RunSummary {
  std::string name;
  std::string model = "classifier";  // or "language-model"
  std::string unit = "samples";      // what global_batch counts: samples or sequences
  int ranks = 1;
  std::int64_t steps = 0;
  std::int64_t epochs = 0;
  std::int64_t global_batch = 0;
  double final_loss = 0;      // global training loss (cross-entropy + aux) of the last step
  double train_accuracy = 0;  // over the training batches of the last epoch (or partial epoch)
  double test_loss = 0;
  double test_accuracy = 0;
  // Language model: validation bits per byte of text, overall and per domain (NaN otherwise).
  double bits_per_byte = std::numeric_limits<double>::quiet_NaN();
  std::vector<std::pair<std::string, double>> domain_bits_per_byte;
  double samples_per_s = 0;         // training samples per second, all ranks together
  double tokens_per_s = 0;          // rows of the model per second (tokens for the language model)
  double steady_samples_per_s = 0;  // the same after the first 20 steps
  double train_seconds = 0;         // wall time of the step loop, excluding evaluation
  double wall_seconds = 0;          // whole run including data loading and evaluation
  PhaseTimes phases;
  double expert_gflops = 0;     // GEMM FLOP rate inside the expert FFNs, per rank
  double attention_gflops = 0;  // FLOP rate of causal attention (projections included), per rank
  std::int64_t parameters = 0;
  std::string parameter_checksum;  // FNV-1a over all parameter bytes in registry order
  std::vector<double> test_accuracy_per_epoch;
  std::string robust;              // "median (sharded, f = 2)"
  std::string byzantine;           // "ranks 3,6 simulate bit-flip"; empty without simulated faults
  double aggregation_seconds = 0;  // gradient rounds (of phases.comm), slowest rank
  double consensus_seconds = 0;    // consensus rounds, slowest rank
  // The gradient's host staging around the rounds (robust::HostStaging, both directions, every
  // step), slowest rank: 0 where the gradient's memory is host-accessible and used in place.
  double staging_seconds = 0;
  std::int64_t staging_bytes = 0;
  std::vector<LedgerRow> ledger;   // empty without a ledger ([robust] mode = "allreduce")
  std::int64_t start_step = 0;     // steps done by the checkpoint this run restarted from
  int checkpoints = 0;             // checkpoints written by this run
  double checkpoint_seconds = 0;   // spent writing them (of train_seconds)
  std::string last_checkpoint;     // path of the newest one, empty if none
  bool stopped_by_signal = false;  // checkpointed on SIGUSR1/SIGTERM before the last step
  // Language model: each rank's peak resident memory (ru_maxrss) at the end of training, and the
  // largest per-rank estimate of daa/train/memory_budget.hpp for the layout that ran.
  std::vector<std::int64_t> peak_resident_bytes;
  double memory_estimate_bytes = 0;
  double memory_budget_bytes = 0;  // [train] memory_budget_gb in bytes; 0: off
};

// Rank 0 prints; other ranks hold an inactive log. Lines also go to `log_path` when given
// (appended to, for a restarted run).
class ProgressLog {
 public:
  ProgressLog(bool active, const std::string& log_path, bool append = false);
  void line(const std::string& text);
  bool active() const { return active_; }

 private:
  bool active_;
  std::ofstream file_;
};

std::string summary_text(const RunSummary& summary);
std::string summary_json(const RunSummary& summary);
// Writes atomically (temporary file, then rename). Throws daa::Error naming the path.
void write_text_file(const std::string& path, const std::string& text);

// "1:02:03" or "4:05" for a duration in seconds.
std::string format_duration(double seconds);

}  // namespace daa::obs
