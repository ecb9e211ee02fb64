// MoeLayer on its own (router + experts + combine, no model around it), in double: finite-
// difference gradients of GELU and SwiGLU experts with aux and z losses, the routing observer,
// GradMode::accumulate, and two micro-batch slots in flight.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "daa/core/error.hpp"
#include "daa/core/rng.hpp"
#include "daa/model/moe_layer.hpp"
#include "gradient_check.hpp"

namespace daa::model::test {
namespace {

using kernels::Matrix;

constexpr NormalFill fill_normal{.seed = 5};

MoeShape small_shape(ExpertFfn ffn) {
  return MoeShape{.d_model = 6,
                  .experts = 4,
                  .top_k = 2,
                  .d_ff = 5,
                  .ffn = ffn,
                  .aux_loss_coef = 0.1,
                  .z_loss_coef = 0.01};
}

// A layer in its own store, parameters drawn at random (biases too, so their gradients matter).
struct Fixture {
  ParamStore<double> store;
  MoeLayer<double> layer;
  explicit Fixture(const MoeShape& shape) : layer(store, "moe", 0, shape) {
    store.allocate();
    fill_normal(store.values(), 1, 0.5);
  }
};

// Objective: sum(y * R) + aux + z, the quantity whose gradient backward computes with dy = R.
struct Run {
  double objective = 0;
  std::vector<int> choice;
};
Run run(MoeLayer<double>& layer, const Matrix<double>& x, const Matrix<double>& r) {
  Matrix<double> y("y", x.extent(0), x.extent(1));
  Run out;
  const MoeStats stats = layer.forward(0, x, y, true, {}, [&](const RoutingEvent& e) {
    out.choice.assign(e.choice.begin(), e.choice.end());
  });
  const auto yh = to_host(y), rh = to_host(r);
  for (std::size_t i = 0; i < yh.size(); ++i) out.objective += yh[i] * rh[i];
  out.objective += stats.aux_loss + stats.z_loss;
  return out;
}

void expect_gradients_match(ExpertFfn ffn) {
  Fixture f(small_shape(ffn));
  const std::size_t n = 9, d = 6;
  Matrix<double> x("x", n, d), r("r", n, d), dx("dx", n, d);
  fill_normal(x, 2);
  fill_normal(r, 3);
  const Run base = run(f.layer, x, r);
  f.store.zero_grads();
  MoeStats stats;
  f.layer.backward(0, r, dx, GradMode::overwrite, stats);
  const auto analytic = to_host(f.store.grads());
  const auto analytic_dx = to_host(dx);

  auto numeric = [&](const auto& view, std::vector<double>& grad, int& skipped) {
    auto host = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), view);
    grad.assign(host.size(), 0.0);
    for (std::size_t i = 0; i < host.size(); ++i) {
      const auto [plus, minus] = evaluate_around(view, host, i, [&] { return run(f.layer, x, r); });
      if (plus.choice != base.choice || minus.choice != base.choice) {
        ++skipped;  // a routing decision flips: not differentiable there
        grad[i] = std::nan("");
        continue;
      }
      grad[i] = (plus.objective - minus.objective) / (2 * kFiniteDifferenceStep);
    }
  };
  std::vector<double> numeric_params, numeric_dx;
  int skipped = 0;
  numeric(f.store.values(), numeric_params, skipped);
  numeric(x, numeric_dx, skipped);
  auto keep = [](const std::vector<double>& a, const std::vector<double>& b) {
    std::vector<double> out;
    for (std::size_t i = 0; i < a.size(); ++i)
      if (!std::isnan(b[i])) out.push_back(a[i]);
    return out;
  };
  EXPECT_LT(skipped, int((numeric_params.size() + numeric_dx.size()) / 20));
  EXPECT_LT(relative_error(keep(analytic, numeric_params), keep(numeric_params, numeric_params)),
            1e-6);
  EXPECT_LT(relative_error(keep(analytic_dx, numeric_dx), keep(numeric_dx, numeric_dx)), 1e-6);
}

TEST(MoeLayer, GeluExpertGradientsMatchFiniteDifferences) {
  expect_gradients_match(ExpertFfn::gelu);
}

TEST(MoeLayer, SwigluExpertGradientsMatchFiniteDifferences) {
  expect_gradients_match(ExpertFfn::swiglu);
}

