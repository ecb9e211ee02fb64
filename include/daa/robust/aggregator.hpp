// The one gradient-aggregation interface. Each rank contributes its local gradient estimate;
// every rank ends with the same aggregate. Today: the plain mean (an all-reduce); the
// Byzantine-robust rules of DESIGN.md §6 plug in behind the same interface.
#pragma once

#include <memory>
#include <span>
#include <string>

#include "daa/parallel/communicator.hpp"

namespace daa::robust {

class GradientAggregator {
 public:
  virtual ~GradientAggregator() = default;
  virtual std::string name() const = 0;
  // Replaces `gradient` (this rank's contribution, host-accessible, already fenced) by the
  // aggregate over `group`, identically on every rank of the group.
  virtual void aggregate(std::span<float> gradient, const parallel::Communicator& group) = 0;
};

// Mean over ranks: an in-place MPI sum scaled by 1/size.
class MeanAggregator final : public GradientAggregator {
 public:
  std::string name() const override { return "mean"; }
  void aggregate(std::span<float> gradient, const parallel::Communicator& group) override;
};

}  // namespace daa::robust
