// Host helpers of the model's tests (unit and reference) and the pieces of their finite-difference
// gradient checks: views to and from the host, counter-based test data, one scale-free error for
// whole tensors, and central differences of a loss with respect to the entries of a view.
#pragma once

#include <gtest/gtest.h>

#include <Kokkos_Core.hpp>
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "daa/core/rng.hpp"
#include "daa/kernels/views.hpp"

namespace daa::model::test {

// The step of every central difference. In double, (f(x + h) - f(x - h)) / 2h is then off by
// about h^2 |f'''| + 1e-16 |f| / h, near 1e-10 for these tests' O(1) values: far below the 1e-6
// the checks ask for, so a failure is a wrong gradient, not a noisy estimate.
inline constexpr double kFiniteDifferenceStep = 1e-6;

template <class View>
std::vector<double> to_host(const View& view) {
  auto host = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), view);
  return std::vector<double>(host.data(), host.data() + host.size());
}

// Token ids (or targets, labels; -1: none) on the device.
inline Kokkos::View<int*, kernels::MemSpace> token_view(const std::vector<int>& ids) {
  Kokkos::View<int*, kernels::MemSpace> view("ids", ids.size());
  auto host = Kokkos::create_mirror_view(view);
  for (std::size_t i = 0; i < ids.size(); ++i) host(i) = ids[i];
  Kokkos::deep_copy(view, host);
  return view;
}

// Fills a view with shift + scale * N(0, 1), entry i drawn from (seed, test, stream, i). Each test
// file keeps the seed it always had, so its data, and what its tolerances were set for, stay.
struct NormalFill {
  std::uint64_t seed;
  template <class View>
  void operator()(const View& view, std::uint64_t stream, double scale = 1.0,
                  double shift = 0.0) const {
    auto host = Kokkos::create_mirror_view(view);
    for (std::size_t i = 0; i < host.size(); ++i)
      host.data()[i] = shift + scale * core::counter_normal(seed, core::RngPurpose::test, stream,
                                                            std::uint64_t(i));
    Kokkos::deep_copy(view, host);
  }
};

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double sum = 0;
  for (std::size_t i = 0; i < a.size(); ++i) sum += a[i] * b[i];
  return sum;
}

inline double max_abs(const std::vector<double>& a) {
  double m = 0;
  for (double v : a) m = std::max(m, std::abs(v));
  return m;
}

// max|a - b| / max(max|a|, max|b|, floor): a scale-free error for a whole tensor. The floor keeps
// a tensor whose gradient is (nearly) zero from turning rounding noise into a large error.
inline double relative_error(const std::vector<double>& a, const std::vector<double>& b,
                             double floor = 0.0) {
  EXPECT_EQ(a.size(), b.size());
  double diff = 0, scale = floor;
  for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    diff = std::max(diff, std::abs(a[i] - b[i]));
    scale = std::max({scale, std::abs(a[i]), std::abs(b[i])});
  }
  return scale > 0 ? diff / scale : diff;
}

// The two sides of a central difference: f() with entry i of `view` at its value + h, then at its
// value - h; the entry is put back afterwards. `host` is view's host mirror holding its values,
// so that a loop over the entries copies the view to the host once, not once per entry.
template <class View, class Host, class F>
auto evaluate_around(const View& view, const Host& host, std::size_t i, F&& f,
                     double h = kFiniteDifferenceStep) {
  const auto orig = host.data()[i];
  host.data()[i] = orig + h;
  Kokkos::deep_copy(view, host);
  auto plus = f();
  host.data()[i] = orig - h;
  Kokkos::deep_copy(view, host);
  auto minus = f();
  host.data()[i] = orig;
  Kokkos::deep_copy(view, host);
  return std::pair{std::move(plus), std::move(minus)};
}

// Central differences of f() with respect to every entry of `view` (perturbed in place).
template <class View, class F>
std::vector<double> numeric_gradient(const View& view, F&& f, double h = kFiniteDifferenceStep) {
  auto host = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), view);
  std::vector<double> grad(host.size());
  for (std::size_t i = 0; i < host.size(); ++i) {
    const auto [plus, minus] = evaluate_around(view, host, i, f, h);
    grad[i] = (plus - minus) / (2 * h);
  }
  return grad;
}

}  // namespace daa::model::test