TEST(MoeLayer, SwigluDeclaresMixtralShapedExpertsWithoutBiases) {
  Fixture f(small_shape(ExpertFfn::swiglu));
  std::vector<std::string> names;
  for (const ParamInfo& p : f.store.infos())
    if (p.expert == 0) names.push_back(p.name);
  EXPECT_EQ(names,
            (std::vector<std::string>{"moe.expert0.w1", "moe.expert0.w3", "moe.expert0.w2"}));
  // Dense router first in memory, experts after it, whatever the declaration order.
  EXPECT_EQ(f.store.dense_size(), 6u * 4u);
}

TEST(MoeLayer, ObserverSeesEveryKeptSlotAndDropsUnderCapacity) {
  MoeShape shape = small_shape(ExpertFfn::gelu);
  shape.capacity_mode = true;
  shape.capacity_factor = 0.5;
  Fixture f(shape);
  const std::size_t n = 16;
  Matrix<double> x("x", n, 6), y("y", n, 6);
  fill_normal(x, 7);
  std::vector<int> seen;
  const MoeStats stats = f.layer.forward(0, x, y, false, {}, [&](const RoutingEvent& e) {
    EXPECT_EQ(e.layer, 0);
    EXPECT_EQ(e.tokens, n);
    EXPECT_EQ(e.top_k, 2);
    seen.assign(e.choice.begin(), e.choice.end());
  });
  ASSERT_EQ(seen.size(), n * 2);
  const auto dropped = std::count(seen.begin(), seen.end(), -1);
  EXPECT_EQ(dropped, stats.dropped);
  EXPECT_GT(dropped, 0);
  std::int64_t kept = 0;
  for (const std::int64_t t : stats.tokens_per_expert) kept += t;
  EXPECT_EQ(kept + dropped, std::int64_t(n * 2));
  for (int e = 0; e < 4; ++e)
    EXPECT_EQ(std::count(seen.begin(), seen.end(), e), stats.tokens_per_expert[std::size_t(e)]);
}

TEST(MoeLayer, AccumulateAddsTheInputGradientAndSlotsAreIndependent) {
  Fixture f(small_shape(ExpertFfn::swiglu));
  const std::size_t n = 7;
  Matrix<double> x0("x0", n, 6), x1("x1", n, 6), r("r", n, 6), y("y", n, 6);
  fill_normal(x0, 8);
  fill_normal(x1, 9);
  fill_normal(r, 10);
  // Sequential reference: slot 0 alone, then slot 0 again with x1.
  auto gradients = [&](const Matrix<double>& x, Matrix<double>& dx) {
    f.store.zero_grads();
    f.layer.forward(0, x, y, true);
    MoeStats s;
    f.layer.backward(0, r, dx, GradMode::overwrite, s);
    return to_host(f.store.grads());
  };
  Matrix<double> dx0("dx0", n, 6), dx1("dx1", n, 6);
  const auto g0 = gradients(x0, dx0);
  const auto g1 = gradients(x1, dx1);
  // Both in flight: forward 0, forward 1, backward 0, backward 1 (accumulating into ones).
  f.store.zero_grads();
  Matrix<double> y1("y1", n, 6);
  f.layer.forward(0, x0, y, true);
  f.layer.forward(1, x1, y1, true);
  Matrix<double> acc0("acc0", n, 6), acc1("acc1", n, 6);
  Kokkos::deep_copy(acc0, 1.0);
  Kokkos::deep_copy(acc1, 1.0);
  MoeStats s;
  f.layer.backward(0, r, acc0, GradMode::accumulate, s);
  f.layer.backward(1, r, acc1, GradMode::accumulate, s);
  const auto both = to_host(f.store.grads());
  for (std::size_t i = 0; i < both.size(); ++i) EXPECT_NEAR(both[i], g0[i] + g1[i], 1e-12);
  const auto a0 = to_host(acc0), a1 = to_host(acc1), e0 = to_host(dx0), e1 = to_host(dx1);
  for (std::size_t i = 0; i < a0.size(); ++i) {
    EXPECT_NEAR(a0[i], e0[i] + 1.0, 1e-12);
    EXPECT_NEAR(a1[i], e1[i] + 1.0, 1e-12);
  }
}

TEST(MoeLayer, RefusesShapesThatCannotRoute) {
  ParamStore<double> store;
  MoeShape shape = small_shape(ExpertFfn::gelu);
  shape.top_k = 5;
  EXPECT_THROW(
      {
        try {
          MoeLayer<double> layer(store, "moe3", 3, shape);
        } catch (const Error& e) {
          EXPECT_NE(std::string(e.what()).find("'moe3'"), std::string::npos) << e.what();
          EXPECT_NE(std::string(e.what()).find("top_k 5"), std::string::npos) << e.what();
          throw;
        }
      },
      Error);
}

}  // namespace
}  // namespace daa::model::test
