// Mean aggregation over a communicator (see aggregator.hpp).
#include "daa/robust/aggregator.hpp"

namespace daa::robust {

void MeanAggregator::aggregate(std::span<float> gradient, const parallel::Communicator& group) {
  if (group.size() == 1) return;
  group.allreduce_sum(gradient.data(), gradient.size());
  const float scale = 1.0f / float(group.size());
  for (float& g : gradient) g *= scale;
}

}  // namespace daa::robust
