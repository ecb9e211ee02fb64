// The run's `status.json`: what step, what layout, what health and which ranks are suspected,
// rewritten by rank 0 while the run goes on, for people and scripts that watch it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace daa::obs {

struct RankNote {
  int rank = 0;
  std::string host;
  double value = 0;  // suspect: reputation; straggler: compute ms per step
};

struct RunStatus {
  std::string run;
  std::string state;   // "starting", "training", "stopped-for-resubmit", "finished", "failed"
  std::string health;  // "ok" or "degraded" (suspects, stragglers or quarantined ranks)
  std::int64_t step = 0, total_steps = 0, epoch = 0;
  double loss = 0, train_accuracy = 0, samples_per_s = 0, seconds_per_step = 0;
  int ranks = 1, pipeline_stages = 1, data_parallel = 1, expert_parallel = 1, micro_batches = 1;
  std::vector<RankNote> suspects;    // the ledger's suspects (reputation)
  std::vector<RankNote> stragglers;  // compute ms per step
  double median_compute_ms = 0;      // per step over ranks, the stragglers' reference
  std::vector<int> quarantined;
  std::int64_t last_checkpoint_step = -1;
  std::string last_checkpoint;
  std::int64_t updated_unix_ms = 0;
  std::string message;  // e.g. the error of a failed run
};

// Valid JSON, one key per line so that `cat` reads well; non-finite numbers are null.
std::string status_json(const RunStatus& status);

}  // namespace daa::obs
