// Router and top-k edge cases: kernels::top_k_route on hand-made probabilities (ties, k = 1,
// k = experts, routing bias), and the model's routing statistics (one dominant expert, capacity
// policy and its slot-major order, experts without tokens, bit-for-bit determinism).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "daa/core/rng.hpp"
#include "daa/kernels/nn_kernels.hpp"
#include "daa/kernels/views.hpp"
#include "daa/model/moe_model.hpp"

namespace daa::model::test {

using kernels::Matrix;
using kernels::MemSpace;
using kernels::Vector;
using kernels::VectorRef;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using IntMatrix = Kokkos::View<int**, Kokkos::LayoutRight, MemSpace>;
using IntVector = Kokkos::View<int*, MemSpace>;

// Defined in test_model_gradcheck.cpp.
void expect_model_gradients_match(MoeModel<double>& model, const Matrix<double>& x,
                                  const IntVector& labels, double tolerance = 1e-6);

namespace {

// ---------------------------------------------------------------------------------------------
// top_k_route on hand-made probabilities.

struct Routed {
  std::vector<std::vector<int>> choice;
  std::vector<std::vector<double>> gate;
};

Routed route(const std::vector<std::vector<double>>& probs, int k, bool normalize,
             const std::vector<double>& bias = {}, int groups = 1, int max_groups = 0) {
  const int n = int(probs.size()), experts = int(probs.at(0).size());
  Matrix<double> p("probs", n, experts), gate("gate", n, k);
  IntMatrix choice("choice", n, k);
  Vector<double> b("bias", experts);
  auto p_h = Kokkos::create_mirror_view(p);
  for (int t = 0; t < n; ++t)
    for (int e = 0; e < experts; ++e) p_h(t, e) = probs[t][e];
  Kokkos::deep_copy(p, p_h);
  if (!bias.empty()) {
    auto b_h = Kokkos::create_mirror_view(b);
    for (int e = 0; e < experts; ++e) b_h(e) = bias.at(e);
    Kokkos::deep_copy(b, b_h);
  }
  kernels::top_k_route(p, VectorRef<double>(b.data(), experts), k, normalize, choice, gate, groups,
                       max_groups);
  auto choice_h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), choice);
  auto gate_h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), gate);
  Routed r{std::vector<std::vector<int>>(n), std::vector<std::vector<double>>(n)};
  for (int t = 0; t < n; ++t)
    for (int s = 0; s < k; ++s) {
      r.choice[t].push_back(choice_h(t, s));
      r.gate[t].push_back(gate_h(t, s));
    }
  return r;
}

double sum(const std::vector<double>& v) {
  return std::accumulate(v.begin(), v.end(), 0.0);
}

// 8 experts in 4 groups of 2: {0,1} {2,3} {4,5} {6,7}.
TEST(TopKRoute, GroupLimitedRoutingStaysInsideTheBestGroups) {
  const std::vector<std::vector<double>> probs = {
      // unlimited top-2 would be experts 2 and 6 (groups 1 and 3); group 1 has the best score
      {0.05, 0.05, 0.30, 0.10, 0.05, 0.05, 0.25, 0.15},
      // group scores tie between groups 0 and 2 (0.3): the lower group wins
      {0.30, 0.05, 0.05, 0.05, 0.30, 0.05, 0.10, 0.10}};
  EXPECT_THAT(route(probs, 2, false).choice, ElementsAre(ElementsAre(2, 6), ElementsAre(0, 4)));
  const Routed one_group = route(probs, 2, false, {}, 4, 1);
  EXPECT_THAT(one_group.choice, ElementsAre(ElementsAre(2, 3), ElementsAre(0, 1)));
  EXPECT_THAT(one_group.gate[0], ElementsAre(0.30, 0.10));  // gates stay the raw probs
  const Routed two_groups = route(probs, 2, false, {}, 4, 2);
  EXPECT_THAT(two_groups.choice, ElementsAre(ElementsAre(2, 6), ElementsAre(0, 4)));
  // max_groups == groups is no limit.
  EXPECT_THAT(route(probs, 2, false, {}, 4, 4).choice,
              ElementsAre(ElementsAre(2, 6), ElementsAre(0, 4)));
  // The bias counts in the group score: push group 3 above group 1 for token 0.
  const Routed biased = route(probs, 2, false, {0, 0, 0, 0, 0, 0, 0.1, 0}, 4, 1);
  EXPECT_THAT(biased.choice[0], ElementsAre(6, 7));
}

