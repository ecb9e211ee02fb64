// Consensus routing's local steps (see daa/robust/consensus.hpp); the round itself is a
// RobustAllReduce over the proposals.
#include "daa/robust/consensus.hpp"

#include "daa/core/error.hpp"

namespace daa::robust {

std::vector<float> load_fractions(std::span<const double> counts, int experts) {
  if (experts < 1 || counts.size() % std::size_t(experts) != 0)
    throw Error("consensus: " + std::to_string(counts.size()) + " load counts for " +
                std::to_string(experts) + " experts per layer");
  std::vector<float> load(counts.size());
  for (std::size_t l = 0; l < counts.size() / std::size_t(experts); ++l) {
    double total = 0;
    for (int e = 0; e < experts; ++e) total += counts[l * experts + e];
    for (int e = 0; e < experts; ++e)
      load[l * experts + e] = float(total > 0 ? counts[l * experts + e] / total : 1.0 / experts);
  }
  return load;
}

void balance_step(std::span<const float> agreed_load, int experts, double rate,
                  std::span<float> bias) {
  if (agreed_load.size() != bias.size())
    throw Error("consensus: " + std::to_string(agreed_load.size()) + " loads for " +
                std::to_string(bias.size()) + " biases");
  const double balanced = 1.0 / experts;
  for (std::size_t i = 0; i < bias.size(); ++i) {
    const double load = agreed_load[i];
    // A non-finite agreed load (every proposal bad) leaves the bias alone.
    if (!(load == load) || load == balanced) continue;
    bias[i] += float(load < balanced ? rate : -rate);
  }
}

}  // namespace daa::robust
