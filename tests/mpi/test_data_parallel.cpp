// Data-parallel equivalence: with the same seed and global batch, training on 1, 2 or 4 ranks
// reaches the same parameters after 20 steps. Not bit-exact across rank counts because each rank
// sums its share of the batch before the all-reduce adds the shares: float addition is reordered.
// Within one rank count it is bit-exact, and parameters are identical on every rank.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "daa/core/config.hpp"
#include "daa/io/dataset.hpp"
#include "daa/parallel/communicator.hpp"
#include "daa/train/trainer.hpp"

namespace {

const std::string kInput = std::string(DAA_SOURCE_DIR) + "/inputs/fashion-mnist-ci.toml";

daa::core::Config twenty_step_config() {
  return daa::core::load_config(
      kInput, {"train.max_steps=20", "train.eval_each_epoch=false", "train.warmup_steps=5",
               "moe.aux_loss_coef=0.05", "moe.z_loss_coef=0.001"});
}

daa::train::TrainResult train_on(const daa::core::Config& config,
                                 const daa::parallel::Communicator& comm) {
  static const daa::io::Dataset data = daa::io::load_dataset(config.data);
  daa::train::TrainOptions options;
  options.write_run_directory = false;
  options.print_progress = false;
  options.keep_parameters = true;
  return daa::train::run_training(config, data, comm, options);
}

double relative_difference(const std::vector<float>& a, const std::vector<float>& reference) {
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff += (double(a[i]) - reference[i]) * (double(a[i]) - reference[i]);
    norm += double(reference[i]) * reference[i];
  }
  return std::sqrt(diff / norm);
}

TEST(DataParallel, SameParametersAsOneRank) {
  const daa::core::Config config = twenty_step_config();
  const daa::parallel::Communicator world(MPI_COMM_WORLD, "world");

  // Reference: rank 0 alone.
  MPI_Comm solo_comm;
  MPI_Comm_split(MPI_COMM_WORLD, world.rank() == 0 ? 0 : MPI_UNDEFINED, 0, &solo_comm);
  std::vector<float> reference;
  if (solo_comm != MPI_COMM_NULL) {
    reference = train_on(config, daa::parallel::Communicator(solo_comm, "solo")).parameters;
    MPI_Comm_free(&solo_comm);
  }

  const daa::train::TrainResult all = train_on(config, world);
  if (world.rank() == 0) {
    ASSERT_EQ(all.parameters.size(), reference.size());
    const double rel = relative_difference(all.parameters, reference);
    std::printf("[ info ] %d ranks vs 1 rank after 20 steps: relative difference %.3e\n",
                world.size(), rel);
    EXPECT_LT(rel, 1e-5);
    if (world.size() == 1) {
      EXPECT_EQ(all.parameters, reference) << "one rank must be bit-exact run to run";
    }
  }
}

TEST(DataParallel, ParametersIdenticalOnEveryRank) {
  const daa::parallel::Communicator world(MPI_COMM_WORLD, "world");
  const daa::train::TrainResult result = train_on(twenty_step_config(), world);
  // Everyone compares against rank 0's checksum.
  char checksum[17] = {};
  result.summary.parameter_checksum.copy(checksum, 16);
  char root_checksum[17] = {};
  std::copy(checksum, checksum + 17, root_checksum);
  MPI_Bcast(root_checksum, 17, MPI_CHAR, 0, MPI_COMM_WORLD);
  EXPECT_STREQ(checksum, root_checksum) << "rank " << world.rank();
}

TEST(DataParallel, RepeatedRunIsBitExact) {
  const daa::parallel::Communicator world(MPI_COMM_WORLD, "world");
  const auto first = train_on(twenty_step_config(), world);
  const auto second = train_on(twenty_step_config(), world);
  EXPECT_EQ(first.summary.parameter_checksum, second.summary.parameter_checksum);
  EXPECT_EQ(first.parameters, second.parameters);
}

}  // namespace
