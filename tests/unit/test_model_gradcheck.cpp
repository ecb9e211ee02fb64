// Finite-difference gradient checks in double precision: every layer kernel of nn_kernels.hpp on
// its own, then the whole MoeModel (every parameter tensor) in several routing configurations.
// Also defines expect_model_gradients_match(), which test_routing.cpp reuses.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "daa/core/rng.hpp"
#include "daa/kernels/nn_kernels.hpp"
#include "daa/kernels/views.hpp"
#include "daa/model/moe_model.hpp"
#include "gradient_check.hpp"

namespace daa::model::test {

using kernels::Matrix;
using kernels::MemSpace;
using kernels::Vector;
using kernels::VectorRef;
using IntMatrix = Kokkos::View<int**, Kokkos::LayoutRight, MemSpace>;
using IntVector = Kokkos::View<int*, MemSpace>;

// Checks params().grads() after run(train=true) against central differences of
// loss_sum / n + aux_loss from run(train=false), for every parameter tensor (a deterministic
// sample of the large ones). Entries whose +-h step flips a routing decision are skipped; skips
// must stay under 5% of the checked entries.
void expect_model_gradients_match(MoeModel<double>& model, const Matrix<double>& x,
                                  const IntVector& labels, double tolerance = 1e-6);

namespace {

constexpr NormalFill fill_normal{.seed = 11};

constexpr double kKernelTolerance = 1e-7;

// ---------------------------------------------------------------------------------------------
// Layer kernels.

TEST(KernelGradCheck, GeluForwardValuesAndBackward) {
  Matrix<double> x("x", 4, 5), y("y", 4, 5), w("w", 4, 5);
  fill_normal(x, 1, 2.0);
  fill_normal(w, 2);
  {
    auto xh = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), x);
    xh(0, 0) = 0.0;
    xh(0, 1) = 1.0;
    xh(0, 2) = -1.0;
    xh(0, 3) = -6.0;
    xh(0, 4) = 6.0;
    Kokkos::deep_copy(x, xh);
  }
  kernels::gelu_forward(x, y);
  const std::vector<double> yh = to_host(y);
  EXPECT_EQ(yh[0], 0.0);
  EXPECT_NEAR(yh[1], 0.8413447460685429, 1e-15);
  EXPECT_NEAR(yh[2], -0.15865525393145707, 1e-15);
  EXPECT_NEAR(yh[3], 0.0, 1e-8);
  EXPECT_NEAR(yh[4], 6.0, 1e-8);

  const std::vector<double> wh = to_host(w);
  auto loss = [&] {
    kernels::gelu_forward(x, y);
    return dot(to_host(y), wh);
  };
  Matrix<double> grad("grad", 4, 5);
  Kokkos::deep_copy(grad, w);
  kernels::gelu_backward(x, grad);
  EXPECT_LT(relative_error(to_host(grad), numeric_gradient(x, loss)), kKernelTolerance);
}

// The float GELU may use a faster erf; it must stay close to the exact (double) function, and
// its derivative must stay consistent with it.
TEST(KernelGradCheck, FloatGeluTracksDouble) {
  double worst_value = 0, worst_derivative = 0;
  for (int i = -800; i <= 800; ++i) {
    const double x = i / 100.0;
    worst_value = std::max(
        worst_value, std::abs(double(kernels::gelu(float(x))) - kernels::gelu(double(float(x)))));
    worst_derivative =
        std::max(worst_derivative, std::abs(double(kernels::gelu_derivative(float(x))) -
                                            kernels::gelu_derivative(double(float(x)))));
  }
  EXPECT_LT(worst_value, 1e-5);
  EXPECT_LT(worst_derivative, 1e-5);
}

