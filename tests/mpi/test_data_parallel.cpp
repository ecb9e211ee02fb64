// Layout equivalence: with the same seed and global batch, training on 1, 2 or 4 ranks, with
// experts sharded over 1, 2 or 4 of them and with micro-batches, reaches the same parameters
// after 20 steps as one rank. Not bit-exact across layouts: each rank sums its share of the batch
// before the all-reduce adds the shares, and an expert sums the rows of several ranks, so float
// additions are reordered. Within one layout it is bit-exact, and replicas hold equal parameters.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cmath>
#include <memory>

#include "daa/core/config.hpp"
#include "daa/core/error.hpp"
#include "daa/parallel/communicator.hpp"
#include "daa/train/trainer.hpp"

namespace {

const std::string kInput = std::string(DAA_SOURCE_DIR) + "/inputs/fashion-mnist-ci.toml";

daa::core::Config twenty_step_config(std::vector<std::string> extra = {}) {
  std::vector<std::string> overrides = {"train.max_steps=20", "train.eval_each_epoch=false",
                                        "train.warmup_steps=5", "moe.aux_loss_coef=0.05",
                                        "moe.z_loss_coef=0.001"};
  overrides.insert(overrides.end(), extra.begin(), extra.end());
  return daa::core::load_config(kInput, overrides);
}

daa::train::TrainResult train_on(const daa::core::Config& config,
                                 const daa::parallel::Communicator& comm) {
  const std::unique_ptr<daa::train::Task> task = daa::train::load_task(config);
  daa::train::TrainOptions options;
  options.write_run_directory = false;
  options.print_progress = false;
  options.keep_parameters = true;
  return daa::train::run_training(config, *task, comm, options);
}

double relative_difference(const std::vector<float>& a, const std::vector<float>& reference) {
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff += (double(a[i]) - reference[i]) * (double(a[i]) - reference[i]);
    norm += double(reference[i]) * reference[i];
  }
  return std::sqrt(diff / norm);
}

// Parameters of rank 0 training alone (the reference), on rank 0; empty elsewhere.
std::vector<float> one_rank_parameters(const daa::core::Config& config) {
  const int rank = daa::parallel::world_rank();
  MPI_Comm solo_comm;
  MPI_Comm_split(MPI_COMM_WORLD, rank == 0 ? 0 : MPI_UNDEFINED, 0, &solo_comm);
  std::vector<float> reference;
  if (solo_comm != MPI_COMM_NULL) {
    reference = train_on(config, daa::parallel::Communicator(solo_comm, "solo")).parameters;
    MPI_Comm_free(&solo_comm);
  }
  return reference;
}

// On rank 0: the layout's parameters after 20 steps are within 1e-5 (relative) of one rank's.
void expect_matches_one_rank(const daa::train::TrainResult& result,
                             const std::vector<float>& reference, const std::string& layout) {
  if (daa::parallel::world_rank() != 0) return;
  ASSERT_EQ(result.parameters.size(), reference.size()) << layout;
  const double rel = relative_difference(result.parameters, reference);
  std::printf("[ info ] %s vs 1 rank after 20 steps: relative difference %.3e\n", layout.c_str(),
              rel);
  EXPECT_LT(rel, 1e-5) << layout;
}

// Trains on all ranks with each expert-parallel size that divides the rank count (and with the
// given extra keys) and compares with one rank.
void expect_layouts_match_one_rank(const std::vector<std::string>& extra) {
  const daa::parallel::Communicator world(MPI_COMM_WORLD, "world");
  const std::vector<float> reference = one_rank_parameters(twenty_step_config(extra));
  for (int ep : {1, 2, 4}) {
    if (world.size() % ep != 0) continue;
    std::vector<std::string> keys = extra;
    keys.push_back("parallel.expert_parallel=" + std::to_string(ep));
    const daa::train::TrainResult all = train_on(twenty_step_config(keys), world);
    expect_matches_one_rank(all, reference,
                            fmt::format("{} ranks, expert parallelism {}", world.size(), ep));
    if (world.size() == 1 && world.rank() == 0) {
      EXPECT_EQ(all.parameters, reference) << "one rank must be bit-exact run to run";
    }
  }
}

