// The routing bookkeeping kernels (see routing_bookkeeping.hpp) for any execution space: the
// library instantiates them for kernels::ExecSpace; the unit tests include this for each enabled
// space. Slots are cut into fixed chunks in slot-major order: a per-chunk histogram, one integer
// scan in (expert, chunk) order, then each chunk walks its slots in order. O(n * k + E * chunks)
// work, stable, deterministic on every backend and thread count, with no atomics.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "daa/model/routing_bookkeeping.hpp"

namespace daa::model {

template <class Space>
template <class T>
RoutingCounts BasicRoutingBookkeeping<Space>::run(const IntMatrix& choice, const Matrix<T>& gate,
                                                  const Matrix<T>& probs, std::size_t capacity,
                                                  IntMatrix& slot_pos, IntVector& token_of,
                                                  std::vector<int>* observed) {
  using Policy = Kokkos::RangePolicy<Space, Kokkos::IndexType<std::int64_t>>;
  const std::int64_t n = std::int64_t(choice.extent(0)), k = std::int64_t(choice.extent(1));
  const std::int64_t E = std::int64_t(probs.extent(1)), nk = n * k;
  const std::int64_t C = kChunk;
  const std::int64_t chunks = (nk + C - 1) / C;               // slot chunks
  const std::int64_t token_chunks = (n + C - 1) / C;          // token chunks
  const std::int64_t parts = std::max(chunks, token_chunks);  // differ only when k == 0
  // Capacity is at most n * k; clamping keeps the comparison in 64-bit integers.
  const std::int64_t cap = std::int64_t(std::min<std::size_t>(capacity, std::size_t(nk)));
  kernels::ensure_extent(chunk_rank_, std::size_t(parts * E));
  kernels::ensure_extent(gate_part_, std::size_t(parts * E));
  kernels::ensure_extent(prob_part_, std::size_t(parts * E));
  kernels::ensure_extent(start_, std::size_t(E + 1));
  kernels::ensure_extent(kept_, std::size_t(E));
  kernels::ensure_extent(offset_, std::size_t(E + 1));
  kernels::ensure_extent(figures_, std::size_t(4 * E + 1));
  kernels::ensure_extent(slot_pos, std::size_t(n), std::size_t(k));
  const bool observe = observed != nullptr;
  if (observe) kernels::ensure_extent(observed_, std::size_t(n), std::size_t(k));
  // Views are copied into locals: a device lambda must not capture `this`.
  const auto chunk_rank = chunk_rank_, start = start_, kept = kept_, offset = offset_;
  const auto gate_part = gate_part_, prob_part = prob_part_, figures = figures_;
  const IntMatrix pos_of = slot_pos, seen = observed_;

  // 1. Per chunk: its count of slots per expert (slot j = s * n + t, slot-major), and for the
  // first token_chunks chunks the partial probability sums over tokens [c * C, c * C + C).
  Kokkos::parallel_for(
      "routing_chunk_histogram", Policy(0, parts), KOKKOS_LAMBDA(const std::int64_t c) {
        for (std::int64_t e = 0; e < E; ++e) chunk_rank(c * E + e) = 0;
        const std::int64_t end = c * C + C < nk ? c * C + C : nk;
        // (t, s) advance with j: one division per chunk, not per slot (64-bit divisions would
        // cost more than the rest of the walk).
        std::int64_t s = c * C < nk ? c * C / n : 0, t = c * C - s * n;
        for (std::int64_t j = c * C; j < end; ++j) {
          chunk_rank(c * E + choice(t, s)) += 1;
          if (++t == n) t = 0, ++s;
        }
        if (c < token_chunks) {
          const std::int64_t t_end = c * C + C < n ? c * C + C : n;
          // Eight experts at a time in registers: eight independent addition chains along the
          // rows, each still adding its expert's rows in order.
          for (std::int64_t e0 = 0; e0 < E; e0 += 8) {
            const std::int64_t width = E - e0 < 8 ? E - e0 : 8;
            double sum[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            if (width == 8) {  // a fixed trip count, which the compiler vectorizes
              for (std::int64_t u = c * C; u < t_end; ++u)
                for (std::int64_t q = 0; q < 8; ++q) sum[q] += double(probs(u, e0 + q));
            } else {
              for (std::int64_t u = c * C; u < t_end; ++u)
                for (std::int64_t q = 0; q < width; ++q) sum[q] += double(probs(u, e0 + q));
            }
            for (std::int64_t q = 0; q < width; ++q) prob_part(c * E + e0 + q) = sum[q];
          }
        }
      });

  // 2. Exclusive scan of the counts in (expert, chunk) order: each chunk's first position in
  // expert-major order; start(e) is expert e's, start(E) = n * k.
  if (nk == 0) Kokkos::deep_copy(start, std::int64_t(0));
  Kokkos::parallel_scan(
      "routing_chunk_scan", Policy(0, E * chunks),
      KOKKOS_LAMBDA(const std::int64_t i, std::int64_t& update, const bool final) {
        const std::int64_t e = i / chunks, c = i - e * chunks;
        const std::int64_t count = chunk_rank(c * E + e);
        if (final) {
          if (c == 0) start(e) = update;
          chunk_rank(c * E + e) = update;
          if (i == E * chunks - 1) start(E) = update + count;
        }
        update += count;
      });

  // 3. Kept counts (capacity drops: rank >= cap) and packed row offsets.
  Kokkos::parallel_scan(
      "routing_expert_offsets", Policy(0, E + 1),
      KOKKOS_LAMBDA(const std::int64_t e, std::int64_t& update, const bool final) {
        if (e < E) {
          const std::int64_t routed = start(e + 1) - start(e);
          const std::int64_t keep = routed < cap ? routed : cap;
          if (final) kept(e) = keep;
          if (final) {
            offset(e) = update;
            figures(e) = double(update);
          }
          update += keep;
        } else if (final) {
          offset(e) = update;
          figures(e) = double(update);
        }
      });

  // 4. Each chunk walks its slots in order: a slot's rank within its expert is its chunk's
  // running position minus start(e); it gets its packed row (or -1), and the kept gates add up
  // in the chunk's partial sum.
  // Row strides as the views have them (a subview's may exceed k).
  const std::int64_t ch_stride = std::int64_t(choice.stride(0)),
                     g_stride = std::int64_t(gate.stride(0)),
                     pos_stride = std::int64_t(pos_of.stride(0));
  Kokkos::parallel_for(
      "routing_chunk_ranks", Policy(0, chunks), KOKKOS_LAMBDA(const std::int64_t c) {
        // Raw restricted pointers to this chunk's rows and the slots' columns: with view
        // accessors the compiler reloads pointers and strides after every store.
        std::int64_t* __restrict next = &chunk_rank(c * E);
        double* __restrict part = &gate_part(c * E);
        const std::int64_t* __restrict first = &start(0);
        const std::int64_t* __restrict row0 = &offset(0);
        for (std::int64_t e = 0; e < E; ++e) part[e] = 0;
        const std::int64_t end = c * C + C < nk ? c * C + C : nk;
        std::int64_t j = c * C, s = j / n, t = j - s * n;
        while (j < end) {  // one run of slots with the same choice index s
          const std::int64_t t_end = t + (end - j) < n ? t + (end - j) : n;
          const int* __restrict ch = &choice(0, s);
          const T* __restrict g = &gate(0, s);
          int* __restrict pos = &pos_of(0, s);
          for (std::int64_t u = t; u < t_end; ++u) {
            const int e = ch[u * ch_stride];
            const std::int64_t rank = next[e]++ - first[e];
            const bool keep = rank < cap;
            pos[u * pos_stride] = keep ? int(row0[e] + rank) : -1;
            if (keep) part[e] += double(g[u * g_stride]);
            if (observe) seen(u, s) = keep ? e : -1;
          }
          j += t_end - t;
          t = 0, ++s;
        }
      });

  // 5. Per expert: routed count and the sums of the chunks' partial sums, in chunk order.
  Kokkos::parallel_for(
      "routing_expert_figures", Policy(0, E), KOKKOS_LAMBDA(const std::int64_t e) {
        double gate_sum = 0, prob_sum = 0;
        for (std::int64_t c = 0; c < chunks; ++c) gate_sum += gate_part(c * E + e);
        for (std::int64_t c = 0; c < token_chunks; ++c) prob_sum += prob_part(c * E + e);
        figures(E + 1 + e) = double(start(e + 1) - start(e));
        figures(2 * E + 1 + e) = gate_sum;
        figures(3 * E + 1 + e) = prob_sum;
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

  // 6. Scatter: each kept row names its token once.
  kernels::ensure_extent(token_of, counts.expert_offset[E]);
  const IntVector token = token_of;
  Kokkos::parallel_for(
      "routing_scatter", Policy(0, n), KOKKOS_LAMBDA(const std::int64_t t) {
        for (std::int64_t s = 0; s < k; ++s) {
          const int row = pos_of(t, s);
          if (row >= 0) token(row) = int(t);
        }
      });
  if (observe) {
    observed->resize(std::size_t(nk));
    Kokkos::View<int**, Kokkos::LayoutRight, Kokkos::HostSpace, Kokkos::MemoryUnmanaged> host(
        observed->data(), std::size_t(n), std::size_t(k));
    Kokkos::deep_copy(host, seen);
  }
  return counts;
}

}  // namespace daa::model
