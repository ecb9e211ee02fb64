// The contribution ledger (DESIGN.md §6): per rank and aggregation round, what it contributed and
// how the robust rule treated it; from that a Beta reputation, rewards, the suspects and the
// quarantine candidates. Pure host code: every rank applies the same rounds in the same order,
// so every rank holds the same ledger, bit for bit.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace daa::robust {

// How one aggregation round treated one rank's contribution.
struct RoundRecord {
  int rank = 0;             // world rank
  double samples = 0;       // training samples behind the contribution
  double weight = 0;        // the rule's weight for it (RuleOutcome::weight), 0 when excluded
  double distance = 0;      // Euclidean distance from the round's result; +inf when non-finite
  double along = 0;         // signed length of (contribution - result) along the result's direction
  bool non_finite = false;  // contained NaN or Inf
  bool accused = false;     // published a chunk result that verification proved wrong
  bool excluded = false;    // quarantined: in the group but left out of the aggregate

  template <class Archive>
  void serialize(Archive& ar, unsigned /*version*/) {
    ar& rank& samples& weight& distance& along& non_finite& accused& excluded;
  }
};

struct LedgerParams {
  // A contribution is accepted when it is finite, not accused, not excluded, and its distance
  // from the result is at most distance_ratio times the median distance of the round's
  // non-excluded finite contributions (a robust outlier test that works for every rule,
  // including Krum, which gives weight 0 to honest ranks it did not pick).
  double distance_ratio = 3.0;
  // Beta reputation: alpha = 1 + sum of discounted accepted rounds, beta = 1 + discounted
  // rejected rounds; each round first multiplies both sums by `forgetting` (1 = remember all).
  // reputation = alpha / (alpha + beta), 0.5 before the first round.
  double forgetting = 1.0;
  double suspicion_threshold = 0.5;  // suspects: reputation below this after min_rounds
  // Persistent position (attacks that hide inside the honest spread, such as ALIE, which sits
  // next to the honest mean, or a sign flip, which points against it): per finite round a rank's
  // closeness (distance / the round's median distance) and pull ((along - the round's median
  // along) / the median distance), averaged over its rounds with `forgetting`. Honest ranks average
  // about 1 and about 0. Also a suspect after min_rounds: mean closeness below closeness_bound, or
  // mean pull below -pull_bound.
  double closeness_bound = 0.5;
  double pull_bound = 0.25;
  int min_rounds = 10;  // rounds a rank takes part in before it can be suspected
  // reward per round = reward_per_sample * samples * reputation (after this round's update)
  //                  + quality_bonus * weight * (number of non-excluded members), accepted only;
  // the bonus is quality_bonus for a contribution that weighed exactly its even share.
  double reward_per_sample = 1e-3;
  double quality_bonus = 1.0;
};

// One rank's account. reputation() = alpha / (alpha + beta).
struct RankAccount {
  int rank = 0;
  std::string host;  // set by the caller (gethostname(), obs::host_name()), for the suspects list
  std::int64_t rounds = 0, accepted = 0, rejected = 0, accusations = 0, non_finite = 0;
  // Rounds in which its contribution was a copy of another rank's (no position evidence then).
  std::int64_t duplicates = 0;
  double samples = 0, weight_sum = 0, distance_sum = 0;  // distance_sum over finite rounds
  double accepted_mass = 0, rejected_mass = 0;           // discounted counts behind alpha, beta
  // Discounted sums over finite rounds: their count, closeness and pull (LedgerParams).
  double position_mass = 0, closeness_sum = 0, pull_sum = 0;
  double reward = 0;
  bool quarantined = false;
  double reputation() const;
  double mean_closeness() const;  // 1 (the honest average) before the first finite round
  double mean_pull() const;       // 0 before the first finite round
};

// Throws daa::ConfigError naming the key when a parameter is out of range (distance_ratio <= 0,
// forgetting outside (0, 1], threshold outside [0, 1], min_rounds < 0, negative rewards,
// closeness_bound outside [0, 1], pull_bound <= 0).
void check_ledger_params(const LedgerParams& params);

// Accepted (1) or rejected (0) per record of one round, as LedgerParams describes.
std::vector<char> judge_round(std::span<const RoundRecord> records, const LedgerParams& params);

class Ledger {
 public:
  Ledger(int world_size, const LedgerParams& params);

  void set_host(int rank, const std::string& host);
  // Applies one round of one group (records of its members, any order; each rank at most once):
  // judges it, then updates counts, reputation and reward of each member. Ranks outside the
  // round are untouched; an excluded record does not count as a round and marks the rank
  // quarantined. Throws daa::Error for a rank outside [0, world_size) or named twice.
  void apply_round(std::span<const RoundRecord> records);

  // Ranks with at least min_rounds rounds and reputation below the threshold or a persistent
  // position outside the bounds (LedgerParams), ascending.
  std::vector<int> suspects() const;
  // Why `account` is a suspect ("rejected in most rounds", "persistently close to the result",
  // "persistently pulls against the result"), or "" when it is not one.
  std::string suspicion(const RankAccount& account) const;
  void set_quarantined(int rank);

  const std::vector<RankAccount>& accounts() const { return accounts_; }
  // Replaces every account (a checkpoint's): one per rank of this ledger's world, in rank order.
  // Throws daa::Error when the count or the rank numbers do not match.
  void restore_accounts(std::vector<RankAccount> accounts);
  const LedgerParams& params() const { return params_; }

  // One line per rank ("rank 3 (node07): reputation 0.083, accepted 2 of 40 rounds, ..."), then a
  // line naming the suspects with their hosts or saying there are none.
  std::string report() const;

 private:
  LedgerParams params_;
  std::vector<RankAccount> accounts_;
};

// A batch of round records as bytes (parallel::to_bytes), and back: the ledger exchange compares
// these bytes to find the majority report. deserialize_records throws daa::Error for bytes that
// do not decode.
std::string serialize_records(const std::vector<RoundRecord>& records);
std::vector<RoundRecord> deserialize_records(const std::string& bytes);

}  // namespace daa::robust
