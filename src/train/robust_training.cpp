// Robust gradient rounds, the world-wide ledger, quarantine and consensus routing (see
// robust_training.hpp). The ledger stays identical on every rank: each group's round is reported
// by its first min(n, 2f + 1) members and every rank applies, per group, the report that more
// than half of them sent, so at most f faulty reporters cannot change it (one round over the
// whole world needs no exchange).
#include "robust_training.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "daa/core/clock.hpp"
#include "daa/core/error.hpp"
#include "daa/obs/process.hpp"
#include "daa/parallel/exchange.hpp"
#include "daa/robust/consensus.hpp"
#include "daa/train/trainer.hpp"

namespace daa::train {
namespace {

using core::Clock;
using core::seconds_since;

robust::RuleParams rule_params(const core::Config& config) {
  robust::RuleParams p;
  p.f = config.robust.f;
  p.nnm = config.robust.nnm;
  p.multi_krum_m = config.robust.multi_krum_m;
  p.clip_tau = config.robust.clip_tau;
  p.clip_iterations = config.robust.clip_iterations;
  p.weiszfeld_iterations = config.robust.weiszfeld_iterations;
  return p;
}

robust::AttackParams attack_params(const core::Config& config) {
  robust::AttackParams p;
  p.sign_flip_scale = config.byzantine.sign_flip_scale;
  p.epsilon = config.byzantine.epsilon;
  p.z = config.byzantine.z;
  p.sigma = config.byzantine.sigma;
  p.bitflip_rate = config.byzantine.bitflip_rate;
  p.seed = config.run.seed;
  return p;
}

robust::RobustAllReduce make_gradient_round(const core::Config& config) {
  return {robust::parse_rule(config.robust.rule), rule_params(config),
          robust::parse_mode(config.robust.mode)};
}

// Proposals are a few numbers per expert: replicated mode, no NNM, no Multi-Krum m.
robust::RobustAllReduce make_consensus_round(const core::Config& config) {
  robust::RuleParams p = rule_params(config);
  p.nnm = false;
  p.multi_krum_m = 0;
  return {robust::parse_rule(config.consensus.rule), p, robust::Mode::replicated};
}

// World ranks of stage `stage`'s data-parallel group, and of its expert-data-parallel group
// holding expert shard `shard`.
std::vector<int> data_parallel_ranks(const parallel::Layout& layout, int stage) {
  std::vector<int> ranks;
  for (int d = 0; d < layout.data_parallel; ++d) ranks.push_back(stage * layout.data_parallel + d);
  return ranks;
}
std::vector<int> expert_data_parallel_ranks(const parallel::Layout& layout, int stage, int shard) {
  std::vector<int> ranks;
  for (int d = shard; d < layout.data_parallel; d += layout.expert_parallel)
    ranks.push_back(stage * layout.data_parallel + d);
  return ranks;
}

}  // namespace

void check_robust_layout(const core::Config& config, int ranks) {
  const robust::RobustAllReduce gradient = make_gradient_round(config);
  const int stages = config.parallel.pipeline_stages;
  const int dp = ranks / stages, ep = config.parallel.expert_parallel;
  gradient.check_group(dp, 0,
                       fmt::format("data-parallel ({} rank{} per stage)", dp, dp == 1 ? "" : "s"));
  if (ep > 1)
    gradient.check_group(dp / ep, 0,
                         fmt::format("expert-data-parallel ({} rank{} per expert shard)", dp / ep,
                                     dp / ep == 1 ? "" : "s"));
  if (config.consensus.every_steps > 0)
    make_consensus_round(config).check_group(
        dp, 0, fmt::format("consensus over the data-parallel group ({} ranks)", dp));
  if (config.ledger.quarantine && config.robust.mode == "allreduce")
    throw ConfigError(
        "[ledger] quarantine = true needs the ledger, which needs [robust] mode = \"replicated\" "
        "or \"sharded\"");
  robust::check_attack_params(robust::parse_attack(config.byzantine.attack), attack_params(config));
}

RobustTraining::RobustTraining(const core::Config& config, const parallel::Topology& topology)
    : config_(config),
      topology_(topology),
      gradient_round_(make_gradient_round(config)),
      consensus_round_(make_consensus_round(config)) {
  const parallel::Communicator& world = topology.world();
  fault_.attack = robust::parse_attack(config.byzantine.attack);
  fault_.params = attack_params(config);
  fault_.f = config.robust.f;
  const std::vector<int> faulty = core::parse_rank_list(config.byzantine.ranks);
  faulty_ = std::find(faulty.begin(), faulty.end(), world.rank()) != faulty.end();

  const parallel::RankPlace& place = topology.place();
  data_parallel_ = {&topology.data_parallel(), topology.data_parallel().world_ranks(),
                    place.stage * 2};
  expert_data_parallel_ = {
      &topology.expert_data_parallel(), topology.expert_data_parallel().world_ranks(),
      (place.stage * topology.layout().expert_parallel + place.ep_rank) * 2 + 1};
  quarantined_.assign(std::size_t(world.size()), 0);

  if (gradient_round_.mode() != robust::Mode::allreduce) {
    robust::LedgerParams params;
    params.distance_ratio = config.ledger.distance_ratio;
    params.forgetting = config.ledger.forgetting;
    params.suspicion_threshold = config.ledger.suspicion_threshold;
    params.min_rounds = config.ledger.min_rounds;
    params.closeness_bound = config.ledger.closeness_bound;
    params.pull_bound = config.ledger.pull_bound;
    params.reward_per_sample = config.ledger.reward_per_sample;
    params.quality_bonus = config.ledger.quality_bonus;
    ledger_.emplace(world.size(), params);
    const std::vector<std::string> hosts = world.all_gather(obs::host_name());
    for (int r = 0; r < world.size(); ++r) ledger_->set_host(r, hosts[std::size_t(r)]);
  }
}

std::vector<char> RobustTraining::excluded(const Group& group) const {
  std::vector<char> out(group.members.size());
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = quarantined_[std::size_t(group.members[i])];
  return out;
}

void RobustTraining::round(std::span<float> values, const Group& group, std::uint64_t round_key,
                           double samples) {
  const parallel::Communicator& comm = *group.comm;
  robust::simulate_fault(values, comm, faulty_, fault_, round_key, topology_.world().rank());
  const std::vector<char> excluded_members = excluded(group);
  robust::RoundOptions options;
  options.excluded = excluded_members;
  options.lie_as_owner = faulty_ && config_.byzantine.lie_as_owner;
  options.report_rows = ledger_.has_value();
  const robust::RoundReport report = gradient_round_.reduce(values, comm, options);
  if (!ledger_) return;
  // One round over the whole world: every rank already holds what every other honest rank
  // holds, so it applies its own records and the world exchange would only repeat them.
  const bool whole_world = comm.size() == topology_.world().size();
  const int reporters = std::min(comm.size(), 2 * config_.robust.f + 1);
  if (!whole_world && comm.rank() >= reporters) return;
  std::vector<robust::RoundRecord> records(group.members.size());
  for (std::size_t i = 0; i < records.size(); ++i) {
    robust::RoundRecord& r = records[i];
    r.rank = group.members[i];
    r.samples = samples;
    r.weight = report.weight[i];
    r.distance = report.distance[i];
    r.along = report.along[i];
    r.non_finite = report.non_finite[i] != 0;
    r.accused = report.accused[i] != 0;
    r.excluded = excluded_members[i] != 0;
  }
  if (whole_world)
    ledger_->apply_round(records);
  else
    pending_[group.id] = std::move(records);
}

void RobustTraining::aggregate(std::span<float> grads, std::size_t dense, std::int64_t step,
                               double samples) {
  const auto start = Clock::now();
  const int ep = topology_.layout().expert_parallel;
  const auto key = std::uint64_t(step) * 4;
  if (const double beta = config_.robust.momentum; beta > 0) {
    // Worker momentum (Karimireddy et al. 2021): each rank contributes the bias-corrected running
    // mean of its own gradients, whose spread over honest ranks is far smaller than a single
    // gradient's, leaving attacks that hide inside that spread less room.
    momentum_.resize(grads.size(), 0.0f);
    momentum_steps_ += 1;
    const double correction = 1.0 / (1.0 - std::pow(beta, double(momentum_steps_)));
    for (std::size_t i = 0; i < grads.size(); ++i) {
      momentum_[i] = float(beta * momentum_[i] + (1.0 - beta) * grads[i]);
      grads[i] = float(momentum_[i] * correction);
    }
  }
  if (ep == 1) {
    round(grads, data_parallel_, key, samples);
  } else {
    round(grads.subspan(0, dense), data_parallel_, key, samples);
    round(grads.subspan(dense), expert_data_parallel_, key + 1, samples * ep);
  }
  if (ledger_) {
    // Layout-based, so every rank takes part in the exchange or none does.
    const bool one_world_round = ep == 1 && topology_.layout().pipeline_stages == 1;
    if (!one_world_round) apply_ledger_rounds();
    if (config_.ledger.quarantine) decide_quarantine();
  }
  aggregation_seconds += seconds_since(start);
}

void RobustTraining::aggregate(const kernels::Vector<float>& grads, std::size_t dense,
                               std::int64_t step, double samples) {
  aggregate(staging_.to_host(grads), dense, step, samples);
  staging_.to_device();
}

void RobustTraining::apply_ledger_rounds() {
  // This rank's reports: (group id, the records as bytes) each. Reports are compared as bytes,
  // so equal records count as equal even where they hold NaN.
  std::vector<std::pair<int, std::string>> mine;
  for (const auto& [id, records] : pending_)
    mine.emplace_back(id, robust::serialize_records(records));
  pending_.clear();
  std::map<int, std::vector<std::string>> reports;
  for (const auto& theirs : parallel::all_gather_object(topology_.world(), mine))
    for (const auto& [id, bytes] : theirs) reports[id].push_back(bytes);
  for (auto& [id, texts] : reports) {  // ascending group id: the same order on every rank
    std::sort(texts.begin(), texts.end());
    const std::string* majority = nullptr;
    for (std::size_t i = 0; i < texts.size() && !majority;) {
      std::size_t j = i;
      while (j < texts.size() && texts[j] == texts[i]) ++j;
      if (2 * (j - i) > texts.size()) majority = &texts[i];
      i = j;
    }
    if (!majority) {
      ++unresolved_rounds_;
      continue;
    }
    const std::vector<robust::RoundRecord> records = robust::deserialize_records(*majority);
    ledger_->apply_round(records);
  }
}

std::vector<std::vector<int>> RobustTraining::groups_of(int rank) const {
  const parallel::Layout& layout = topology_.layout();
  const parallel::RankPlace place = layout.place(rank);
  std::vector<std::vector<int>> groups{data_parallel_ranks(layout, place.stage)};
  if (layout.expert_parallel > 1)
    groups.push_back(expert_data_parallel_ranks(layout, place.stage, place.ep_rank));
  return groups;
}

void RobustTraining::decide_quarantine() {
  // Every rank holds the same ledger, so every rank takes the same decisions here.
  for (int suspect : ledger_->suspects()) {
    if (quarantined_[std::size_t(suspect)]) continue;
    bool fits = true;
    for (const std::vector<int>& group : groups_of(suspect)) {
      int out = 1;
      for (int r : group) out += quarantined_[std::size_t(r)];
      try {
        gradient_round_.check_group(int(group.size()), out, "quarantine");
      } catch (const ConfigError&) {
        fits = false;
      }
    }
    if (!fits) {
      const std::string note = fmt::format(
          "rank {} is suspected but stays in aggregation: without it a group would be too small "
          "for rule {} with f = {}",
          suspect, robust::to_string(gradient_round_.rule()), config_.robust.f);
      if (std::find(notes_.begin(), notes_.end(), note) == notes_.end()) notes_.push_back(note);
      continue;
    }
    quarantined_[std::size_t(suspect)] = 1;
    ledger_->set_quarantined(suspect);
    notes_.push_back(fmt::format("rank {} ({}) quarantined after {} rounds", suspect,
                                 ledger_->accounts()[std::size_t(suspect)].host,
                                 ledger_->accounts()[std::size_t(suspect)].rounds));
  }
}

bool RobustTraining::consensus_due(std::int64_t done) const {
  return config_.consensus.every_steps > 0 && config_.model.moe_layers > 0 &&
         done % config_.consensus.every_steps == 0;
}

void RobustTraining::consensus(std::span<const double> counts, std::span<float> bias,
                               std::int64_t step) {
  const auto start = Clock::now();
  std::vector<float> load = robust::load_fractions(counts, config_.moe.experts);
  robust::simulate_fault(load, *data_parallel_.comm, faulty_, fault_, std::uint64_t(step) * 4 + 2,
                         topology_.world().rank());
  const std::vector<char> excluded_members = excluded(data_parallel_);
  robust::RoundOptions options;
  options.excluded = excluded_members;
  options.report_rows = false;  // the ledger judges gradients, not loads
  consensus_round_.reduce(load, *data_parallel_.comm, options);
  robust::balance_step(load, config_.moe.experts, config_.consensus.bias_rate, bias);
  consensus_seconds += seconds_since(start);
}

std::string RobustTraining::progress_line() const {
  if (!ledger_) return "";
  const auto& accounts = ledger_->accounts();
  const auto lowest =
      std::min_element(accounts.begin(), accounts.end(),
                       [](const robust::RankAccount& a, const robust::RankAccount& b) {
                         return a.reputation() < b.reputation();
                       });
  std::string suspects;
  for (int r : ledger_->suspects())
    suspects += fmt::format("{}{}", suspects.empty() ? "" : ", ", r);
  return fmt::format("ledger: lowest reputation {:.3f} (rank {}) | suspects: {}",
                     lowest->reputation(), lowest->rank, suspects.empty() ? "none" : suspects);
}

std::string RobustTraining::ledger_report() const {
  if (!ledger_) return "";
  std::string text = ledger_->report();
  for (const std::string& note : notes_) text += "\n" + note;
  if (unresolved_rounds_ > 0)
    text += fmt::format("\n{} ledger rounds had no majority report and were skipped",
                        unresolved_rounds_);
  return text;
}

void RobustTraining::fill_summary(obs::RunSummary& summary) const {
  summary.robust = fmt::format("{} ({}, f = {}{})", config_.robust.rule, config_.robust.mode,
                               config_.robust.f, config_.robust.nnm ? ", nnm" : "");
  if (fault_.attack != robust::Attack::none)
    summary.byzantine =
        fmt::format("ranks {} simulate {}", config_.byzantine.ranks, config_.byzantine.attack);
  if (config_.byzantine.delay_ms > 0)
    summary.byzantine += fmt::format("{}ranks {} compute {} ms longer per step",
                                     summary.byzantine.empty() ? "" : "; ", config_.byzantine.ranks,
                                     config_.byzantine.delay_ms);
  if (!ledger_) return;
  const std::vector<int> suspects = ledger_->suspects();
  for (const robust::RankAccount& a : ledger_->accounts()) {
    obs::LedgerRow row;
    row.rank = a.rank;
    row.host = a.host;
    row.reputation = a.reputation();
    row.rounds = a.rounds;
    row.accepted = a.accepted;
    row.rejected = a.rejected;
    row.accusations = a.accusations;
    row.reward = a.reward;
    row.quarantined = a.quarantined;
    row.suspect = std::find(suspects.begin(), suspects.end(), a.rank) != suspects.end();
    summary.ledger.push_back(row);
  }
}

}  // namespace daa::train
