// Tests of the linalg adapter's execution-space overloads (kernels/linalg.hpp) on every enabled
// host space (exec_spaces.hpp; the cuBLAS branch is tests/cuda's cuda_gemm, on a GPU): gemm,
// gemm_batched and expert_gemm must give bit-identical results to today's host overloads
// (expert_gemm: to a loop of gemm, zero-row experts first, between and last), and expert_gemm
// refuses offsets and weights that do not fit A and C, naming them.
#include <gtest/gtest.h>

#include <Kokkos_Core.hpp>
#include <array>
#include <cstddef>
#include <cstring>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "daa/core/error.hpp"
#include "daa/kernels/linalg.hpp"
#include "daa/kernels/views.hpp"
#include "exec_spaces.hpp"

namespace daa::kernels::test {
namespace {

// Each host space's own memory: in a CUDA build kernels::Matrix is device memory, which a host
// space cannot reach (the adapter refuses that pairing at compile time).
template <class T, class Space>
using Matrix = daa::test::SpaceMatrix<T, Space>;

template <class T, class Space>
Matrix<T, Space> random_matrix(const std::string& name, std::size_t rows, std::size_t cols,
                               std::mt19937& rng) {
  Matrix<T, Space> m(name, rows, cols);
  auto h = Kokkos::create_mirror_view(m);
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  for (std::size_t i = 0; i < rows; ++i)
    for (std::size_t j = 0; j < cols; ++j) h(i, j) = T(uniform(rng));
  Kokkos::deep_copy(m, h);
  return m;
}

using daa::test::HostExecSpaces;
using daa::test::SpaceName;
template <class Space>
class GemmOnSpace : public ::testing::Test {};
TYPED_TEST_SUITE(GemmOnSpace, HostExecSpaces, SpaceName);
template <class Space>
class GemmBatchedOnSpace : public ::testing::Test {};
TYPED_TEST_SUITE(GemmBatchedOnSpace, HostExecSpaces, SpaceName);
template <class Space>
class ExpertGemmOnSpace : public ::testing::Test {};
TYPED_TEST_SUITE(ExpertGemmOnSpace, HostExecSpaces, SpaceName);

// Bitwise equality of two equally shaped views (NaN payloads included), with the first mismatch.
template <class ViewX, class ViewY>
void expect_bit_identical(const ViewX& x, const ViewY& y, const std::string& what) {
  auto xh = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), x);
  auto yh = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), y);
  ASSERT_EQ(xh.size(), yh.size()) << what;
  ASSERT_EQ(std::memcmp(xh.data(), yh.data(), xh.size() * sizeof(*xh.data())), 0)
      << what << ": the execution-space overload differs from the host overload";
}

template <class T, class Space>
void gemm_matches(Precision precision) {
  std::mt19937 rng(11);
  const Space space;
  // Model-like and odd shapes; every trans combination; beta 0 and 0.5; a padded subview of C.
  for (const auto [m, n, k] : {std::array<std::size_t, 3>{70, 96, 64}, {1, 1, 1}, {33, 5, 129}})
    for (const Trans ta : {Trans::no, Trans::yes})
      for (const Trans tb : {Trans::no, Trans::yes})
        for (const T beta : {T(0), T(0.5)}) {
          const auto a = ta == Trans::no ? random_matrix<T, Space>("a", m, k, rng)
                                         : random_matrix<T, Space>("a", k, m, rng);
          const auto b = tb == Trans::no ? random_matrix<T, Space>("b", k, n, rng)
                                         : random_matrix<T, Space>("b", n, k, rng);
          const auto c0 = random_matrix<T, Space>("c0", m, n + 3, rng);
          Matrix<T, Space> c1("c1", m, n + 3), c2("c2", m, n + 3);
          Kokkos::deep_copy(c1, c0);
          Kokkos::deep_copy(c2, c0);
          const auto cols = std::make_pair(std::size_t(1), n + 1);
          gemm(Trans(ta), Trans(tb), T(0.75), a, b, beta, Kokkos::subview(c1, Kokkos::ALL, cols),
               precision);
          gemm(space, Trans(ta), Trans(tb), T(0.75), a, b, beta,
               Kokkos::subview(c2, Kokkos::ALL, cols), precision);
          expect_bit_identical(c1, c2,
                               "gemm m=" + std::to_string(m) + " n=" + std::to_string(n) +
                                   " k=" + std::to_string(k));
        }
}

