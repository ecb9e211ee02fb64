// The row kernels that run one team per row (RMSNorm, LayerNorm, row softmax) and the residual
// add, on every enabled execution space (exec_spaces.hpp): on a host space a team is one thread
// that reduces in column order, so their results must equal a plain per-row loop bit for bit;
// elsewhere (CUDA) they must agree to float rounding.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "daa/core/rng.hpp"
#include "daa/kernels/nn_kernels.hpp"
#include "daa/kernels/views.hpp"
#include "exec_spaces.hpp"

namespace daa::kernels::test {
namespace {

using daa::test::ExecSpaces;
using daa::test::ExecSpaceTest;
using daa::test::SpaceMatrix;
using daa::test::SpaceVector;

template <class Space>
SpaceMatrix<float, Space> random_matrix(int rows, int cols, std::uint64_t seed, float offset = 0) {
  SpaceMatrix<float, Space> m("m", rows, cols);
  auto h = Kokkos::create_mirror_view(m);
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j)
      h(i, j) = offset + 3.0f * float(core::counter_uniform(seed, core::RngPurpose::test, 1,
                                                            std::uint64_t(i) * cols + j) -
                                      0.5);
  Kokkos::deep_copy(m, h);
  return m;
}

template <class Space>
SpaceVector<float, Space> random_vector(int n, std::uint64_t seed) {
  SpaceVector<float, Space> v("v", n);
  auto h = Kokkos::create_mirror_view(v);
  for (int j = 0; j < n; ++j)
    h(j) = 0.5f + float(core::counter_uniform(seed, core::RngPurpose::test, 2, j));
  Kokkos::deep_copy(v, h);
  return v;
}

// Bit-equal on host spaces, within a few float ulps of the row's scale on a device.
template <class Space>
void expect_same(float kernel, float reference, const char* what, int i, int j) {
  if constexpr (daa::test::kHostSpace<Space>) {
    std::uint32_t a, b;
    std::memcpy(&a, &kernel, 4);
    std::memcpy(&b, &reference, 4);
    EXPECT_EQ(a, b) << what << "(" << i << ", " << j << "): " << kernel << " vs " << reference;
  } else {
    EXPECT_NEAR(kernel, reference, 1e-5f * (1 + std::fabs(reference))) << what << "(" << i << ")";
  }
}

// One column, a row shorter than a vector, one of a power of two, and an odd long one.
constexpr int kWidths[] = {1, 7, 64, 257};

template <class Space>
class RowKernels : public ExecSpaceTest<Space> {};
TYPED_TEST_SUITE(RowKernels, ExecSpaces, daa::test::SpaceName);

TYPED_TEST(RowKernels, RmsNormMatchesPlainLoops) {
  using Space = TypeParam;
  for (const int cols : kWidths) {
    SCOPED_TRACE(testing::Message() << "cols " << cols);
    const int rows = 37;
    const float eps = 1e-5f;
    const auto x = random_matrix<Space>(rows, cols, 11), dy = random_matrix<Space>(rows, cols, 12);
    const auto gain = random_vector<Space>(cols, 13);
    SpaceMatrix<float, Space> y("y", rows, cols), dx("dx", rows, cols);
    SpaceVector<float, Space> inv_rms("inv_rms", rows), grad_gain("grad_gain", cols);
    const Space space;
    rmsnorm_forward(space, x, gain, eps, y, inv_rms);
    rmsnorm_backward(space, x, gain, inv_rms, dy, dx, grad_gain);
    space.fence();
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
      expect_same<Space>(hinv(i), inv, "inv_rms", i, 0);
      float dot = 0;
      for (int j = 0; j < cols; ++j) dot += hx(i, j) * hg(j) * hdy(i, j);
      const float coef = inv * inv * inv * dot / cols;
      for (int j = 0; j < cols; ++j) {
        expect_same<Space>(hy(i, j), hx(i, j) * inv * hg(j), "y", i, j);
        expect_same<Space>(hdx(i, j), 0.0f + (hg(j) * hdy(i, j) * inv - hx(i, j) * coef), "dx", i,
                           j);
      }
    }
  }
}

