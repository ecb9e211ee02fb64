// MPI-aware GoogleTest main: every rank runs the tests, only rank 0 prints, and the exit status is
// the OR of all ranks' results, so a failure on any rank fails the test under mpiexec.
#include <gtest/gtest.h>
#include <mpi.h>

#include <Kokkos_Core.hpp>
#include <cstdio>
#include <exception>

#include "daa/parallel/communicator.hpp"

#include "daa/kernels/kokkos_compat.hpp"

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  // As in the program: MPI errors return to DAA_MPI_CHECK, which the tests rely on.
  daa::parallel::init_error_handling();
  ::testing::InitGoogleTest(&argc, argv);
  int failed = 0;
  try {
    int rank = 0;
    DAA_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    if (rank != 0) {
      auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
      delete listeners.Release(listeners.default_result_printer());
    }
    daa::kernels::initialize_kokkos();  // Kokkos warnings off (KokkosOptions)
    failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
    Kokkos::finalize();
    DAA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
    if (rank == 0 && failed) std::fprintf(stderr, "mpi test: a rank reported failures\n");
  } catch (const std::exception& e) {
    // An MPI error outside any test (gtest catches those inside one): end every rank, not a hang.
    std::fprintf(stderr, "mpi test: %s\n", e.what());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Finalize();
  return failed;
}
