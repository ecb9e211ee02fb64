// Guards the build flags, not our code: GCC 12.2 with -march=native on AVX-512 hosts turned the
// initializer {10, 10, 0, 0} into {10, 10, 10, 10} (SLP vectorizer), and -fno-tree-slp-vectorize
// (cmake/DaaTargets.cmake) works around it. The test can fail only with that compiler on such a
// host when the workaround flag is dropped; everywhere else it passes whatever the flags.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace {

__attribute__((noinline)) std::vector<std::int64_t> four_int64() {
  return {10, 10, 0, 0};
}
__attribute__((noinline)) std::vector<double> four_double() {
  return {1.5, 1.5, 0.0, 0.0};
}
__attribute__((noinline)) std::vector<int> eight_int() {
  return {10, 10, 10, 10, 0, 0, 0, 0};
}

TEST(Toolchain, SlpWorkaroundFlagKeepsSmallConstantInitializersOnGcc12Avx512) {
  const std::vector<std::int64_t> a = four_int64();
  EXPECT_EQ(a[2], 0);
  EXPECT_EQ(a[3], 0);
  const std::vector<double> b = four_double();
  EXPECT_EQ(b[2], 0.0);
  EXPECT_EQ(b[3], 0.0);
  const std::vector<int> c = eight_int();
  for (int i = 4; i < 8; ++i) EXPECT_EQ(c[i], 0) << "element " << i;
}

}  // namespace