TEST(TopKRoute, TiesGoToTheLowerExpertIndex) {
  const std::vector<std::vector<double>> probs = {
      {0.25, 0.25, 0.25, 0.25}, {0.1, 0.3, 0.3, 0.3}, {0.2, 0.4, 0.2, 0.2}, {0.3, 0.1, 0.3, 0.3}};
  const Routed top1 = route(probs, 1, true);
  EXPECT_THAT(top1.choice,
              ElementsAre(ElementsAre(0), ElementsAre(1), ElementsAre(1), ElementsAre(0)));
  const Routed top2 = route(probs, 2, true);
  EXPECT_THAT(top2.choice, ElementsAre(ElementsAre(0, 1), ElementsAre(1, 2), ElementsAre(1, 0),
                                       ElementsAre(0, 2)));
  for (const auto& g : top2.gate) EXPECT_NEAR(sum(g), 1.0, 1e-15);
  EXPECT_DOUBLE_EQ(top2.gate[0][0], 0.5);
  EXPECT_DOUBLE_EQ(top2.gate[1][1], 0.5);
  EXPECT_DOUBLE_EQ(top2.gate[2][0], 0.4 / 0.6);
  EXPECT_DOUBLE_EQ(top2.gate[2][1], 0.2 / 0.6);

  // Without normalization the gates are the raw probabilities of the chosen experts.
  const Routed raw = route(probs, 2, false);
  EXPECT_EQ(raw.choice, top2.choice);
  for (std::size_t t = 0; t < probs.size(); ++t)
    for (int s = 0; s < 2; ++s) EXPECT_EQ(raw.gate[t][s], probs[t][raw.choice[t][s]]);
}

TEST(TopKRoute, SingleChoiceGate) {
  const std::vector<std::vector<double>> probs = {
      {0.1, 0.2, 0.7}, {0.5, 0.3, 0.2}, {0.3, 0.4, 0.3}};
  const Routed normalized = route(probs, 1, true);
  const Routed raw = route(probs, 1, false);
  EXPECT_THAT(normalized.choice, ElementsAre(ElementsAre(2), ElementsAre(0), ElementsAre(1)));
  EXPECT_EQ(raw.choice, normalized.choice);
  for (std::size_t t = 0; t < probs.size(); ++t) {
    EXPECT_EQ(normalized.gate[t][0], 1.0);
    EXPECT_EQ(raw.gate[t][0], probs[t][raw.choice[t][0]]);
  }
}

TEST(TopKRoute, KEqualsExpertsChoosesEveryExpertOnceInDescendingOrder) {
  const int n = 7, experts = 5;
  std::vector<std::vector<double>> probs(n, std::vector<double>(experts));
  for (int t = 0; t < n; ++t) {
    double total = 0;
    for (int e = 0; e < experts; ++e) {
      probs[t][e] = std::exp(core::counter_normal(1, core::RngPurpose::test, 40, t * experts + e));
      total += probs[t][e];
    }
    for (double& p : probs[t]) p /= total;
  }
  const Routed r = route(probs, experts, true);
  for (int t = 0; t < n; ++t) {
    std::vector<int> sorted = r.choice[t];
    std::sort(sorted.begin(), sorted.end());
    EXPECT_THAT(sorted, ElementsAre(0, 1, 2, 3, 4)) << "token " << t;
    for (int s = 1; s < experts; ++s)
      EXPECT_GE(probs[t][r.choice[t][s - 1]], probs[t][r.choice[t][s]]);
    EXPECT_NEAR(sum(r.gate[t]), 1.0, 1e-15);
    for (int s = 0; s < experts; ++s) EXPECT_NEAR(r.gate[t][s], probs[t][r.choice[t][s]], 1e-15);
  }
}

