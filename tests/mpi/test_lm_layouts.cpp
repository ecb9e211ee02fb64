// Layout equivalence for the language model (issue 12): 20 steps of the CI twin's model on
// (PP, DP, EP) layouts and with micro-batches reach the parameters of one rank within 1e-5
// (relative), and one layout run twice is bit-identical. Not bit-exact across layouts: shares of
// the batch are summed per rank before the all-reduce adds them, so float additions are reordered.
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <mpi.h>
#include <stdlib.h>

#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "daa/core/config.hpp"
#include "daa/core/error.hpp"
#include "daa/io/token_file.hpp"
#include "daa/parallel/communicator.hpp"
#include "daa/train/trainer.hpp"

namespace {

const std::string kInput = std::string(DAA_SOURCE_DIR) + "/inputs/text-mixture-ci.toml";

// The token file every test reads: written once by rank 0 into a temporary directory, which
// rank 0 removes after the last test.
std::string g_tokens;

class TokenFileEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    const daa::parallel::Communicator world(MPI_COMM_WORLD, "world");
    std::string dir, error;
    if (world.rank() == 0) {
      char pattern[] = "/tmp/daa-lm-layouts-XXXXXX";
      if (mkdtemp(pattern) == nullptr) {
        error = "mkdtemp failed";
      } else {
        dir = pattern;
        try {
          daa::io::prepare_token_file(
              daa::core::load_config(kInput, {"data.tokens=" + dir + "/tokens.h5"}));
        } catch (const std::exception& e) {
          error = e.what();
        }
      }
    }
    // Every rank learns the directory, or why there is none, before any of them reads.
    dir_ = world.broadcast(dir);
    error = world.broadcast(error);
    ASSERT_EQ(error, "") << "prepare of " << kInput;
    g_tokens = dir_ + "/tokens.h5";
  }
  void TearDown() override {
    MPI_Barrier(MPI_COMM_WORLD);  // nobody reads the file any more
    if (daa::parallel::world_rank() == 0 && !dir_.empty()) std::filesystem::remove_all(dir_);
  }

 private:
  std::string dir_;
};

int world_size() {
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

struct Layout {
  int pp = 1, dp = 1, ep = 1, micro_batches = 1, steps = 20;
  int ranks() const { return pp * dp; }
  std::string name() const {
    return fmt::format("(PP {}, DP {}, EP {}), {} micro-batch(es)", pp, dp, ep, micro_batches);
  }
};

// The CI twin with untied embeddings (a pipeline needs them, and every layout compares with one
// rank), the layout's steps and keys, and the shared token file. A small z-loss so that its
// gradient, too, crosses the layouts.
daa::core::Config layout_config(const Layout& layout) {
  return daa::core::load_config(
      kInput, {"data.tokens=" + g_tokens, "train.max_steps=" + std::to_string(layout.steps),
               "model.tie_embeddings=false", "moe.z_loss_coef=0.001",
               "parallel.pipeline_stages=" + std::to_string(layout.pp),
               "parallel.expert_parallel=" + std::to_string(layout.ep),
               "parallel.micro_batches=" + std::to_string(layout.micro_batches)});
}

// Trains the layout on world ranks 0 .. ranks-1 (the others wait); the result (all parameters on
// rank 0) on the members, an empty one elsewhere.
daa::train::TrainResult train_layout(const Layout& layout) {
  const int rank = daa::parallel::world_rank();
  MPI_Comm comm;
  MPI_Comm_split(MPI_COMM_WORLD, rank < layout.ranks() ? 0 : MPI_UNDEFINED, rank, &comm);
  daa::train::TrainResult result;
  if (comm != MPI_COMM_NULL) {
    const daa::core::Config config = layout_config(layout);
    const std::unique_ptr<daa::train::Task> task = daa::train::load_task(config);
    daa::train::TrainOptions options;
    options.write_run_directory = false;
    options.print_progress = false;
    options.keep_parameters = true;
    try {
      result = daa::train::run_training(config, *task, daa::parallel::Communicator(comm, "layout"),
                                        options);
    } catch (...) {
      MPI_Comm_free(&comm);
      throw;
    }
    MPI_Comm_free(&comm);
  }
  return result;
}

double relative_difference(const std::vector<float>& a, const std::vector<float>& reference) {
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff += (double(a[i]) - reference[i]) * (double(a[i]) - reference[i]);
    norm += double(reference[i]) * reference[i];
  }
  return std::sqrt(diff / norm);
}

