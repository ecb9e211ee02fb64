// Unit tests of src/train/optimizer.cpp: the warmup + cosine learning-rate schedule, AdamW on a
// tiny ParamStore (weight decay on matrices only, bias correction) against values worked out in
// the test, and global-norm gradient clipping.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <Kokkos_Core.hpp>

#include <cmath>
#include <numbers>
#include <vector>

#include "daa/model/params.hpp"
#include "daa/train/optimizer.hpp"

namespace {

using daa::model::ParamInfo;
using daa::model::ParamKind;
using daa::model::ParamStore;
using daa::train::AdamW;
using daa::train::AdamWSettings;
using daa::train::clip_gradients;
using daa::train::gradient_norm_squared;
using daa::train::learning_rate;

// ---------------------------------------------------------------------------------------------
// Learning-rate schedule

constexpr double kLr = 1e-2;
constexpr double kMinLr = 1e-4;

TEST(LearningRate, WarmupIsLinearFromLrOverWarmupToLr) {
  // warmup = 4: steps 0..3 use lr * 1/4, 2/4, 3/4, 4/4.
  EXPECT_DOUBLE_EQ(learning_rate(0, 100, 4, kLr, kMinLr), 0.25 * kLr);
  EXPECT_DOUBLE_EQ(learning_rate(1, 100, 4, kLr, kMinLr), 0.50 * kLr);
  EXPECT_DOUBLE_EQ(learning_rate(2, 100, 4, kLr, kMinLr), 0.75 * kLr);
  EXPECT_DOUBLE_EQ(learning_rate(3, 100, 4, kLr, kMinLr), kLr);
}

TEST(LearningRate, CosineStartsAtLrAfterWarmup) {
  // total = 104, warmup = 4: the cosine runs over 100 steps starting at step 4.
  EXPECT_DOUBLE_EQ(learning_rate(4, 104, 4, kLr, kMinLr), kLr);
  // Step 5 is 1/100 of the way: min + (lr - min) * (1 + cos(pi / 100)) / 2.
  const double expected =
      kMinLr + 0.5 * (kLr - kMinLr) * (1.0 + std::cos(std::numbers::pi / 100.0));
  EXPECT_DOUBLE_EQ(learning_rate(5, 104, 4, kLr, kMinLr), expected);
  EXPECT_LT(learning_rate(5, 104, 4, kLr, kMinLr), kLr);
}

TEST(LearningRate, MidpointIsTheMeanOfLrAndMinLr) {
  EXPECT_NEAR(learning_rate(54, 104, 4, kLr, kMinLr), 0.5 * (kLr + kMinLr), 1e-15);
}

TEST(LearningRate, EndsAtMinLrAndStaysThere) {
  EXPECT_NEAR(learning_rate(104, 104, 4, kLr, kMinLr), kMinLr, 1e-15);
  EXPECT_NEAR(learning_rate(105, 104, 4, kLr, kMinLr), kMinLr, 1e-15);
  EXPECT_NEAR(learning_rate(10'000, 104, 4, kLr, kMinLr), kMinLr, 1e-15);
  // The last step that is actually used (total - 1) is just above the floor.
  EXPECT_GT(learning_rate(103, 104, 4, kLr, kMinLr), kMinLr);
}

TEST(LearningRate, DecreasesMonotonicallyAfterWarmup) {
  double previous = learning_rate(4, 104, 4, kLr, kMinLr);
  for (std::int64_t step = 5; step <= 104; ++step) {
    const double lr = learning_rate(step, 104, 4, kLr, kMinLr);
    EXPECT_LE(lr, previous) << "step " << step;
    previous = lr;
  }
}

TEST(LearningRate, NoWarmupStartsTheCosineAtStepZero) {
  EXPECT_DOUBLE_EQ(learning_rate(0, 10, 0, kLr, kMinLr), kLr);
  const double expected = kMinLr + 0.5 * (kLr - kMinLr) * (1.0 + std::cos(std::numbers::pi / 10.0));
  EXPECT_DOUBLE_EQ(learning_rate(1, 10, 0, kLr, kMinLr), expected);
  EXPECT_NEAR(learning_rate(5, 10, 0, kLr, kMinLr), 0.5 * (kLr + kMinLr), 1e-15);
  EXPECT_NEAR(learning_rate(10, 10, 0, kLr, kMinLr), kMinLr, 1e-15);
}

TEST(LearningRate, TotalNotAboveWarmupWarmsUpThenHoldsLr) {
  // total == warmup: warmup as usual, then the peak, no decay.
  EXPECT_DOUBLE_EQ(learning_rate(0, 4, 4, kLr, kMinLr), 0.25 * kLr);
  EXPECT_DOUBLE_EQ(learning_rate(4, 4, 4, kLr, kMinLr), kLr);
  EXPECT_DOUBLE_EQ(learning_rate(9, 4, 4, kLr, kMinLr), kLr);
  // total < warmup: the run ends inside the warmup.
  EXPECT_DOUBLE_EQ(learning_rate(1, 2, 8, kLr, kMinLr), 0.25 * kLr);
  EXPECT_DOUBLE_EQ(learning_rate(8, 2, 8, kLr, kMinLr), kLr);
}

// ---------------------------------------------------------------------------------------------
// AdamW

// A 2x2 weight matrix (decayed) followed by a 2-vector bias (not decayed), in double.
struct TinyModel {
  ParamStore<double> params;
  int matrix = -1;
  int bias = -1;

  TinyModel() {
    matrix = params.declare(
        ParamInfo{.name = "w", .kind = ParamKind::dense, .rows = 2, .cols = 2, .decay = true});
    bias = params.declare(
        ParamInfo{.name = "b", .kind = ParamKind::dense, .rows = 2, .cols = 1, .decay = false});
    params.allocate();
  }

  static void set(const daa::kernels::Vector<double>& view, const std::vector<double>& values) {
    auto host = Kokkos::create_mirror_view(view);
    for (std::size_t i = 0; i < values.size(); ++i) host(i) = values[i];
    Kokkos::deep_copy(view, host);
  }
  static std::vector<double> get(const daa::kernels::Vector<double>& view) {
    Kokkos::fence();
    auto host = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), view);
    return std::vector<double>(host.data(), host.data() + host.extent(0));
  }
  void set_values(const std::vector<double>& v) { set(params.values(), v); }
  void set_grads(const std::vector<double>& g) { set(params.grads(), g); }
  std::vector<double> values() const { return get(params.values()); }
};

TEST(AdamW, LayoutOfTheTinyModel) {
  TinyModel model;
  ASSERT_EQ(model.params.size(), 6u);
  EXPECT_EQ(model.params.infos()[0].offset, 0u);
  EXPECT_EQ(model.params.infos()[1].offset, 4u);
}

TEST(AdamW, FirstStepMovesEachWeightByLrTimesSignOfItsGradient) {
  // At step 1 the bias-corrected moments are m_hat = g and v_hat = g^2, so the Adam part of the
  // update is lr * g / (|g| + eps): about lr * sign(g) whatever the gradient's size. Without bias
  // correction it would be lr * (1 - beta1) / sqrt(1 - beta2) * sign(g), about 3.16 * lr.
  TinyModel model;
  const double lr = 0.1, wd = 0.5, eps = 1e-8;
  AdamW<double> adam(model.params,
                     AdamWSettings{.beta1 = 0.9, .beta2 = 0.999, .eps = eps, .weight_decay = wd});
  const std::vector<double> w0 = {1.0, -2.0, 3.0, -4.0, 5.0, -6.0};
  const std::vector<double> g = {0.5, -0.25, 1e-3, -100.0, 2.0, -0.125};
  model.set_values(w0);
  model.set_grads(g);
  adam.update(model.params, lr, 1);
  const std::vector<double> w1 = model.values();

  // Matrix entries: decay lr * wd * w0 = 0.05 * w0, then the Adam step.
  EXPECT_NEAR(w1[0], 1.0 - 0.05 * 1.0 - 0.1 * 0.5 / (0.5 + eps), 1e-12);
  EXPECT_NEAR(w1[1], -2.0 + 0.05 * 2.0 + 0.1 * 0.25 / (0.25 + eps), 1e-12);
  EXPECT_NEAR(w1[2], 3.0 - 0.05 * 3.0 - 0.1 * 1e-3 / (1e-3 + eps), 1e-12);
  EXPECT_NEAR(w1[3], -4.0 + 0.05 * 4.0 + 0.1 * 100.0 / (100.0 + eps), 1e-12);
  // Rounded to the eps-free values: 1 - 0.05 - 0.1 = 0.85, and so on.
  EXPECT_NEAR(w1[0], 0.85, 1e-7);
  EXPECT_NEAR(w1[1], -1.8, 1e-7);
  EXPECT_NEAR(w1[2], 2.75, 1e-5);
  EXPECT_NEAR(w1[3], -3.7, 1e-7);
  // Bias entries: no decay, only the Adam step.
  EXPECT_NEAR(w1[4], 5.0 - 0.1, 1e-7);
  EXPECT_NEAR(w1[5], -6.0 + 0.1, 1e-7);

  // Moments: m = (1 - beta1) g, v = (1 - beta2) g^2.
  const auto m = TinyModel::get(adam.first_moment());
  const auto v = TinyModel::get(adam.second_moment());
  for (std::size_t i = 0; i < g.size(); ++i) {
    EXPECT_NEAR(m[i], 0.1 * g[i], 1e-15 * std::abs(g[i])) << i;
    EXPECT_NEAR(v[i], 1e-3 * g[i] * g[i], 1e-12 * g[i] * g[i]) << i;
  }
}

TEST(AdamW, WeightDecayAppliesToTheMatrixOnly) {
  // Zero gradients: the moments stay 0, so the Adam step is 0 / (0 + eps) = 0 and only the
  // decoupled decay w -= lr * wd * w acts, on the decay=true matrix and not on the bias.
  TinyModel model;
  const double lr = 0.1, wd = 0.5;
  AdamW<double> adam(model.params, AdamWSettings{.weight_decay = wd});
  const std::vector<double> w0 = {1.0, -2.0, 3.0, -4.0, 5.0, -6.0};
  model.set_values(w0);
  model.set_grads({0, 0, 0, 0, 0, 0});
  adam.update(model.params, lr, 1);
  std::vector<double> w = model.values();
  for (int i = 0; i < 4; ++i) EXPECT_DOUBLE_EQ(w[i], 0.95 * w0[i]) << i;
  EXPECT_DOUBLE_EQ(w[4], 5.0);
  EXPECT_DOUBLE_EQ(w[5], -6.0);

  adam.update(model.params, lr, 2);
  w = model.values();
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(w[i], 0.95 * 0.95 * w0[i], 1e-15) << i;
  EXPECT_DOUBLE_EQ(w[4], 5.0);
  EXPECT_DOUBLE_EQ(w[5], -6.0);
}

TEST(AdamW, ThreeStepsMatchHandComputedValues) {
  // One matrix entry (index 0) and one bias entry (index 4) followed through three steps with
  // beta1 = 0.5, beta2 = 0.75, eps = 0, lr = 0.1, wd = 0.2, so every number below is exact
  // arithmetic on short fractions. Gradients: step 1: 1, step 2: -1, step 3: 2 (both entries).
  //   step 1: m = 0.5,    v = 0.25,       m_hat = 0.5/0.5 = 1,          v_hat = 0.25/0.25 = 1
  //           update = 1 / sqrt(1) = 1
  //   step 2: m = 0.25 - 0.5 = -0.25,     v = 0.1875 + 0.25 = 0.4375
  //           m_hat = -0.25/0.75 = -1/3,  v_hat = 0.4375/0.4375 = 1          update = -1/3
  //   step 3: m = -0.125 + 1 = 0.875,     v = 0.328125 + 1 = 1.328125
  //           m_hat = 0.875/0.875 = 1,    v_hat = 1.328125/0.578125 = 85/37  update = sqrt(37/85)
  // Matrix entry w0 = 2: w <- w - lr*wd*w - lr*update = 0.98 w - 0.1 update.
  // Bias entry   b0 = 2: b <- b - 0.1 update.
  TinyModel model;
  AdamW<double> adam(model.params,
                     AdamWSettings{.beta1 = 0.5, .beta2 = 0.75, .eps = 0.0, .weight_decay = 0.2});
  model.set_values({2.0, 0.0, 0.0, 0.0, 2.0, 0.0});
  const double grads[3] = {1.0, -1.0, 2.0};
  const double updates[3] = {1.0, -1.0 / 3.0, std::sqrt(37.0 / 85.0)};
  const double expected_m[3] = {0.5, -0.25, 0.875};
  const double expected_v[3] = {0.25, 0.4375, 1.328125};
  double w = 2.0, b = 2.0;
  for (int t = 0; t < 3; ++t) {
    // Entries 1..3 and 5 get gradient 1e-3 so that no 0/0 arises with eps = 0.
    model.set_grads({grads[t], 1e-3, 1e-3, 1e-3, grads[t], 1e-3});
    adam.update(model.params, 0.1, t + 1);
    w = 0.98 * w - 0.1 * updates[t];
    b = b - 0.1 * updates[t];
    const auto values = model.values();
    EXPECT_NEAR(values[0], w, 1e-14) << "step " << t + 1;
    EXPECT_NEAR(values[4], b, 1e-14) << "step " << t + 1;
    const auto m = TinyModel::get(adam.first_moment());
    const auto v = TinyModel::get(adam.second_moment());
    EXPECT_DOUBLE_EQ(m[0], expected_m[t]) << "step " << t + 1;
    EXPECT_DOUBLE_EQ(v[0], expected_v[t]) << "step " << t + 1;
    EXPECT_DOUBLE_EQ(m[4], expected_m[t]) << "step " << t + 1;
    EXPECT_DOUBLE_EQ(v[4], expected_v[t]) << "step " << t + 1;
  }
  // The closed forms, written out: w3 = 0.98^3 * 2 - 0.1 * (0.98^2 - 0.98/3 + sqrt(37/85)).
  const double w3 = 0.98 * 0.98 * 0.98 * 2.0 -
                    0.1 * (0.98 * 0.98 * 1.0 + 0.98 * (-1.0 / 3.0) + std::sqrt(37.0 / 85.0));
  const double b3 = 2.0 - 0.1 * (1.0 - 1.0 / 3.0 + std::sqrt(37.0 / 85.0));
  EXPECT_NEAR(model.values()[0], w3, 1e-14);
  EXPECT_NEAR(model.values()[4], b3, 1e-14);
}

TEST(AdamW, FloatInstantiationAgreesWithDouble) {
  ParamStore<float> params;
  params.declare(ParamInfo{.name = "w", .rows = 2, .cols = 2, .decay = true});
  params.declare(ParamInfo{.name = "b", .rows = 2, .cols = 1, .decay = false});
  params.allocate();
  auto values = Kokkos::create_mirror_view(params.values());
  auto grads = Kokkos::create_mirror_view(params.grads());
  for (int i = 0; i < 6; ++i) {
    values(i) = float(i + 1);
    grads(i) = 0.5f;
  }
  Kokkos::deep_copy(params.values(), values);
  Kokkos::deep_copy(params.grads(), grads);
  AdamW<float> adam(params, AdamWSettings{.weight_decay = 0.5});
  adam.update(params, 0.1, 1);
  Kokkos::fence();
  Kokkos::deep_copy(values, params.values());
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(values(i), 0.95 * (i + 1) - 0.1, 1e-6) << i;
  for (int i = 4; i < 6; ++i) EXPECT_NEAR(values(i), (i + 1) - 0.1, 1e-6) << i;
}

// ---------------------------------------------------------------------------------------------
// Gradient norm and clipping

template <class T>
daa::kernels::Vector<T> vector_of(const std::vector<T>& values) {
  daa::kernels::Vector<T> v("v", values.size());
  auto host = Kokkos::create_mirror_view(v);
  for (std::size_t i = 0; i < values.size(); ++i) host(i) = values[i];
  Kokkos::deep_copy(v, host);
  return v;
}

template <class T>
std::vector<T> host_of(const daa::kernels::Vector<T>& v) {
  Kokkos::fence();
  auto host = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), v);
  return std::vector<T>(host.data(), host.data() + host.extent(0));
}

