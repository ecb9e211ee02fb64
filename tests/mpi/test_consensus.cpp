// Consensus routing over MPI_COMM_WORLD (4 ranks): a lying proposer cannot move the agreed expert
// load outside the range of the honest proposals, so the routing bias steps the way every honest
// rank's own proposal says; under a plain mean the same lie flips the step. Plus the local steps
// (load fractions from counts, the sign step of the bias).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "daa/core/error.hpp"
#include "daa/robust/consensus.hpp"

namespace {

using daa::parallel::Communicator;
using daa::robust::Mode;
using daa::robust::RobustAllReduce;
using daa::robust::Rule;
using daa::robust::RuleParams;

const Communicator& world() {
  static const Communicator comm(MPI_COMM_WORLD, "world");
  return comm;
}

constexpr int kExperts = 4;
constexpr double kRate = 1e-3;

// Honest rank r sees expert 0 under-loaded and expert 3 over-loaded (two layers, the second
// mirrored); the liar, the last rank, claims the opposite with all its weight.
std::vector<double> counts_of(int rank, bool liar) {
  if (liar) return {1000, 0, 0, 0, 0, 0, 0, 1000};
  const double d = 10.0 * rank;
  return {100 + d, 300, 300, 300 - d, 300 - d, 300, 300, 100 + d};
}

struct Outcome {
  std::vector<float> agreed;
  std::vector<float> bias;
};

Outcome consensus_round(Rule rule, bool liar) {
  RuleParams p;
  p.f = 1;
  std::vector<float> load = daa::robust::load_fractions(counts_of(world().rank(), liar), kExperts);
  RobustAllReduce(rule, p, Mode::replicated).reduce(load, world());
  std::vector<float> bias(load.size(), 0.0f);
  daa::robust::balance_step(load, kExperts, kRate, bias);
  return {load, bias};
}

TEST(Consensus, LyingProposerCannotFlipTheBiasUnderTheMedianButCanUnderTheMean) {
  const int n = world().size();
  ASSERT_GE(n, 3) << "median with f = 1 needs 3 ranks";
  const bool liar = world().rank() == n - 1;
  // What honest proposals justify: the range of their loads, per (layer, expert).
  std::vector<float> lo(2 * kExperts, 1.0f), hi(2 * kExperts, 0.0f);
  for (int r = 0; r < n - 1; ++r) {
    const std::vector<float> load = daa::robust::load_fractions(counts_of(r, false), kExperts);
    for (std::size_t i = 0; i < load.size(); ++i) {
      lo[i] = std::min(lo[i], load[i]);
      hi[i] = std::max(hi[i], load[i]);
    }
  }
  const Outcome median = consensus_round(Rule::median, liar);
  for (std::size_t i = 0; i < median.agreed.size(); ++i) {
    EXPECT_GE(median.agreed[i], lo[i]) << i;
    EXPECT_LE(median.agreed[i], hi[i]) << i;
  }
  // Every honest rank sees expert 0 of layer 0 and expert 3 of layer 1 under-loaded.
  EXPECT_FLOAT_EQ(median.bias[0], float(kRate));
  EXPECT_FLOAT_EQ(median.bias[3], float(-kRate));
  EXPECT_FLOAT_EQ(median.bias[4], float(-kRate));
  EXPECT_FLOAT_EQ(median.bias[7], float(kRate));

  const Outcome mean = consensus_round(Rule::mean, liar);
  EXPECT_GT(mean.agreed[0], hi[0]) << "the lie pulls the mean outside the honest range";
  EXPECT_FLOAT_EQ(mean.bias[0], float(-kRate)) << "and flips the step of expert 0";
  EXPECT_FLOAT_EQ(mean.bias[7], float(-kRate));

  // Every rank, the liar included, ends with the same bias.
  std::vector<float> all(median.bias.size() * std::size_t(n));
  MPI_Allgather(median.bias.data(), int(median.bias.size()), MPI_FLOAT, all.data(),
                int(median.bias.size()), MPI_FLOAT, MPI_COMM_WORLD);
  for (int r = 1; r < n; ++r)
    EXPECT_EQ(std::memcmp(all.data(), all.data() + std::size_t(r) * median.bias.size(),
                          median.bias.size() * sizeof(float)),
              0);
}

TEST(Consensus, LoadFractionsAndBalanceStep) {
  const std::vector<float> load =
      daa::robust::load_fractions(std::vector<double>{1, 1, 2, 0, 0, 0, 0, 0}, 4);
  EXPECT_EQ(load, (std::vector<float>{0.25f, 0.25f, 0.5f, 0.0f, 0.25f, 0.25f, 0.25f, 0.25f}))
      << "a layer without tokens proposes the uniform load";
  std::vector<float> bias{0.5f, 0.5f, 0.5f, 0.5f, 0, 0, 0, 0};
  daa::robust::balance_step(load, 4, 0.25, bias);
  EXPECT_EQ(bias, (std::vector<float>{0.5f, 0.5f, 0.25f, 0.75f, 0, 0, 0, 0}));
  EXPECT_THROW(daa::robust::load_fractions(std::vector<double>{1, 2, 3}, 2), daa::Error);
}

}  // namespace