TEST(TopKRoute, BiasMovesSelectionButNotGateValues) {
  const std::vector<std::vector<double>> probs = {{0.5, 0.3, 0.2}, {0.1, 0.6, 0.3}};
  const std::vector<double> bias = {0.0, 0.25, 0.4};  // scores {0.5, 0.55, 0.6}, {0.1, 0.85, 0.7}
  EXPECT_THAT(route(probs, 1, true).choice, ElementsAre(ElementsAre(0), ElementsAre(1)));
  const Routed top1 = route(probs, 1, false, bias);
  EXPECT_THAT(top1.choice, ElementsAre(ElementsAre(2), ElementsAre(1)));
  EXPECT_EQ(top1.gate[0][0], 0.2);
  EXPECT_EQ(top1.gate[1][0], 0.6);
  const Routed top2 = route(probs, 2, true, bias);
  EXPECT_THAT(top2.choice, ElementsAre(ElementsAre(2, 1), ElementsAre(1, 2)));
  EXPECT_DOUBLE_EQ(top2.gate[0][0], 0.2 / 0.5);
  EXPECT_DOUBLE_EQ(top2.gate[0][1], 0.3 / 0.5);
  EXPECT_DOUBLE_EQ(top2.gate[1][0], 0.6 / 0.9);
  EXPECT_DOUBLE_EQ(top2.gate[1][1], 0.3 / 0.9);
}

// ---------------------------------------------------------------------------------------------
// Routing inside the model.

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
  s.moe.aux_loss_coef = 0.1;
  s.moe.z_loss_coef = 0.05;
  s.seed = 9;
  return s;
}

template <class T>
struct Batch {
  Matrix<T> x;
  IntVector labels;
};

template <class T>
Batch<T> make_batch(const ModelShape& shape, int n, std::uint64_t stream) {
  Batch<T> b{Matrix<T>("x", n, shape.inputs), IntVector("labels", n)};
  auto x_h = Kokkos::create_mirror_view(b.x);
  auto labels_h = Kokkos::create_mirror_view(b.labels);
  for (int t = 0; t < n; ++t) {
    for (int j = 0; j < shape.inputs; ++j)
      x_h(t, j) = T(core::counter_normal(2, core::RngPurpose::test, stream, t * shape.inputs + j));
    labels_h(t) = int(core::counter_bits(4, core::RngPurpose::test, stream, t) % shape.classes);
  }
  Kokkos::deep_copy(b.x, x_h);
  Kokkos::deep_copy(b.labels, labels_h);
  return b;
}

// Rewrites the parameter `name`: value(r, c) = f(r, c, old value).
template <class T>
void set_param(MoeModel<T>& model, const std::string& name,
               const std::function<double(std::size_t, std::size_t, double)>& f) {
  const auto& infos = model.params().infos();
  const auto it =
      std::find_if(infos.begin(), infos.end(), [&](const ParamInfo& p) { return p.name == name; });
  ASSERT_NE(it, infos.end()) << "no parameter " << name;
  auto values = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), model.params().values());
  for (std::size_t r = 0; r < it->rows; ++r)
    for (std::size_t c = 0; c < it->cols; ++c) {
      T& v = values(it->offset + r * it->cols + c);
      v = T(f(r, c, double(v)));
    }
  Kokkos::deep_copy(model.params().values(), values);
}

// Makes the first block's input strictly positive (so its normalized rows are too): a large input
// bias and a small input weight.
void make_first_block_input_positive(MoeModel<double>& model) {
  set_param(model, "input.b", [](std::size_t, std::size_t, double) { return 2.0; });
  set_param(model, "input.w", [](std::size_t, std::size_t, double v) { return 0.1 * v; });
}

// Router weights equal along each column: logits = (sum of the normed row) * column value, so on
// positive rows every token ranks the experts in the order of `column`.
void set_uniform_router(MoeModel<double>& model, int layer, const std::vector<double>& column) {
  set_param(model, "moe" + std::to_string(layer) + ".router.w",
            [&](std::size_t, std::size_t c, double) { return column.at(c); });
}

