// Tests of the language model's basic layers (Linear, RMSNorm, LayerNorm, Embedding with its tied
// head) and of the fused vocabulary cross-entropy: central-difference gradient checks in double,
// GradMode::accumulate, several micro-batch slots in flight, and bad token input.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "daa/core/error.hpp"
#include "daa/core/rng.hpp"
#include "daa/kernels/nn_kernels.hpp"
#include "daa/kernels/views.hpp"
#include "daa/model/embedding.hpp"
#include "daa/model/linear.hpp"
#include "daa/model/norms.hpp"
#include "gradient_check.hpp"

namespace daa::model::test {
namespace {

using kernels::Matrix;
using kernels::MemSpace;
using kernels::Vector;
using IntVector = Kokkos::View<int*, MemSpace>;

// ---------------------------------------------------------------------------------------------
// Host helpers.

constexpr NormalFill fill_normal{.seed = 12};

template <class View>
void fill_values(const View& view, const std::vector<double>& values) {
  auto host = Kokkos::create_mirror_view(view);
  for (std::size_t i = 0; i < host.size(); ++i) host.data()[i] = values.at(i);
  Kokkos::deep_copy(view, host);
}

constexpr double kTolerance = 1e-6;

// Checks store.grads() and dx written by backprop(dx) against central differences of loss(),
// for every parameter tensor (each must carry gradient) and for the input x when given.
void expect_gradients_match(ParamStore<double>& store, const std::function<double()>& loss,
                            const std::function<void(const Matrix<double>& dx)>& backprop,
                            const Matrix<double>* x = nullptr) {
  store.zero_grads();
  Matrix<double> dx("dx", x ? x->extent(0) : 0, x ? x->extent(1) : 0);
  backprop(dx);
  const std::vector<double> grads = to_host(store.grads());
  const std::vector<double> numeric = numeric_gradient(store.values(), loss);
  ASSERT_EQ(grads.size(), store.size());
  for (const ParamInfo& info : store.infos()) {
    const std::vector<double> a(grads.begin() + info.offset,
                                grads.begin() + info.offset + info.size());
    const std::vector<double> b(numeric.begin() + info.offset,
                                numeric.begin() + info.offset + info.size());
    EXPECT_GT(max_abs(b), 1e-3) << info.name << " has no gradient: the check would be vacuous";
    EXPECT_LE(relative_error(a, b), kTolerance) << info.name;
  }
  if (x) {
    const std::vector<double> dx_numeric = numeric_gradient(*x, loss);
    EXPECT_GT(max_abs(dx_numeric), 1e-3);
    EXPECT_LE(relative_error(to_host(dx), dx_numeric), kTolerance) << "dx";
  }
}

// Mean cross-entropy over the rows with a target (target < 0: ignored), from the fused kernel.
double mean_cross_entropy(const Matrix<double>& logits, const IntVector& targets) {
  const int n = logits.extent(0);
  Vector<double> row_loss("row_loss", n);
  IntVector correct("correct", n);
  kernels::softmax_cross_entropy_in_place(logits, targets, 1.0, false, row_loss, correct);
  const std::vector<double> rl = to_host(row_loss);
  auto t = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), targets);
  double sum = 0;
  int valid = 0;
  for (int i = 0; i < n; ++i)
    if (t(i) >= 0) {
      sum += rl[i];
      ++valid;
    }
  return sum / valid;
}

// ---------------------------------------------------------------------------------------------
// Parameters: names, shapes, initialization kinds.

