// The expert registry: one row per (MoE layer, expert) with its home ranks and what the router
// sent it over a window of steps. Every rank contributes the rows it knows; the rows travel as
// small control messages (parallel::all_gather_object, DESIGN.md §5) in one all-gather,
// and every rank ends with the same merged table.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "daa/parallel/communicator.hpp"
#include "daa/parallel/topology.hpp"

namespace daa::parallel {

struct ExpertEntry {
  int layer = 0;
  int expert = 0;
  std::vector<int> home_ranks;  // ranks holding the expert's parameters, ascending
  std::int64_t tokens = 0;      // token-slots routed to it in the window (kept, all ranks)
  double gate_sum = 0;          // sum of their gate values

  double mean_gate() const { return tokens > 0 ? gate_sum / double(tokens) : 0.0; }

  template <class Archive>
  void serialize(Archive& archive, unsigned /*version*/) {
    archive& layer& expert& home_ranks& tokens& gate_sum;
  }
};

class ExpertRegistry {
 public:
  // Rows for every expert of every layer with home ranks from the layout and no traffic yet.
  static ExpertRegistry from_layout(const Layout& layout);

  // Merges the rows of all ranks of `group` (collective): rows with the same (layer, expert) add
  // their tokens and gate sums and unite their home ranks. The result is sorted by (layer, expert)
  // and identical on every rank.
  static ExpertRegistry all_gather(const Communicator& group, const std::vector<ExpertEntry>& rows);

  const std::vector<ExpertEntry>& entries() const { return entries_; }
  // Max over experts of tokens / mean tokens, per layer (1 = perfectly balanced; 0 without
  // traffic).
  std::vector<double> imbalance_per_layer() const;

  std::vector<std::string> describe_homes() const;  // "layer 0 expert 3: ranks 1 3"
  std::string summary_line() const;                 // per layer: imbalance, busiest, mean gate

 private:
  std::vector<ExpertEntry> entries_;
};

}  // namespace daa::parallel
