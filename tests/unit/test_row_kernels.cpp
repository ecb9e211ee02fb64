// The row kernels that run one team per row (RMSNorm, LayerNorm, row softmax): on a host
// execution space a team is one thread that reduces in column order, so their results must equal
// a plain per-row loop bit for bit; elsewhere (CUDA) they must agree to float rounding.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "daa/core/rng.hpp"
#include "daa/kernels/nn_kernels.hpp"
#include "daa/kernels/views.hpp"

namespace daa::kernels::test {
namespace {

constexpr bool kHostSpace = Kokkos::SpaceAccessibility<Kokkos::HostSpace, MemSpace>::accessible;

Matrix<float> random_matrix(int rows, int cols, std::uint64_t seed, float offset = 0) {
  Matrix<float> m("m", rows, cols);
  auto h = Kokkos::create_mirror_view(m);
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j)
      h(i, j) = offset + 3.0f * float(core::counter_uniform(seed, core::RngPurpose::test, 1,
                                                            std::uint64_t(i) * cols + j) -
                                      0.5);
  Kokkos::deep_copy(m, h);
  return m;
}

Vector<float> random_vector(int n, std::uint64_t seed) {
  Vector<float> v("v", n);
  auto h = Kokkos::create_mirror_view(v);
  for (int j = 0; j < n; ++j)
    h(j) = 0.5f + float(core::counter_uniform(seed, core::RngPurpose::test, 2, j));
  Kokkos::deep_copy(v, h);
  return v;
}

// Bit-equal on host spaces, within a few float ulps of the row's scale on a device.
void expect_same(float kernel, float reference, const char* what, int i, int j) {
  if (kHostSpace) {
    std::uint32_t a, b;
    std::memcpy(&a, &kernel, 4);
    std::memcpy(&b, &reference, 4);
    EXPECT_EQ(a, b) << what << "(" << i << ", " << j << "): " << kernel << " vs " << reference;
  } else {
    EXPECT_NEAR(kernel, reference, 1e-5f * (1 + std::fabs(reference))) << what << "(" << i << ")";
  }
}

class RowKernels : public ::testing::TestWithParam<int> {};

TEST_P(RowKernels, RmsNormMatchesPlainLoops) {
  const int rows = 37, cols = GetParam();
  const float eps = 1e-5f;
  const Matrix<float> x = random_matrix(rows, cols, 11), dy = random_matrix(rows, cols, 12);
  const Vector<float> gain = random_vector(cols, 13);
  Matrix<float> y("y", rows, cols), dx("dx", rows, cols);
  Vector<float> inv_rms("inv_rms", rows), grad_gain("grad_gain", cols);
  rmsnorm_forward(x, VectorRef<float>(gain), eps, y, inv_rms);
  rmsnorm_backward(x, VectorRef<float>(gain), inv_rms, dy, dx, VectorRef<float>(grad_gain));
  Kokkos::fence();
  const auto hx = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace{}, x);
  const auto hdy = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace{}, dy);
  const auto hg = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace{}, gain);
  const auto hy = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace{}, y);
  const auto hdx = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace{}, dx);
  const auto hinv = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace{}, inv_rms);
  for (int i = 0; i < rows; ++i) {
    float ss = 0;
    for (int j = 0; j < cols; ++j) ss += hx(i, j) * hx(i, j);
    const float inv = 1.0f / std::sqrt(ss / cols + eps);
    expect_same(hinv(i), inv, "inv_rms", i, 0);
    float dot = 0;
    for (int j = 0; j < cols; ++j) dot += hx(i, j) * hg(j) * hdy(i, j);
    const float coef = inv * inv * inv * dot / cols;
    for (int j = 0; j < cols; ++j) {
      expect_same(hy(i, j), hx(i, j) * inv * hg(j), "y", i, j);
      expect_same(hdx(i, j), 0.0f + (hg(j) * hdy(i, j) * inv - hx(i, j) * coef), "dx", i, j);
    }
  }
}

