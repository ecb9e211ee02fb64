// The device kernels of daa/robust/device_rules.hpp, run on every enabled execution space
// (exec_spaces.hpp), against the host rules, bit for bit: the coordinate-wise median and trimmed
// mean (with NaN/Inf rows and values, ties, +0/-0, odd and even n, every f), the Gram matrix; and
// the counted host staging of daa/robust/host_staging.hpp.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "daa/core/error.hpp"
#include "daa/kernels/views.hpp"
#include "daa/robust/device_rules.hpp"
#include "daa/robust/host_staging.hpp"
#include "daa/robust/rules.hpp"
#include "exec_spaces.hpp"

namespace {

using daa::robust::Rule;
namespace device = daa::robust::device;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// n x d values with ties (a coarse grid), signed zeros, an all-NaN row, an all-Inf row when n
// allows, and scattered NaN/+-Inf values; `seed` varies the layout.
std::vector<double> random_rows(int n, int d, unsigned seed, bool non_finite) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_int_distribution<int> kind(0, 19);
  std::vector<double> x(std::size_t(n) * d);
  for (double& v : x) {
    switch (kind(rng)) {
      case 0:
      case 1:
      case 2:
        v = std::round(normal(rng) * 2) / 2;  // ties
        break;
      case 3:
        v = 0.0;
        break;
      case 4:
        v = -0.0;
        break;
      case 5:
        v = non_finite ? kNaN : 1.0;
        break;
      case 6:
        v = non_finite ? (normal(rng) < 0 ? -kInf : kInf) : -1.0;
        break;
      default:
        v = normal(rng) * 1e3;
    }
  }
  if (non_finite && n >= 3) {
    for (int j = 0; j < d; ++j) x[std::size_t(seed % n) * d + j] = kNaN;
    for (int j = 0; j < d; ++j) x[std::size_t((seed + 1) % n) * d + j] = kInf;
  }
  return x;
}

using daa::test::ExecSpaces;
using daa::test::ExecSpaceTest;
using daa::test::SpaceMatrix;
using daa::test::SpaceVector;

// Rows in `Matrix`'s memory: the kernels' copy in the space under test, the reference's in
// kernels::MemSpace (the dispatch's input).
template <class R, class Matrix = daa::kernels::Matrix<R>>
Matrix to_view(const std::vector<double>& x, int n, int d) {
  Matrix v("rows", n, d);
  auto host = Kokkos::create_mirror_view(v);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < d; ++j) host(i, j) = R(x[std::size_t(i) * d + j]);
  Kokkos::deep_copy(v, host);
  return v;
}

template <class View>
std::vector<typename View::non_const_value_type> to_vector(const View& v) {
  auto host = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), v);
  return {host.data(), host.data() + host.extent(0)};
}

template <class T>
void expect_same_bits(const std::vector<T>& a, const std::vector<T>& b, const char* what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  int mismatches = 0;
  for (std::size_t j = 0; j < a.size(); ++j)
    if (std::bit_cast<std::conditional_t<sizeof(T) == 8, std::uint64_t, std::uint32_t>>(a[j]) !=
        std::bit_cast<std::conditional_t<sizeof(T) == 8, std::uint64_t, std::uint32_t>>(b[j]))
      if (++mismatches <= 3)
        ADD_FAILURE() << what << ": coordinate " << j << ": " << a[j] << " vs " << b[j];
  EXPECT_EQ(mismatches, 0) << what;
}

// The kernel (run on Space, on rows in its memory) and the dispatch on the same rows in
// kernels::MemSpace (the host engine where that memory is host-accessible, as in the CPU build):
// outputs and counts bit for bit.
template <class Space, class R>
void compare_coordinate_rule(Rule rule, int n, int d, int f, unsigned seed, bool non_finite) {
  const std::vector<double> x = random_rows(n, d, seed, non_finite);
  const auto rows = to_view<R, SpaceMatrix<R, Space>>(x, n, d);
  const auto host_rows = to_view<R>(x, n, d);
  SpaceVector<R, Space> kernel_out("kernel_out", d);
  SpaceVector<std::int64_t, Space> kernel_counts("kernel_counts", n);
  daa::kernels::Vector<R> host_out("host_out", d);
  daa::kernels::Vector<std::int64_t> host_counts("host_counts", n);
  const Space space;
  device::coordinate_rule(space, rule, f, rows, kernel_out, kernel_counts);
  space.fence();
  device::coordinate_rule(rule, f, host_rows, host_out, host_counts);
  expect_same_bits(to_vector(kernel_out), to_vector(host_out), "coordinate rule");
  EXPECT_EQ(to_vector(kernel_counts), to_vector(host_counts));
  if constexpr (std::is_same_v<R, double>) {
    // And against the public host library: the result and the outcome weights (counts / d).
    daa::robust::RuleParams params;
    params.f = f;
    daa::robust::RuleOutcome outcome;
    const std::vector<double> expected = daa::robust::aggregate(rule, x, n, d, params, &outcome);
    expect_same_bits(to_vector(kernel_out), expected, "aggregate()");
    const std::vector<std::int64_t> counts = to_vector(kernel_counts);
    for (int i = 0; i < n; ++i) EXPECT_EQ(double(counts[i]) / d, outcome.weight[i]) << "row " << i;
  }
}