TEST(Layers, DeclareTheirParametersByName) {
  ParamStore<double> store;
  Linear<double> lin(store, "lin", 3, 4, true);
  Linear<double> nob(store, "nob", 4, 2, false);
  RMSNorm<double> rms(store, "rms", 4);
  LayerNorm<double> ln(store, "ln", 4);
  Embedding<double> emb(store, "emb", 7, 4);
  store.allocate();
  std::vector<std::string> names;
  for (const ParamInfo& p : store.infos()) names.push_back(p.name);
  EXPECT_THAT(names, ::testing::ElementsAre("lin.w", "lin.b", "nob.w", "rms.gain", "ln.gain",
                                            "ln.bias", "emb.table"));
  const auto& infos = store.infos();
  EXPECT_EQ(infos[0].rows, 3u);
  EXPECT_EQ(infos[0].cols, 4u);
  EXPECT_EQ(infos[0].init, ParamInit::normal);
  EXPECT_TRUE(infos[0].decay);
  EXPECT_EQ(infos[1].size(), 4u);
  EXPECT_EQ(infos[1].init, ParamInit::zeros);
  EXPECT_FALSE(infos[1].decay);
  EXPECT_EQ(infos[3].init, ParamInit::ones);
  EXPECT_EQ(infos[4].init, ParamInit::ones);
  EXPECT_EQ(infos[5].init, ParamInit::zeros);
  EXPECT_EQ(infos[6].rows, 7u);
  EXPECT_EQ(infos[6].cols, 4u);
  EXPECT_EQ(emb.vocab(), 7);
  EXPECT_EQ(emb.width(), 4);
  EXPECT_EQ(nob.bias_id(), -1);
}

// ---------------------------------------------------------------------------------------------
// Gradient checks: loss = <layer output, w> for a fixed random w, so dy = w.

void check_linear(bool bias) {
  const int n = 5, in = 4, out = 3;
  ParamStore<double> store;
  Linear<double> lin(store, "lin", in, out, bias);
  store.allocate();
  fill_normal(store.values(), 1);
  Matrix<double> x("x", n, in), y("y", n, out), w("w", n, out);
  fill_normal(x, 2);
  fill_normal(w, 3);
  const std::vector<double> wh = to_host(w);
  auto loss = [&] {
    lin.forward(0, x, y);
    return dot(to_host(y), wh);
  };
  auto backprop = [&](const Matrix<double>& dx) {
    lin.forward(0, x, y);
    lin.backward(0, w, dx);
  };
  expect_gradients_match(store, loss, backprop, &x);
}

TEST(LayerGradCheck, LinearWithBias) {
  check_linear(true);
}
TEST(LayerGradCheck, LinearWithoutBias) {
  check_linear(false);
}

TEST(LayerGradCheck, RmsNorm) {
  const int n = 4, d = 6;
  ParamStore<double> store;
  RMSNorm<double> norm(store, "rms", d);
  store.allocate();
  fill_normal(store.values(), 4, 0.3, 1.0);
  Matrix<double> x("x", n, d), y("y", n, d), w("w", n, d);
  fill_normal(x, 5, 2.0);
  fill_normal(w, 6);
  const std::vector<double> wh = to_host(w);
  auto loss = [&] {
    norm.forward(0, x, y);
    return dot(to_host(y), wh);
  };
  auto backprop = [&](const Matrix<double>& dx) {
    norm.forward(0, x, y);
    norm.backward(0, w, dx);
  };
  expect_gradients_match(store, loss, backprop, &x);
}

TEST(LayerGradCheck, LayerNorm) {
  const int n = 4, d = 6;
  ParamStore<double> store;
  LayerNorm<double> norm(store, "ln", d);
  store.allocate();
  fill_normal(store.values(), 7, 0.3, 1.0);
  Matrix<double> x("x", n, d), y("y", n, d), w("w", n, d);
  fill_normal(x, 8, 2.0, 3.0);  // an offset, so the mean matters
  fill_normal(w, 9);
  const std::vector<double> wh = to_host(w);
  auto loss = [&] {
    norm.forward(0, x, y);
    return dot(to_host(y), wh);
  };
  auto backprop = [&](const Matrix<double>& dx) {
    norm.forward(0, x, y);
    norm.backward(0, w, dx);
  };
  expect_gradients_match(store, loss, backprop, &x);

  // With gain 1 and bias 0 every output row is standardized.
  std::vector<double> unit(store.size(), 0.0);
  std::fill(unit.begin(), unit.begin() + d, 1.0);  // the gain comes first, then the bias
  fill_values(store.values(), unit);
  norm.forward(0, x, y);
  const std::vector<double> yh = to_host(y);
  for (int i = 0; i < n; ++i) {
    double mean = 0, sq = 0;
    for (int j = 0; j < d; ++j) mean += yh[i * d + j] / d;
    for (int j = 0; j < d; ++j) sq += (yh[i * d + j] - mean) * (yh[i * d + j] - mean) / d;
    EXPECT_NEAR(mean, 0.0, 1e-12);
    EXPECT_NEAR(sq, 1.0, 1e-4);  // var / (var + eps)
  }
}

