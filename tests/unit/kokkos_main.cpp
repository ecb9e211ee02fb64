// GoogleTest main for single-process tests that use Kokkos views: initializes Kokkos around the
// test run (views must not outlive Kokkos::finalize).
#include <gtest/gtest.h>

#include <Kokkos_Core.hpp>

#include "daa/kernels/kokkos_compat.hpp"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  daa::kernels::initialize_kokkos();  // Kokkos warnings off (KokkosOptions)
  const int result = RUN_ALL_TESTS();
  Kokkos::finalize();
  return result;
}
