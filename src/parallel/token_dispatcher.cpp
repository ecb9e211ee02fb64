// Expert-parallel token dispatcher (see token_dispatcher.hpp): the count exchange that builds a
// DispatchPlan, and the two moves (fused: a Transport all-to-all on row blocks + the own rows'
// copy; permute: a Transport all-to-all + a permutation kernel), instantiated for float and double.
#include "daa/parallel/token_dispatcher.hpp"

#include <climits>
#include <cstdint>
#include <type_traits>

#include "daa/core/clock.hpp"
#include "daa/core/error.hpp"
#include "daa/core/timeline.hpp"

namespace daa::parallel {
namespace {

using core::Clock;
using core::seconds_since;
using kernels::MemSpace;
using kernels::Range;

std::string group_label(const Communicator& group) {
  return "token dispatcher: group '" + group.name() + "' (" + std::to_string(group.size()) +
         " ranks)";
}

// The rows a rank sends to itself never enter MPI (unless the permute path has the identity): a
// kernel reads them straight from the packed matrix (to_experts) or writes them straight into it
// (to_sources). That saves MPI's own copy of them (about 1/ep of all rows under balanced
// routing), and in host_staged mode their trips to the host and back. `SelfRows` says where they
// are: received rows [lo, hi) are packed rows [base, base + hi - lo).
struct SelfRows {
  int lo = 0, hi = 0, base = 0;
};

SelfRows self_rows(const DispatchPlan& plan) {
  const std::size_t me = std::size_t(plan.group().rank());
  return SelfRows{int(plan.recv_displs()[me]), int(plan.recv_displs()[me] + plan.recv_counts()[me]),
                  int(plan.send_displs()[me])};
}

// to_experts: expert_rows(q, :) = received row index(q), taken from `packed` when it is one of
// this rank's own rows and from the MPI staging buffer otherwise. A gather, so every output row
// has exactly one writer; rows are contiguous (LayoutRight), so the inner loop is a plain copy.
template <class Staging, class Packed, class Out>
void gather_to_experts(const Kokkos::View<int*, MemSpace>& index, const Staging& staging,
                       const Packed& packed, SelfRows self, const Out& out) {
  const int cols = int(out.extent(1));
  if (out.extent(0) == 0 || cols == 0) return;
  Kokkos::parallel_for(
      "dispatch_to_experts", Range(0, out.extent(0)), KOKKOS_LAMBDA(const int q) {
        const int i = index(q);
        const auto* in =
            (i >= self.lo && i < self.hi) ? &packed(i - self.lo + self.base, 0) : &staging(i, 0);
        auto* row = &out(q, 0);
        for (int j = 0; j < cols; ++j) row[j] = in[j];
      });
}

// Fused path, to_experts: this rank's own rows, packed row base + t -> expert row
// expert_row_of_received(lo + t). One thread per row, one writer per expert row.
template <class Packed, class Out>
void copy_self_to_experts(const Kokkos::View<int*, MemSpace>& index, const Packed& packed,
                          SelfRows self, const Out& out) {
  const int cols = int(out.extent(1));
  if (self.hi == self.lo || cols == 0) return;
  Kokkos::parallel_for(
      "dispatch_self_to_experts", Range(0, self.hi - self.lo), KOKKOS_LAMBDA(const int t) {
        const auto* in = &packed(self.base + t, 0);
        auto* row = &out(index(self.lo + t), 0);
        for (int j = 0; j < cols; ++j) row[j] = in[j];
      });
}

// Fused path, to_sources: the inverse, expert row expert_row_of_received(lo + t) -> packed row
// base + t.
template <class In, class Packed>
void copy_self_to_sources(const Kokkos::View<int*, MemSpace>& index, const In& in, SelfRows self,
                          const Packed& packed) {
  const int cols = int(in.extent(1));
  if (self.hi == self.lo || cols == 0) return;
  Kokkos::parallel_for(
      "dispatch_self_to_sources", Range(0, self.hi - self.lo), KOKKOS_LAMBDA(const int t) {
        const auto* src = &in(index(self.lo + t), 0);
        auto* row = &packed(self.base + t, 0);
        for (int j = 0; j < cols; ++j) row[j] = src[j];
      });
}

// to_sources: received row i (into the staging buffer, or into `packed` for this rank's own
// rows) = expert row index(i). One thread per destination row, so one writer per row.
template <class In, class Staging, class Packed>
void gather_to_received(const Kokkos::View<int*, MemSpace>& index, const In& in,
                        const Staging& staging, const Packed& packed, SelfRows self) {
  const int cols = int(in.extent(1));
  if (in.extent(0) == 0 || cols == 0) return;
  Kokkos::parallel_for(
      "dispatch_to_sources", Range(0, in.extent(0)), KOKKOS_LAMBDA(const int i) {
        const auto* src = &in(index(i), 0);
        auto* row =
            (i >= self.lo && i < self.hi) ? &packed(i - self.lo + self.base, 0) : &staging(i, 0);
        for (int j = 0; j < cols; ++j) row[j] = src[j];
      });
}

}  // namespace

DispatchStats& DispatchStats::operator+=(const DispatchStats& other) {
  bytes_sent += other.bytes_sent;
  bytes_received += other.bytes_received;
  bytes_local += other.bytes_local;
  mpi_seconds += other.mpi_seconds;
  permute_seconds += other.permute_seconds;
  bytes_staged_to_host += other.bytes_staged_to_host;
  bytes_staged_from_host += other.bytes_staged_from_host;
  staging_copies += other.staging_copies;
  staging_seconds += other.staging_seconds;
  return *this;
}

DispatchPlan DispatchPlan::build(const Communicator& ep_group,
                                 std::span<const std::size_t> rows_per_expert) {
  const core::ScopedSpan span(core::Track::all_to_all, "plan");
  static_assert(sizeof(std::size_t) == sizeof(std::uint64_t), "counts travel as MPI_UINT64_T");
  DispatchPlan plan(ep_group);
  const std::size_t ep = std::size_t(ep_group.size());
  const std::size_t me = std::size_t(ep_group.rank());
  const std::size_t E = rows_per_expert.size();
  // Every member sees the same E and ep, so every member refuses alike (no rank is left waiting).
  if (E == 0 || E % ep != 0)
    throw Error(group_label(ep_group) + ": " + std::to_string(E) +
                " experts cannot be split evenly over the group (need a positive multiple of " +
                std::to_string(ep) + ")");
  const std::size_t L = E / ep;
  plan.experts_ = E;
  plan.local_experts_ = L;

  plan.send_counts_.assign(ep, 0);
  plan.send_displs_.assign(ep, 0);
  for (std::size_t p = 0; p < ep; ++p) {
    for (std::size_t j = 0; j < L; ++j) plan.send_counts_[p] += rows_per_expert[p * L + j];
    if (p + 1 < ep) plan.send_displs_[p + 1] = plan.send_displs_[p] + plan.send_counts_[p];
  }
  plan.send_rows_ = plan.send_displs_[ep - 1] + plan.send_counts_[ep - 1];

  // The one collective: peer p gets the counts of its local experts, i.e. the p-th slice of L.
  plan.counts_from_.assign(E, 0);
  if (ep == 1) {
    plan.counts_from_.assign(rows_per_expert.begin(), rows_per_expert.end());
  } else {
    const int count = mpi_count(L, "parallel::DispatchPlan: local experts' row counts");
    DAA_MPI_CHECK(MPI_Alltoall(rows_per_expert.data(), count, MPI_UINT64_T,
                               plan.counts_from_.data(), count, MPI_UINT64_T, ep_group.comm()));
  }

  plan.recv_counts_.assign(ep, 0);
  plan.recv_displs_.assign(ep, 0);
  plan.local_expert_offset_.assign(L + 1, 0);
  for (std::size_t s = 0; s < ep; ++s) {
    for (std::size_t j = 0; j < L; ++j) {
      plan.recv_counts_[s] += plan.counts_from_[s * L + j];
      plan.local_expert_offset_[j + 1] += plan.counts_from_[s * L + j];
    }
    if (s + 1 < ep) plan.recv_displs_[s + 1] = plan.recv_displs_[s] + plan.recv_counts_[s];
  }
  for (std::size_t j = 0; j < L; ++j)
    plan.local_expert_offset_[j + 1] += plan.local_expert_offset_[j];
  plan.recv_rows_ = plan.recv_displs_[ep - 1] + plan.recv_counts_[ep - 1];

  // Row indices are ints in the kernels (and MPI counts are ints); a row count beyond that is
  // refused here. Each rank refuses on its own numbers; a refusal on one rank only ends in
  // MPI_Abort through main's handler (DESIGN.md §5), like any error seen by one rank.
  const std::size_t int_max = std::size_t(INT_MAX);
  if (plan.send_rows_ > int_max || plan.recv_rows_ > int_max)
    throw Error(group_label(ep_group) + ": rank " + std::to_string(me) + " would " +
                (plan.send_rows_ > int_max ? "send " + std::to_string(plan.send_rows_)
                                           : "receive " + std::to_string(plan.recv_rows_)) +
                " rows, above the int limit " + std::to_string(INT_MAX));

  // Permutations between received order (s, j, k) and expert order (j, s, k), built on the
  // device. Block b = s * L + j (peer s's rows for local expert j) starts at from[b] in received
  // order and at to[b] in expert order; only these 3 * ep * L block figures travel to the device,
  // in one explicit copy, and one team per block writes its rows' indices.
  const std::size_t R = plan.recv_rows_;
  plan.identity_ = ep == 1 || L == 1;
  plan.received_of_expert_row_ = Kokkos::View<int*, MemSpace>(
      Kokkos::view_alloc("received_of_expert_row", Kokkos::WithoutInitializing), R);
  plan.expert_row_of_received_ = Kokkos::View<int*, MemSpace>(
      Kokkos::view_alloc("expert_row_of_received", Kokkos::WithoutInitializing), R);
  const int B = int(ep * L);
  Kokkos::View<int*, MemSpace> blocks(
      Kokkos::view_alloc("dispatch_plan_blocks", Kokkos::WithoutInitializing), 3 * std::size_t(B));
  auto blocks_h = Kokkos::create_mirror_view(blocks);
  std::vector<std::size_t> cursor(plan.local_expert_offset_.begin(),
                                  plan.local_expert_offset_.end() - 1);
  std::size_t received = 0;
  // The fused path's blocks: peer s's rows land in expert order at block s * L + j.
  RowBlocks& expert_blocks = plan.expert_blocks_;
  expert_blocks.first.assign(ep + 1, 0);
  expert_blocks.displ.assign(ep * L, 0);
  expert_blocks.count.assign(ep * L, 0);
  for (std::size_t s = 0; s < ep; ++s) {
    expert_blocks.first[s + 1] = (s + 1) * L;
    for (std::size_t j = 0; j < L; ++j) {
      const std::size_t b = s * L + j, count = plan.counts_from_[b];
      blocks_h(b) = int(received);  // every figure is at most R <= INT_MAX (checked above)
      blocks_h(std::size_t(B) + b) = int(cursor[j]);
      blocks_h(2 * std::size_t(B) + b) = int(count);
      expert_blocks.displ[b] = cursor[j];
      expert_blocks.count[b] = count;
      cursor[j] += count;
      received += count;
    }
  }
  // In packed order, each peer's rows are one block already.
  RowBlocks& packed_blocks = plan.packed_blocks_;
  packed_blocks.first.resize(ep + 1);
  for (std::size_t p = 0; p <= ep; ++p) packed_blocks.first[p] = p;
  packed_blocks.displ = plan.send_displs_;
  packed_blocks.count = plan.send_counts_;
  Kokkos::deep_copy(blocks, blocks_h);
  const auto r_of_e = plan.received_of_expert_row_, e_of_r = plan.expert_row_of_received_;
  using Team = Kokkos::TeamPolicy<kernels::ExecSpace>;
  Kokkos::parallel_for(
      "dispatch_plan_permutation", Team(B, Kokkos::AUTO),
      KOKKOS_LAMBDA(const Team::member_type& team) {
        const int b = team.league_rank();
        const int from = blocks(b), to = blocks(B + b), count = blocks(2 * B + b);
        Kokkos::parallel_for(Kokkos::TeamThreadRange(team, count), [&](const int i) {
          r_of_e(to + i) = from + i;
          e_of_r(from + i) = to + i;
        });
      });
  return plan;
}

void DispatchPlan::check_width(std::size_t width) const {
  // Every count and displacement of one Alltoallv is bounded by this rank's send or receive
  // total, so checking the two totals covers them all.
  for (const std::size_t rows : {send_rows_, recv_rows_}) {
    if (rows == 0) continue;
    if (width > std::size_t(INT_MAX) / rows) {
      const std::uint64_t elements = std::uint64_t(rows) * std::uint64_t(width);
      throw Error(group_label(group_) + ": rank " + std::to_string(group_.rank()) + " would " +
                  (rows == send_rows_ ? "send " : "receive ") + std::to_string(elements) +
                  " elements (" + std::to_string(rows) + " rows of width " + std::to_string(width) +
                  ") in one MPI_Alltoallv, above the MPI int count limit " +
                  std::to_string(INT_MAX));
    }
  }
}

template <class T>
kernels::MatrixRef<T> TokenDispatcher::staging_matrix(std::size_t rows, std::size_t width) {
  const std::size_t bytes = rows * width * sizeof(T);
  if (staging_.extent(0) < bytes) {
    // Grow by at least half again, so that routings that creep upward step by step cost a
    // logarithmic number of reallocations, not one per step.
    const std::size_t grown = staging_.extent(0) + staging_.extent(0) / 2;
    staging_ = Kokkos::View<unsigned char*, MemSpace>(
        Kokkos::view_alloc("dispatch_staging", Kokkos::WithoutInitializing),
        bytes > grown ? bytes : grown);
  }
  // Kokkos allocations are aligned well beyond alignof(double).
  return kernels::MatrixRef<T>(reinterpret_cast<T*>(staging_.data()), rows, width);
}

Transport<>& TokenDispatcher::transport(const DispatchPlan& plan) {
  // Every member of a group sees the same plans, so all remake their transport together (nccl
  // mode's set-up is collective).
  if (!transport_ || transport_->comm().comm() != plan.group().comm())
    transport_.emplace(plan.group(), mode_);
  return *transport_;
}

void TokenDispatcher::finish(DispatchStats& stats, const TransportStats& moved) {
  stats.mpi_seconds = moved.mpi_seconds;
  stats.bytes_staged_to_host = moved.bytes_to_host;
  stats.bytes_staged_from_host = moved.bytes_from_host;
  stats.staging_copies = moved.staging_copies;
  stats.staging_seconds = moved.staging_seconds;
}

template <class T>
void TokenDispatcher::to_experts(const DispatchPlan& plan, const kernels::Matrix<T>& packed,
                                 kernels::Matrix<T>& expert_rows) {
  const core::ScopedSpan span(core::Track::all_to_all, "to experts");
  const std::size_t width = packed.extent(1);
  plan.check_width(width);
  if (packed.extent(0) != plan.send_rows())
    throw Error(group_label(plan.group()) + ": to_experts got " + std::to_string(packed.extent(0)) +
                " packed rows, the plan expects " + std::to_string(plan.send_rows()));
  kernels::ensure_extent(expert_rows, plan.recv_rows(), width);

  const std::size_t me = std::size_t(plan.group().rank());
  const std::size_t row_bytes = width * sizeof(T);
  DispatchStats stats;
  stats.bytes_local = plan.send_counts()[me] * row_bytes;
  stats.bytes_sent = plan.send_rows() * row_bytes - stats.bytes_local;
  stats.bytes_received = plan.recv_rows() * row_bytes - stats.bytes_local;

  // Kernels that produced `packed` must be done before MPI reads its memory.
  Kokkos::fence();
  if (plan.group().size() == 1) {
    const auto start = Clock::now();
    Kokkos::deep_copy(expert_rows, packed);  // one rank: both orders are the packed order
    Kokkos::fence();
    stats.permute_seconds = seconds_since(start);
  } else if (path_ == DispatchPath::fused) {
    // The own rows first (their kernel and MPI touch disjoint rows), then MPI scatters the other
    // ranks' rows straight into their experts' blocks.
    const auto start = Clock::now();
    copy_self_to_experts(plan.expert_row_of_received(), packed, self_rows(plan), expert_rows);
    Kokkos::fence();
    stats.permute_seconds = seconds_since(start);
    finish(stats, transport(plan).all_to_all_blocks<T>(packed, plan.packed_blocks(), expert_rows,
                                                       plan.expert_blocks(), /*skip_self=*/true));
  } else {
    // With one local expert MPI can write expert order directly. Otherwise MPI fills the
    // staging buffer in received order with the other ranks' rows, and the permutation kernel
    // reorders them together with this rank's own rows, read from `packed`.
    const bool direct = plan.identity_permutation();
    const auto staging = direct ? kernels::MatrixRef<T>(expert_rows.data(), expert_rows.extent(0),
                                                        expert_rows.extent(1))
                                : staging_matrix<T>(plan.recv_rows(), width);
    // Without the identity, this rank's own rows skip MPI: the permutation kernel moves them.
    finish(stats, transport(plan).all_to_all_rows<T>(packed, plan.send_counts(), plan.send_displs(),
                                                     staging, plan.recv_counts(),
                                                     plan.recv_displs(), /*skip_self=*/!direct));
    if (!direct) {
      const auto start = Clock::now();
      gather_to_experts(plan.received_of_expert_row(), staging, packed, self_rows(plan),
                        expert_rows);
      Kokkos::fence();
      stats.permute_seconds = seconds_since(start);
    }
  }
  last_ = stats;
  total_ += stats;
}

template <class T>
void TokenDispatcher::to_sources(const DispatchPlan& plan, const kernels::Matrix<T>& expert_rows,
                                 kernels::Matrix<T>& packed_out) {
  const core::ScopedSpan span(core::Track::all_to_all, "to sources");
  const std::size_t width = expert_rows.extent(1);
  plan.check_width(width);
  if (expert_rows.extent(0) != plan.recv_rows())
    throw Error(group_label(plan.group()) + ": to_sources got " +
                std::to_string(expert_rows.extent(0)) + " expert rows, the plan expects " +
                std::to_string(plan.recv_rows()));
  kernels::ensure_extent(packed_out, plan.send_rows(), width);

  const std::size_t me = std::size_t(plan.group().rank());
  const std::size_t row_bytes = width * sizeof(T);
  DispatchStats stats;
  stats.bytes_local = plan.recv_counts()[me] * row_bytes;
  stats.bytes_sent = plan.recv_rows() * row_bytes - stats.bytes_local;
  stats.bytes_received = plan.send_rows() * row_bytes - stats.bytes_local;

  Kokkos::fence();  // the expert kernels that wrote expert_rows
  if (plan.group().size() == 1) {
    const auto start = Clock::now();
    Kokkos::deep_copy(packed_out, expert_rows);
    Kokkos::fence();
    stats.permute_seconds = seconds_since(start);
  } else if (path_ == DispatchPath::fused) {
    // MPI gathers each peer's rows straight from their experts' blocks; the own rows by kernel.
    const auto start = Clock::now();
    copy_self_to_sources(plan.expert_row_of_received(), expert_rows, self_rows(plan), packed_out);
    Kokkos::fence();
    stats.permute_seconds = seconds_since(start);
    finish(stats, transport(plan).all_to_all_blocks<T>(expert_rows, plan.expert_blocks(),
                                                       packed_out, plan.packed_blocks(),
                                                       /*skip_self=*/true));
  } else {
    const bool direct = plan.identity_permutation();
    auto staging = direct ? kernels::MatrixRef<T>(expert_rows.data(), expert_rows.extent(0),
                                                  expert_rows.extent(1))
                          : staging_matrix<T>(plan.recv_rows(), width);
    if (!direct) {
      const auto start = Clock::now();
      gather_to_received(plan.expert_row_of_received(), expert_rows, staging, packed_out,
                         self_rows(plan));
      Kokkos::fence();  // MPI reads the staging buffer next
      stats.permute_seconds = seconds_since(start);
    }
    finish(stats, transport(plan).all_to_all_rows<T>(
                      staging, plan.recv_counts(), plan.recv_displs(), packed_out,
                      plan.send_counts(), plan.send_displs(), /*skip_self=*/!direct));
  }
  last_ = stats;
  total_ += stats;
}

template void TokenDispatcher::to_experts<float>(const DispatchPlan&, const kernels::Matrix<float>&,
                                                 kernels::Matrix<float>&);
template void TokenDispatcher::to_experts<double>(const DispatchPlan&,
                                                  const kernels::Matrix<double>&,
                                                  kernels::Matrix<double>&);
template void TokenDispatcher::to_sources<float>(const DispatchPlan&, const kernels::Matrix<float>&,
                                                 kernels::Matrix<float>&);
template void TokenDispatcher::to_sources<double>(const DispatchPlan&,
                                                  const kernels::Matrix<double>&,
                                                  kernels::Matrix<double>&);

}  // namespace daa::parallel
