// GPU placement on a node (daa/parallel/topology.hpp): node_ranks numbers the ranks that share a
// node, and device_for_rank gives each one GPU, refusing a node with more ranks than visible
// GPUs by both figures. The CUDA build's main uses these before starting Kokkos.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <set>
#include <vector>

#include "daa/core/error.hpp"
#include "daa/parallel/communicator.hpp"
#include "daa/parallel/topology.hpp"

namespace {

using daa::parallel::Communicator;
using daa::parallel::device_for_rank;
using daa::parallel::NodeRanks;
using ::testing::HasSubstr;

// mpirun-local starts every rank on this machine: one node holding them all.
TEST(NodePlacement, EveryRankOfOneNodeGetsItsOwnLocalIndex) {
  const Communicator world(MPI_COMM_WORLD, "world");
  const NodeRanks node = daa::parallel::node_ranks(world);
  EXPECT_EQ(node.local_ranks, world.size());
  ASSERT_GE(node.local_rank, 0);
  ASSERT_LT(node.local_rank, node.local_ranks);
  std::vector<int> all(std::size_t(world.size()), -1);
  DAA_MPI_CHECK(MPI_Allgather(&node.local_rank, 1, MPI_INT, all.data(), 1, MPI_INT, world.comm()));
  EXPECT_EQ(std::set<int>(all.begin(), all.end()).size(), all.size());
}

TEST(NodePlacement, OneGpuPerRankInLocalOrder) {
  EXPECT_EQ(device_for_rank({.local_rank = 0, .local_ranks = 1}, 1), 0);
  EXPECT_EQ(device_for_rank({.local_rank = 3, .local_ranks = 4}, 4), 3);
  EXPECT_EQ(device_for_rank({.local_rank = 1, .local_ranks = 2}, 8), 1);  // spare GPUs stay idle
}

TEST(NodePlacement, MoreRanksThanGpusIsRefusedWithBothFigures) {
  try {
    device_for_rank({.local_rank = 0, .local_ranks = 8}, 4);
    FAIL() << "8 ranks on 4 GPUs accepted";
  } catch (const daa::Error& e) {
    EXPECT_EQ(e.exit_code(), daa::ExitCode::bad_input);
    EXPECT_THAT(e.what(), HasSubstr("8 ranks on this node but 4 visible GPU(s)"));
    EXPECT_THAT(e.what(), HasSubstr("--ntasks-per-node=4"));
  }
}

TEST(NodePlacement, NoVisibleGpuIsRefusedByName) {
  try {
    device_for_rank({.local_rank = 1, .local_ranks = 2}, 0);
    FAIL() << "a node without GPUs accepted";
  } catch (const daa::Error& e) {
    EXPECT_EQ(e.exit_code(), daa::ExitCode::bad_input);
    EXPECT_THAT(e.what(), HasSubstr("no CUDA device is visible to rank 1"));
    EXPECT_THAT(e.what(), HasSubstr("CUDA_VISIBLE_DEVICES"));
  }
}

}  // namespace