TEST(GradientNorm, SumOfSquares) {
  EXPECT_DOUBLE_EQ(gradient_norm_squared(vector_of<double>({1, -2, 3, -4})), 30.0);
  EXPECT_DOUBLE_EQ(gradient_norm_squared(vector_of<float>({0.5f, -1.5f, 2.0f})), 6.5);
  EXPECT_DOUBLE_EQ(gradient_norm_squared(vector_of<double>({})), 0.0);
}

TEST(GradientNorm, AccumulatesFloatsInDouble) {
  // 2^24 + 1 is not a float; in a float accumulator the ones would vanish after 2^24.
  const std::vector<float> ones(3, 1.0f);
  std::vector<float> values = {4096.0f};  // 4096^2 = 2^24
  values.insert(values.end(), ones.begin(), ones.end());
  EXPECT_DOUBLE_EQ(gradient_norm_squared(vector_of<float>(values)), 16777216.0 + 3.0);
}

TEST(GradientNorm, LongVectorAcrossChunkBoundaries) {
  // Small integers: every partial sum is exact, so any summation order gives the same value.
  std::vector<float> values(10'007);
  double expected = 0;
  for (std::size_t i = 0; i < values.size(); ++i) {
    values[i] = float(int(i % 7) - 3);
    expected += double(values[i]) * double(values[i]);
  }
  EXPECT_DOUBLE_EQ(gradient_norm_squared(vector_of<float>(values)), expected);
}

TEST(ClipGradients, AboveTheMaxScalesToTheMaxAndReturnsTheNormBefore) {
  auto g = vector_of<double>({3.0, -4.0});  // norm 5
  EXPECT_DOUBLE_EQ(clip_gradients(g, 1.0), 5.0);
  const auto clipped = host_of(g);
  const double scale = 1.0 / (5.0 + 1e-6);
  EXPECT_DOUBLE_EQ(clipped[0], 3.0 * scale);
  EXPECT_DOUBLE_EQ(clipped[1], -4.0 * scale);
  EXPECT_NEAR(std::sqrt(gradient_norm_squared(g)), 1.0, 1e-6);
  EXPECT_LE(std::sqrt(gradient_norm_squared(g)), 1.0);
}

TEST(ClipGradients, BelowOrAtTheMaxLeavesGradientsAlone) {
  auto g = vector_of<double>({3.0, -4.0});
  EXPECT_DOUBLE_EQ(clip_gradients(g, 10.0), 5.0);
  EXPECT_THAT(host_of(g), ::testing::ElementsAre(3.0, -4.0));
  EXPECT_DOUBLE_EQ(clip_gradients(g, 5.0), 5.0);  // norm == max: not clipped
  EXPECT_THAT(host_of(g), ::testing::ElementsAre(3.0, -4.0));
}

TEST(ClipGradients, MaxZeroTurnsClippingOff) {
  auto g = vector_of<double>({300.0, -400.0});
  EXPECT_DOUBLE_EQ(clip_gradients(g, 0.0), 500.0);
  EXPECT_THAT(host_of(g), ::testing::ElementsAre(300.0, -400.0));
}

TEST(ClipGradients, FloatGradients) {
  auto g = vector_of<float>({0.0f, 6.0f, 8.0f});  // norm 10
  EXPECT_DOUBLE_EQ(clip_gradients(g, 2.0), 10.0);
  const auto clipped = host_of(g);
  EXPECT_FLOAT_EQ(clipped[0], 0.0f);
  EXPECT_NEAR(clipped[1], 1.2f, 1e-6f);
  EXPECT_NEAR(clipped[2], 1.6f, 1e-6f);
}

TEST(ClipGradients, ZeroGradientIsNotTouched) {
  auto g = vector_of<double>({0.0, 0.0});
  EXPECT_DOUBLE_EQ(clip_gradients(g, 1.0), 0.0);
  EXPECT_THAT(host_of(g), ::testing::ElementsAre(0.0, 0.0));
}

}  // namespace
