// Tests of the linalg adapter's GEMMs (kernels/linalg.hpp) against a naive triple loop in double:
// the batched one (every trans combination, odd sizes on both sides of the small-kernel threshold,
// m, n <= 128 and k <= 256 in src/kernels/linalg.cpp) and the plain one with the blocked kernel
// behind it (the model's shapes scaled off the block sizes, every block edge); padded leading
// dimensions, alpha and beta in {0, 1, 0.5}, NaN in C under beta = 0, and the view overload on
// attention-like strided blocks. Every element outside the m x n result (leading-dimension
// padding, gaps between batch items) must be left untouched.
#include <gtest/gtest.h>

#include <Kokkos_Core.hpp>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "daa/core/error.hpp"
#include "daa/kernels/linalg.hpp"
#include "daa/kernels/views.hpp"

namespace daa::kernels::test {
namespace {

// The sanitizer pass of scripts/test-all (Debug, ASan + UBSan) runs the naive reference loop far
// slower; there the plain-GEMM tests take sizes that still cross every block edge once, instead
// of the model's full shapes and every edge combination.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kInstrumented = true;
#else
constexpr bool kInstrumented = false;
#endif

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// Marks C's padding; any write there is an error.
constexpr double kSentinel = 12345.0;

template <class T>
constexpr double tolerance() {
  return sizeof(T) == 4 ? 1e-5 : 1e-13;
}

struct Case {
  Trans ta = Trans::no, tb = Trans::no;
  std::size_t m = 1, n = 1, k = 1;
  double alpha = 1, beta = 0;
  std::size_t batch = 1;
  std::size_t pad = 0;  // extra columns in every leading dimension
  // Gap between consecutive batch items, in elements, on top of the matrix itself.
  std::size_t gap = 0;
  bool shared_b = false;  // stride_b = 0: every product uses the same B
  // Which entry point computes it: gemm_strided_batched, plain gemm (which dispatches between
  // the blocked kernel and OpenBLAS), or the blocked kernel whatever the shape.
  // bf16: plain gemm with Precision::bf16, against a reference on operands rounded to bf16.
  enum class Path { batched, gemm, own, bf16 } path = Path::batched;