template <class Space>
class DeviceRules : public ExecSpaceTest<Space> {};
TYPED_TEST_SUITE(DeviceRules, ExecSpaces, daa::test::SpaceName);

TYPED_TEST(DeviceRules, CoordinateRulesMatchTheHostBitForBit) {
  for (const Rule rule : {Rule::median, Rule::trimmed_mean})
    for (const int n : {1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 17, 33, 64})
      for (int f = 0; f <= (n - 1) / 2; ++f)
        for (const bool non_finite : {false, true}) {
          SCOPED_TRACE(testing::Message() << daa::robust::to_string(rule) << " n = " << n
                                          << " f = " << f << " non-finite " << non_finite);
          const unsigned seed = unsigned(n * 100 + f * 2 + non_finite);
          compare_coordinate_rule<TypeParam, double>(rule, n, 301, f, seed, non_finite);
          compare_coordinate_rule<TypeParam, float>(rule, n, 301, f, seed, non_finite);
          if (rule == Rule::median) break;  // the median ignores f
        }
}

// More non-finite values at a coordinate than f (and all of them) still match.
TYPED_TEST(DeviceRules, MostlyNonFiniteCoordinatesMatch) {
  using Space = TypeParam;
  const int n = 5, d = 64;
  std::vector<double> x(std::size_t(n) * d, kNaN);
  for (int j = 0; j < d; ++j)
    for (int i = 0; i < j % (n + 1) && i < n; ++i) x[std::size_t(i) * d + j] = double(j - 3 * i);
  const auto rows = to_view<double, SpaceMatrix<double, Space>>(x, n, d);
  const auto host_rows = to_view<double>(x, n, d);
  for (const Rule rule : {Rule::median, Rule::trimmed_mean})
    for (int f = 0; f <= 2; ++f) {
      SpaceVector<double, Space> a("a", d);
      SpaceVector<std::int64_t, Space> ca("ca", n);
      daa::kernels::Vector<double> b("b", d);
      daa::kernels::Vector<std::int64_t> cb("cb", n);
      const Space space;
      device::coordinate_rule(space, rule, f, rows, a, ca);
      space.fence();
      device::coordinate_rule(rule, f, host_rows, b, cb);
      expect_same_bits(to_vector(a), to_vector(b), "mostly non-finite");
      EXPECT_EQ(to_vector(ca), to_vector(cb));
      EXPECT_EQ(to_vector(a)[0], kInf);  // every value non-finite: +inf, as the host rule says
    }
}

template <class Space, class R>
void compare_gram(int n, int d, unsigned seed) {
  const std::vector<double> x = random_rows(n, d, seed, false);
  const auto rows = to_view<R, SpaceMatrix<R, Space>>(x, n, d);
  const auto host_rows = to_view<R>(x, n, d);
  SpaceMatrix<double, Space> kernel("kernel_gram", n, n);
  daa::kernels::Matrix<double> host("host_gram", n, n);
  const Space space;
  device::gram_matrix(space, rows, kernel);
  space.fence();
  device::gram_matrix(host_rows, host);
  auto k = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), kernel);
  auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), host);
  for (int a = 0; a < n; ++a)
    for (int b = 0; b < n; ++b)
      EXPECT_EQ(std::bit_cast<std::uint64_t>(k(a, b)), std::bit_cast<std::uint64_t>(h(a, b)))
          << "n = " << n << " d = " << d << " (" << a << ", " << b << "): " << k(a, b) << " vs "
          << h(a, b);
}

TYPED_TEST(DeviceRules, GramMatchesTheHostBitForBit) {
  for (const int n : {1, 2, 5, 8, 13})
    for (const int d : {1, 7, 8, 9, 1003}) {
      compare_gram<TypeParam, double>(n, d, unsigned(n * 7 + d));
      compare_gram<TypeParam, float>(n, d, unsigned(n * 7 + d));
    }
}

