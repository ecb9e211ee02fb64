// The coordinate-wise robust rules (median, trimmed mean) and the Gram matrix of the rows as
// Kokkos kernels, for rows that live in a view (on a GPU build: in device memory), written once
// for every backend. Results are bit-identical to the host rules of rules.hpp.
#pragma once

#include <Kokkos_Core.hpp>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "daa/kernels/views.hpp"
#include "daa/robust/rules.hpp"
#include "daa/robust/sorting_network.hpp"

namespace daa::robust::device {

// Most rows a coordinate kernel sorts: one thread keeps a coordinate's n values in a local array.
constexpr int kMaxRows = 64;

// Throws daa::ConfigError naming `what` when n is outside [1, kMaxRows] or `rule` is not a
// coordinate-wise rule (median, trimmed mean).
void check_coordinate_rule(Rule rule, int n, const std::string& what);

// Pair index p of the upper triangle, row by row -> (a, b), a <= b.
KOKKOS_INLINE_FUNCTION void gram_pair(int n, int p, int& a, int& b) {
  a = 0;
  while (p >= n - a) p -= n - a, ++a;
  b = a + p;
}

// The compare-exchange pairs of sorting_network(n) as a view in `Space`'s memory, [pair][2].
template <class Space>
Kokkos::View<int* [2], typename Space::memory_space> network_view(int n) {
  const std::vector<std::pair<int, int>> pairs = sorting_network(n);
  Kokkos::View<int* [2], typename Space::memory_space> v("robust_network", pairs.size());
  auto host = Kokkos::create_mirror_view(v);
  for (std::size_t k = 0; k < pairs.size(); ++k)
    host(k, 0) = pairs[k].first, host(k, 1) = pairs[k].second;
  Kokkos::deep_copy(v, host);
  return v;
}

// a * b rounded once, never fused with a following add: nvcc contracts a * b + c into an FMA by
// default, which the host code (ISO C++, no contraction) does not do.
KOKKOS_INLINE_FUNCTION double mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

// Coordinate-wise median or trimmed mean (Rule::median / Rule::trimmed_mean, the definitions,
// non-finite rules and tie-breaks of rules.hpp) of the n rows of `rows` (n x len) into out[0..len),
// and when `counts` has n entries, per row the number of coordinates where its value is one of
// those the rule used (as the host's outcome weights count them).
//
// One thread per coordinate: n is small (at most kMaxRows), so a coordinate's values fit in a
// thread's local array, and sorting them with the host's network, compare-exchange by
// compare-exchange with std::min/std::max's tie semantics, gives the host's order (also of +0 and
// -0, which compare equal). Sorting one coordinate across threads would need a barrier per network
// stage for n <= 64 values; d is large (a gradient), so coordinates alone fill the device.
template <class ExecSpace, class Rows, class Out, class Counts>
void coordinate_rule(const ExecSpace& space, Rule rule, int f, const Rows& rows, const Out& out,
                     const Counts& counts) {
  using R = typename Rows::non_const_value_type;
  using T = typename Out::non_const_value_type;
  const int n = int(rows.extent(0));
  const std::int64_t len = std::int64_t(rows.extent(1));
  check_coordinate_rule(rule, n, "robust::device::coordinate_rule");
  const auto network = network_view<ExecSpace>(n);
  const int pairs = int(network.extent(0));
  const bool median = rule == Rule::median;
  const R inf = std::numeric_limits<R>::infinity();
  // The two order statistics bounding the values used, per coordinate (for the counts).
  Kokkos::View<R* [2], typename ExecSpace::memory_space> bounds(
      Kokkos::view_alloc(space, "robust_bounds", Kokkos::WithoutInitializing), len);
  Kokkos::parallel_for(
      "robust_coordinate_rule", Kokkos::RangePolicy<ExecSpace>(space, 0, len),
      KOKKOS_LAMBDA(const std::int64_t j) {
        R s[kMaxRows];
        int bad = 0;
        for (int i = 0; i < n; ++i) {
          const R v = rows(i, j);
          s[i] = v - v == R(0) ? v : inf;  // a non-finite value sorts as +inf
          bad += v - v != R(0) ? 1 : 0;
        }
        for (int p = 0; p < pairs; ++p) {
          const int a = network(p, 0), c = network(p, 1);
          const R x = s[a], y = s[c];
          s[a] = y < x ? y : x;  // std::min: the first when equal
          s[c] = x < y ? y : x;  // std::max: the first when equal
        }
        const int finite = n - bad;
        int low, high;  // [low, high): the ranks used
        if (median) {
          low = finite > 0 ? (finite - 1) / 2 : 0;
          high = finite > 0 ? finite / 2 + 1 : 1;
        } else {
          low = f - bad > 0 ? f - bad : 0;
          high = n - f < finite ? n - f : finite;
        }
        if (high <= low) low = n - 1, high = n;  // every value non-finite: +inf
        const R lo = s[low], hi = s[high - 1];
        bounds(j, 0) = lo;
        bounds(j, 1) = hi;
        if (median) {
          out(j) = T(0.5 * (double(lo) + double(hi)));
        } else {  // the kept values, summed in ascending value order
          double sum = 0;
          for (int k = low; k < high; ++k) sum += double(s[k]);
          out(j) = T(sum / double(high - low));
        }
      });
  if (int(counts.extent(0)) != n) return;
  using Team = Kokkos::TeamPolicy<ExecSpace>;
  Kokkos::parallel_for(
      "robust_coordinate_counts", Team(space, n, Kokkos::AUTO),
      KOKKOS_LAMBDA(const typename Team::member_type& team) {
        const int i = team.league_rank();
        std::int64_t c = 0;
        Kokkos::parallel_reduce(
            Kokkos::TeamThreadRange(team, len),
            [&](const std::int64_t j, std::int64_t& sum) {
              const R v = rows(i, j);
              const R key = v - v == R(0) ? v : inf;
              sum += (key >= bounds(j, 0) && key <= bounds(j, 1)) ? 1 : 0;
            },
            c);
        Kokkos::single(Kokkos::PerTeam(team), [&] { counts(i) = c; });
      });
}

// The Gram matrix gram(a, b) = <x_a, x_b> of the n rows of `rows` (n x len), both triangles,
// summed as the host engine's dot() sums: eight partial sums, lane l over the coordinates
// j = l mod 8 in ascending order, combined as ((0+1)+(2+3))+((4+5)+(6+7)), so that distances
// (and Krum's, Bulyan's and NNM's choices) are the host's to the bit.
//
// One thread per (pair, lane): the host's fixed order allows no more parallelism per pair without
// changing the bits; n (n + 1) / 2 * 8 threads each stream len / 8 values.
template <class ExecSpace, class Rows, class Gram>
void gram_matrix(const ExecSpace& space, const Rows& rows, const Gram& gram) {
  const int n = int(rows.extent(0));
  const std::int64_t len = std::int64_t(rows.extent(1));
  const int pairs = n * (n + 1) / 2;
  Kokkos::View<double* [8], typename ExecSpace::memory_space> lanes(
      Kokkos::view_alloc(space, "robust_gram_lanes", Kokkos::WithoutInitializing), pairs);
  Kokkos::parallel_for(
      "robust_gram_lanes", Kokkos::RangePolicy<ExecSpace>(space, 0, pairs * 8),
      KOKKOS_LAMBDA(const int t) {
        const int p = t / 8, l = t % 8;
        int a, b;
        gram_pair(n, p, a, b);
        double s = 0;
        for (std::int64_t j = l; j < len; j += 8)
          s += mul_rn(double(rows(a, j)), double(rows(b, j)));
        lanes(p, l) = s;
      });
  Kokkos::parallel_for(
      "robust_gram_combine", Kokkos::RangePolicy<ExecSpace>(space, 0, pairs),
      KOKKOS_LAMBDA(const int p) {
        int a, b;
        gram_pair(n, p, a, b);
        const double g = ((lanes(p, 0) + lanes(p, 1)) + (lanes(p, 2) + lanes(p, 3))) +
                         ((lanes(p, 4) + lanes(p, 5)) + (lanes(p, 6) + lanes(p, 7)));
        gram(a, b) = g;
        gram(b, a) = g;
      });
}

// The dispatch the round engine and the training step use: rows in kernels::MemSpace (n x len,
// row-major). Where that memory is host-accessible the host engine runs on the view's memory in
// place (the CPU build's bits and speed, no copy); otherwise the kernels above run on
// kernels::ExecSpace. `counts` may be empty (no counts wanted) or hold n entries. Both fence.
void coordinate_rule(Rule rule, int f, kernels::MatrixRef<const float> rows,
                     kernels::VectorRef<float> out, kernels::VectorRef<std::int64_t> counts);
void coordinate_rule(Rule rule, int f, kernels::MatrixRef<const double> rows,
                     kernels::VectorRef<double> out, kernels::VectorRef<std::int64_t> counts);
// gram is n x n (both triangles written).
void gram_matrix(kernels::MatrixRef<const float> rows, kernels::MatrixRef<double> gram);
void gram_matrix(kernels::MatrixRef<const double> rows, kernels::MatrixRef<double> gram);

}  // namespace daa::robust::device
