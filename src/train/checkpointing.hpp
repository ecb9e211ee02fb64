// Checkpoints of a training run (private to the train module): what a run saves besides nothing
// else, mapped onto the layout-independent datasets of docs/checkpoint-format.md, and restored on
// any rank layout. io::CheckpointWriter/Reader do the file work; this file decides the contents.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "daa/core/config.hpp"
#include "daa/model/model.hpp"
#include "daa/obs/report.hpp"
#include "daa/parallel/topology.hpp"
#include "daa/train/optimizer.hpp"
#include "robust_training.hpp"

namespace daa::train {

// The run's story: rows per step, per evaluation and per log window (rank 0 keeps them; their
// values are world-reduced), and whole-run counters that each rank keeps for its own tokens and
// that are summed over the world when written.
struct RunRecord {
  int layers = 0, experts = 0;
  std::vector<std::string> categories;  // the specialization statistic's columns
  // per step
  std::vector<std::int64_t> step, dropped_tokens;
  std::vector<double> loss, train_accuracy, learning_rate, samples_per_s, imbalance;
  std::vector<std::int64_t> expert_load;  // [steps][layers][experts]
  // per evaluation
  std::vector<std::int64_t> eval_step, eval_epoch;
  std::vector<double> test_loss, test_accuracy;
  // per log window
  std::vector<std::int64_t> window_step;
  std::vector<float> window_bias;  // [windows][layers][experts]
  std::vector<std::int64_t> reputation_step, reputation_rank, reputation_rounds,
      reputation_accepted;
  std::vector<double> reputation, reputation_reward;
  // whole run, this rank's share
  std::vector<double> registry_gate_sum;     // [layers][experts]
  std::vector<std::int64_t> specialization;  // [layers][experts][categories]
  // the current epoch's training hits and samples so far (world-reduced)
  double epoch_correct = 0, epoch_samples = 0;

  RunRecord(int layers, int experts, std::vector<std::string> categories);
};

// What a checkpoint saves and restores. For evaluation only the model is needed: the other
// pointers may then be null.
struct TrainingParts {
  const core::Config& config;
  const parallel::Topology& topology;
  model::Model& model;
  AdamW<float>* optimizer = nullptr;
  RobustTraining* robust = nullptr;
  RunRecord* record = nullptr;
  std::vector<double>* consensus_counts = nullptr;  // this rank's, [local layers][experts]
  std::int64_t steps_per_epoch = 0;
  std::int64_t total_steps = 0;
};

struct SavedCheckpoint {
  std::string path;
  std::uint64_t bytes = 0;
};

// Collective: writes `dir`/step-NNNNNNNN.h5 after `step` steps (through a temporary file) and
// publishes it (latest pointer, keep). Throws daa::Error on every rank alike (a full disk, say);
// the previous checkpoints are untouched then.
SavedCheckpoint save_checkpoint(const TrainingParts& parts, std::int64_t step,
                                const std::string& dir);

enum class LoadScope { everything, model_only };

// Collective: verifies the whole file, checks that it fits the input (same model; any layout),
// then restores. Returns the checkpoint's step. `notes` gets lines for the log (what was carried
// over and what was not). Throws io::CheckpointError for a file that is not a valid checkpoint
// and InputError for one that does not fit the input, on every rank alike.
std::int64_t load_checkpoint(const TrainingParts& parts, const std::string& file, LoadScope scope,
                             std::vector<std::string>& notes);

// All parameters in the order a one-rank model holds them (`whole_model`'s layout), on rank 0
// (empty elsewhere). Independent of the layout, so checksums compare across layouts. Collective.
std::vector<float> gather_parameters(const model::ParamStore<float>& params,
                                     const parallel::Topology& topology,
                                     const model::ParamStore<float>& whole_model);

// --restart: the checkpoint to continue from ("auto": the newest valid one in `dir`), loaded
// into `parts`; returns its step (0: none). Collective; errors are thrown on every rank alike.
std::int64_t resume(const TrainingParts& parts, const std::string& restart, const std::string& dir,
                    obs::ProgressLog& log);

}  // namespace daa::train
