// Routing bookkeeping kernels (see routing_bookkeeping.hpp). A slot's rank within its expert is
// one integer scan over (expert, slot) pairs in expert-major, slot-major order: O(E * n * k) work
// with E small, stable and deterministic on every backend, with no atomics.
#include "daa/model/routing_bookkeeping.hpp"

#include <algorithm>
#include <cmath>

namespace daa::model {

namespace {
using Policy = Kokkos::RangePolicy<kernels::ExecSpace, Kokkos::IndexType<std::int64_t>>;
}  // namespace

std::size_t expert_capacity(bool capacity_mode, double capacity_factor, std::size_t n,
                            std::size_t k, std::size_t experts) {
  return capacity_mode ? std::size_t(std::ceil(capacity_factor * double(n * k) / double(experts)))
                       : n * k;
}

template <class T>
RoutingCounts RoutingBookkeeping::run(const IntMatrix& choice, const kernels::Matrix<T>& gate,
                                      const kernels::Matrix<T>& probs, std::size_t capacity,
                                      IntMatrix& slot_pos, IntVector& token_of,
                                      std::vector<int>* observed) {
  const std::int64_t n = std::int64_t(choice.extent(0)), k = std::int64_t(choice.extent(1));
  const std::int64_t E = std::int64_t(probs.extent(1)), nk = n * k;
  // Capacity is at most n * k; clamping keeps the comparison in 64-bit integers.
  const std::int64_t cap = std::int64_t(std::min<std::size_t>(capacity, std::size_t(nk)));
  kernels::ensure_extent(prefix_, std::size_t(nk));
  kernels::ensure_extent(start_, std::size_t(E + 1));
  kernels::ensure_extent(kept_, std::size_t(E));
  kernels::ensure_extent(offset_, std::size_t(E + 1));
  kernels::ensure_extent(figures_, std::size_t(4 * E + 1));
  kernels::ensure_extent(slot_pos, std::size_t(n), std::size_t(k));
  // Views are copied into locals: a device lambda must not capture `this`.
  const auto prefix = prefix_, start = start_, kept = kept_, offset = offset_;
  const auto figures = figures_;

  // 1. Exclusive scan of the indicator (choice == e) over j = e * nk + s * n + t. For slot (t, s)
  // of expert e, prefix - start(e) is its rank among expert e's slots in slot-major order.
  if (nk == 0) Kokkos::deep_copy(start, std::int64_t(0));
  Kokkos::parallel_scan(
      "routing_rank_scan", Policy(0, E * nk),
      KOKKOS_LAMBDA(const std::int64_t j, std::int64_t& update, const bool final) {
        const std::int64_t e = j / nk, i = j - e * nk;
        const std::int64_t s = i / n, t = i - s * n;
        const bool hit = choice(t, s) == int(e);
        if (final) {
          if (i == 0) start(e) = update;
          if (hit) prefix(t * k + s) = update;
          if (j == E * nk - 1) start(E) = update + (hit ? 1 : 0);
        }
        if (hit) update += 1;
      });

  // 2. Per expert: routed and kept counts, and the sums of its kept gates (token-major, as the
  // combine sees them) and of its probabilities, each in one fixed sequential order so the bits
  // do not depend on the backend or the thread count.
  Kokkos::parallel_for(
      "routing_expert_figures", Policy(0, E), KOKKOS_LAMBDA(const std::int64_t e) {
        const std::int64_t routed = start(e + 1) - start(e);
        kept(e) = routed < cap ? routed : cap;
        double gate_sum = 0, prob_sum = 0;
        for (std::int64_t t = 0; t < n; ++t)
          for (std::int64_t s = 0; s < k; ++s)
            if (choice(t, s) == int(e) && prefix(t * k + s) - start(e) < cap)
              gate_sum += double(gate(t, s));
        for (std::int64_t t = 0; t < n; ++t) prob_sum += double(probs(t, e));
        figures(E + 1 + e) = double(routed);
        figures(2 * E + 1 + e) = gate_sum;
        figures(3 * E + 1 + e) = prob_sum;
      });

  // 3. Packed row offsets: exclusive scan of the kept counts.
  Kokkos::parallel_scan(
      "routing_expert_offsets", Policy(0, E + 1),
      KOKKOS_LAMBDA(const std::int64_t e, std::int64_t& update, const bool final) {
        if (final) {
          offset(e) = update;
          figures(e) = double(update);
        }
        if (e < E) update += kept(e);
      });

  // The one transfer of this step's figures: the host sizes the expert GEMMs and the dispatch.
  auto figures_h = Kokkos::create_mirror_view(figures);
  Kokkos::deep_copy(figures_h, figures);
  RoutingCounts counts;
  counts.expert_offset.resize(std::size_t(E + 1));
  counts.kept.resize(std::size_t(E));
  counts.routed.resize(std::size_t(E));
  counts.gate_sum.resize(std::size_t(E));
  counts.prob_sum.resize(std::size_t(E));
  for (std::int64_t e = 0; e <= E; ++e) counts.expert_offset[e] = std::size_t(figures_h(e));
  for (std::int64_t e = 0; e < E; ++e) {
    counts.kept[e] = std::int64_t(counts.expert_offset[e + 1] - counts.expert_offset[e]);
    counts.routed[e] = figures_h(E + 1 + e);
    counts.gate_sum[e] = figures_h(2 * E + 1 + e);
    counts.prob_sum[e] = figures_h(3 * E + 1 + e);
  }
  counts.dropped = nk - std::int64_t(counts.expert_offset[E]);

  // 4. Scatter: every slot writes its own packed row (or -1), and each kept row is written once.
  kernels::ensure_extent(token_of, counts.expert_offset[E]);
  const bool observe = observed != nullptr;
  if (observe) kernels::ensure_extent(observed_, std::size_t(n), std::size_t(k));
  const IntMatrix pos_of = slot_pos, seen = observed_;
  const IntVector token = token_of;
  Kokkos::parallel_for(
      "routing_scatter", Policy(0, nk), KOKKOS_LAMBDA(const std::int64_t i) {
        const std::int64_t t = i / k, s = i - t * k;
        const int e = choice(t, s);
        const std::int64_t rank = prefix(i) - start(e);
        if (rank < cap) {
          const std::int64_t row = offset(e) + rank;
          pos_of(t, s) = int(row);
          token(row) = int(t);
        } else {
          pos_of(t, s) = -1;
        }
        if (observe) seen(t, s) = rank < cap ? e : -1;
      });
  if (observe) {
    observed->resize(std::size_t(nk));
    Kokkos::View<int**, Kokkos::LayoutRight, Kokkos::HostSpace, Kokkos::MemoryUnmanaged> host(
        observed->data(), std::size_t(n), std::size_t(k));
    Kokkos::deep_copy(host, seen);
  }
  return counts;
}

template RoutingCounts RoutingBookkeeping::run<float>(const IntMatrix&,
                                                      const kernels::Matrix<float>&,
                                                      const kernels::Matrix<float>&, std::size_t,
                                                      IntMatrix&, IntVector&, std::vector<int>*);
template RoutingCounts RoutingBookkeeping::run<double>(const IntMatrix&,
                                                       const kernels::Matrix<double>&,
                                                       const kernels::Matrix<double>&, std::size_t,
                                                       IntMatrix&, IntVector&, std::vector<int>*);

}  // namespace daa::model
