// The training loop's account of itself (see run_log.hpp): what goes into log.txt and the run
// record after each step, window and evaluation. The record rows are rank 0's; their values are
// world-reduced already.
#include "run_log.hpp"

#include <fmt/format.h>

#include "daa/core/timeline.hpp"

namespace daa::train {

std::string evaluation_line(const std::string& what, const Evaluation& e) {
  if (e.domains.empty())
    return fmt::format("{} | test loss {:.4f} | test accuracy {:.2f}%", what, e.loss,
                       100 * e.accuracy);
  std::string domains;
  for (std::size_t k = 0; k < e.domains.size(); ++k)
    domains += fmt::format("{}{} {:.3f}", k ? ", " : "", e.domains[k], e.domain_bits_per_byte[k]);
  return fmt::format(
      "{} | validation loss {:.4f} | {:.3f} bits/byte ({}) | next-token accuracy {:.2f}%", what,
      e.loss, e.bits_per_byte, domains, 100 * e.accuracy);
}

RunLog::RunLog(const core::Config& config, const Task& task, const parallel::Topology& topology,
               RunRecord& record, obs::ProgressLog& log, std::int64_t total_steps)
    : config_(config),
      task_(task),
      topology_(topology),
      record_(record),
      log_(log),
      total_steps_(total_steps),
      steps_per_epoch_(task.steps_per_epoch()) {}

obs::RunSummary RunLog::begin(model::Model& model) {
  // Each dense part and expert shard counted by its first holder, a tied embedding's copy on the
  // last stage not again.
  const model::ParamStore<float>& params = model.params();
  double counts[2] = {
      topology_.place().dp_index == 0 ? double(params.dense_size() - params.tied_copy_size()) : 0.0,
      topology_.place().edp_index == 0 ? double(params.size() - params.dense_size()) : 0.0};
  topology_.world().allreduce_sum(counts, 2);
  const auto dense = std::int64_t(counts[0]), experts = std::int64_t(counts[1]);

  obs::RunSummary summary;
  summary.name = config_.run.name;
  summary.model = model.kind();
  summary.unit = task_.unit();
  summary.ranks = topology_.world().size();
  summary.global_batch = config_.train.global_batch;
  summary.parameters = dense + experts;
  const int stages = topology_.layout().pipeline_stages;
  log_.line(fmt::format(
      "daa-swarm: {} on {} ranks ({} pipeline stage{}, expert parallelism {}) | {} parameters ({} "
      "dense, {} in experts) | {} | {} steps of {} {}",
      summary.name, summary.ranks, stages, stages == 1 ? "" : "s",
      topology_.layout().expert_parallel, summary.parameters, dense, experts, task_.describe(),
      total_steps_, summary.global_batch, task_.unit()));
  return summary;
}

void RunLog::step_done(std::int64_t done, const StepResult& step, double seconds,
                       RoutingBook& routing, model::Model& model, const RobustTraining& robust,
                       bool window_end) {
  const StepTotals& totals = step.totals;
  const int global_batch = config_.train.global_batch, experts = config_.moe.experts;
  // A restart inside an epoch keeps the epoch's counts from the checkpoint.
  if ((done - 1) % steps_per_epoch_ == 0) record_.epoch_correct = record_.epoch_samples = 0;
  record_.epoch_correct += totals.correct;
  record_.epoch_samples += totals.scored;
  if (topology_.world().is_root()) {
    record_.step.push_back(done);
    record_.loss.push_back(step.loss);
    record_.train_accuracy.push_back(step.accuracy);
    record_.learning_rate.push_back(step.lr);
    record_.samples_per_s.push_back(global_batch / seconds);
    record_.dropped_tokens.push_back(std::int64_t(totals.dropped));
    record_.imbalance.push_back(totals.worst_imbalance(experts));
    for (const double load : totals.expert_load) record_.expert_load.push_back(std::int64_t(load));
  }
  Window& w = window_;
  w.loss += step.loss;
  w.correct += totals.correct;
  w.scored += totals.scored;
  w.compute += step.compute;
  w.comm += step.communication;
  w.imbalance += step.imbalance;
  w.dropped += totals.dropped;
  w.steps += 1;
  if (!window_end) return;

  const core::ScopedSpan span(core::Track::metrics, "progress line and registry");
  const double elapsed = core::seconds_since(w.start);
  const double per_step = elapsed / w.steps;
  log_.line(fmt::format(
      "step {:>{}}/{} | epoch {} | loss {:.4f} | acc {:5.1f}% | lr {:.2e} | expert load "
      "max/mean {:.2f}, dropped {:.0f} | {:.0f} {}/s | {:.1f} ms/step (compute {:.1f}, "
      "comm {:.1f}) | ETA {}",
      done, std::to_string(total_steps_).size(), total_steps_, (done - 1) / steps_per_epoch_ + 1,
      w.loss / w.steps, 100 * w.correct / w.scored, step.lr, w.imbalance / w.steps,
      w.dropped / w.steps, w.steps * global_batch / elapsed, task_.unit(), 1e3 * per_step,
      1e3 * w.compute / w.steps, 1e3 * w.comm / w.steps,
      obs::format_duration(per_step * double(total_steps_ - done))));
  window_ = Window{};
  if (const std::string line = routing.registry_line(); !line.empty()) log_.line(line);
  if (robust.keeps_ledger()) log_.line(robust.progress_line());
  record_window(done, routing, model, robust);
  window_.start = core::Clock::now();
}

void RunLog::record_window(std::int64_t done, RoutingBook& routing, model::Model& model,
                           const RobustTraining& robust) {
  const std::vector<float> bias = routing.all_biases(model);
  if (!topology_.world().is_root()) return;
  record_.window_step.push_back(done);
  record_.window_bias.insert(record_.window_bias.end(), bias.begin(), bias.end());
  if (!robust.keeps_ledger()) return;
  for (const robust::RankAccount& a : robust.ledger()->accounts()) {
    record_.reputation_step.push_back(done);
    record_.reputation_rank.push_back(a.rank);
    record_.reputation_rounds.push_back(a.rounds);
    record_.reputation_accepted.push_back(a.accepted);
    record_.reputation.push_back(a.reputation());
    record_.reputation_reward.push_back(a.reward);
  }
}

void RunLog::evaluation(std::int64_t done, const std::string& what, const Evaluation& e,
                        bool recorded) {
  log_.line(evaluation_line(what, e));
  if (!recorded || !topology_.world().is_root()) return;
  record_.eval_step.push_back(done);
  record_.eval_epoch.push_back((done + steps_per_epoch_ - 1) / steps_per_epoch_);
  record_.test_loss.push_back(e.loss);
  record_.test_accuracy.push_back(e.accuracy);
}

void RunLog::pause(double seconds) {
  window_.start +=
      std::chrono::duration_cast<core::Clock::duration>(std::chrono::duration<double>(seconds));
}

}  // namespace daa::train
