// GoogleTest main for single-process tests that use Kokkos views: initializes Kokkos around the
// test run (views must not outlive Kokkos::finalize).
#include <gtest/gtest.h>

#include <Kokkos_Core.hpp>

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  Kokkos::InitArguments args;
  args.disable_warnings = true;
  Kokkos::initialize(args);
  const int result = RUN_ALL_TESTS();
  Kokkos::finalize();
  return result;
}