TEST(ModelRouting, AllTokensToOneExpert) {
  ModelShape s = small_shape();
  s.moe.top_k = 1;
  MoeModel<double> model(s);
  make_first_block_input_positive(model);
  // Expert 2 gets a clear positive column; the others keep small random weights (no exact ties).
  set_param(model, "moe0.router.w",
            [](std::size_t, std::size_t c, double v) { return c == 2 ? 0.3 : 0.1 * v; });
  const int n = 9;
  const Batch<double> batch = make_batch<double>(s, n, 50);
  const BatchStats stats = model.run(batch.x, batch.labels, false);
  EXPECT_THAT(stats.layers[0].tokens_per_expert, ElementsAre(0, 0, n, 0));
  EXPECT_EQ(stats.layers[0].dropped, 0);
  // f = (0, 0, 1, 0): the Switch loss is coef * E * mean prob of expert 2, above its balanced 0.1.
  EXPECT_GT(stats.layers[0].aux_loss, s.moe.aux_loss_coef);
  expect_model_gradients_match(model, batch.x, batch.labels);
}

TEST(ModelRouting, RoutingBiasSteersTheModel) {
  const ModelShape s = small_shape();
  MoeModel<double> model(s);
  const int n = 9;
  const Batch<double> batch = make_batch<double>(s, n, 51);
  const BatchStats before = model.run(batch.x, batch.labels, false);
  EXPECT_LT(before.layers[0].tokens_per_expert[3], n);
  auto bias = Kokkos::create_mirror_view(model.routing_bias(0));
  bias(3) = 2.0;  // more than any probability gap: expert 3 is every token's first choice
  Kokkos::deep_copy(model.routing_bias(0), bias);
  const BatchStats after = model.run(batch.x, batch.labels, false);
  EXPECT_EQ(after.layers[0].tokens_per_expert[3], n);
  // Gates are still probabilities, so gradients still match the loss.
  expect_model_gradients_match(model, batch.x, batch.labels);
}

// capacity = ceil(capacity_factor * n * k / experts) kept token-slots per expert; every token
// prefers expert 0, then 1, so expert e keeps min(capacity, routed[e]) and the rest is dropped.
// (Expected counts are computed rather than written as vector literals: Debian GCC 12.2 with
// -march=native on AVX-512 hosts miscompiles initializers such as {10, 10, 0, 0}.)
TEST(ModelRouting, CapacityKeepsAtMostCapacityPerExpertAndCountsDrops) {
  struct Case {
    bool capacity_mode;
    double factor;
    int top_k;
    std::int64_t capacity;  // expected
    std::int64_t dropped;   // expected
  };
  const int n = 10;
  const std::vector<Case> cases = {
      {false, 1.0, 2, 20, 0},  // no capacity: everything kept
      {true, 1.25, 2, 7, 6},   // ceil(1.25 * 20 / 4) = ceil(6.25) = 7: kept {7, 7, 0, 0}
      {true, 1.0, 1, 3, 7},    // ceil(10 / 4) = 3: kept {3, 0, 0, 0}
      {true, 2.0, 2, 10, 0},   // capacity 10: kept {10, 10, 0, 0}, nothing to drop
  };
  for (const Case& c : cases) {
    SCOPED_TRACE("capacity_mode " + std::to_string(c.capacity_mode) + ", factor " +
                 std::to_string(c.factor) + ", k " + std::to_string(c.top_k));
    ModelShape s = small_shape();
    s.moe_layers = 1;
    s.moe.capacity_mode = c.capacity_mode;
    s.moe.capacity_factor = c.factor;
    s.moe.top_k = c.top_k;
    MoeModel<double> model(s);
    make_first_block_input_positive(model);
    set_uniform_router(model, 0, {0.5, 0.3, 0.1, -0.1});  // every token: 0, then 1, then 2
    const Batch<double> batch = make_batch<double>(s, n, 52);
    const BatchStats stats = model.run(batch.x, batch.labels, true);
    const auto capacity = c.capacity_mode
                              ? std::int64_t(std::ceil(c.factor * n * c.top_k / s.moe.experts))
                              : n * c.top_k;
    EXPECT_EQ(capacity, c.capacity);
    const auto& kept = stats.layers[0].tokens_per_expert;
    ASSERT_EQ(kept.size(), std::size_t(s.moe.experts));
    for (int e = 0; e < s.moe.experts; ++e) {
      const std::int64_t routed = e < c.top_k ? n : 0;
      EXPECT_EQ(kept[e], std::min(routed, c.capacity)) << "expert " << e;
    }
    EXPECT_EQ(stats.layers[0].dropped, c.dropped);
    EXPECT_TRUE(std::isfinite(stats.loss_sum));
  }
}

