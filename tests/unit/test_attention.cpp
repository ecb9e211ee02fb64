// Tests of the causal self-attention layer (model/attention.hpp) in double: the blocked online
// softmax against a naive full-matrix reference, RoPE's invariants, a finite-difference check of
// every gradient, causality, input validation, linear saved memory, and the float instantiation.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "daa/core/error.hpp"
#include "daa/core/rng.hpp"
#include "daa/kernels/attention_kernels.hpp"
#include "daa/kernels/views.hpp"
#include "daa/model/attention.hpp"
#include "gradient_check.hpp"

namespace daa::model::test {
namespace {

using kernels::Matrix;

constexpr NormalFill fill_normal{.seed = 17};

// A layer with its own parameter store; weights N(0, weight_scale^2 / d_model).
template <class T>
struct Layer {
  ParamStore<T> store;
  CausalSelfAttention<T> attn;
  Layer(const AttentionShape& shape, double weight_scale = 1.0, std::uint64_t seed = 1)
      : attn(store, "blk0.attn", shape) {
    store.allocate();
    fill_normal(store.values(), seed, weight_scale / std::sqrt(double(shape.d_model)));
  }
  Matrix<T> run(const Matrix<T>& x, int seq_len, int slot = 0) {
    Matrix<T> y("y", x.extent(0), x.extent(1));
    attn.forward(slot, x, seq_len, y);
    return y;
  }
};

// ---------------------------------------------------------------------------------------------
// Naive reference: the whole layer on host vectors, with a full [seq, seq] score matrix, the
// causal mask as -inf and a plain softmax; RoPE written out independently ("rotate half").

std::vector<double> matmul(const std::vector<double>& a, const std::vector<double>& b, int m, int k,
                           int n) {
  std::vector<double> c(std::size_t(m) * n, 0.0);
  for (int i = 0; i < m; ++i)
    for (int p = 0; p < k; ++p)
      for (int j = 0; j < n; ++j) c[i * n + j] += a[i * k + p] * b[p * n + j];
  return c;
}

void reference_rope(std::vector<double>& qkv, int rows, int d, int heads, int seq_len,
                    double base) {
  const int hd = d / heads, half = hd / 2;
  for (int r = 0; r < rows; ++r)
    for (int part = 0; part < 2; ++part)
      for (int h = 0; h < heads; ++h)
        for (int i = 0; i < half; ++i) {
          const double angle = (r % seq_len) * std::pow(base, -2.0 * i / hd);
          double& x1 = qkv[r * 3 * d + part * d + h * hd + i];
          double& x2 = qkv[r * 3 * d + part * d + h * hd + i + half];
          const double a = x1, b = x2;
          x1 = a * std::cos(angle) - b * std::sin(angle);
          x2 = b * std::cos(angle) + a * std::sin(angle);
        }
}

std::vector<double> reference_forward(const std::vector<double>& x, const std::vector<double>& wqkv,
                                      const std::vector<double>& wo, int rows, int seq_len,
                                      const AttentionShape& shape) {
  const int d = shape.d_model, heads = shape.heads, hd = d / heads;
  std::vector<double> qkv = matmul(x, wqkv, rows, d, 3 * d);
  reference_rope(qkv, rows, d, heads, seq_len, shape.rope_base);
  std::vector<double> out(std::size_t(rows) * d, 0.0), scores(std::size_t(seq_len) * seq_len);
  const double inf = std::numeric_limits<double>::infinity();
  for (int b = 0; b < rows / seq_len; ++b)
    for (int h = 0; h < heads; ++h) {
      auto at = [&](int pos, int part, int c) {
        return qkv[(b * seq_len + pos) * 3 * d + part * d + h * hd + c];
      };
      for (int i = 0; i < seq_len; ++i)
        for (int j = 0; j < seq_len; ++j) {
          double s = 0;
          for (int c = 0; c < hd; ++c) s += at(i, 0, c) * at(j, 1, c);
          scores[i * seq_len + j] = j <= i ? s / std::sqrt(double(hd)) : -inf;
        }
      for (int i = 0; i < seq_len; ++i) {
        double mx = -inf, sum = 0;
        for (int j = 0; j < seq_len; ++j) mx = std::max(mx, scores[i * seq_len + j]);
        for (int j = 0; j < seq_len; ++j) sum += std::exp(scores[i * seq_len + j] - mx);
        for (int j = 0; j < seq_len; ++j) {
          const double p = std::exp(scores[i * seq_len + j] - mx) / sum;
          for (int c = 0; c < hd; ++c) out[(b * seq_len + i) * d + h * hd + c] += p * at(j, 2, c);
        }
      }
    }
  return matmul(out, wo, rows, d, d);
}

// ---------------------------------------------------------------------------------------------
// 1. Blocked online softmax against the naive reference. The kernels compute each block's
// products as batched GEMMs, so sums run in BLAS's order, not one running sum per row: the
// checks compare values with a tolerance, never bit patterns. (Against the previous row-wise
// kernels in float, at the main job's sizes: 4e-7 relative on the output, 7e-7 on the gradients;
// tests/bench/bench_attention.cpp prints it.)

TEST(Attention, BlockedForwardMatchesNaiveReference) {
  const int batch = 2;
  for (int heads : {1, 4})
    for (int seq_len : {1, 5, 64, 70, 130})
      for (int block : {1, 16, 64})
        // Weight scale 4 makes scores reach tens: the running max must be handled right.
        for (double weight_scale : {1.0, 4.0}) {
          const AttentionShape shape{
              .d_model = 16, .heads = heads, .max_seq_len = 256, .block = block};
          Layer<double> layer(shape, weight_scale, seq_len + block);
          Matrix<double> x("x", batch * seq_len, shape.d_model);
          fill_normal(x, 100 + seq_len);
          const std::vector<double> y = to_host(layer.run(x, seq_len));
          const std::vector<double> ref = reference_forward(
              to_host(x), to_host(layer.store.value(layer.attn.wqkv_id())),
              to_host(layer.store.value(layer.attn.wo_id())), batch * seq_len, seq_len, shape);
          EXPECT_LE(relative_error(y, ref), 1e-12)
              << "heads " << heads << " seq_len " << seq_len << " block " << block
              << " weight scale " << weight_scale;
        }
}

// ---------------------------------------------------------------------------------------------
// 2. RoPE.

struct RopeSetup {
  static constexpr int seq_len = 16, heads = 2, head_dim = 8, d = heads * head_dim;
  kernels::AttentionDims dims{seq_len, heads, head_dim};
  Matrix<double> cos_table, sin_table;
  RopeSetup() { kernels::rope_tables(32, head_dim, 100.0, cos_table, sin_table); }
};

TEST(Attention, RopePreservesNormsAndIsInvertible) {
  RopeSetup r;
  const int d = RopeSetup::d, hd = RopeSetup::head_dim;
  Matrix<double> qkv("qkv", 2 * RopeSetup::seq_len, 3 * d);
  fill_normal(qkv, 7);
  const std::vector<double> before = to_host(qkv);
  kernels::rope_rotate(qkv, r.dims, r.cos_table, r.sin_table, false);
  const std::vector<double> after = to_host(qkv);
  int changed = 0;
  for (int row = 0; row < 2 * RopeSetup::seq_len; ++row) {
    for (int part = 0; part < 2; ++part)
      for (int h = 0; h < RopeSetup::heads; ++h) {
        double n0 = 0, n1 = 0;
        for (int c = 0; c < hd; ++c) {
          const int at = row * 3 * d + part * d + h * hd + c;
          n0 += before[at] * before[at];
          n1 += after[at] * after[at];
          changed += before[at] != after[at];
        }
        EXPECT_NEAR(n1, n0, 1e-13 * n0) << "row " << row << " part " << part << " head " << h;
      }
    for (int c = 2 * d; c < 3 * d; ++c)  // v is not rotated
      EXPECT_EQ(after[row * 3 * d + c], before[row * 3 * d + c]);
    if (row % RopeSetup::seq_len == 0) {  // position 0: the identity
      for (int c = 0; c < 2 * d; ++c) EXPECT_EQ(after[row * 3 * d + c], before[row * 3 * d + c]);
    }
  }
  EXPECT_GT(changed, 0);
  // The convention is "rotate half": column i pairs with i + head_dim / 2 (here at position 3,
  // head 1 of k, pair 1, angle 3 * 100^(-2/8)).
  {
    const int row = 3, base = d + hd, i = 1, half = hd / 2;
    const double angle = 3 * std::pow(100.0, -2.0 / hd);
    const double x1 = before[row * 3 * d + base + i], x2 = before[row * 3 * d + base + i + half];
    EXPECT_NEAR(after[row * 3 * d + base + i], x1 * std::cos(angle) - x2 * std::sin(angle), 1e-14);
    EXPECT_NEAR(after[row * 3 * d + base + i + half], x2 * std::cos(angle) + x1 * std::sin(angle),
                1e-14);
  }
  kernels::rope_rotate(qkv, r.dims, r.cos_table, r.sin_table, true);
  EXPECT_LE(relative_error(to_host(qkv), before), 1e-15);
}

TEST(Attention, RopeScoreDependsOnlyOnOffset) {
  RopeSetup r;
  const int d = RopeSetup::d, hd = RopeSetup::head_dim, seq_len = RopeSetup::seq_len;
  // The same q vector at every position, the same k vector at every position.
  Matrix<double> qkv("qkv", seq_len, 3 * d);
  {
    Matrix<double> one_row("one_row", 1, 3 * d);
    fill_normal(one_row, 8);
    const std::vector<double> v = to_host(one_row);
    auto h = Kokkos::create_mirror_view(qkv);
    for (int row = 0; row < seq_len; ++row)
      for (int c = 0; c < 3 * d; ++c) h(row, c) = v[c];
    Kokkos::deep_copy(qkv, h);
  }
  kernels::rope_rotate(qkv, r.dims, r.cos_table, r.sin_table, false);
  const std::vector<double> a = to_host(qkv);
  for (int h = 0; h < RopeSetup::heads; ++h) {
    auto score = [&](int i, int j) {
      double s = 0;
      for (int c = 0; c < hd; ++c) s += a[i * 3 * d + h * hd + c] * a[j * 3 * d + d + h * hd + c];
      return s;
    };
    const double scale = std::abs(score(0, 0));
    ASSERT_GT(scale, 1e-3);
    for (int i = 0; i < seq_len; ++i)
      for (int j = 0; j < seq_len; ++j)
        for (int shift : {1, 5}) {
          if (i + shift >= seq_len || j + shift >= seq_len) continue;
          EXPECT_NEAR(score(i, j), score(i + shift, j + shift), 1e-13 * scale)
              << "head " << h << " (" << i << ", " << j << ") shifted by " << shift;
        }
    // The rotation is not vacuous: other offsets give other scores.
    EXPECT_GT(std::abs(score(3, 0) - score(0, 0)), 1e-3 * scale);
  }
}

// ---------------------------------------------------------------------------------------------
// 3. Gradients of the whole layer.

AttentionShape gradcheck_shape() {
  return AttentionShape{.d_model = 8, .heads = 2, .max_seq_len = 16, .block = 3};
}

TEST(Attention, GradientsMatchFiniteDifferences) {
  const AttentionShape shape = gradcheck_shape();
  const int batch = 2, seq_len = 7, n = batch * seq_len, d = shape.d_model;
  Layer<double> layer(shape, 1.5, 3);
  Matrix<double> x("x", n, d), r("r", n, d), dx("dx", n, d);
  fill_normal(x, 31);
  fill_normal(r, 32);
  const std::vector<double> rh = to_host(r);

  layer.store.zero_grads();
  layer.run(x, seq_len);
  layer.attn.backward(0, r, dx);
  const std::vector<double> analytic_dx = to_host(dx);
  const std::vector<double> analytic_wqkv = to_host(layer.store.grad(layer.attn.wqkv_id()));
  const std::vector<double> analytic_wo = to_host(layer.store.grad(layer.attn.wo_id()));

  auto loss = [&] { return dot(to_host(layer.run(x, seq_len)), rh); };
  const double e_wqkv = relative_error(
      analytic_wqkv, numeric_gradient(layer.store.value(layer.attn.wqkv_id()), loss));
  const double e_wo =
      relative_error(analytic_wo, numeric_gradient(layer.store.value(layer.attn.wo_id()), loss));
  const double e_x = relative_error(analytic_dx, numeric_gradient(x, loss));
  EXPECT_LE(e_wqkv, 1e-6);
  EXPECT_LE(e_wo, 1e-6);
  EXPECT_LE(e_x, 1e-6);
  // Not vacuous: every tensor carries gradient.
  for (const auto* g : {&analytic_dx, &analytic_wqkv, &analytic_wo})
    EXPECT_GT(*std::max_element(g->begin(), g->end()), 1e-3);
  std::printf("[gradcheck] relative error wqkv %.3g, wo %.3g, x %.3g\n", e_wqkv, e_wo, e_x);
}

TEST(Attention, BackwardAccumulatesAndSlotsAreIndependent) {
  const AttentionShape shape = gradcheck_shape();
  const int seq_len = 7, n = 2 * seq_len, d = shape.d_model;
  Layer<double> layer(shape, 1.5, 3);
  Matrix<double> x0("x0", n, d), x1("x1", n, d), r0("r0", n, d), r1("r1", n, d);
  fill_normal(x0, 41);
  fill_normal(x1, 42);
  fill_normal(r0, 43);
  fill_normal(r1, 44);

  // Reference: one forward/backward of (x0, r0) alone.
  Matrix<double> dx_ref("dx_ref", n, d);
  layer.store.zero_grads();
  const std::vector<double> y0 = to_host(layer.run(x0, seq_len));
  layer.attn.backward(0, r0, dx_ref);
  const std::vector<double> grads_once = to_host(layer.store.grads());

  // Two slots in flight, backward in reverse order; slot 0's results must not change.
  Matrix<double> dx0("dx0", n, d), dx1("dx1", n, d);
  layer.store.zero_grads();
  EXPECT_EQ(to_host(layer.run(x0, seq_len, 0)), y0);
  layer.run(x1, 2 * seq_len, 1);  // another sequence length in the other slot
  layer.attn.backward(1, r1, dx1);
  const std::vector<double> grads_slot1 = to_host(layer.store.grads());
  fill_normal(dx0, 45);
  const std::vector<double> dx0_before = to_host(dx0);
  layer.attn.backward(0, r0, dx0, GradMode::accumulate);
  const std::vector<double> dx0_after = to_host(dx0), dx_once = to_host(dx_ref);
  const std::vector<double> grads_both = to_host(layer.store.grads());
  for (std::size_t i = 0; i < dx_once.size(); ++i)
    EXPECT_NEAR(dx0_after[i], dx0_before[i] + dx_once[i], 1e-14);
  for (std::size_t i = 0; i < grads_once.size(); ++i)
    EXPECT_NEAR(grads_both[i], grads_slot1[i] + grads_once[i], 1e-13);

  // dx with extent 0: parameter gradients only.
  layer.store.zero_grads();
  layer.run(x0, seq_len);
  layer.attn.backward(0, r0, Matrix<double>("none", 0, 0));
  EXPECT_EQ(to_host(layer.store.grads()), grads_once);
  // A slot's state is consumed by its backward.
  EXPECT_THROW(layer.attn.backward(0, r0, dx0), Error);
}

// ---------------------------------------------------------------------------------------------
// 4. Causality.

TEST(Attention, OutputDoesNotDependOnLaterPositions) {
  const AttentionShape shape{.d_model = 16, .heads = 4, .max_seq_len = 128, .block = 16};
  const int seq_len = 70, n = 2 * seq_len, d = shape.d_model;
  Layer<double> layer(shape, 2.0, 5);
  Matrix<double> x("x", n, d);
  fill_normal(x, 51);
  const std::vector<double> y = to_host(layer.run(x, seq_len));
  for (int p : {0, 17, 69}) {
    Matrix<double> x2("x2", n, d);
    Kokkos::deep_copy(x2, x);
    auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), x2);
    for (int c = 0; c < d; ++c) h(seq_len + p, c) += 0.5 + c;  // position p of sequence 1
    Kokkos::deep_copy(x2, h);
    const std::vector<double> y2 = to_host(layer.run(x2, seq_len));
    for (int row = 0; row < n; ++row) {
      bool same = true;
      for (int c = 0; c < d; ++c) same = same && y2[row * d + c] == y[row * d + c];
      if (row < seq_len + p)  // sequence 0, and positions before p in sequence 1
        EXPECT_TRUE(same) << "row " << row << " changed by position " << p;
      else
        EXPECT_FALSE(same) << "row " << row << " unchanged by position " << p;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// 5. Validation.

void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no daa::Error thrown";
  } catch (const Error& e) {
    for (const std::string& part : parts) EXPECT_THAT(e.what(), ::testing::HasSubstr(part));
  }
}

TEST(Attention, BadShapesAndSequenceLengthsThrow) {
  auto construct = [](AttentionShape s) {
    return [s] {
      ParamStore<double> store;
      CausalSelfAttention<double> attn(store, "blk3.attn", s);
    };
  };
  expect_error(construct({.d_model = 10, .heads = 4}), {"blk3.attn", "d_model 10", "heads 4"});
  expect_error(construct({.d_model = 12, .heads = 4}), {"blk3.attn", "head_dim 3"});
  expect_error(construct({.d_model = 8, .heads = 2, .block = 0}), {"blk3.attn", "block 0"});
  expect_error(construct({.d_model = 8, .heads = 2, .max_seq_len = 0}), {"max_seq_len 0"});

  Layer<double> layer({.d_model = 8, .heads = 2, .max_seq_len = 256, .block = 4});
  Matrix<double> x300("x", 300, 8), y300("y", 300, 8), x10("x", 10, 8), y10("y", 10, 8);
  expect_error([&] { layer.attn.forward(0, x300, 300, y300); },
               {"blk0.attn", "seq_len 300 exceeds max_seq_len 256"});
  expect_error([&] { layer.attn.forward(0, x10, 0, y10); }, {"seq_len 0"});
  expect_error([&] { layer.attn.forward(0, x10, 4, y10); }, {"rows 10", "seq_len 4"});
  expect_error([&] { layer.attn.forward(0, x10, 5, Matrix<double>("y", 10, 7)); }, {"d_model 8"});
  expect_error([&] { layer.attn.backward(2, y10, x10); }, {"slot 2", "no forward pending"});
  layer.attn.forward(0, x10, 5, y10);
  expect_error([&] { layer.attn.backward(0, Matrix<double>("dy", 5, 8), x10); }, {"dy [5, 8]"});
}

// ---------------------------------------------------------------------------------------------
// 6. Saved memory is linear in the sequence length.

TEST(Attention, SavedStateIsLinearInSequenceLength) {
  const AttentionShape shape{.d_model = 16, .heads = 4, .max_seq_len = 1024, .block = 64};
  const std::size_t per_token = (3 + 1) * shape.d_model + shape.heads;  // qkv, out, lse
  Layer<double> layer(shape, 1.0, 6);
  std::vector<std::size_t> saved;
  for (int seq_len : {256, 512, 1024}) {
    Matrix<double> x("x", seq_len, shape.d_model), dx("dx", seq_len, shape.d_model);
    fill_normal(x, 60 + seq_len);
    const Matrix<double> y = layer.run(x, seq_len, 1);
    saved.push_back(layer.attn.saved_bytes(1));
    EXPECT_EQ(saved.back(), seq_len * per_token * sizeof(double)) << "seq_len " << seq_len;
    layer.attn.backward(1, y, dx);  // backward runs at full length too
    for (double v : to_host(dx)) ASSERT_TRUE(std::isfinite(v));
  }
  EXPECT_EQ(saved[1], 2 * saved[0]);
  EXPECT_EQ(saved[2], 4 * saved[0]);
  // Less than a single [seq, seq] score matrix of one head.
  EXPECT_LT(saved[2], std::size_t(1024) * 1024 * sizeof(double));
}

TEST(Attention, FlopCount) {
  // 10 rows of length-5 sequences, d 4: projections 2*10*4*12 + 2*10*4*4 = 1280; 2 sequences
  // of 15 causal pairs, 4 * d FLOPs each: 480.
  EXPECT_EQ(CausalSelfAttention<double>::flops(10, 5, 4), 1760.0);
}

// ---------------------------------------------------------------------------------------------
// 7. The float instantiation agrees with double (float also differs in its exp:
// kernels::exp_vectorizable, within 1e-7 relative of expf).

TEST(Attention, FloatAgreesWithDouble) {
  const AttentionShape shape{.d_model = 16, .heads = 4, .max_seq_len = 128, .block = 16};
  const int seq_len = 70, n = 2 * seq_len, d = shape.d_model;
  Layer<double> ld(shape, 1.5, 7);
  Layer<float> lf(shape, 1.5, 7);
  Matrix<double> xd("xd", n, d), rd("rd", n, d), dxd("dxd", n, d);
  Matrix<float> xf("xf", n, d), rf("rf", n, d), dxf("dxf", n, d);
  fill_normal(xd, 71);
  fill_normal(xf, 71);
  fill_normal(rd, 72);
  fill_normal(rf, 72);
  const double e_y = relative_error(to_host(ld.run(xd, seq_len)), to_host(lf.run(xf, seq_len)));
  EXPECT_LE(e_y, 1e-5);
  ld.store.zero_grads();
  lf.store.zero_grads();
  ld.attn.backward(0, rd, dxd);
  lf.attn.backward(0, rf, dxf);
  const double e_dx = relative_error(to_host(dxd), to_host(dxf));
  const double e_grads = relative_error(to_host(ld.store.grads()), to_host(lf.store.grads()));
  EXPECT_LE(e_dx, 1e-4);
  EXPECT_LE(e_grads, 1e-4);
  std::printf("[float] relative error y %.3g, dx %.3g, grads %.3g\n", e_y, e_dx, e_grads);
}

}  // namespace
}  // namespace daa::model::test