TYPED_TEST(GemmOnSpace, BitIdenticalFloat) {
  using Space = TypeParam;
  gemm_matches<float, Space>(Precision::fp32);
}
TYPED_TEST(GemmOnSpace, BitIdenticalDouble) {
  using Space = TypeParam;
  gemm_matches<double, Space>(Precision::fp32);
}
TYPED_TEST(GemmOnSpace, BitIdenticalBf16) {
  using Space = TypeParam;
  if (!bf16_available()) GTEST_SKIP() << "no bf16 products in this build";
  gemm_matches<float, Space>(Precision::bf16);
}

TYPED_TEST(GemmBatchedOnSpace, BitIdenticalOnStridedSubviews) {
  using Space = TypeParam;
  constexpr std::size_t batch = 3, rows = 40, d = 64, head = 32;
  using View3 = Kokkos::View<float***, Kokkos::LayoutRight, daa::test::SpaceDevice<Space>>;
  View3 qk("qk", batch, rows, 2 * d), s1("s1", batch, rows, rows), s2("s2", batch, rows, rows);
  auto qk_h = Kokkos::create_mirror_view(qk);
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (std::size_t x = 0; x < batch; ++x)
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t c = 0; c < 2 * d; ++c) qk_h(x, r, c) = uniform(rng);
  Kokkos::deep_copy(qk, qk_h);
  const auto all = Kokkos::ALL;
  auto q = Kokkos::subview(qk, all, all, std::make_pair(head, 2 * head));
  auto k = Kokkos::subview(qk, all, all, std::make_pair(d + head, d + 2 * head));
  Kokkos::deep_copy(s1, 1.0f);
  Kokkos::deep_copy(s2, 1.0f);
  gemm_batched(Trans::no, Trans::yes, 0.5f, q, k, 0.25f, s1);
  gemm_batched(Space(), Trans::no, Trans::yes, 0.5f, q, k, 0.25f, s2);
  expect_bit_identical(s1, s2, "gemm_batched");
}

// Packed rows per expert: zero-row experts first, between and last, as routing leaves them.
constexpr std::array<std::size_t, 7> kExpertRows = {0, 13, 0, 0, 40, 1, 0};

template <class T, class Space>
void expert_gemm_matches(Trans trans_b, T beta, Precision precision) {
  constexpr std::size_t k = 48, n = 80;
  std::mt19937 rng(7);
  std::vector<std::size_t> offset = {0};
  for (const std::size_t r : kExpertRows) offset.push_back(offset.back() + r);
  const std::size_t rows = offset.back();
  const auto a = random_matrix<T, Space>("a", rows, k, rng);
  std::vector<Matrix<T, Space>> weights;
  for (std::size_t e = 0; e < kExpertRows.size(); ++e)
    weights.push_back(trans_b == Trans::no ? random_matrix<T, Space>("w", k, n, rng)
                                           : random_matrix<T, Space>("w", n, k, rng));
  const auto c0 = random_matrix<T, Space>("c0", rows, n, rng);
  Matrix<T, Space> looped("looped", rows, n), grouped("grouped", rows, n);
  Kokkos::deep_copy(looped, c0);
  Kokkos::deep_copy(grouped, c0);
  // What the MoE experts do: one gemm per expert over its rows, skipping empty experts.
  for (std::size_t e = 0; e < weights.size(); ++e) {
    if (offset[e] == offset[e + 1]) continue;
    const auto range = std::make_pair(offset[e], offset[e + 1]);
    gemm(Trans::no, trans_b, T(1), Kokkos::subview(a, range, Kokkos::ALL), weights[e], beta,
         Kokkos::subview(looped, range, Kokkos::ALL), precision);
  }
  expert_gemm(Space(), trans_b, std::span<const std::size_t>(offset), T(1), a,
              std::span<const Matrix<T, Space>>(weights), beta, grouped, precision);
  expect_bit_identical(looped, grouped,
                       std::string("expert_gemm trans_b=") + (trans_b == Trans::no ? "n" : "t"));
}

