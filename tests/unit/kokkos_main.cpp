// GoogleTest main for single-process tests that use Kokkos views: initializes Kokkos around the
// test run (views must not outlive Kokkos::finalize). With a CUDA Kokkos and no device visible,
// Kokkos cannot start at all: the program says "skipped: no CUDA device" and exits 77 (skipped).
#include <gtest/gtest.h>

#include <Kokkos_Core.hpp>
#include <cstdio>

#include "daa/kernels/kokkos_compat.hpp"
#if defined(KOKKOS_ENABLE_CUDA)
#include <string>

#include "../cuda/cuda_device.hpp"
#endif

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
#if defined(KOKKOS_ENABLE_CUDA)
  std::string why;
  if (daa::cuda::test::cuda_device_count(&why) == 0) {
    std::printf("skipped: no CUDA device (%s); Kokkos::Cuda cannot start\n", why.c_str());
    return 77;
  }
#endif
  daa::kernels::initialize_kokkos();  // Kokkos warnings off (KokkosOptions)
  const int result = RUN_ALL_TESTS();
  Kokkos::finalize();
  return result;
}