TEST(LayerGradCheck, EmbeddingWithRepeatedTokens) {
  const int vocab = 6, d = 3;
  ParamStore<double> store;
  Embedding<double> emb(store, "emb", vocab, d);
  store.allocate();
  fill_normal(store.values(), 10);
  // Token 2 three times, 0 twice, 3 and 5 never.
  const IntVector tokens = token_view({2, 0, 2, 4, 2, 1, 0});
  const int n = tokens.extent(0);
  Matrix<double> y("y", n, d), w("w", n, d);
  fill_normal(w, 11);
  const std::vector<double> wh = to_host(w);
  auto loss = [&] {
    emb.forward(0, tokens, y);
    return dot(to_host(y), wh);
  };
  auto backprop = [&](const Matrix<double>&) {
    emb.forward(0, tokens, y);
    emb.backward(0, w);
  };
  expect_gradients_match(store, loss, backprop);
  // Rows of unused tokens get exactly nothing; row 2 is the sum of three rows of w, in order.
  const std::vector<double> g = to_host(store.grads());
  for (int j = 0; j < d; ++j) {
    EXPECT_EQ(g[3 * d + j], 0.0);
    EXPECT_EQ(g[5 * d + j], 0.0);
    EXPECT_EQ(g[2 * d + j], (wh[0 * d + j] + wh[2 * d + j]) + wh[4 * d + j]);
  }
  // The lookup itself.
  emb.forward(0, tokens, y);
  const std::vector<double> table = to_host(store.values()), yh = to_host(y);
  const std::vector<int> ids = {2, 0, 2, 4, 2, 1, 0};
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < d; ++j) EXPECT_EQ(yh[i * d + j], table[ids[i] * d + j]);
}

TEST(LayerGradCheck, TiedHead) {
  const int vocab = 7, d = 4, n = 5;
  ParamStore<double> store;
  Embedding<double> emb(store, "emb", vocab, d);
  store.allocate();
  fill_normal(store.values(), 12);
  Matrix<double> x("x", n, d), logits("logits", n, vocab), w("w", n, vocab);
  fill_normal(x, 13);
  fill_normal(w, 14);
  const std::vector<double> wh = to_host(w);
  auto loss = [&] {
    emb.head_forward(0, x, logits);
    return dot(to_host(logits), wh);
  };
  auto backprop = [&](const Matrix<double>& dx) {
    emb.head_forward(0, x, logits);
    emb.head_backward(0, w, dx);
  };
  expect_gradients_match(store, loss, backprop, &x);
}

// embed -> linear -> tied head -> fused cross-entropy (mean over the rows with a target): the
// table receives the input gradient and the head gradient in one backward.
TEST(LayerGradCheck, EmbeddingAndTiedHeadShareTheTable) {
  const int vocab = 6, d = 4;
  ParamStore<double> store;
  Embedding<double> emb(store, "emb", vocab, d);
  Linear<double> lin(store, "lin", d, d, true);
  store.allocate();
  fill_normal(store.values(), 15, 0.7);
  const IntVector tokens = token_view({1, 3, 1, 0, 5, 3});
  const IntVector targets = token_view({3, 1, -1, 5, 2, 3});  // one row ignored
  const int n = tokens.extent(0);
  Matrix<double> h0("h0", n, d), h1("h1", n, d), logits("logits", n, vocab);
  Matrix<double> dh1("dh1", n, d), dh0("dh0", n, d);
  Vector<double> row_loss("row_loss", n);
  IntVector correct("correct", n);
  auto forward = [&] {
    emb.forward(0, tokens, h0);
    lin.forward(0, h0, h1);
    emb.head_forward(0, h1, logits);
  };
  auto loss = [&] {
    forward();
    return mean_cross_entropy(logits, targets);
  };
  auto backprop = [&](const Matrix<double>&) {
    forward();
    kernels::softmax_cross_entropy_in_place(logits, targets, 1.0 / 5, true, row_loss, correct);
    emb.head_backward(0, logits, dh1);
    lin.backward(0, dh1, dh0);
    emb.backward(0, dh0);
  };
  expect_gradients_match(store, loss, backprop);

  // Both uses contribute: the table gradient differs from the head's share alone, and rows of
  // tokens never fed in (2, 4) still get gradient through the head.
  const std::vector<double> both = to_host(store.grads());
  store.zero_grads();
  forward();
  kernels::softmax_cross_entropy_in_place(logits, targets, 1.0 / 5, true, row_loss, correct);
  emb.head_backward(0, logits, dh1);
  const std::vector<double> head_only = to_host(store.grads());
  const std::size_t table = store.infos()[std::size_t(emb.table_id())].offset;
  double input_share = 0;
  for (int i = 0; i < vocab * d; ++i)
    input_share = std::max(input_share, std::abs(both[table + i] - head_only[table + i]));
  EXPECT_GT(input_share, 1e-3);
  for (int j = 0; j < d; ++j) {
    EXPECT_NE(both[table + 2 * d + j], 0.0);
    EXPECT_EQ(both[table + 2 * d + j], head_only[table + 2 * d + j]);
  }
}

