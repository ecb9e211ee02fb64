// The training loop's account of itself (private to the train module): the progress line every
// [log] every_steps (with the expert registry's and the ledger's lines), the evaluation lines,
// and rank 0's rows of the run record per step, per log window and per evaluation.
#pragma once

#include <cstdint>
#include <string>

#include "checkpointing.hpp"
#include "daa/core/clock.hpp"
#include "daa/obs/report.hpp"
#include "daa/train/task.hpp"
#include "robust_training.hpp"
#include "routing_book.hpp"
#include "training_step.hpp"

namespace daa::train {

// "<what> | test loss .. | test accuracy .." for the classifier; validation loss, bits per byte
// (overall and per domain) and next-token accuracy for the language model.
std::string evaluation_line(const std::string& what, const Evaluation& evaluation);

class RunLog {
 public:
  RunLog(const core::Config& config, const Task& task, const parallel::Topology& topology,
         RunRecord& record, obs::ProgressLog& log, std::int64_t total_steps);

  // The run's first line (name, layout, parameter counts, task, planned steps), and the summary
  // with what is known before the first step. Collective: counts the whole model's parameters.
  obs::RunSummary begin(model::Model& model);
  // After step number `done` (1-based): its row of the record and the window's sums; with
  // `window_end` (every [log] every_steps and the last step) the progress line, the registry and
  // ledger lines and the window's record rows. Collective at the window's end.
  void step_done(std::int64_t done, const StepResult& step, double seconds, RoutingBook& routing,
                 model::Model& model, const RobustTraining& robust, bool window_end);
  // An evaluation after `done` steps: its line, and its record row when `recorded`.
  void evaluation(std::int64_t done, const std::string& what, const Evaluation& evaluation,
                  bool recorded = true);
  // Leaves `seconds` (an evaluation, a checkpoint) out of the window's per-step figures.
  void pause(double seconds);
  obs::ProgressLog& log() { return log_; }

 private:
  // Rank 0's rows at a window's end: every layer's routing bias and the ledger per rank.
  void record_window(std::int64_t done, RoutingBook& routing, model::Model& model,
                     const RobustTraining& robust);

  const core::Config& config_;
  const Task& task_;
  const parallel::Topology& topology_;
  RunRecord& record_;
  obs::ProgressLog& log_;
  const std::int64_t total_steps_, steps_per_epoch_;
  // Sums over the steps of the current window.
  struct Window {
    double loss = 0, correct = 0, scored = 0, compute = 0, comm = 0, imbalance = 0, dropped = 0;
    double steps = 0;
    core::Clock::time_point start = core::Clock::now();
  } window_;
};

}  // namespace daa::train
