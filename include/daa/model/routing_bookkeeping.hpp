// The MoE layer's routing bookkeeping as Kokkos kernels in the default execution space: a stable
// sort of token-slots by expert (slot-major, the capacity policy's priority), capacity drops, the
// packed-row maps and the per-expert figures. Only those small figures come to the host. Other
// spaces (the unit tests run each enabled one) include routing_bookkeeping_impl.hpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "daa/kernels/views.hpp"

namespace daa::model {

// One batch's per-expert routing figures, on the host (E = experts).
struct RoutingCounts {
  std::vector<std::size_t> expert_offset;  // E + 1: packed rows [offset[e], offset[e+1]) -> e
  std::vector<std::int64_t> kept;          // kept token-slots per expert
  std::vector<double> routed;              // token-slots per expert before capacity drops
  std::vector<double> gate_sum;  // sum of the kept slots' gates (order: RoutingBookkeeping::run)
  std::vector<double> prob_sum;  // sum of the router probabilities, in token chunks
  std::int64_t dropped = 0;      // token-slots dropped by capacity
};

// Token-slots one expert keeps out of n tokens routed to k of E experts: all of them without
// the capacity policy, else ceil(factor * n * k / E).
std::size_t expert_capacity(bool capacity_mode, double capacity_factor, std::size_t n,
                            std::size_t k, std::size_t experts);

// Keeps its scratch in Space's memory between calls so that a training step allocates nothing
// here; its kernels run on Space. The layers use RoutingBookkeeping (kernels::ExecSpace).
template <class Space>
class BasicRoutingBookkeeping {
 public:
  using MemSpace = typename Space::memory_space;
  using IntMatrix = Kokkos::View<int**, Kokkos::LayoutRight, MemSpace>;
  using IntVector = Kokkos::View<int*, MemSpace>;
  template <class T>
  using Matrix = Kokkos::View<T**, Kokkos::LayoutRight, MemSpace>;

  // From the router's choice, gate [n, k] and probs [n, E]: slot t's s-th choice gets packed row
  // slot_pos(t, s) (-1 where capacity dropped it) and token_of(row) = t; within an expert, rows
  // follow slot-major order (all first choices in token order, then all second choices, ...),
  // and the first `capacity` of them are kept. slot_pos and token_of are resized. The results
  // are the same bits on every backend and thread count: ranks come from integer scans, and each
  // per-expert sum adds kChunk-long partial sums (slot-major chunks of slots for the gates, chunks
  // of tokens for the probabilities, each summed in order from 0), in chunk order. With `observed`,
  // it receives [n * k] host copies of the kept choices (-1: dropped) for a RoutingObserver; that
  // copy is the one O(n) transfer.
  template <class T>
  RoutingCounts run(const IntMatrix& choice, const Matrix<T>& gate, const Matrix<T>& probs,
                    std::size_t capacity, IntMatrix& slot_pos, IntVector& token_of,
                    std::vector<int>* observed = nullptr);

  // Slots (and tokens) per chunk: a constant, not derived from the thread count, so that the
  // sums' rounding never depends on the machine. Large enough that the per-chunk figures stay
  // small.
  static constexpr std::int64_t kChunk = 512;

 private:
  using LongVector = Kokkos::View<std::int64_t*, MemSpace>;
  // chunks x E: each chunk's count of slots per expert, then (after the scan) the running
  // position in the (expert, chunk) order as the chunk walks its slots.
  LongVector chunk_rank_{"routing_chunk_rank", 0};
  LongVector start_{"routing_start", 0};  // E + 1: where each expert's block starts in the scan
  // chunks x E partial sums: gates of kept slots per slot chunk, probabilities per token chunk.
  Kokkos::View<double*, MemSpace> gate_part_{"routing_gate_part", 0};
  Kokkos::View<double*, MemSpace> prob_part_{"routing_prob_part", 0};
  LongVector kept_{"routing_kept", 0};      // E
  LongVector offset_{"routing_offset", 0};  // E + 1: packed row offsets
  // E + 1 offsets, then E routed counts, E gate sums and E probability sums: the one view that
  // comes to the host.
  Kokkos::View<double*, MemSpace> figures_{"routing_figures", 0};
  IntMatrix observed_{"routing_observed", 0, 0};
};

using RoutingBookkeeping = BasicRoutingBookkeeping<kernels::ExecSpace>;
extern template RoutingCounts RoutingBookkeeping::run<float>(const IntMatrix&, const Matrix<float>&,
                                                             const Matrix<float>&, std::size_t,
                                                             IntMatrix&, IntVector&,
                                                             std::vector<int>*);
extern template RoutingCounts RoutingBookkeeping::run<double>(const IntMatrix&,
                                                              const Matrix<double>&,
                                                              const Matrix<double>&, std::size_t,
                                                              IntMatrix&, IntVector&,
                                                              std::vector<int>*);

}  // namespace daa::model
