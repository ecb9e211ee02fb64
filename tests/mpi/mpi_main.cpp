// MPI-aware GoogleTest main: every rank runs the tests, only rank 0 prints, and the exit status is
// the OR of all ranks' results, so a failure on any rank fails the test under mpiexec.
#include <gtest/gtest.h>
#include <mpi.h>

#include <Kokkos_Core.hpp>

#include "daa/kernels/kokkos_compat.hpp"

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  daa::kernels::initialize_kokkos();  // Kokkos warnings off (KokkosOptions)
  int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  Kokkos::finalize();
  MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0 && failed) std::fprintf(stderr, "mpi test: a rank reported failures\n");
  MPI_Finalize();
  return failed;
}