TYPED_TEST(ExpertGemmOnSpace, MatchesLoopOfGemmFloat) {
  using Space = TypeParam;
  for (const Trans tb : {Trans::no, Trans::yes})
    for (const float beta : {0.0f, 1.0f})
      expert_gemm_matches<float, Space>(tb, beta, Precision::fp32);
}
TYPED_TEST(ExpertGemmOnSpace, MatchesLoopOfGemmDouble) {
  using Space = TypeParam;
  for (const Trans tb : {Trans::no, Trans::yes})
    for (const double beta : {0.0, 1.0})
      expert_gemm_matches<double, Space>(tb, beta, Precision::fp32);
}
TYPED_TEST(ExpertGemmOnSpace, MatchesLoopOfGemmBf16) {
  using Space = TypeParam;
  if (!bf16_available()) GTEST_SKIP() << "no bf16 products in this build";
  for (const Trans tb : {Trans::no, Trans::yes})
    expert_gemm_matches<float, Space>(tb, 0.0f, Precision::bf16);
}

TYPED_TEST(ExpertGemmOnSpace, NoRowsAtAllWritesNothing) {
  using Space = TypeParam;
  std::mt19937 rng(9);
  const std::vector<std::size_t> offset = {0, 0, 0};
  const std::vector<Matrix<float, Space>> weights = {random_matrix<float, Space>("w0", 4, 6, rng),
                                                     random_matrix<float, Space>("w1", 4, 6, rng)};
  Matrix<float, Space> a("a", 0, 4), c("c", 0, 6);
  EXPECT_NO_THROW(expert_gemm(Space(), Trans::no, std::span<const std::size_t>(offset), 1.0f, a,
                              std::span<const Matrix<float, Space>>(weights), 0.0f, c));
}

TYPED_TEST(ExpertGemmOnSpace, RefusesOffsetsAndWeightsThatDoNotFit) {
  using Space = TypeParam;
  std::mt19937 rng(13);
  const auto a = random_matrix<float, Space>("a", 5, 4, rng);
  Matrix<float, Space> c("c", 5, 6);
  const std::vector<Matrix<float, Space>> weights = {random_matrix<float, Space>("w0", 4, 6, rng),
                                                     random_matrix<float, Space>("w1", 4, 6, rng)};
  const auto run = [&](const std::vector<std::size_t>& offset,
                       const std::vector<Matrix<float, Space>>& w) {
    expert_gemm(Space(), Trans::no, std::span<const std::size_t>(offset), 1.0f, a,
                std::span<const Matrix<float, Space>>(w), 0.0f, c);
  };
  const auto message = [&](const std::vector<std::size_t>& offset,
                           const std::vector<Matrix<float, Space>>& w) -> std::string {
    try {
      run(offset, w);
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_EQ(message({0, 2, 4}, weights),
            "kernels::expert_gemm: 3 offsets (last 4) for 2 experts over 5 rows of A and 5 of C");
  EXPECT_EQ(message({0, 2}, weights),
            "kernels::expert_gemm: 2 offsets (last 2) for 2 experts over 5 rows of A and 5 of C");
  EXPECT_EQ(message({0, 3, 2, 5}, {weights[0], weights[1], weights[0]}),
            "kernels::expert_gemm: expert 1 has rows 3..2 and a weight of 4x6, expected 4x6");
  EXPECT_EQ(message({0, 2, 5}, {weights[0], random_matrix<float, Space>("w", 6, 4, rng)}),
            "kernels::expert_gemm: expert 1 has rows 2..5 and a weight of 6x4, expected 4x6");
  EXPECT_NO_THROW(run({0, 2, 5}, weights));
}

}  // namespace
}  // namespace daa::kernels::test
