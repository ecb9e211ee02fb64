// What the routers did (see routing_book.hpp): counts per (layer, expert) from each micro-batch's
// MoE statistics and routing events, read by the consensus round, the registry line and the run
// record. The routing bias lives in device views; its rounds go through host mirrors.
#include "routing_book.hpp"

#include <algorithm>

namespace daa::train {

RoutingBook::RoutingBook(const parallel::Topology& topology, int experts, RunRecord& record)
    : topology_(topology),
      layers_(topology.layout().moe_layers()),
      experts_(experts),
      first_layer_(topology.place().first_moe_layer),
      local_layers_(topology.place().last_moe_layer - topology.place().first_moe_layer),
      record_(record),
      consensus_counts_(std::size_t(local_layers_ * experts), 0.0) {
  // This rank is a home of its local experts in the registry.
  const parallel::RankPlace& place = topology.place();
  const int world_rank = topology.world().rank();
  for (int l = 0; l < layers_; ++l)
    for (int e = 0; e < experts_; ++e) {
      parallel::ExpertEntry row;
      row.layer = l;
      row.expert = e;
      if (l >= first_layer_ && l < place.last_moe_layer && e >= place.first_expert &&
          e < place.first_expert + place.local_experts)
        row.home_ranks.push_back(world_rank);
      registry_rows_.push_back(std::move(row));
    }
}

model::RoutingObserver RoutingBook::category_counter(const model::StageBatch& batch) {
  return [this, &batch](const model::RoutingEvent& event) {
    const std::size_t sets = std::size_t(batch.category_sets), C = record_.categories.size();
    for (std::size_t row = 0; row < event.tokens; ++row)
      for (int k = 0; k < event.top_k; ++k) {
        const int e = event.choice[row * std::size_t(event.top_k) + std::size_t(k)];
        if (e < 0) continue;  // dropped by capacity
        for (std::size_t s = 0; s < sets; ++s) {
          const int c = batch.categories[row * sets + s];
          if (c >= 0 && std::size_t(c) < C)
            ++record_.specialization[std::size_t(event.layer * experts_ + e) * C + std::size_t(c)];
        }
      }
  };
}

double RoutingBook::add(const std::vector<model::MoeStats>& layers,
                        std::vector<double>& expert_load) {
  double worst = 0;
  for (const model::MoeStats& layer : layers) {
    for (int e = 0; e < experts_; ++e) {
      const std::size_t global = std::size_t(layer.layer * experts_ + e);
      const std::int64_t tokens = layer.tokens_per_expert[std::size_t(e)];
      const double gates = layer.gate_sum_per_expert[std::size_t(e)];
      consensus_counts_[std::size_t((layer.layer - first_layer_) * experts_ + e)] += double(tokens);
      expert_load[global] += double(tokens);
      record_.registry_gate_sum[global] += gates;
      registry_rows_[global].tokens += tokens;
      registry_rows_[global].gate_sum += gates;
    }
    worst = std::max(worst, layer.imbalance);
  }
  return worst;
}

void RoutingBook::consensus_round(model::Model& model, RobustTraining& robust, std::int64_t step) {
  if (local_layers_ == 0) return;
  std::vector<float> bias(consensus_counts_.size());
  std::vector<Kokkos::View<float*, Kokkos::HostSpace>> host_bias;
  for (int l = 0; l < local_layers_; ++l) {
    host_bias.push_back(Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(),
                                                            model.routing_bias(first_layer_ + l)));
    std::copy_n(host_bias.back().data(), experts_, bias.begin() + std::ptrdiff_t(l) * experts_);
  }
  robust.consensus(consensus_counts_, bias, step);
  for (int l = 0; l < local_layers_; ++l) {
    std::copy_n(bias.begin() + std::ptrdiff_t(l) * experts_, experts_,
                host_bias[std::size_t(l)].data());
    Kokkos::deep_copy(model.routing_bias(first_layer_ + l), host_bias[std::size_t(l)]);
  }
  std::fill(consensus_counts_.begin(), consensus_counts_.end(), 0.0);
}

std::string RoutingBook::registry_line() {
  const auto registry = parallel::ExpertRegistry::all_gather(topology_.world(), registry_rows_);
  for (parallel::ExpertEntry& row : registry_rows_) row.tokens = 0, row.gate_sum = 0;
  return layers_ > 0 ? registry.summary_line() : "";
}

std::vector<float> RoutingBook::all_biases(model::Model& model) const {
  std::vector<float> bias(std::size_t(layers_ * experts_), 0.0f);
  if (topology_.place().dp_index == 0)
    for (int l = first_layer_; l < first_layer_ + local_layers_; ++l) {
      const auto host =
          Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), model.routing_bias(l));
      std::copy_n(host.data(), experts_, bias.begin() + std::ptrdiff_t(l * experts_));
    }
  topology_.world().allreduce_sum(bias.data(), bias.size());
  return bias;
}

}  // namespace daa::train