TYPED_TEST(RowKernels, LayerNormMatchesPlainLoops) {
  using Space = TypeParam;
  for (const int cols : kWidths) {
    SCOPED_TRACE(testing::Message() << "cols " << cols);
    const int rows = 29;
    const float eps = 1e-5f;
    // An offset far from zero: the two-pass variance must not cancel it away.
    const auto x = random_matrix<Space>(rows, cols, 21, 100.0f);
    const auto dy = random_matrix<Space>(rows, cols, 22);
    const auto gain = random_vector<Space>(cols, 23), bias = random_vector<Space>(cols, 24);
    SpaceMatrix<float, Space> y("y", rows, cols), dx("dx", rows, cols);
    SpaceVector<float, Space> mean("mean", rows), inv_std("inv_std", rows);
    SpaceVector<float, Space> grad_gain("grad_gain", cols), grad_bias("grad_bias", cols);
    const Space space;
    layernorm_forward(space, x, gain, bias, eps, y, mean, inv_std);
    layernorm_backward(space, x, gain, mean, inv_std, dy, dx, grad_gain, grad_bias);
    space.fence();
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
        expect_same<Space>(hy(i, j), (hx(i, j) - mu) * inv * hg(j) + hb(j), "y", i, j);
        const float d = inv * (hg(j) * hdy(i, j) - g_mean - (hx(i, j) - mu) * inv * gx_mean);
        expect_same<Space>(hdx(i, j), 0.0f + d, "dx", i, j);
      }
    }
  }
}

TYPED_TEST(RowKernels, SoftmaxMatchesPlainLoops) {
  using Space = TypeParam;
  for (const int cols : kWidths) {
    SCOPED_TRACE(testing::Message() << "cols " << cols);
    const int rows = 41;
    const auto logits = random_matrix<Space>(rows, cols, 31);
    // A copy, not a mirror view: on the host that would alias the logits the kernel overwrites.
    const auto original = Kokkos::create_mirror(logits);
    Kokkos::deep_copy(original, logits);
    SpaceVector<float, Space> lse("lse", rows);
    const Space space;
    softmax_rows(space, logits, lse);
    space.fence();
    const auto probs = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace{}, logits);
    const auto hlse = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace{}, lse);
    for (int i = 0; i < rows; ++i) {
      float mx = original(i, 0);
      for (int j = 1; j < cols; ++j) mx = original(i, j) > mx ? original(i, j) : mx;
      float sum = 0;
      std::vector<float> e(cols);
      for (int j = 0; j < cols; ++j) sum += e[j] = std::exp(original(i, j) - mx);
      for (int j = 0; j < cols; ++j) expect_same<Space>(probs(i, j), e[j] / sum, "probs", i, j);
      expect_same<Space>(hlse(i), mx + std::log(sum), "lse", i, 0);
    }
  }
}

// kernels::residual_add: to = a + b, also in place (to aliasing a), on every space bit for bit
// (one add per element, no reduction).
TYPED_TEST(RowKernels, ResidualAddMatchesPlainLoops) {
  using Space = TypeParam;
  for (const int cols : kWidths) {
    SCOPED_TRACE(testing::Message() << "cols " << cols);
    const int rows = 23;
    const auto a = random_matrix<Space>(rows, cols, 41), b = random_matrix<Space>(rows, cols, 42);
    const auto ha = Kokkos::create_mirror(a);
    Kokkos::deep_copy(ha, a);
    const auto hb = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace{}, b);
    SpaceMatrix<float, Space> to("to", rows, cols);
    const Space space;
    residual_add(space, to, a, b);
    residual_add(space, a, a, b);  // in place: a += b
    space.fence();
    const auto hto = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace{}, to);
    const auto hin = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace{}, a);
    for (int i = 0; i < rows; ++i)
      for (int j = 0; j < cols; ++j) {
        const float sum = ha(i, j) + hb(i, j);
        EXPECT_EQ(std::memcmp(&hto(i, j), &sum, 4), 0)
            << "to(" << i << ", " << j << "): " << hto(i, j) << " vs " << sum;
        EXPECT_EQ(std::memcmp(&hin(i, j), &sum, 4), 0)
            << "in place (" << i << ", " << j << "): " << hin(i, j) << " vs " << sum;
      }
  }
}

}  // namespace
}  // namespace daa::kernels::test
