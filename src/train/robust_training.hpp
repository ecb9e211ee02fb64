// Byzantine robustness inside the step loop (private to the train module): the gradient rounds
// over the data-parallel and expert-data-parallel groups with simulated faults, the ledger kept
// identical on every rank, quarantine decisions, and the consensus rounds on the routing bias.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "daa/core/config.hpp"
#include "daa/obs/report.hpp"
#include "daa/parallel/topology.hpp"
#include "daa/robust/allreduce.hpp"
#include "daa/robust/byzantine.hpp"
#include "daa/robust/host_staging.hpp"
#include "daa/robust/ledger.hpp"

namespace daa::train {

class RobustTraining {
 public:
  // Collective over the world: gathers every rank's host name for the ledger.
  RobustTraining(const core::Config& config, const parallel::Topology& topology);

  bool flips_labels() const { return faulty_ && fault_.attack == robust::Attack::label_flip; }
  // Extra compute time per step of a simulated straggler ([byzantine] delay_ms); 0 elsewhere.
  double simulated_delay_seconds() const {
    return faulty_ ? config_.byzantine.delay_ms * 1e-3 : 0.0;
  }

  // grads: this rank's flat gradient (host memory, fenced), dense parameters first, each part
  // already this rank's mean gradient. Replaces it by the aggregate over the dense parameters'
  // data-parallel group and the experts' expert-data-parallel group (one round when they are the
  // same group), updates the ledger and decides quarantines. `samples`: this rank's batch size.
  void aggregate(std::span<float> grads, std::size_t dense, std::int64_t step, double samples);
  // The same for the gradient view itself: staged to host memory and back by staging() (in place
  // where kernels::MemSpace is host-accessible).
  void aggregate(const kernels::Vector<float>& grads, std::size_t dense, std::int64_t step,
                 double samples);
  const robust::HostStaging<float>& staging() const { return staging_; }

  // Whether step number `done` (1-based) ends with a consensus round.
  bool consensus_due(std::int64_t done) const;
  // One consensus round: `counts` are this rank's token counts per (local MoE layer, expert)
  // since the last round; `bias` (the same shape) is moved towards balance, identically on every
  // rank of the stage's data-parallel group.
  void consensus(std::span<const double> counts, std::span<float> bias, std::int64_t step);

  bool keeps_ledger() const { return ledger_.has_value(); }
  // The ledger (identical on every rank), or nullptr without one.
  const robust::Ledger* ledger() const { return ledger_ ? &*ledger_ : nullptr; }
  const std::vector<char>& quarantined() const { return quarantined_; }  // by world rank
  // For the progress log: lowest reputation and the suspects; empty without a ledger.
  std::string progress_line() const;
  // The ledger's per-rank report lines (empty without a ledger).
  std::string ledger_report() const;
  void fill_summary(obs::RunSummary& summary) const;

  // What a checkpoint carries (train/checkpointing.cpp saves and restores it): this rank's worker
  // momentum, and the ledger with its quarantine decisions, identical on every rank.
  struct State {
    std::vector<float>& momentum;
    std::int64_t& momentum_steps;
    std::optional<robust::Ledger>& ledger;
    std::vector<char>& quarantined;  // by world rank
    std::int64_t& unresolved_rounds;
    std::vector<std::string>& notes;
  };
  State state() {
    return {momentum_, momentum_steps_, ledger_, quarantined_, unresolved_rounds_, notes_};
  }

  double aggregation_seconds = 0;  // in the gradient rounds (also counted as communication)
  double consensus_seconds = 0;

 private:
  struct Group {
    const parallel::Communicator* comm = nullptr;
    std::vector<int> members;  // world ranks by member rank
    int id = 0;                // identical on every rank for the same group
  };
  void round(std::span<float> values, const Group& group, std::uint64_t round_key, double samples);
  std::vector<char> excluded(const Group& group) const;
  void apply_ledger_rounds();
  void decide_quarantine();
  // World ranks of the data-parallel and expert-data-parallel groups that `rank` belongs to.
  std::vector<std::vector<int>> groups_of(int rank) const;

  const core::Config& config_;
  const parallel::Topology& topology_;
  robust::RobustAllReduce gradient_round_;
  robust::RobustAllReduce consensus_round_;
  robust::SimulatedFault fault_;
  bool faulty_ = false;
  Group data_parallel_, expert_data_parallel_;
  std::optional<robust::Ledger> ledger_;
  std::vector<char> quarantined_;  // by world rank
  // Rounds of this step that this rank reports for the world-wide ledger exchange.
  std::map<int, std::vector<robust::RoundRecord>> pending_;
  std::int64_t unresolved_rounds_ = 0;
  std::vector<float> momentum_;  // worker momentum of this rank's gradient ([robust] momentum)
  std::int64_t momentum_steps_ = 0;
  std::vector<std::string> notes_;  // quarantine decisions, for the summary
  robust::HostStaging<float> staging_;
};

}  // namespace daa::train