// ---------------------------------------------------------------------------------------------
// Fused cross-entropy.

TEST(FusedCrossEntropy, LossMatchesNaiveLogSoftmaxAndIgnoresRows) {
  const int n = 6, vocab = 7;
  Matrix<double> logits("logits", n, vocab);
  fill_normal(logits, 20, 2.0);
  const std::vector<int> t = {4, 0, -1, 6, 2, -5};
  const IntVector targets = token_view(t);
  const std::vector<double> before = to_host(logits);
  Vector<double> row_loss("row_loss", n);
  IntVector correct("correct", n);
  const double scale = 0.25;
  kernels::softmax_cross_entropy_in_place(logits, targets, scale, true, row_loss, correct);
  const std::vector<double> loss = to_host(row_loss), grad = to_host(logits);
  auto correct_h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), correct);
  for (int i = 0; i < n; ++i) {
    if (t[i] < 0) {
      EXPECT_EQ(loss[i], 0.0) << "row " << i;
      EXPECT_EQ(correct_h(i), 0) << "row " << i;
      for (int c = 0; c < vocab; ++c) EXPECT_EQ(grad[i * vocab + c], 0.0);
      continue;
    }
    // Naive log-softmax: no max shift (the logits are small).
    double sum = 0;
    int arg = 0;
    for (int c = 0; c < vocab; ++c) {
      sum += std::exp(before[i * vocab + c]);
      if (before[i * vocab + c] > before[i * vocab + arg]) arg = c;
    }
    EXPECT_NEAR(loss[i], std::log(sum) - before[i * vocab + t[i]], 1e-13) << "row " << i;
    EXPECT_EQ(correct_h(i), arg == t[i] ? 1 : 0) << "row " << i;
    for (int c = 0; c < vocab; ++c) {
      const double p = std::exp(before[i * vocab + c]) / sum;
      EXPECT_NEAR(grad[i * vocab + c], (p - (c == t[i] ? 1.0 : 0.0)) * scale, 1e-15);
    }
  }
}

TEST(FusedCrossEntropy, GradientIsFiniteDifferenceOfMeanLoss) {
  const int n = 5, vocab = 6;
  Matrix<double> logits("logits", n, vocab), grad("grad", n, vocab);
  fill_normal(logits, 21, 1.5);
  const IntVector targets = token_view({5, -1, 0, 3, 3});
  Kokkos::deep_copy(grad, logits);
  Vector<double> row_loss("row_loss", n);
  IntVector correct("correct", n);
  kernels::softmax_cross_entropy_in_place(grad, targets, 1.0 / 4, true, row_loss, correct);
  // Without want_grad the logits stay as they were.
  const std::vector<double> before = to_host(logits);
  const double mean = mean_cross_entropy(logits, targets);
  EXPECT_EQ(to_host(logits), before);
  EXPECT_NEAR(mean, (dot(to_host(row_loss), std::vector<double>(n, 1.0))) / 4, 1e-15);
  const std::vector<double> numeric =
      numeric_gradient(logits, [&] { return mean_cross_entropy(logits, targets); });
  EXPECT_LE(relative_error(to_host(grad), numeric), kTolerance);
  // The ignored row: no gradient, numerically either.
  for (int c = 0; c < vocab; ++c) EXPECT_NEAR(numeric[1 * vocab + c], 0.0, 1e-12);
}