// Slot-major service: all first choices (in token order) before any second choice. Experts are
// made identifiable (each outputs a unit vector, classifier = identity), so the logits show which
// token-slots were kept.
TEST(ModelRouting, CapacityServesFirstChoicesBeforeSecondChoices) {
  ModelShape s;
  s.inputs = 2;
  s.d_model = 4;
  s.moe.d_model = 4;
  s.classes = 4;
  s.moe.experts = 4;
  s.moe.top_k = 2;
  s.moe.d_ff = 3;
  s.moe_layers = 1;
  s.rmsnorm = false;
  s.moe.normalize_gates = true;
  s.moe.capacity_mode = true;
  s.moe.capacity_factor = 1.0;  // capacity ceil(6 * 2 / 4) = 3
  MoeModel<double> model(s);
  auto identity = [](std::size_t r, std::size_t c, double) { return r == c ? 1.0 : 0.0; };
  auto zero = [](std::size_t, std::size_t, double) { return 0.0; };
  set_param(model, "input.w", identity);
  set_param(model, "input.b", zero);
  // Token type A (feature 0) ranks experts 1, 0, 2, 3; type B (feature 1) ranks 0, 2, 1, 3.
  const double router[4][4] = {{1, 2, 0, -1}, {2, -1, 1, -2}, {0, 0, 0, 0}, {0, 0, 0, 0}};
  set_param(model, "moe0.router.w",
            [&](std::size_t r, std::size_t c, double) { return router[r][c]; });
  for (int e = 0; e < 4; ++e) {
    const std::string prefix = "moe0.expert" + std::to_string(e) + ".";
    for (const char* name : {"w1", "b1", "w2"}) set_param(model, prefix + name, zero);
    set_param(model, prefix + "b2",
              [e](std::size_t r, std::size_t, double) { return int(r) == e ? 1.0 : 0.0; });
  }
  set_param(model, "classifier.w", identity);
  set_param(model, "classifier.b", zero);

  // Tokens 0-2 are type A, 3-5 type B.
  const int n = 6;
  Matrix<double> x("x", n, 2);
  IntVector labels("labels", n);
  auto x_h = Kokkos::create_mirror_view(x);
  for (int t = 0; t < n; ++t) x_h(t, t < 3 ? 0 : 1) = 3.0;
  Kokkos::deep_copy(x, x_h);
  const BatchStats stats = model.run(x, labels, false);
  // Slot 0: A -> expert 1 (3 kept), B -> expert 0 (3 kept). Slot 1: A -> expert 0, full, all
  // dropped; B -> expert 2 (3 kept). Token-major service would instead keep A's second choices
  // and drop B's first choices; the counts alone cannot tell the two apart.
  const auto& kept = stats.layers[0].tokens_per_expert;
  ASSERT_EQ(kept.size(), 4u);
  for (int e = 0; e < 3; ++e) EXPECT_EQ(kept[e], 3) << "expert " << e;
  EXPECT_EQ(kept[3], 0);
  EXPECT_EQ(stats.layers[0].dropped, 3);

  const double g3 = kernels::gelu(3.0);
  auto softmax = [&](const double* row) {
    std::vector<double> p(4);
    double total = 0;
    for (int e = 0; e < 4; ++e) total += p[e] = std::exp(g3 * row[e]);
    for (double& v : p) v /= total;
    return p;
  };
  const std::vector<double> pa = softmax(router[0]), pb = softmax(router[1]);
  // Gates renormalize over both chosen experts, kept or not.
  const double expect_a[4] = {g3, pa[1] / (pa[1] + pa[0]), 0, 0};
  const double expect_b[4] = {pb[0] / (pb[0] + pb[2]), g3, pb[2] / (pb[0] + pb[2]), 0};
  auto logits = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), model.logits());
  for (int t = 0; t < n; ++t)
    for (int c = 0; c < 4; ++c)
      EXPECT_NEAR(logits(t, c), t < 3 ? expect_a[c] : expect_b[c], 1e-12)
          << "token " << t << " class " << c;
}