TEST(KernelGradCheck, RmsNormInputAndGain) {
  const int n = 5, d = 6;
  const double eps = 1e-5;
  Matrix<double> x("x", n, d), y("y", n, d), w("w", n, d), dx("dx", n, d);
  Vector<double> gain("gain", d), grad_gain("grad_gain", d), inv_rms("inv_rms", n);
  fill_normal(x, 3);
  fill_normal(gain, 4, 0.3, 1.0);
  fill_normal(w, 5);
  fill_normal(dx, 6);  // backward accumulates into dx and grad_gain
  fill_normal(grad_gain, 7);
  const VectorRef<double> gain_ref(gain.data(), d), grad_gain_ref(grad_gain.data(), d);

  kernels::rmsnorm_forward(x, gain_ref, eps, y, inv_rms);
  // Forward against a direct evaluation.
  const std::vector<double> xh = to_host(x), gh = to_host(gain), yh = to_host(y);
  for (int i = 0; i < n; ++i) {
    double ss = 0;
    for (int j = 0; j < d; ++j) ss += xh[i * d + j] * xh[i * d + j];
    const double inv = 1 / std::sqrt(ss / d + eps);
    for (int j = 0; j < d; ++j) EXPECT_NEAR(yh[i * d + j], xh[i * d + j] * inv * gh[j], 1e-14);
  }

  const std::vector<double> dx0 = to_host(dx), dgain0 = to_host(grad_gain);
  kernels::rmsnorm_backward(x, gain_ref, inv_rms, w, dx, grad_gain_ref);
  std::vector<double> dx_added = to_host(dx), dgain_added = to_host(grad_gain);
  for (std::size_t i = 0; i < dx_added.size(); ++i) dx_added[i] -= dx0[i];
  for (std::size_t i = 0; i < dgain_added.size(); ++i) dgain_added[i] -= dgain0[i];

  const std::vector<double> wh = to_host(w);
  Matrix<double> y2("y2", n, d);
  Vector<double> inv2("inv2", n);
  auto loss = [&] {
    kernels::rmsnorm_forward(x, gain_ref, eps, y2, inv2);
    return dot(to_host(y2), wh);
  };
  EXPECT_LT(relative_error(dx_added, numeric_gradient(x, loss)), kKernelTolerance);
  EXPECT_LT(relative_error(dgain_added, numeric_gradient(gain, loss)), kKernelTolerance);
}

TEST(KernelGradCheck, SoftmaxRowsLogSumExp) {
  const int n = 4, c = 6;
  Matrix<double> logits("logits", n, c), probs("probs", n, c);
  Vector<double> lse("lse", n), w("w", n);
  fill_normal(logits, 8, 3.0);
  fill_normal(w, 9);
  Kokkos::deep_copy(probs, logits);
  kernels::softmax_rows(probs, lse);
  const std::vector<double> lh = to_host(logits), ph = to_host(probs), lseh = to_host(lse);
  const std::vector<double> wh = to_host(w);
  std::vector<double> analytic(n * c);
  for (int i = 0; i < n; ++i) {
    double sum = 0, exp_sum = 0;
    for (int j = 0; j < c; ++j) {
      sum += ph[i * c + j];
      exp_sum += std::exp(lh[i * c + j]);
      analytic[i * c + j] = wh[i] * ph[i * c + j];  // d lse / d logits = softmax
    }
    EXPECT_NEAR(sum, 1.0, 1e-14);
    EXPECT_NEAR(lseh[i], std::log(exp_sum), 1e-13);
  }
  Matrix<double> scratch("scratch", n, c);
  Vector<double> lse2("lse2", n);
  auto loss = [&] {
    Kokkos::deep_copy(scratch, logits);
    kernels::softmax_rows(scratch, lse2);
    return dot(to_host(lse2), wh);
  };
  EXPECT_LT(relative_error(analytic, numeric_gradient(logits, loss)), kKernelTolerance);
}

TEST(KernelGradCheck, CrossEntropyLogitsGradient) {
  const int n = 6, c = 5;
  const double scale = 1.0 / n;
  Matrix<double> logits("logits", n, c), dlogits("dlogits", n, c);
  IntVector labels("labels", n), correct("correct", n);
  Vector<double> row_loss("row_loss", n);
  fill_normal(logits, 10, 2.0);
  auto labels_h = Kokkos::create_mirror_view(labels);
  for (int i = 0; i < n; ++i) labels_h(i) = (3 * i + 1) % c;
  Kokkos::deep_copy(labels, labels_h);

  kernels::cross_entropy(logits, labels, scale, dlogits, row_loss, correct);
  const std::vector<double> lh = to_host(logits), loss_h = to_host(row_loss);
  auto correct_h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), correct);
  for (int i = 0; i < n; ++i) {
    double exp_sum = 0;
    int arg = 0;
    for (int j = 0; j < c; ++j) {
      exp_sum += std::exp(lh[i * c + j]);
      if (lh[i * c + j] > lh[i * c + arg]) arg = j;
    }
    EXPECT_NEAR(loss_h[i], std::log(exp_sum) - lh[i * c + labels_h(i)], 1e-13);
    EXPECT_EQ(correct_h(i), arg == labels_h(i) ? 1 : 0);
  }

  Matrix<double> none("none", 0, 0);
  Vector<double> row_loss2("row_loss2", n);
  auto loss = [&] {
    kernels::cross_entropy(logits, labels, scale, none, row_loss2, correct);
    const std::vector<double> rl = to_host(row_loss2);
    double sum = 0;
    for (double v : rl) sum += v;
    return scale * sum;
  };
  EXPECT_LT(relative_error(to_host(dlogits), numeric_gradient(logits, loss)), kKernelTolerance);
}

