// Expert registry (see expert_registry.hpp). The rows travel through parallel::all_gather_object,
// whose binary archives keep the messages small.
#include "daa/parallel/expert_registry.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "daa/parallel/exchange.hpp"

namespace daa::parallel {

ExpertRegistry ExpertRegistry::from_layout(const Layout& layout) {
  ExpertRegistry registry;
  for (int l = 0; l < layout.moe_layers(); ++l)
    for (int e = 0; e < layout.experts; ++e) {
      ExpertEntry entry;
      entry.layer = l;
      entry.expert = e;
      for (int r = 0; r < layout.ranks; ++r) {
        const RankPlace p = layout.place(r);
        const bool holds_layer = l >= p.first_moe_layer && l < p.last_moe_layer;
        if (holds_layer && e >= p.first_expert && e < p.first_expert + p.local_experts)
          entry.home_ranks.push_back(r);
      }
      registry.entries_.push_back(std::move(entry));
    }
  return registry;
}

ExpertRegistry ExpertRegistry::all_gather(const Communicator& group,
                                          const std::vector<ExpertEntry>& rows) {
  // Merge in rank order, so sums are formed in the same order on every rank.
  std::map<std::pair<int, int>, ExpertEntry> merged;
  for (const std::vector<ExpertEntry>& theirs : all_gather_object(group, rows))
    for (const ExpertEntry& row : theirs) {
      auto [it, fresh] = merged.try_emplace({row.layer, row.expert}, row);
      if (fresh) continue;
      ExpertEntry& into = it->second;
      into.tokens += row.tokens;
      into.gate_sum += row.gate_sum;
      into.home_ranks.insert(into.home_ranks.end(), row.home_ranks.begin(), row.home_ranks.end());
    }
  ExpertRegistry registry;
  for (auto& [key, entry] : merged) {
    std::sort(entry.home_ranks.begin(), entry.home_ranks.end());
    entry.home_ranks.erase(std::unique(entry.home_ranks.begin(), entry.home_ranks.end()),
                           entry.home_ranks.end());
    registry.entries_.push_back(std::move(entry));
  }
  return registry;
}

std::vector<double> ExpertRegistry::imbalance_per_layer() const {
  std::map<int, std::pair<std::int64_t, std::int64_t>> per_layer;  // layer -> (max, total)
  std::map<int, int> experts;
  for (const ExpertEntry& e : entries_) {
    auto& [largest, total] = per_layer[e.layer];
    largest = std::max(largest, e.tokens);
    total += e.tokens;
    ++experts[e.layer];
  }
  std::vector<double> out;
  for (const auto& [layer, figures] : per_layer)
    out.push_back(
        figures.second > 0 ? double(figures.first) * experts[layer] / double(figures.second) : 0.0);
  return out;
}

std::vector<std::string> ExpertRegistry::describe_homes() const {
  std::vector<std::string> lines;
  for (const ExpertEntry& e : entries_) {
    std::string ranks;
    for (int r : e.home_ranks) ranks += fmt::format(" {}", r);
    lines.push_back(fmt::format("  layer {} expert {}: ranks{}", e.layer, e.expert, ranks));
  }
  return lines;
}

std::string ExpertRegistry::summary_line() const {
  const std::vector<double> imbalance = imbalance_per_layer();
  std::string out = "experts:";
  for (std::size_t l = 0; l < imbalance.size(); ++l) {
    const ExpertEntry* busiest = nullptr;
    for (const ExpertEntry& e : entries_)
      if (e.layer == int(l) && (!busiest || e.tokens > busiest->tokens)) busiest = &e;
    out += fmt::format(
        "{} layer {} load max/mean {:.2f}, busiest expert {} ({} token-slots, mean "
        "gate {:.3f})",
        l ? ";" : "", l, imbalance[l], busiest->expert, busiest->tokens, busiest->mean_gate());
  }
  return out;
}

}  // namespace daa::parallel
