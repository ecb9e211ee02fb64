// Expert registry: rows from every rank merge into the same table on every rank (tokens and gate
// sums added, home ranks united), the Boost.Serialization messages round-trip, and the homes
// follow the layout.
#include <gtest/gtest.h>

#include "daa/core/config.hpp"
#include "daa/core/error.hpp"
#include "daa/parallel/exchange.hpp"
#include "daa/parallel/expert_registry.hpp"

namespace {

using daa::parallel::Communicator;
using daa::parallel::ExpertEntry;
using daa::parallel::ExpertRegistry;

ExpertEntry entry(int layer, int expert, std::vector<int> homes, std::int64_t tokens,
                  double gates) {
  ExpertEntry e;
  e.layer = layer;
  e.expert = expert;
  e.home_ranks = std::move(homes);
  e.tokens = tokens;
  e.gate_sum = gates;
  return e;
}

TEST(ExpertRegistry, MessagesRoundTrip) {
  const std::vector<ExpertEntry> rows = {entry(0, 3, {1, 5}, 17, 8.25), entry(2, 0, {}, 0, 0.0)};
  using Rows = std::vector<ExpertEntry>;
  const Rows back = daa::parallel::from_bytes<Rows>(daa::parallel::to_bytes(rows), "test");
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0].layer, 0);
  EXPECT_EQ(back[0].expert, 3);
  EXPECT_EQ(back[0].home_ranks, (std::vector<int>{1, 5}));
  EXPECT_EQ(back[0].tokens, 17);
  EXPECT_EQ(back[0].gate_sum, 8.25);
  EXPECT_EQ(back[1].layer, 2);
  EXPECT_THROW(daa::parallel::from_bytes<Rows>("not an archive", "test"), daa::Error);
}

TEST(ExpertRegistry, AllGatherMergesEveryRanksRows) {
  const Communicator world(MPI_COMM_WORLD, "world");
  const int n = world.size(), r = world.rank();
  // Every rank sends (r + 1) token-slots with gate 0.5 to each of 3 experts of 2 layers, and is
  // the home of expert r % 3 of layer 0. Rank r also lists its rows in reverse order.
  std::vector<ExpertEntry> rows;
  for (int l = 1; l >= 0; --l)
    for (int e = 2; e >= 0; --e)
      rows.push_back(entry(l, e, l == 0 && e == r % 3 ? std::vector<int>{r} : std::vector<int>{},
                           r + 1, 0.5 * (r + 1)));
  const ExpertRegistry registry = ExpertRegistry::all_gather(world, rows);
  const auto& entries = registry.entries();
  ASSERT_EQ(entries.size(), 6u);
  const std::int64_t total = std::int64_t(n) * (n + 1) / 2;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    EXPECT_EQ(entries[i].layer, int(i / 3));
    EXPECT_EQ(entries[i].expert, int(i % 3));
    EXPECT_EQ(entries[i].tokens, total);
    EXPECT_DOUBLE_EQ(entries[i].mean_gate(), 0.5);
  }
  for (int e = 0; e < 3; ++e) {
    std::vector<int> homes;
    for (int q = 0; q < n; ++q)
      if (q % 3 == e) homes.push_back(q);
    EXPECT_EQ(entries[e].home_ranks, homes) << "expert " << e;
  }
  EXPECT_EQ(registry.imbalance_per_layer(), (std::vector<double>{1.0, 1.0}));
}

TEST(ExpertRegistry, ImbalanceAndSummary) {
  const Communicator world(MPI_COMM_WORLD, "world");
  // Only rank 0 routes anything: expert 1 gets 6 token-slots, expert 0 gets 2 (mean 4).
  std::vector<ExpertEntry> rows = {
      entry(0, 0, {}, world.rank() == 0 ? 2 : 0, 0),
      entry(0, 1, {}, world.rank() == 0 ? 6 : 0, world.rank() == 0 ? 3 : 0)};
  const ExpertRegistry registry = ExpertRegistry::all_gather(world, rows);
  EXPECT_EQ(registry.imbalance_per_layer(), (std::vector<double>{1.5}));
  EXPECT_EQ(
      registry.summary_line(),
      "experts: layer 0 load max/mean 1.50, busiest expert 1 (6 token-slots, mean gate 0.500)");
}

TEST(ExpertRegistry, HomesFollowTheLayout) {
  daa::core::Config config;  // 8 experts
  config.parallel.expert_parallel = 2;
  const auto layout = daa::parallel::make_layout(
      config, 4, daa::parallel::StageCosts{.blocks = std::vector<double>(2, 1.0)});
  const ExpertRegistry registry = ExpertRegistry::from_layout(layout);
  ASSERT_EQ(registry.entries().size(), 16u);
  EXPECT_EQ(registry.entries()[0].home_ranks, (std::vector<int>{0, 2}));   // layer 0 expert 0
  EXPECT_EQ(registry.entries()[7].home_ranks, (std::vector<int>{1, 3}));   // layer 0 expert 7
  EXPECT_EQ(registry.entries()[12].home_ranks, (std::vector<int>{1, 3}));  // layer 1 expert 4
  EXPECT_EQ(registry.describe_homes()[4], "  layer 0 expert 4: ranks 1 3");
}

}  // namespace