// Routing layout used by the combine and gather/scatter tests: 5 tokens x 2 slots, three slots
// dropped, the kept ones packed in an order unrelated to the token order.
struct PackedLayout {
  IntMatrix slot_pos{"slot_pos", 5, 2};
  IntVector token_of;
  int packed_rows = 0;
  PackedLayout() {
    const int pos[5][2] = {{3, -1}, {0, 5}, {-1, -1}, {6, 1}, {2, 4}};
    auto slot_h = Kokkos::create_mirror_view(slot_pos);
    std::vector<int> tokens(7, -1);
    for (int t = 0; t < 5; ++t)
      for (int s = 0; s < 2; ++s) {
        slot_h(t, s) = pos[t][s];
        if (pos[t][s] >= 0) tokens[pos[t][s]] = t;
      }
    Kokkos::deep_copy(slot_pos, slot_h);
    packed_rows = 7;
    token_of = IntVector("token_of", packed_rows);
    auto token_h = Kokkos::create_mirror_view(token_of);
    for (int p = 0; p < packed_rows; ++p) token_h(p) = tokens[p];
    Kokkos::deep_copy(token_of, token_h);
  }
};

TEST(KernelGradCheck, CombineRowsExpertOutputsAndGates) {
  const PackedLayout layout;
  const int n = 5, k = 2, d = 3;
  Matrix<double> y("y", layout.packed_rows, d), gate("gate", n, k), out("out", n, d);
  Matrix<double> w("w", n, d), dy("dy", layout.packed_rows, d), dgate("dgate", n, k);
  fill_normal(y, 12);
  fill_normal(gate, 13, 0.2, 0.5);
  fill_normal(w, 14);
  kernels::combine_rows(y, layout.slot_pos, gate, out);
  // Token 2 has no kept slot: its output is zero.
  const std::vector<double> out_h = to_host(out);
  for (int j = 0; j < d; ++j) EXPECT_EQ(out_h[2 * d + j], 0.0);

  kernels::combine_rows_backward(y, layout.slot_pos, gate, w, dy, dgate);
  const std::vector<double> wh = to_host(w);
  auto loss = [&] {
    kernels::combine_rows(y, layout.slot_pos, gate, out);
    return dot(to_host(out), wh);
  };
  const std::vector<double> dgate_fd = numeric_gradient(gate, loss);
  EXPECT_LT(relative_error(to_host(dy), numeric_gradient(y, loss)), kKernelTolerance);
  EXPECT_LT(relative_error(to_host(dgate), dgate_fd), kKernelTolerance);
  // Dropped slots get no gate gradient.
  const std::vector<double> dgate_h = to_host(dgate);
  EXPECT_EQ(dgate_h[0 * k + 1], 0.0);
  EXPECT_EQ(dgate_h[2 * k + 0], 0.0);
  EXPECT_EQ(dgate_h[2 * k + 1], 0.0);
}

TEST(KernelGradCheck, GatherAndScatterAddAreAdjoint) {
  const PackedLayout layout;
  const int n = 5, d = 4;
  Matrix<double> x("x", n, d), packed("packed", layout.packed_rows, d);
  Matrix<double> y("y", layout.packed_rows, d), dx("dx", n, d);
  fill_normal(x, 15);
  fill_normal(y, 16);
  kernels::gather_rows(x, layout.token_of, packed);
  kernels::scatter_add_rows(y, layout.slot_pos, dx);
  const std::vector<double> xh = to_host(x), ph = to_host(packed);
  auto token_h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), layout.token_of);
  for (int p = 0; p < layout.packed_rows; ++p)
    for (int j = 0; j < d; ++j) EXPECT_EQ(ph[p * d + j], xh[token_h(p) * d + j]);
  const double lhs = dot(ph, to_host(y)), rhs = dot(xh, to_host(dx));
  EXPECT_NEAR(lhs, rhs, 1e-12 * std::max(1.0, std::abs(lhs)));
  // The token without kept slots receives nothing.
  const std::vector<double> dxh = to_host(dx);
  for (int j = 0; j < d; ++j) EXPECT_EQ(dxh[2 * d + j], 0.0);
}