template <class T>
void check_large_logits() {
  const int vocab = 4;
  Matrix<T> logits("logits", 3, vocab);
  fill_values(logits, {1e4, 1e4 - 1, -1e4, 0,       //
                       -1e4, -1e4 + 2, -1e4, -1e4,  //
                       0, 3, 1, 3});                // a tie at the maximum
  const IntVector targets = token_view({1, 0, 3});
  Vector<T> row_loss("row_loss", 3);
  IntVector correct("correct", 3);
  kernels::softmax_cross_entropy_in_place(logits, targets, T(1), true, row_loss, correct);
  const std::vector<double> loss = to_host(row_loss), grad = to_host(logits);
  // Float carries about 1e-3 absolute at 1e4, in the logits themselves.
  const double tol = std::is_same_v<T, float> ? 2e-3 : 1e-12;
  EXPECT_NEAR(loss[0], 1 + std::log1p(std::exp(-1.0)), tol);
  EXPECT_NEAR(loss[1], std::log(3 + std::exp(2.0)) - 0.0, tol);
  EXPECT_NEAR(loss[2], std::log(1 + std::exp(1.0) + 2 * std::exp(3.0)) - 3.0, tol);
  for (int i = 0; i < 3; ++i) {
    double row_sum = 0;
    for (int c = 0; c < vocab; ++c) {
      EXPECT_TRUE(std::isfinite(grad[i * vocab + c]));
      row_sum += grad[i * vocab + c];
    }
    EXPECT_NEAR(row_sum, 0.0, tol);  // softmax sums to one, minus the one-hot
  }
  EXPECT_NEAR(grad[0], 1 / (1 + std::exp(-1.0)), tol);
  auto correct_h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), correct);
  EXPECT_EQ(correct_h(0), 0);  // argmax 0, target 1
  EXPECT_EQ(correct_h(1), 0);  // argmax 1, target 0
  EXPECT_EQ(correct_h(2), 0);  // tie between 1 and 3 goes to 1; target 3
  const IntVector lower = token_view({0, 1, 1});
  fill_values(logits, {1e4, 1e4 - 1, -1e4, 0, -1e4, -1e4 + 2, -1e4, -1e4, 0, 3, 1, 3});
  kernels::softmax_cross_entropy_in_place(logits, lower, T(1), false, row_loss, correct);
  Kokkos::deep_copy(correct_h, correct);
  EXPECT_EQ(correct_h(0), 1);
  EXPECT_EQ(correct_h(1), 1);
  EXPECT_EQ(correct_h(2), 1);
}

TEST(FusedCrossEntropy, LargeLogitsDoNotOverflowDouble) {
  check_large_logits<double>();
}
TEST(FusedCrossEntropy, LargeLogitsDoNotOverflowFloat) {
  check_large_logits<float>();
}

// ---------------------------------------------------------------------------------------------
// GradMode::accumulate adds to dx; overwrite ignores what dx held.

template <class Layer>
void check_modes(Layer& layer, ParamStore<double>& store, int n, int in, int out,
                 std::uint64_t stream) {
  store.allocate();
  fill_normal(store.values(), stream, 0.5, 0.5);
  Matrix<double> x("x", n, in), y("y", n, out), dy("dy", n, out), dx("dx", n, in);
  fill_normal(x, stream + 1);
  fill_normal(dy, stream + 2);
  Matrix<double> before("before", n, in);
  fill_normal(before, stream + 3);
  const std::vector<double> before_h = to_host(before);
  auto run = [&](GradMode mode) {
    Kokkos::deep_copy(dx, before);
    if constexpr (std::is_same_v<Layer, Embedding<double>>) {
      layer.head_forward(0, x, y);
      layer.head_backward(0, dy, dx, mode);
    } else {
      layer.forward(0, x, y);
      layer.backward(0, dy, dx, mode);
    }
    return to_host(dx);
  };
  const std::vector<double> fresh = run(GradMode::overwrite);
  const std::vector<double> added = run(GradMode::accumulate);
  EXPECT_GT(max_abs(fresh), 1e-3);
  Matrix<double> zero("zero", n, in);
  Kokkos::deep_copy(before, zero);
  EXPECT_EQ(run(GradMode::overwrite), fresh);  // independent of dx's previous contents
  for (std::size_t i = 0; i < fresh.size(); ++i)
    EXPECT_NEAR(added[i], before_h[i] + fresh[i], 1e-13) << i;
}