// One rank's parameters for the given micro-batch count, on rank 0 (computed once per count).
const std::vector<float>& one_rank_parameters(int micro_batches) {
  static std::map<int, std::vector<float>> cache;
  auto it = cache.find(micro_batches);
  if (it == cache.end())
    it = cache.emplace(micro_batches, train_layout({1, 1, 1, micro_batches}).parameters).first;
  return it->second;
}

// On rank 0: the layout's parameters after 20 steps are within 1e-5 (relative) of one rank's with
// `reference_micro_batches` micro-batches.
void expect_matches_one_rank(const Layout& layout, int reference_micro_batches) {
  const std::vector<float>& reference = one_rank_parameters(reference_micro_batches);
  const daa::train::TrainResult result = train_layout(layout);
  if (daa::parallel::world_rank() != 0) return;
  ASSERT_FALSE(reference.empty());
  ASSERT_EQ(result.parameters.size(), reference.size()) << layout.name();
  const double rel = relative_difference(result.parameters, reference);
  std::printf(
      "[ info ] %s vs 1 rank (%d micro-batch(es)) after 20 steps: relative difference "
      "%.3e\n",
      layout.name().c_str(), reference_micro_batches, rel);
  EXPECT_LT(rel, 1e-5) << layout.name();
  for (float v : result.parameters) ASSERT_TRUE(std::isfinite(v)) << layout.name();
}

// The layouts the world's rank count allows, each on the first PP x DP ranks.
std::vector<Layout> layouts_for(int ranks) {
  const std::vector<Layout> all = {{1, 2, 1}, {1, 2, 2}, {2, 1, 1}, {1, 4, 1},
                                   {1, 4, 2}, {1, 4, 4}, {2, 2, 1}, {2, 2, 2}};
  std::vector<Layout> fit;
  for (const Layout& layout : all)
    if (layout.ranks() <= ranks) fit.push_back(layout);
  return fit;
}

// The largest layout of this world, for the micro-batch and repeat checks.
Layout largest_layout(int ranks) {
  if (ranks >= 4) return {2, 2, 2};
  if (ranks >= 2) return {2, 1, 1};
  return {1, 1, 1};
}

TEST(LmLayouts, OneRankIsBitExactRunToRun) {
  const std::vector<float> again = train_layout({1, 1, 1}).parameters;
  if (daa::parallel::world_rank() != 0) return;
  const std::vector<float>& reference = one_rank_parameters(1);
  ASSERT_FALSE(reference.empty());
  EXPECT_EQ(again, reference);
}

// The 1e-5 tolerance means something: steps 2..20 move the parameters far more than that, so a
// layout that trained wrongly (or not at all after step 1) would not match by accident.
TEST(LmLayouts, TwentyStepsMoveTheParametersFarBeyondTheTolerance) {
  Layout one_step;
  one_step.steps = 1;
  const std::vector<float> after_one = train_layout(one_step).parameters;
  if (daa::parallel::world_rank() != 0) return;
  const std::vector<float>& reference = one_rank_parameters(1);
  ASSERT_EQ(after_one.size(), reference.size());
  const double moved = relative_difference(after_one, reference);
  std::printf("[ info ] steps 2..20 on 1 rank move the parameters by %.3e (relative)\n", moved);
  EXPECT_GT(moved, 1e-3);
}

TEST(LmLayouts, LayoutsMatchOneRank) {
  for (const Layout& layout : layouts_for(world_size())) expect_matches_one_rank(layout, 1);
}

TEST(LmLayouts, MicroBatchesMatchOneRank) {
  for (int micro : {2, 4}) {
    Layout layout = largest_layout(world_size());
    layout.micro_batches = micro;
    expect_matches_one_rank(layout, micro);
  }
}

TEST(LmLayouts, SameLayoutTwiceIsBitIdentical) {
  const Layout layout = largest_layout(world_size());
  const daa::train::TrainResult first = train_layout(layout);
  const daa::train::TrainResult second = train_layout(layout);
  EXPECT_EQ(first.local_checksum, second.local_checksum) << layout.name();
  EXPECT_EQ(first.parameters, second.parameters) << layout.name();
}

TEST(LmLayouts, OneRankCannotHoldTwoStages) {
  if (world_size() != 1) return;
  EXPECT_THROW(train_layout({2, 1, 1}), daa::ConfigError);
}

}  // namespace

// Registered before main's RUN_ALL_TESTS: gtest owns and deletes the environment.
[[maybe_unused]] ::testing::Environment* const g_environment =
    ::testing::AddGlobalTestEnvironment(new TokenFileEnvironment);