// The host engine's dot() (which GCC's loop vectorizer turns into vector code) against the scalar
// order it promises, written out here: lane l sums double(a_j) * double(b_j) for j % 8 == l, the
// tail continues lanes 0, 1, ..., combined as ((0+1)+(2+3))+((4+5)+(6+7)). Bit for bit for every
// finite result; a NaN result may differ in sign and payload only (x86 returns the first operand's
// NaN, and the compiler may swap an addition's operands in either form).
template <class R>
double reference_dot(const daa::kernels::Matrix<R>& x, int a, int b) {
  double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (std::size_t j = 0; j < x.extent(1); ++j) {
    const std::size_t l = j < x.extent(1) / 8 * 8 ? j % 8 : j - x.extent(1) / 8 * 8;
    lane[l] += double(x(a, j)) * double(x(b, j));
  }
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

template <class R>
void compare_host_gram_with_reference(int n, int d, unsigned seed, bool non_finite) {
  const auto rows = to_view<R>(random_rows(n, d, seed, non_finite), n, d);
  daa::kernels::Matrix<double> gram("host_gram", n, n);
  device::gram_matrix(rows, gram);
  for (int a = 0; a < n; ++a)
    for (int b = 0; b < n; ++b) {
      const double want = reference_dot(rows, a, b), got = gram(a, b);
      if (std::isnan(want)) {
        EXPECT_TRUE(std::isnan(got)) << "d = " << d << " (" << a << ", " << b << ")";
        continue;
      }
      EXPECT_EQ(std::bit_cast<std::uint64_t>(got), std::bit_cast<std::uint64_t>(want))
          << "d = " << d << " (" << a << ", " << b << "): " << got << " vs " << want;
    }
}

TEST(HostGram, IsTheEightLaneScalarOrderBitForBit) {
  std::vector<int> lengths;
  for (int d = 1; d <= 70; ++d) lengths.push_back(d);
  lengths.push_back(1000);
  lengths.push_back((1 << 12) + 3);
  for (const int d : lengths)
    for (const bool non_finite : {false, true}) {
      compare_host_gram_with_reference<double>(5, d, unsigned(d), non_finite);
      compare_host_gram_with_reference<float>(5, d, unsigned(d), non_finite);
    }
}

TYPED_TEST(DeviceRules, RefusesWhatTheKernelsCannotTake) {
  using Space = TypeParam;
  const auto rows =
      to_view<double, SpaceMatrix<double, Space>>(std::vector<double>(65 * 4, 1.0), 65, 4);
  SpaceVector<double, Space> out_on_space("out", 4);
  SpaceVector<std::int64_t, Space> none_on_space("none", 0);
  EXPECT_THROW(device::coordinate_rule(Space(), Rule::median, 0, rows, out_on_space, none_on_space),
               daa::ConfigError);
  daa::kernels::Vector<double> out("out", 4);
  daa::kernels::Vector<std::int64_t> none("none", 0);
  const auto few = to_view<double>(std::vector<double>(3 * 4, 1.0), 3, 4);
  EXPECT_THROW(device::coordinate_rule(Rule::krum, 0, few, out, none), daa::ConfigError);
}

// The staging step: in place (no copy, no bytes) where the memory is host-accessible, and when
// made to copy, one deep_copy each way, counted in bytes per step and in total.
TEST(HostStaging, CountsTheBytesItCopies) {
  const std::size_t d = 1000;
  daa::kernels::Vector<float> grads("grads", d);
  Kokkos::deep_copy(grads, 1.5f);

  daa::robust::HostStaging<float> copying(true);
  for (int step = 1; step <= 2; ++step) {
    const std::span<float> host = copying.to_host(grads);
    ASSERT_EQ(host.size(), d);
    EXPECT_NE(host.data(), grads.data());
    EXPECT_EQ(host[d - 1], step == 1 ? 1.5f : 3.0f);
    for (float& v : host) v *= 2;
    copying.to_device();
    EXPECT_EQ(copying.step_bytes(), std::int64_t(2 * d * sizeof(float)));
    EXPECT_EQ(copying.total_bytes(), std::int64_t(step * 2 * d * sizeof(float)));
    EXPECT_GE(copying.step_seconds(), 0.0);
  }
  EXPECT_EQ(to_vector(grads)[0], 6.0f);

  daa::robust::HostStaging<float> staging;  // the default: copy only where it must
  const std::span<float> host = staging.to_host(grads);
  host[0] = 7.0f;
  staging.to_device();
  EXPECT_EQ(to_vector(grads)[0], 7.0f);
  if (daa::robust::HostStaging<float>::kInPlace) {
    EXPECT_EQ(host.data(), grads.data());
    EXPECT_EQ(staging.total_bytes(), 0);
  } else {
    EXPECT_EQ(staging.total_bytes(), std::int64_t(2 * d * sizeof(float)));
  }
}

}  // namespace