TEST(KernelGradCheck, AddBiasAndBiasGradientAreAdjoint) {
  const int n = 4, d = 3;
  Matrix<double> y("y", n, d), dy("dy", n, d);
  Vector<double> bias("bias", d), grad_bias("grad_bias", d);
  fill_normal(bias, 17);
  fill_normal(dy, 18);
  kernels::add_bias(y, VectorRef<double>(bias.data(), d));
  kernels::accumulate_bias_grad(dy, VectorRef<double>(grad_bias.data(), d));
  EXPECT_NEAR(dot(to_host(y), to_host(dy)), dot(to_host(bias), to_host(grad_bias)), 1e-12);
}

// ---------------------------------------------------------------------------------------------
// Whole model.

ModelShape small_shape() {
  ModelShape s;
  s.inputs = 12;
  s.classes = 5;
  s.d_model = 6;
  s.moe.d_model = 6;
  s.moe.d_ff = 7;
  s.moe.experts = 4;
  s.moe.top_k = 2;
  s.moe_layers = 2;
  s.init_std = 0.5;
  s.seed = 5;
  return s;
}

struct Batch {
  Matrix<double> x;
  IntVector labels;
};

Batch make_batch(const ModelShape& shape, int n, std::uint64_t stream) {
  Batch b{Matrix<double>("x", n, shape.inputs), IntVector("labels", n)};
  fill_normal(b.x, stream);
  auto labels_h = Kokkos::create_mirror_view(b.labels);
  for (int i = 0; i < n; ++i)
    labels_h(i) = int(core::counter_bits(3, core::RngPurpose::test, stream, i) % shape.classes);
  Kokkos::deep_copy(b.labels, labels_h);
  return b;
}

void check_config(const ModelShape& shape, int n = 9) {
  MoeModel<double> model(shape);
  const Batch batch = make_batch(shape, n, 21);
  expect_model_gradients_match(model, batch.x, batch.labels);
}

TEST(ModelGradCheck, RmsNormNormalizedGatesAuxAndZLoss) {
  ModelShape s = small_shape();
  s.rmsnorm = true;
  s.moe.normalize_gates = true;
  s.moe.aux_loss_coef = 0.1;
  s.moe.z_loss_coef = 0.05;
  check_config(s);
}

TEST(ModelGradCheck, NoNormUnnormalizedGatesTop1) {
  ModelShape s = small_shape();
  s.rmsnorm = false;
  s.moe.normalize_gates = false;
  s.moe.top_k = 1;
  s.moe.aux_loss_coef = 0.1;
  check_config(s);
}

TEST(ModelGradCheck, TopKEqualsExperts) {
  ModelShape s = small_shape();
  s.moe.top_k = s.moe.experts;
  s.moe.aux_loss_coef = 0.1;
  s.moe.z_loss_coef = 0.05;
  check_config(s);
}

TEST(ModelGradCheck, CapacityModeDroppingTokens) {
  ModelShape s = small_shape();
  s.moe.capacity_mode = true;
  s.moe.capacity_factor = 0.5;
  s.moe.aux_loss_coef = 0.1;
  s.moe.z_loss_coef = 0.05;
  MoeModel<double> model(s);
  const Batch batch = make_batch(s, 9, 21);
  const BatchStats stats = model.run(batch.x, batch.labels, false);
  // capacity = ceil(0.5 * 9 * 2 / 4) = 3 per expert, so at most 12 of 18 slots are kept.
  for (const LayerRoutingStats& layer : stats.layers) {
    EXPECT_GE(layer.dropped, 6);
    EXPECT_THAT(layer.tokens_per_expert, ::testing::Each(::testing::Le(3)));
  }
  expect_model_gradients_match(model, batch.x, batch.labels);
}