TEST(GradMode, AccumulateAddsToExistingDx) {
  {
    ParamStore<double> store;
    Linear<double> layer(store, "lin", 4, 3, true);
    check_modes(layer, store, 5, 4, 3, 30);
  }
  {
    ParamStore<double> store;
    RMSNorm<double> layer(store, "rms", 5);
    check_modes(layer, store, 4, 5, 5, 34);
  }
  {
    ParamStore<double> store;
    LayerNorm<double> layer(store, "ln", 5);
    check_modes(layer, store, 4, 5, 5, 38);
  }
  {
    ParamStore<double> store;
    Embedding<double> layer(store, "emb", 6, 4);
    check_modes(layer, store, 3, 4, 6, 42);
  }
}

// ---------------------------------------------------------------------------------------------
// Several micro-batches in flight.

// embed -> LayerNorm -> Linear -> RMSNorm -> tied head, with caller-owned buffers per slot.
template <class T>
struct Stack {
  ParamStore<T> store;
  Embedding<T> emb{store, "emb", 7, 4};
  LayerNorm<T> ln{store, "ln", 4};
  Linear<T> lin{store, "lin", 4, 5, true};
  RMSNorm<T> rms{store, "rms", 5};
  Linear<T> proj{store, "proj", 5, 4, false};
  struct Buffers {
    Matrix<T> h0, h1, h2, h3, h4, logits, dlogits, d4, d3, d2, d1, d0;
  };
  std::vector<Buffers> buffers;

  explicit Stack(std::uint64_t stream) {
    store.allocate();
    fill_normal(store.values(), stream, 0.6);
  }
  void forward(int slot, const TokenView& tokens) {
    const std::size_t n = tokens.extent(0);
    if (buffers.size() <= std::size_t(slot)) buffers.resize(std::size_t(slot) + 1);
    Buffers& b = buffers[std::size_t(slot)];
    b.h0 = Matrix<T>("h0", n, 4);
    b.h1 = Matrix<T>("h1", n, 4);
    b.h2 = Matrix<T>("h2", n, 5);
    b.h3 = Matrix<T>("h3", n, 5);
    b.h4 = Matrix<T>("h4", n, 4);
    b.logits = Matrix<T>("logits", n, 7);
    emb.forward(slot, tokens, b.h0);
    ln.forward(slot, b.h0, b.h1);
    lin.forward(slot, b.h1, b.h2);
    rms.forward(slot, b.h2, b.h3);
    proj.forward(slot, b.h3, b.h4);
    emb.head_forward(slot, b.h4, b.logits);
  }
  void backward(int slot, const Matrix<T>& dlogits) {
    Buffers& b = buffers[std::size_t(slot)];
    const std::size_t n = dlogits.extent(0);
    b.d4 = Matrix<T>("d4", n, 4);
    b.d3 = Matrix<T>("d3", n, 5);
    b.d2 = Matrix<T>("d2", n, 5);
    b.d1 = Matrix<T>("d1", n, 4);
    b.d0 = Matrix<T>("d0", n, 4);
    emb.head_backward(slot, dlogits, b.d4);
    proj.backward(slot, b.d4, b.d3);
    rms.backward(slot, b.d3, b.d2);
    lin.backward(slot, b.d2, b.d1);
    ln.backward(slot, b.d1, b.d0);
    emb.backward(slot, b.d0);
  }
};