TEST_P(RowKernels, LayerNormMatchesPlainLoops) {
  const int rows = 29, cols = GetParam();
  const float eps = 1e-5f;
  // An offset far from zero: the two-pass variance must not cancel it away.
  const Matrix<float> x = random_matrix(rows, cols, 21, 100.0f), dy = random_matrix(rows, cols, 22);
  const Vector<float> gain = random_vector(cols, 23), bias = random_vector(cols, 24);
  Matrix<float> y("y", rows, cols), dx("dx", rows, cols);
  Vector<float> mean("mean", rows), inv_std("inv_std", rows);
  Vector<float> grad_gain("grad_gain", cols), grad_bias("grad_bias", cols);
  layernorm_forward(x, VectorRef<float>(gain), VectorRef<float>(bias), eps, y, mean, inv_std);
  layernorm_backward(x, VectorRef<float>(gain), mean, inv_std, dy, dx, VectorRef<float>(grad_gain),
                     VectorRef<float>(grad_bias));
  Kokkos::fence();
  const auto hx = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace{}, x);
  const auto hdy = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace{}, dy);
  const auto hg = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace{}, gain);
  const auto hb = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace{}, bias);
  const auto hy = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace{}, y);
  const auto hdx = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace{}, dx);
  for (int i = 0; i < rows; ++i) {
    float sum = 0;
    for (int j = 0; j < cols; ++j) sum += hx(i, j);
    const float mu = sum / cols;
    float ss = 0;
    for (int j = 0; j < cols; ++j) ss += (hx(i, j) - mu) * (hx(i, j) - mu);
    const float inv = 1.0f / std::sqrt(ss / cols + eps);
    float g_sum = 0, gx_sum = 0;
    for (int j = 0; j < cols; ++j) g_sum += hg(j) * hdy(i, j);
    for (int j = 0; j < cols; ++j) gx_sum += hg(j) * hdy(i, j) * (hx(i, j) - mu) * inv;
    const float g_mean = g_sum / cols, gx_mean = gx_sum / cols;
    for (int j = 0; j < cols; ++j) {
      expect_same(hy(i, j), (hx(i, j) - mu) * inv * hg(j) + hb(j), "y", i, j);
      const float d = inv * (hg(j) * hdy(i, j) - g_mean - (hx(i, j) - mu) * inv * gx_mean);
      expect_same(hdx(i, j), 0.0f + d, "dx", i, j);
    }
  }
}

TEST_P(RowKernels, SoftmaxMatchesPlainLoops) {
  const int rows = 41, cols = GetParam();
  const Matrix<float> logits = random_matrix(rows, cols, 31);
  // A copy, not a mirror view: on the host that would alias the logits the kernel overwrites.
  const auto original = Kokkos::create_mirror(logits);
  Kokkos::deep_copy(original, logits);
  Vector<float> lse("lse", rows);
  softmax_rows(logits, lse);
  Kokkos::fence();
  const auto probs = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace{}, logits);
  const auto hlse = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace{}, lse);
  for (int i = 0; i < rows; ++i) {
    float mx = original(i, 0);
    for (int j = 1; j < cols; ++j) mx = original(i, j) > mx ? original(i, j) : mx;
    float sum = 0;
    std::vector<float> e(cols);
    for (int j = 0; j < cols; ++j) sum += e[j] = std::exp(original(i, j) - mx);
    for (int j = 0; j < cols; ++j) expect_same(probs(i, j), e[j] / sum, "probs", i, j);
    expect_same(hlse(i), mx + std::log(sum), "lse", i, 0);
  }
}

// One column, a row shorter than a vector, one of a power of two, and an odd long one.
INSTANTIATE_TEST_SUITE_P(Widths, RowKernels, ::testing::Values(1, 7, 64, 257));

}  // namespace
}  // namespace daa::kernels::test