TEST(ModelGradCheck, TrainAndEvalAgreeAndGradientsAccumulate) {
  const ModelShape s = small_shape();
  MoeModel<double> model(s);
  const Batch batch = make_batch(s, 9, 22);
  model.params().zero_grads();
  const BatchStats train = model.run(batch.x, batch.labels, true);
  const std::vector<double> once = to_host(model.params().grads());
  const BatchStats eval = model.run(batch.x, batch.labels, false);
  EXPECT_EQ(train.samples, 9);
  EXPECT_EQ(train.loss_sum, eval.loss_sum);
  EXPECT_EQ(train.aux_loss, eval.aux_loss);
  EXPECT_EQ(train.correct, eval.correct);
  model.run(batch.x, batch.labels, true);  // no zero_grads: accumulates
  const std::vector<double> twice = to_host(model.params().grads());
  ASSERT_EQ(once.size(), twice.size());
  for (std::size_t i = 0; i < once.size(); ++i) ASSERT_NEAR(twice[i], 2 * once[i], 1e-14);
}

// Deterministic sample of `count` distinct indices in [0, size), or all of them if fewer.
std::vector<std::size_t> sample_indices(std::size_t size, std::size_t count, std::uint64_t key) {
  std::vector<std::size_t> all(size);
  for (std::size_t i = 0; i < size; ++i) all[i] = i;
  if (size <= count) return all;
  for (std::size_t i = 0; i < count; ++i) {
    const std::size_t j = i + core::counter_bits(9, core::RngPurpose::test, key, i) % (size - i);
    std::swap(all[i], all[j]);
  }
  all.resize(count);
  std::sort(all.begin(), all.end());
  return all;
}

bool same_routing(const BatchStats& a, const BatchStats& b) {
  if (a.layers.size() != b.layers.size()) return false;
  for (std::size_t l = 0; l < a.layers.size(); ++l)
    if (a.layers[l].tokens_per_expert != b.layers[l].tokens_per_expert ||
        a.layers[l].dropped != b.layers[l].dropped)
      return false;
  return true;
}

double objective(const BatchStats& s) {
  return s.loss_sum / double(s.samples) + s.aux_loss;
}

}  // namespace

void expect_model_gradients_match(MoeModel<double>& model, const Matrix<double>& x,
                                  const IntVector& labels, double tolerance) {
  constexpr std::size_t kSamplesPerTensor = 64;
  ParamStore<double>& params = model.params();
  params.zero_grads();
  const BatchStats base = model.run(x, labels, true);
  const std::vector<double> grads = to_host(params.grads());
  const BatchStats base_eval = model.run(x, labels, false);
  const double loss0 = objective(base_eval);
  ASSERT_TRUE(std::isfinite(loss0));
  EXPECT_EQ(objective(base), loss0);
  EXPECT_TRUE(same_routing(base, base_eval));

  const auto values = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), params.values());
  int checked = 0, skipped = 0;
  double worst = 0;
  std::string worst_name;
  for (const ParamInfo& info : params.infos()) {
    std::vector<double> analytic, numeric;
    for (std::size_t i :
         sample_indices(info.size(), kSamplesPerTensor, core::name_hash(info.name.c_str()))) {
      const std::size_t at = info.offset + i;
      const auto [plus, minus] =
          evaluate_around(params.values(), values, at, [&] { return model.run(x, labels, false); });
      ++checked;
      // A routing decision flipped inside the step: the loss is not differentiable there.
      const double curvature = std::abs(objective(plus) + objective(minus) - 2 * loss0);
      if (!same_routing(plus, base) || !same_routing(minus, base) || curvature > 1e-8) {
        ++skipped;
        continue;
      }
      analytic.push_back(grads[at]);
      numeric.push_back((objective(plus) - objective(minus)) / (2 * kFiniteDifferenceStep));
    }
    const double scale = std::max(max_abs(analytic), max_abs(numeric));
    // The check must not be vacuous: every dense tensor but a router carries gradient (a router
    // may not, e.g. with k = 1, normalized gates and no auxiliary losses).
    if (info.kind == ParamKind::dense && !info.name.ends_with("router.w")) {
      EXPECT_GT(scale, 1e-6) << info.name << " has no gradient";
    }
    // Relative to the tensor's gradient scale, with an absolute floor for (near-)zero tensors.
    const double error = relative_error(analytic, numeric, 1e-3);
    EXPECT_LT(error, tolerance) << info.name << ": relative error " << error << ", gradient scale "
                                << scale;
    if (error > worst) {
      worst = error;
      worst_name = info.name;
    }
  }
  EXPECT_GT(checked, 0);
  EXPECT_LT(skipped, 0.05 * checked) << skipped << " of " << checked << " entries skipped";
  std::printf("[gradcheck] %d entries, %d skipped, worst relative error %.3g (%s)\n", checked,
              skipped, worst, worst_name.c_str());
}

}  // namespace daa::model::test