TEST(ModelRouting, ExpertsWithoutTokens) {
  ModelShape s = small_shape();
  s.moe.experts = 8;
  for (int n : {1, 2}) {
    SCOPED_TRACE("batch " + std::to_string(n));
    MoeModel<double> model(s);
    const Batch<double> batch = make_batch<double>(s, n, 53);
    model.params().zero_grads();
    const BatchStats stats = model.run(batch.x, batch.labels, true);
    EXPECT_TRUE(std::isfinite(stats.loss_sum));
    EXPECT_TRUE(std::isfinite(stats.aux_loss));
    auto grads = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), model.params().grads());
    for (std::size_t i = 0; i < grads.size(); ++i) ASSERT_TRUE(std::isfinite(grads(i)));
    for (int l = 0; l < s.moe_layers; ++l) {
      const auto& tokens = stats.layers[l].tokens_per_expert;
      EXPECT_EQ(std::accumulate(tokens.begin(), tokens.end(), std::int64_t(0)), n * s.moe.top_k);
      EXPECT_GE(std::count(tokens.begin(), tokens.end(), 0), s.moe.experts - n * s.moe.top_k);
    }
    // An expert without tokens gets exactly zero gradient; one with tokens gets some (w2).
    for (const ParamInfo& p : model.params().infos()) {
      if (p.kind != ParamKind::expert) continue;
      double largest = 0;
      for (std::size_t i = 0; i < p.size(); ++i)
        largest = std::max(largest, std::abs(grads(p.offset + i)));
      if (stats.layers[p.layer].tokens_per_expert[p.expert] == 0) {
        EXPECT_EQ(largest, 0.0) << p.name;
      } else if (p.name.ends_with("w2")) {
        EXPECT_GT(largest, 0.0) << p.name;
      }
    }
    expect_model_gradients_match(model, batch.x, batch.labels);
  }
}

TEST(ModelRouting, FloatRunsAreBitForBitDeterministic) {
  ModelShape s;
  s.inputs = 16;
  s.classes = 4;
  s.d_model = 8;
  s.moe.d_model = 8;
  s.moe.d_ff = 16;
  s.moe.experts = 4;
  s.moe.top_k = 2;
  s.moe_layers = 2;
  s.moe.z_loss_coef = 0.01;
  s.moe.capacity_mode = true;
  s.moe.capacity_factor = 1.0;
  const Batch<float> batch = make_batch<float>(s, 32, 54);
  auto run_once = [&](MoeModel<float>& model, std::vector<float>& grads,
                      std::vector<float>& logits) {
    model.params().zero_grads();
    const BatchStats stats = model.run(batch.x, batch.labels, true);
    auto g = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), model.params().grads());
    auto z = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), model.logits());
    grads.assign(g.data(), g.data() + g.size());
    logits.assign(z.data(), z.data() + z.size());
    return stats;
  };
  MoeModel<float> model(s), twin(s);
  std::vector<float> g1, g2, g3, z1, z2, z3;
  const BatchStats s1 = run_once(model, g1, z1);
  const BatchStats s2 = run_once(model, g2, z2);
  const BatchStats s3 = run_once(twin, g3, z3);
  ASSERT_EQ(g1.size(), model.params().size());
  double largest = 0;
  for (float v : g1) largest = std::max(largest, double(std::abs(v)));
  EXPECT_GT(largest, 0.0);
  for (const auto* other : {&g2, &g3}) {
    ASSERT_EQ(other->size(), g1.size());
    EXPECT_EQ(std::memcmp(other->data(), g1.data(), g1.size() * sizeof(float)), 0);
  }
  for (const auto* other : {&z2, &z3}) {
    ASSERT_EQ(other->size(), z1.size());
    EXPECT_EQ(std::memcmp(other->data(), z1.data(), z1.size() * sizeof(float)), 0);
  }
  for (const BatchStats* other : {&s2, &s3}) {
    EXPECT_EQ(other->loss_sum, s1.loss_sum);
    EXPECT_EQ(other->aux_loss, s1.aux_loss);
    EXPECT_EQ(other->correct, s1.correct);
    for (int l = 0; l < s.moe_layers; ++l) {
      EXPECT_EQ(other->layers[l].tokens_per_expert, s1.layers[l].tokens_per_expert);
      EXPECT_EQ(other->layers[l].dropped, s1.layers[l].dropped);
    }
  }
}

}  // namespace
}  // namespace daa::model::test
