// Kernel tests per enabled Kokkos execution space (Cabana's pattern): ExecSpaces lists every space
// this Kokkos enables (Serial, OpenMP, Cuda; Kokkos 3.4 and 4.x alike; HostExecSpaces the host
// ones), for TYPED_TEST_SUITE over ExecSpaceTest; a space's views live in its memory space.
#pragma once

#include <gtest/gtest.h>

#include <Kokkos_Core.hpp>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#if defined(KOKKOS_ENABLE_CUDA)
#include "../cuda/cuda_device.hpp"
#endif

namespace daa::test {

namespace detail {
template <class Tuple>
struct TupleToTypes;
template <class... Spaces>
struct TupleToTypes<std::tuple<Spaces...>> {
  using type = ::testing::Types<Spaces...>;
};
}  // namespace detail

// The enabled spaces, host spaces first (a std::tuple_cat of the configured ones, so that no
// preprocessor branch leaves a trailing comma).
using ExecSpaces = detail::TupleToTypes<decltype(std::tuple_cat(
#if defined(KOKKOS_ENABLE_SERIAL)
    std::declval<std::tuple<Kokkos::Serial>>(),
#endif
#if defined(KOKKOS_ENABLE_OPENMP)
    std::declval<std::tuple<Kokkos::OpenMP>>(),
#endif
#if defined(KOKKOS_ENABLE_CUDA)
    std::declval<std::tuple<Kokkos::Cuda>>(),
#endif
    std::declval<std::tuple<>>()))>::type;

// The enabled spaces that run on the host (Serial, OpenMP): for host-only adapters such as the
// host GEMM overloads of kernels/linalg.hpp.
using HostExecSpaces = detail::TupleToTypes<decltype(std::tuple_cat(
#if defined(KOKKOS_ENABLE_SERIAL)
    std::declval<std::tuple<Kokkos::Serial>>(),
#endif
#if defined(KOKKOS_ENABLE_OPENMP)
    std::declval<std::tuple<Kokkos::OpenMP>>(),
#endif
    std::declval<std::tuple<>>()))>::type;

// Test names say the space ("RowKernels/Serial.Softmax").
struct SpaceName {
  template <class Space>
  static std::string GetName(int) {
    return Space::name();
  }
};

// Views of a space: in its memory space, and typed with the space, so that a view's
// execution_space is the space under test even where several share one memory space.
template <class Space>
using SpaceDevice = Kokkos::Device<Space, typename Space::memory_space>;
template <class T, class Space>
using SpaceVector = Kokkos::View<T*, Kokkos::LayoutRight, SpaceDevice<Space>>;
template <class T, class Space>
using SpaceMatrix = Kokkos::View<T**, Kokkos::LayoutRight, SpaceDevice<Space>>;

// Whether results can be compared bit for bit with a plain host loop: on a host space a team is
// one thread that reduces in column order; a GPU team reduces in an order fixed by its size.
template <class Space>
constexpr bool kHostSpace =
    Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename Space::memory_space>::accessible;

// The fixture of a kernel test over ExecSpaces: skips a Cuda instance where the runtime sees no
// device ("skipped: no CUDA device", as the CUDA adapter tests say).
template <class Space>
class ExecSpaceTest : public ::testing::Test {
 protected:
  void SetUp() override {
#if defined(KOKKOS_ENABLE_CUDA)
    if constexpr (std::is_same_v<Space, Kokkos::Cuda>) {
      std::string why;
      if (daa::cuda::test::cuda_device_count(&why) == 0)
        GTEST_SKIP() << "skipped: no CUDA device (" << why << ")";
    }
#endif
  }
};

}  // namespace daa::test