TEST(Slots, TwoMicroBatchesInFlightMatchSequentialUse) {
  const IntVector tokens0 = token_view({1, 6, 1, 0, 3});
  const IntVector tokens1 = token_view({2, 2, 5});  // another batch size
  Matrix<double> dlogits0("dlogits0", 5, 7), dlogits1("dlogits1", 3, 7);
  fill_normal(dlogits0, 50);
  fill_normal(dlogits1, 51);

  Stack<double> sequential(52);
  sequential.store.zero_grads();
  sequential.forward(0, tokens0);
  const std::vector<double> logits0 = to_host(sequential.buffers[0].logits);
  sequential.backward(0, dlogits0);
  sequential.forward(0, tokens1);
  const std::vector<double> logits1 = to_host(sequential.buffers[0].logits);
  sequential.backward(0, dlogits1);
  const std::vector<double> expected = to_host(sequential.store.grads());

  Stack<double> interleaved(52);
  interleaved.store.zero_grads();
  interleaved.forward(0, tokens0);
  interleaved.forward(1, tokens1);
  EXPECT_EQ(to_host(interleaved.buffers[0].logits), logits0);
  EXPECT_EQ(to_host(interleaved.buffers[1].logits), logits1);
  interleaved.backward(0, dlogits0);
  interleaved.backward(1, dlogits1);
  // Same gradients accumulated in the same order: bit-identical.
  EXPECT_GT(max_abs(expected), 1e-3);
  EXPECT_EQ(to_host(interleaved.store.grads()), expected);
}

TEST(Slots, FloatStackFollowsDouble) {
  const IntVector tokens = token_view({1, 6, 1, 0, 3});
  Stack<double> d(53);
  Stack<float> f(53);
  // The same parameters, rounded to float.
  auto fv = Kokkos::create_mirror_view(f.store.values());
  const std::vector<double> dv = to_host(d.store.values());
  for (std::size_t i = 0; i < dv.size(); ++i) fv(i) = float(dv[i]);
  Kokkos::deep_copy(f.store.values(), fv);
  d.forward(0, tokens);
  f.forward(0, tokens);
  EXPECT_LT(relative_error(to_host(f.buffers[0].logits), to_host(d.buffers[0].logits)), 1e-5);
  Matrix<double> dlogits("dlogits", 5, 7);
  Matrix<float> dlogits_f("dlogits_f", 5, 7);
  fill_normal(dlogits, 54);
  fill_normal(dlogits_f, 54);
  d.store.zero_grads();
  f.store.zero_grads();
  d.backward(0, dlogits);
  f.backward(0, dlogits_f);
  EXPECT_LT(relative_error(to_host(f.store.grads()), to_host(d.store.grads())), 1e-4);
}

// ---------------------------------------------------------------------------------------------
// Bad input.

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(BadInput, TokenOutsideTheVocabularyIsNamed) {
  ParamStore<double> store;
  Embedding<double> emb(store, "tok_emb", 5, 3);
  store.allocate();
  Matrix<double> y("y", 4, 3);
  const std::string high = error_of([&] { emb.forward(0, token_view({1, 4, 7, 9}), y); });
  EXPECT_THAT(high, ::testing::HasSubstr("'tok_emb' token 7 at row 2"));
  EXPECT_THAT(high, ::testing::HasSubstr("vocabulary [0, 5)"));
  const std::string negative = error_of([&] { emb.forward(0, token_view({-3, 0, 0, 0}), y); });
  EXPECT_THAT(negative, ::testing::HasSubstr("token -3 at row 0"));
  EXPECT_THAT(negative, ::testing::HasSubstr("[0, 5)"));
  // A const view of valid tokens is accepted.
  const Kokkos::View<const int*, MemSpace> ok = token_view({0, 4, 2, 1});
  EXPECT_NO_THROW(emb.forward(0, ok, y));
}

TEST(BadInput, ShapeMismatchesAreNamed) {
  ParamStore<double> store;
  Linear<double> lin(store, "lin", 4, 3, true);
  LayerNorm<double> ln(store, "ln", 4);
  store.allocate();
  Matrix<double> x("x", 2, 5), y("y", 2, 3);
  EXPECT_THAT(error_of([&] { lin.forward(0, x, y); }),
              ::testing::HasSubstr("'lin' maps [n, 4] to [n, 3], got x [2, 5]"));
  Matrix<double> good("good", 2, 4), dy("dy", 3, 3), none("none", 0, 0);
  lin.forward(0, good, y);
  EXPECT_THAT(error_of([&] { lin.backward(0, dy, none); }),
              ::testing::HasSubstr("'lin' slot 0 saw x [2, 4], got dy [3, 3]"));
  EXPECT_THAT(error_of([&] { ln.backward(1, good, none); }),
              ::testing::HasSubstr("model::LayerNorm::backward: 'ln' slot 1"));
}

}  // namespace
}  // namespace daa::model::test
