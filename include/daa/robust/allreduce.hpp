// The robust all-reduce (DESIGN.md §6): one collective round in which every rank of a group
// contributes a vector and every honest rank ends with the same robust aggregate, bit for bit,
// plus a report of how the rule treated each member (for the ledger). Modes: allreduce (plain
// MPI sum, the non-robust baseline), replicated (all-gather, every rank applies the rule) and
// sharded (chunk owners apply the rule, verified by f extra holders per chunk).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "daa/parallel/communicator.hpp"
#include "daa/robust/rules.hpp"

namespace daa::robust {

enum class Mode { allreduce, replicated, sharded };

// "allreduce", "replicated", "sharded"; unknown names throw daa::ConfigError listing them.
Mode parse_mode(const std::string& name);
const char* to_string(Mode mode);

struct RoundOptions {
  // Per group member (empty: nobody): quarantined members still take part in the communication
  // and receive the result, but their contribution is left out of the rule.
  std::span<const char> excluded;
  // Evaluation only: this rank, as a chunk holder in sharded mode, publishes wrong chunk results
  // (and verdicts on the other holders' results from them) instead of what it computed.
  bool lie_as_owner = false;
  // The caller reads the report's per-row weight, distance, along and non_finite (a ledger does).
  // Without it the round skips the rows' distance pass and leaves those four empty.
  bool report_rows = true;
};

// How the round treated each member, identical on every honest member (empty vectors in
// allreduce mode, which sees only the sum; weight, distance, along and non_finite empty without
// RoundOptions::report_rows).
struct RoundReport {
  std::vector<double> weight;    // the rule's weight (RuleOutcome), 0 for excluded members
  std::vector<double> distance;  // Euclidean distance of the contribution from the result
  // Signed length of (contribution - result) along the result's direction: negative for a
  // contribution that pulls against it; 0 for a non-finite one or a zero result.
  std::vector<double> along;
  std::vector<char> non_finite;  // the contribution held NaN or Inf
  std::vector<char> accused;     // sharded: a result or verdict that the recomputation refuted
  int disputed_chunks = 0;       // sharded: chunks recomputed because their holders disagreed
};

class RobustAllReduce {
 public:
  // The rule's parameters are checked here (daa::ConfigError); the group size is checked by
  // check_group.
  RobustAllReduce(Rule rule, const RuleParams& params, Mode mode);

  Rule rule() const { return rule_; }
  Mode mode() const { return mode_; }
  const RuleParams& params() const { return params_; }
  // Holders per chunk in sharded mode for a group of n: f + 1 (at least 2, at most n), so at least
  // one holder of every chunk is honest when at most f members are Byzantine.
  int holders(int n) const;

  // Throws daa::ConfigError naming `group_name` when a group of n members (of which `excluded`
  // are quarantined) is too small for the rule and f.
  void check_group(int n, int excluded, const std::string& group_name) const;

  // Replaces `values` (this rank's contribution, host memory, already fenced) by the aggregate
  // over `group`. Every member calls it with the same length and options.excluded.
  RoundReport reduce(std::span<float> values, const parallel::Communicator& group,
                     const RoundOptions& options = {}) const;

 private:
  RoundReport reduce_replicated(std::span<float> values, const parallel::Communicator& group,
                                std::span<const char> active, bool report_rows) const;
  RoundReport reduce_sharded(std::span<float> values, const parallel::Communicator& group,
                             std::span<const char> active, const RoundOptions& options) const;
  Rule rule_;
  RuleParams params_;
  Mode mode_;
  // Buffers kept between rounds (resizing within capacity touches no memory), so a round does not
  // pay for fresh pages; this makes reduce() not thread-safe, and rounds are collective per rank
  // anyway. received_: the rows of the chunks this rank holds; held_: its results for them;
  // published_: every primary holder's results; mixed_: NNM's mixtures per chunk.
  mutable std::vector<std::vector<float>> received_;
  mutable std::vector<std::vector<unsigned char>> held_;
  mutable std::vector<unsigned char> published_;
  // NNM's mixtures of each chunk this rank computes, and the rows they were mixed from.
  mutable std::vector<std::vector<double>> mixed_;
  mutable std::vector<const float*> mixed_source_;
};

}  // namespace daa::robust
