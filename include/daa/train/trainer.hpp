// The step loop: data -> forward/backward -> aggregate over the data-parallel group -> clip ->
// AdamW, with progress lines, per-epoch evaluation and the final summary. Every rank runs the same
// sequence; every control decision (stop on NaN) comes from globally reduced values.
#pragma once

#include <string>
#include <vector>

#include "daa/core/config.hpp"
#include "daa/obs/report.hpp"
#include "daa/parallel/communicator.hpp"
#include "daa/train/task.hpp"

namespace daa::train {

struct TrainOptions {
  // runs/<name>/config.toml, log.txt (rank 0) and checkpoints/ (all ranks, collectively)
  bool write_run_directory = true;
  bool print_progress = true;    // progress lines on rank 0's stdout
  bool keep_parameters = false;  // copy the final parameters into TrainResult
  // "" starts from step 0; "auto" continues from the newest valid checkpoint of the run directory
  // (or starts from step 0 when there is none); anything else is a checkpoint file to continue.
  std::string restart;
};

struct TrainResult {
  obs::RunSummary summary;        // parameter_checksum on rank 0 only
  std::vector<float> parameters;  // when keep_parameters: all parameters, on rank 0 only
  std::string local_checksum;     // of this rank's own parameters: equal within a replica group
};

// Checks the [robust], [consensus] and [byzantine] settings against the layout for `ranks` ranks:
// every data-parallel and expert-data-parallel group is large enough for the rule and f (the
// message names the group, n and f). Call after core::validate_layout. Throws daa::ConfigError.
void check_robust_layout(const core::Config& config, int ranks);

// Trains the task's model as the input describes; collective over `world`.
TrainResult run_training(const core::Config& config, const Task& task,
                         const parallel::Communicator& world, const TrainOptions& options);

// SIGUSR1 and SIGTERM then ask a running training to checkpoint at the next step boundary and
// stop; the ranks agree on it within one step, so one signalled rank is enough. run_training then
// returns with summary.stopped_by_signal set (main exits with ExitCode::resubmit).
void install_checkpoint_signals();

struct CheckpointEvaluation {
  std::int64_t step = 0;  // steps done when the checkpoint was written
  Evaluation evaluation;  // on the task's held-out data
};
// Test loss and accuracy of a checkpoint's model on this input's layout (any rank count).
// Collective; a checkpoint that is invalid or does not fit the input ends in AgreedFailure.
CheckpointEvaluation evaluate_checkpoint(const core::Config& config, const Task& task,
                                         const parallel::Communicator& world,
                                         const std::string& checkpoint);

struct GenerateOptions {
  std::string checkpoint;
  std::string prompt;
  int tokens = 100;  // new tokens at most (the model's seq_len bounds prompt + new tokens)
  double temperature = 0.8;
  int top_k = 40;
  std::uint64_t seed = 1;
};
struct GeneratedText {
  std::string prompt, text;  // text: the new tokens decoded
  int prompt_tokens = 0, new_tokens = 0;
  bool context_full = false;  // stopped at the model's seq_len
  double seconds = 0;         // of the generation itself (prefill and steps)
  std::int64_t step = 0;      // the checkpoint's step
};
// Samples a continuation of the prompt from a language-model checkpoint, with a key/value cache,
// on the ranks of `world` (experts sharded over them when their count divides the experts; every
// rank computes every token and rank 0's draw is broadcast, so the ranks stay in step). The same
// seed gives the same text. Collective; bad input ends in AgreedFailure (exit 2).
GeneratedText generate_text(const core::Config& config, const Task& task,
                            const parallel::Communicator& world, const GenerateOptions& options);
// The layout generation runs on: one stage, expert parallelism over all ranks where it divides
// the experts (else none), one micro-batch.
core::Config generation_config(core::Config config, int ranks);

// FNV-1a 64-bit over the bytes of `values`, as 16 hex digits: equal iff bit-identical.
std::string parameter_checksum(const std::vector<float>& values);

}  // namespace daa::train
