// What the routers did, kept for its three readers (private to the train module): the consensus
// round (this rank's tokens per local expert since the last round), the expert registry's log
// window (what this rank's tokens sent to every expert), and the run record's whole-run figures
// (gate sums, expert x category counts).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "checkpointing.hpp"
#include "daa/model/model.hpp"
#include "daa/parallel/expert_registry.hpp"
#include "daa/parallel/topology.hpp"
#include "robust_training.hpp"

namespace daa::train {

class RoutingBook {
 public:
  RoutingBook(const parallel::Topology& topology, int experts, RunRecord& record);

  // The observer one micro-batch's forward reports its routing to: counts expert x category
  // over the batch's rows into the record. `batch` must outlive the forward.
  model::RoutingObserver category_counter(const model::StageBatch& batch);
  // One micro-batch's MoE layers: their token counts go to the consensus, registry and record,
  // and into `expert_load` ([layers][experts]). Returns the worst layer's max/mean load.
  double add(const std::vector<model::MoeStats>& layers, std::vector<double>& expert_load);

  // The consensus round on the routing bias of this stage's layers, then fresh counts.
  // Collective over the world (every rank calls it at the same steps).
  void consensus_round(model::Model& model, RobustTraining& robust, std::int64_t step);
  // The registry's summary line for the window since the last call ("" without MoE layers),
  // then a fresh window. Collective over the world.
  std::string registry_line();
  // Every layer's routing bias, [layers][experts], on every rank (each from the first
  // data-parallel rank of its stage). Collective over the world.
  std::vector<float> all_biases(model::Model& model) const;

  // This rank's pending consensus counts, [local layers][experts]: saved in checkpoints.
  std::vector<double>& consensus_counts() { return consensus_counts_; }

 private:
  const parallel::Topology& topology_;
  const int layers_, experts_, first_layer_, local_layers_;
  RunRecord& record_;
  std::vector<parallel::ExpertEntry> registry_rows_;  // [layers][experts]
  std::vector<double> consensus_counts_;
};

}  // namespace daa::train