  std::string name() const {
    return std::string(ta == Trans::no ? "n" : "t") + (tb == Trans::no ? "n" : "t") +
           " m=" + std::to_string(m) + " n=" + std::to_string(n) + " k=" + std::to_string(k) +
           " alpha=" + std::to_string(alpha) + " beta=" + std::to_string(beta) +
           " batch=" + std::to_string(batch) + " pad=" + std::to_string(pad) +
           (shared_b ? " shared_b" : "") +
           (path == Path::batched ? ""
            : path == Path::gemm  ? " gemm"
            : path == Path::own   ? " gemm_own"
                                  : " gemm bf16");
  }
};

// x rounded to the nearest bfloat16, ties to even (what the bf16 product does to its operands):
// the upper 16 bits of the float after adding half of the dropped part's weight.
double round_bf16(double x) {
  std::uint32_t bits;
  const float f = float(x);
  std::memcpy(&bits, &f, sizeof bits);
  bits = (bits + 0x7FFFu + ((bits >> 16) & 1u)) & 0xFFFF0000u;
  float r;
  std::memcpy(&r, &bits, sizeof r);
  return double(r);
}

// Stored shape of an operand: op(X) is rows x cols, X itself is transposed when trans.
struct Operand {
  std::size_t rows, cols, ld, stride;
  Operand(Trans t, std::size_t op_rows, std::size_t op_cols, std::size_t pad, std::size_t gap)
      : rows(t == Trans::no ? op_rows : op_cols),
        cols(t == Trans::no ? op_cols : op_rows),
        ld(cols + pad),
        stride(rows * ld + gap) {}
  // op(X)(i, j) of item `item`.
  template <class T>
  double at(const std::vector<T>& x, Trans t, std::size_t item, std::size_t i,
            std::size_t j) const {
    return t == Trans::no ? double(x[item * stride + i * ld + j])
                          : double(x[item * stride + j * ld + i]);
  }
};

template <class T>
void check(const Case& c) {
  SCOPED_TRACE(c.name() + (sizeof(T) == 4 ? " float" : " double"));
  const Operand a(c.ta, c.m, c.k, c.pad, c.gap), b(c.tb, c.k, c.n, c.pad, c.gap),
      cc(Trans::no, c.m, c.n, c.pad, c.gap);
  const std::size_t b_items = c.shared_b ? 1 : c.batch;
  std::mt19937_64 rng(c.m * 1000003 + c.n * 1009 + c.k);
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  std::vector<T> av(c.batch * a.stride), bv(b_items * b.stride), cv(c.batch * cc.stride, T(0));
  for (auto& x : av) x = T(uniform(rng));
  for (auto& x : bv) x = T(uniform(rng));
  // C: random where the product lands (NaN when beta = 0, which must not be read), the sentinel
  // in the padding and gaps.
  for (std::size_t item = 0; item < c.batch; ++item)
    for (std::size_t pos = 0; pos < cc.stride; ++pos) {
      const std::size_t i = pos / cc.ld, j = pos % cc.ld;
      const bool inside = i < c.m && j < c.n;
      cv[item * cc.stride + pos] = T(!inside ? kSentinel : c.beta == 0 ? kNaN : uniform(rng));
    }
  const std::vector<T> c0 = cv;

  if (c.path == Case::Path::batched) {
    gemm_strided_batched(c.ta, c.tb, c.m, c.n, c.k, T(c.alpha), av.data(), a.ld, a.stride,
                         bv.data(), b.ld, c.shared_b ? 0 : b.stride, T(c.beta), cv.data(), cc.ld,
                         cc.stride, c.batch);
  } else {
    for (std::size_t item = 0; item < c.batch; ++item) {
      const T* bi = bv.data() + (c.shared_b ? 0 : item * b.stride);
      T* ci = cv.data() + item * cc.stride;
      const T* ai = av.data() + item * a.stride;
      if (c.path == Case::Path::gemm) {
        gemm(c.ta, c.tb, c.m, c.n, c.k, T(c.alpha), ai, a.ld, bi, b.ld, T(c.beta), ci, cc.ld);
      } else if (c.path == Case::Path::own) {
        detail::gemm_own(c.ta, c.tb, c.m, c.n, c.k, T(c.alpha), ai, a.ld, bi, b.ld, T(c.beta), ci,
                         cc.ld);
      } else {
        if constexpr (std::is_same_v<T, float>)
          gemm(c.ta, c.tb, c.m, c.n, c.k, T(c.alpha), ai, a.ld, bi, b.ld, T(c.beta), ci, cc.ld,
               Precision::bf16);
        else
          FAIL() << "bf16 products take float operands";
      }
    }
  }

  std::size_t failures = 0;
  for (std::size_t item = 0; item < c.batch; ++item) {
    const std::size_t b_item = c.shared_b ? 0 : item;
    for (std::size_t pos = 0; pos < cc.stride; ++pos) {
      const std::size_t i = pos / cc.ld, j = pos % cc.ld;
      const double got = double(cv[item * cc.stride + pos]);
      if (i >= c.m || j >= c.n) {
        if (got != kSentinel && ++failures <= 5)
          ADD_FAILURE() << "item " << item << " padding (" << i << ", " << j << ") was written";
        continue;
      }
      double sum = 0, magnitude = 0;
      for (std::size_t p = 0; p < c.k; ++p) {
        double x = a.at(av, c.ta, item, i, p) * b.at(bv, c.tb, b_item, p, j);
        if (c.path == Case::Path::bf16)
          x = round_bf16(a.at(av, c.ta, item, i, p)) * round_bf16(b.at(bv, c.tb, b_item, p, j));
        sum += x;
        magnitude += std::abs(x);
      }
      double want = c.alpha * sum;
      magnitude = std::abs(c.alpha) * magnitude;
      if (c.beta != 0) {
        const double old = double(c0[item * cc.stride + pos]);
        want += c.beta * old;
        magnitude += std::abs(c.beta * old);
      }
      const double bound = tolerance<T>() * (magnitude + 1e-30);
      if (!(std::abs(got - want) <= bound) && ++failures <= 5)
        ADD_FAILURE() << "item " << item << " C(" << i << ", " << j << ") = " << got << ", want "
                      << want << " (bound " << bound << ")";
    }
  }
  EXPECT_EQ(failures, 0u);
}

const Trans kTrans[] = {Trans::no, Trans::yes};

template <class T>
void all_sizes() {
  const std::size_t sizes[] = {1, 3, 17, 63, 64, 65, 100};
  for (Trans ta : kTrans)
    for (Trans tb : kTrans)
      for (std::size_t m : sizes)
        for (std::size_t n : sizes)
          for (std::size_t k : sizes)
            check<T>({.ta = ta,
                      .tb = tb,
                      .m = m,
                      .n = n,
                      .k = k,
                      .alpha = 0.5,
                      .beta = 0.5,
                      .batch = 2,
                      .pad = 3,
                      .gap = 5});
}

TEST(GemmStridedBatched, AllTransAndOddSizesFloat) {
  all_sizes<float>();
}

TEST(GemmStridedBatched, AllTransAndOddSizesDouble) {
  all_sizes<double>();
}

// alpha and beta in {0, 1, 0.5}; beta = 0 with NaN in C, which must be overwritten.
template <class T>
void all_scalars() {
  const double scalars[] = {0, 1, 0.5};
  const std::size_t shapes[][3] = {{64, 64, 32}, {64, 32, 64}, {17, 65, 3}, {100, 1, 63}};
  for (Trans ta : kTrans)
    for (Trans tb : kTrans)
      for (const auto& s : shapes)
        for (double alpha : scalars)
          for (double beta : scalars)
            check<T>({.ta = ta,
                      .tb = tb,
                      .m = s[0],
                      .n = s[1],
                      .k = s[2],
                      .alpha = alpha,
                      .beta = beta,
                      .batch = 3,
                      .pad = 7});
}

TEST(GemmStridedBatched, AlphaBetaFloat) {
  all_scalars<float>();
}

TEST(GemmStridedBatched, AlphaBetaDouble) {
  all_scalars<double>();
}

// Attention's strides: operands are head slices of [tokens, 3 * d_model] rows (ld 384), batch 8.
template <class T>
void attention_shapes() {
  for (Trans ta : kTrans)
    for (Trans tb : kTrans)
      for (std::size_t pad : {0, 352})
        for (double beta : {0.0, 1.0})
          for (const auto& s : {std::array<std::size_t, 3>{64, 64, 32}, {64, 32, 64}})
            check<T>({.ta = ta,
                      .tb = tb,
                      .m = s[0],
                      .n = s[1],
                      .k = s[2],
                      .alpha = 0.17677669,
                      .beta = beta,
                      .batch = 8,
                      .pad = pad});
}

TEST(GemmStridedBatched, AttentionStridesFloat) {
  attention_shapes<float>();
}

TEST(GemmStridedBatched, AttentionStridesDouble) {
  attention_shapes<double>();
}

// Either side of the threshold in every dimension, where the batch switches to BLAS calls.
template <class T>
void threshold_sizes() {
  const std::size_t shapes[][3] = {{128, 128, 256}, {129, 64, 32},   {64, 129, 32},
                                   {64, 64, 257},   {127, 129, 255}, {200, 150, 300}};
  for (Trans ta : kTrans)
    for (Trans tb : kTrans)
      for (const auto& s : shapes)
        for (double beta : {0.0, 0.5})
          check<T>({.ta = ta,
                    .tb = tb,
                    .m = s[0],
                    .n = s[1],
                    .k = s[2],
                    .alpha = 0.5,
                    .beta = beta,
                    .batch = 2,
                    .pad = 1});
}

TEST(GemmStridedBatched, AroundThresholdFloat) {
  threshold_sizes<float>();
}

TEST(GemmStridedBatched, AroundThresholdDouble) {
  threshold_sizes<double>();
}

TEST(GemmStridedBatched, SharedOperandAndEmptyK) {
  for (Trans ta : kTrans)
    for (Trans tb : kTrans) {
      check<float>({.ta = ta,
                    .tb = tb,
                    .m = 33,
                    .n = 40,
                    .k = 20,
                    .alpha = 1,
                    .beta = 1,
                    .batch = 4,
                    .pad = 2,
                    .shared_b = true});
      // k = 0: C = beta * C (zero when beta = 0, whatever C held).
      check<float>(
          {.ta = ta, .tb = tb, .m = 5, .n = 7, .k = 0, .alpha = 1, .beta = 0.5, .batch = 2});
      check<double>(
          {.ta = ta, .tb = tb, .m = 5, .n = 7, .k = 0, .alpha = 1, .beta = 0, .batch = 2});
    }
}

// Plain gemm and the blocked kernel behind it (kBlockM 240, kBlockN 512, kBlockK 256 rows, columns
// and k steps in src/kernels/linalg.cpp), on the model's shapes scaled to sizes that are no
// multiple of a block or a tile: the experts' (1024 rows; x W1, act W2, act^T dy, dy W2^T),
// the head's (256-row chunks of a 4096 vocabulary), the projections' (k = 4096 for dW) and the
// router's (n or k = 8). Every trans pair, beta 0 over NaN and beta 1, padded leading dimensions.
const std::vector<std::array<std::size_t, 3>> kModelShapes = {
    {1037, 259, 131}, {1100, 130, 257}, {259, 131, 1037}, {131, 263, 1029}, {257, 1030, 129},
    {1031, 129, 259}, {250, 131, 4100}, {1030, 8, 129},   {1030, 129, 9},   {129, 8, 1030}};
// Instrumented builds: rows past 240, columns past 512, k past 256 and 512, the narrow cases.
const std::vector<std::array<std::size_t, 3>> kInstrumentedShapes = {
    {241, 131, 259}, {131, 513, 129}, {250, 33, 520}, {241, 8, 129}, {241, 129, 9}};

template <class T>
void model_shapes(Case::Path path) {
  for (Trans ta : kTrans)
    for (Trans tb : kTrans)
      for (const auto& s : kInstrumented ? kInstrumentedShapes : kModelShapes)
        for (double beta : {0.0, 1.0})
          check<T>({.ta = ta,
                    .tb = tb,
                    .m = s[0],
                    .n = s[1],
                    .k = s[2],
                    .alpha = 0.5,
                    .beta = beta,
                    .pad = 3,
                    .path = path});
}

TEST(GemmBlocked, ModelShapesFloat) {
  model_shapes<float>(Case::Path::own);
}

TEST(GemmBlocked, ModelShapesDouble) {
  model_shapes<double>(Case::Path::own);
}

// The same through gemm, whichever implementation it picks for each shape.
TEST(Gemm, ModelShapesFloat) {
  model_shapes<float>(Case::Path::gemm);
}

TEST(Gemm, ModelShapesDouble) {
  model_shapes<double>(Case::Path::gemm);
}

// Mixed precision: bf16 operands, fp32 sums, on the model's shapes and every block edge with odd
// k (a pair padded with zero). Where the build has no bf16 product, asking for one is refused.
TEST(GemmBf16, ModelShapesAndBlockEdges) {
  if (!bf16_available()) {
    std::vector<float> x(4, 1.0f);
    EXPECT_THROW(set_default_precision(Precision::bf16), Error);
    EXPECT_THROW(gemm(Trans::no, Trans::no, 2, 2, 2, 1.0f, x.data(), 2, x.data(), 2, 0.0f, x.data(),
                      2, Precision::bf16),
                 Error);
    return;
  }
  model_shapes<float>(Case::Path::bf16);
  for (Trans ta : kTrans)
    for (Trans tb : kTrans)
      for (std::size_t m : {7, 241})
        for (std::size_t n : {31, 513})
          for (std::size_t k : {1, 255, 257})
            check<float>({.ta = ta,
                          .tb = tb,
                          .m = m,
                          .n = n,
                          .k = k,
                          .alpha = 0.5,
                          .beta = k == 255 ? 0.0 : 0.5,
                          .pad = 1,
                          .path = Case::Path::bf16});
}

// The operands really are rounded: bf16 keeps 7 fraction bits, so 1 + 2^-9 (a quarter of the gap
// to the next bf16) rounds down to 1 and 1 + 3 * 2^-9 up to 1 + 2^-7; the sum stays fp32.
TEST(GemmBf16, RoundsOperandsToNearestEven) {
  if (!bf16_available()) GTEST_SKIP() << "no bf16 product in this build (refusal tested above)";
  const std::size_t m = 3, n = 40, k = 5;
  std::vector<float> a(m * k, 1.0f + 0x1p-9f), b(k * n, 1.0f + 3 * 0x1p-9f), c(m * n, 0.0f);
  gemm(Trans::no, Trans::no, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, c.data(), n,
       Precision::bf16);
  for (float x : c) ASSERT_EQ(x, 5.0f * (1.0f + 0x1p-7f));
  gemm(Trans::no, Trans::no, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, c.data(), n,
       Precision::fp32);
  EXPECT_NE(c[0], 5.0f * (1.0f + 0x1p-7f));
}

// On and either side of every block edge, tails of the row tile and of the 32-column panel.
template <class T>
void block_edges() {
  for (Trans ta : kTrans)
    for (Trans tb : kTrans)
      for (std::size_t m :
           kInstrumented ? std::vector<std::size_t>{7, 241} : std::vector<std::size_t>{7, 240, 241})
        for (std::size_t n : kInstrumented ? std::vector<std::size_t>{31, 513}
                                           : std::vector<std::size_t>{31, 512, 513})
          for (std::size_t k : {1, 256, 257})
            check<T>({.ta = ta,
                      .tb = tb,
                      .m = m,
                      .n = n,
                      .k = k,
                      .alpha = 1,
                      .beta = k == 256 ? 0.0 : 0.5,
                      .pad = 1,
                      .path = Case::Path::own});
}

TEST(GemmBlocked, BlockEdgesFloat) {
  block_edges<float>();
}

TEST(GemmBlocked, BlockEdgesDouble) {
  block_edges<double>();
}

TEST(GemmBlocked, AlphaBetaAndEmptyK) {
  for (Trans ta : kTrans)
    for (Trans tb : kTrans)
      for (double alpha : {0.0, 1.0})
        for (double beta : {0.0, 1.0, 0.5}) {
          check<float>({.ta = ta,
                        .tb = tb,
                        .m = 250,
                        .n = 70,
                        .k = 300,
                        .alpha = alpha,
                        .beta = beta,
                        .pad = 2,
                        .path = Case::Path::own});
          check<double>({.ta = ta,
                         .tb = tb,
                         .m = 9,
                         .n = 600,
                         .k = 0,
                         .alpha = alpha,
                         .beta = beta,
                         .path = Case::Path::own});
        }
  // alpha = 0 reads neither A nor B.
  const std::size_t m = 300, n = 40, k = 270;
  std::vector<float> a(m * k, float(kNaN)), b(k * n, float(kNaN)), c(m * n, 2.0f);
  detail::gemm_own(Trans::yes, Trans::yes, m, n, k, 0.0f, a.data(), m, b.data(), k, 0.5f, c.data(),
                   n);
  for (float x : c) ASSERT_EQ(x, 1.0f);
}

// BLAS does not read A or B when alpha = 0: NaN there must not reach C.
TEST(GemmStridedBatched, AlphaZeroIgnoresOperands) {
  const std::size_t m = 9, n = 33, k = 5;
  std::vector<float> a(m * k, float(kNaN)), b(k * n, float(kNaN)), c(m * n, 2.0f);
  gemm_strided_batched(Trans::no, Trans::no, m, n, k, 0.0f, a.data(), k, 0, b.data(), n, 0, 0.5f,
                       c.data(), n, 0, 1);
  for (float x : c) ASSERT_EQ(x, 1.0f);
}

// The view overload on the blocks attention multiplies: one head's columns of every sequence of a
// [sequences * seq_len, 3 * d_model] matrix, S = Q K^T then O = S V.
TEST(GemmBatched, StridedSubviews) {
  constexpr int sequences = 3, seq_len = 70, d = 64, head_dim = 32;
  using View3 = Kokkos::View<float***, Kokkos::LayoutRight, MemSpace>;
  View3 qkv("qkv", sequences, seq_len, 3 * d);
  View3 s("s", sequences, seq_len, seq_len), o("o", sequences, seq_len, head_dim);
  auto qkv_h = Kokkos::create_mirror_view(qkv);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (int x = 0; x < sequences; ++x)
    for (int r = 0; r < seq_len; ++r)
      for (int col = 0; col < 3 * d; ++col) qkv_h(x, r, col) = uniform(rng);
  Kokkos::deep_copy(qkv, qkv_h);
  const auto all = Kokkos::ALL;
  const int h = 1;
  auto q = Kokkos::subview(qkv, all, all, std::make_pair(h * head_dim, (h + 1) * head_dim));
  auto k = Kokkos::subview(qkv, all, all, std::make_pair(d + h * head_dim, d + (h + 1) * head_dim));
  auto v = Kokkos::subview(qkv, all, all,
                           std::make_pair(2 * d + h * head_dim, 2 * d + (h + 1) * head_dim));
  Kokkos::deep_copy(o, std::numeric_limits<float>::quiet_NaN());
  gemm_batched(Trans::no, Trans::yes, 0.5f, q, k, 0.0f, s);
  gemm_batched(Trans::no, Trans::no, 1.0f, s, v, 0.0f, o);
  Kokkos::fence();
  auto s_h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), s);
  auto o_h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), o);
  std::size_t failures = 0;
  for (int x = 0; x < sequences; ++x)
    for (int i = 0; i < seq_len; ++i) {
      std::vector<double> s_row(seq_len);
      for (int j = 0; j < seq_len; ++j) {
        double sum = 0, magnitude = 0;
        for (int c = 0; c < head_dim; ++c) {
          const double p =
              double(qkv_h(x, i, h * head_dim + c)) * qkv_h(x, j, d + h * head_dim + c);
          sum += p;
          magnitude += std::abs(p);
        }
        s_row[j] = 0.5 * sum;
        if (!(std::abs(s_h(x, i, j) - s_row[j]) <= 1e-5 * 0.5 * magnitude) && ++failures <= 5)
          ADD_FAILURE() << "S(" << x << ", " << i << ", " << j << ") = " << s_h(x, i, j)
                        << ", want " << s_row[j];
      }
      for (int c = 0; c < head_dim; ++c) {
        // Against the kernel's own S, so only the second product's error is measured.
        double sum = 0, magnitude = 0;
        for (int j = 0; j < seq_len; ++j) {
          const double p = double(s_h(x, i, j)) * qkv_h(x, j, 2 * d + h * head_dim + c);
          sum += p;
          magnitude += std::abs(p);
        }
        if (!(std::abs(o_h(x, i, c) - sum) <= 1e-5 * magnitude) && ++failures <= 5)
          ADD_FAILURE() << "O(" << x << ", " << i << ", " << c << ") = " << o_h(x, i, c)
                        << ", want " << sum;
      }
    }
  EXPECT_EQ(failures, 0u);
}

}  // namespace
}  // namespace daa::kernels::test