TEST(Layouts, SameParametersAsOneRank) {
  expect_layouts_match_one_rank({});
}

TEST(Layouts, SameParametersAsOneRankWithMicroBatches) {
  expect_layouts_match_one_rank({"parallel.micro_batches=4"});
}

// Group-limited routing with groups fixed by the input (not by the layout): 4 experts in 2 groups,
// each token's top-2 from 1 group.
TEST(Layouts, SameParametersAsOneRankWithGroupLimitedRouting) {
  expect_layouts_match_one_rank({"moe.expert_groups=2", "moe.max_groups_per_token=1"});
}

// Pipeline stages: (PP, DP, EP) = (2, 1, 1) on 2 ranks; (2, 2, 1) and (2, 2, 2) on 4 ranks; with
// 4 micro-batches through the 1F1B schedule, against one rank with the same micro-batches.
void expect_pipelines_match_one_rank(const std::vector<std::string>& extra) {
  const daa::parallel::Communicator world(MPI_COMM_WORLD, "world");
  std::vector<std::string> keys = extra;
  keys.push_back("parallel.micro_batches=4");
  const std::vector<float> reference = one_rank_parameters(twenty_step_config(keys));
  if (world.size() % 2 != 0) {  // one rank cannot hold two stages: refused before any work
    EXPECT_THROW(train_on(twenty_step_config({"parallel.pipeline_stages=2"}), world),
                 daa::ConfigError);
    return;
  }
  keys.push_back("parallel.pipeline_stages=2");
  for (int ep : {1, 2}) {
    if ((world.size() / 2) % ep != 0) continue;
    std::vector<std::string> layout_keys = keys;
    layout_keys.push_back("parallel.expert_parallel=" + std::to_string(ep));
    expect_matches_one_rank(
        train_on(twenty_step_config(layout_keys), world), reference,
        fmt::format("{} ranks, 2 pipeline stages, expert parallelism {}", world.size(), ep));
  }
}

TEST(Layouts, PipelineStagesMatchOneRank) {
  expect_pipelines_match_one_rank({});
}

TEST(Layouts, PipelineStagesMatchOneRankWithGroupLimitedRouting) {
  expect_pipelines_match_one_rank({"moe.expert_groups=2", "moe.max_groups_per_token=1"});
}

TEST(Layouts, ReplicasHoldIdenticalParameters) {
  const daa::parallel::Communicator world(MPI_COMM_WORLD, "world");
  if (world.size() == 1) GTEST_SKIP() << "one rank holds no replicas (the np 2 and 4 entries do)";
  int compared = 0;
  for (int ep : {1, 2}) {
    // Replicas exist only where the ranks outnumber the expert shards: r and r + ep hold the same
    // shard, so EP = 2 on 2 ranks has none and is left out.
    if (world.size() % ep != 0 || world.size() / ep < 2) continue;
    const auto result =
        train_on(twenty_step_config({"parallel.expert_parallel=" + std::to_string(ep)}), world);
    // Ranks r and r + ep hold the same expert shard (and every rank the same dense parameters).
    std::vector<char> all(std::size_t(world.size()) * 16);
    MPI_Allgather(result.local_checksum.data(), 16, MPI_CHAR, all.data(), 16, MPI_CHAR,
                  MPI_COMM_WORLD);
    for (int r = ep; r < world.size(); ++r, ++compared)
      EXPECT_EQ(std::string(&all[std::size_t(r) * 16], 16),
                std::string(&all[std::size_t(r % ep) * 16], 16))
          << "rank " << r << " vs rank " << r % ep << " with EP " << ep;
  }
  EXPECT_GT(compared, 0) << "no pair of replicas compared on " << world.size() << " ranks";
}

TEST(Layouts, RepeatedRunIsBitExact) {
  const daa::parallel::Communicator world(MPI_COMM_WORLD, "world");
  const int ep = world.size() >= 2 ? 2 : 1;
  const auto config = twenty_step_config({"parallel.expert_parallel=" + std::to_string(ep)});
  const auto first = train_on(config, world);
  const auto second = train_on(config, world);
  EXPECT_EQ(first.local_checksum, second.local_checksum);
  EXPECT_EQ(first.parameters, second.parameters);
}

}  // namespace
