// Whether the CUDA runtime sees a device, and why not: the one test of "skipped: no CUDA device"
// shared by the adapter tests (cuda_test.hpp) and the unit tests' Kokkos::Cuda instances
// (tests/unit/exec_spaces.hpp). Needs only the CUDA runtime's header.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

namespace daa::cuda::test {

// Devices the runtime finds; 0 where it finds none or fails (no driver, none visible), with the
// runtime's error name and the count in `why`.
inline int cuda_device_count(std::string* why = nullptr) {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) count = 0;
  if (why)
    *why = std::string("cudaGetDeviceCount: ") + cudaGetErrorName(error) + ", " +
           std::to_string(count) + " devices";
  return count;
}

}  // namespace daa::cuda::test
