// Expert-parallel token dispatcher (DESIGN.md §2-§3): moves the rows each rank packed by global
// expert to the ranks that own those experts, straight into local-expert order (one MPI_Alltoallw
// with per-peer row datatypes), and back. It knows nothing of layers: it moves [rows, width]
// matrices of float or double.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "daa/kernels/views.hpp"
#include "daa/parallel/communicator.hpp"
#include "daa/parallel/transport.hpp"

namespace daa::parallel {

// Who sends how many rows to whom, for one routing of one MoE layer on one EP group.
//
// Layout: the EP group has `ep` ranks; the layer has E experts (E divisible by ep); group rank r
// owns the "local experts" [r*E/ep, (r+1)*E/ep). Before dispatch, each rank holds a packed matrix
// [P, w] whose rows [offset[e], offset[e+1]) go to global expert e. Because the experts of one
// rank are consecutive, that packed order already groups rows by destination rank.
//
// After dispatch, rank r holds R rows in one of two orders:
//   received order: source rank major, then local expert, then the source's packed order
//                   (what MPI_Alltoallv delivers);
//   expert order:   local expert major, then source rank, then the source's packed order
//                   (what the expert GEMMs want: local expert j owns the contiguous rows
//                   [local_expert_offset()[j], local_expert_offset()[j+1])).
// Both are deterministic functions of the per-rank counts.
//
// A plan borrows the communicator's MPI_Comm: it must not outlive it.
class DispatchPlan {
 public:
  // Collective over `ep_group`: every member calls it with its own per-expert row counts (size E,
  // the same E on every member). Exchanges counts with one MPI_Alltoall; throws daa::Error if E
  // is not a positive multiple of the group size or a row count does not fit an int.
  static DispatchPlan build(const Communicator& ep_group,
                            std::span<const std::size_t> rows_per_expert);

  const Communicator& group() const { return group_; }
  std::size_t experts() const { return experts_; }              // E
  std::size_t local_experts() const { return local_experts_; }  // E / ep
  std::size_t first_local_expert() const { return std::size_t(group_.rank()) * local_experts_; }

  std::size_t send_rows() const { return send_rows_; }  // P: rows this rank packed
  std::size_t recv_rows() const { return recv_rows_; }  // R: rows its local experts receive

  // Per peer (group rank), in rows: what this rank sends in to_experts / receives there.
  // displs are prefix sums of counts (packed order for send, received order for receive).
  std::span<const std::size_t> send_counts() const { return send_counts_; }
  std::span<const std::size_t> send_displs() const { return send_displs_; }
  std::span<const std::size_t> recv_counts() const { return recv_counts_; }
  std::span<const std::size_t> recv_displs() const { return recv_displs_; }

  // rows_from(source, j): rows group rank `source` sends to this rank's local expert j.
  std::size_t rows_from(int source, std::size_t local_expert) const {
    return counts_from_[std::size_t(source) * local_experts_ + local_expert];
  }
  // E/ep + 1 entries, in expert order (see above).
  std::span<const std::size_t> local_expert_offset() const { return local_expert_offset_; }

  // The two permutations between the orders, R entries each, in kernels::MemSpace:
  //   received_of_expert_row(q) = received-order index of expert-order row q,
  //   expert_row_of_received(i) = expert-order index of received-order row i.
  // Both are used as gathers (each output row written by exactly one thread).
  const Kokkos::View<int*, kernels::MemSpace>& received_of_expert_row() const {
    return received_of_expert_row_;
  }
  const Kokkos::View<int*, kernels::MemSpace>& expert_row_of_received() const {
    return expert_row_of_received_;
  }
  // True when both orders coincide (one rank, or one local expert): the permute path then lets
  // MPI write straight into the destination and skips the permutation.
  bool identity_permutation() const { return identity_; }

  // The fused path's row blocks per peer (Transport::all_to_all_blocks), in rows:
  //   packed_blocks(): peer p's rows in packed order, one block [send_displs[p], +send_counts[p]);
  //   expert_blocks(): peer s's rows in expert order, one block per local expert j (rows_from(s,
  //                    j) rows), in the order s sends them.
  const RowBlocks& packed_blocks() const { return packed_blocks_; }
  const RowBlocks& expert_blocks() const { return expert_blocks_; }

  // Throws daa::Error (naming the group and the count) if moving rows of `width` elements would
  // need an MPI count or displacement above INT_MAX elements on this rank.
  void check_width(std::size_t width) const;

 private:
  explicit DispatchPlan(const Communicator& group) : group_(group) {}

  Communicator group_;
  std::size_t experts_ = 0;
  std::size_t local_experts_ = 0;
  std::size_t send_rows_ = 0;
  std::size_t recv_rows_ = 0;
  std::vector<std::size_t> send_counts_, send_displs_, recv_counts_, recv_displs_;
  std::vector<std::size_t> counts_from_;  // [ep][E/ep]: the Alltoall's result
  std::vector<std::size_t> local_expert_offset_;
  Kokkos::View<int*, kernels::MemSpace> received_of_expert_row_{"received_of_expert_row", 0};
  Kokkos::View<int*, kernels::MemSpace> expert_row_of_received_{"expert_row_of_received", 0};
  RowBlocks packed_blocks_, expert_blocks_;
  bool identity_ = true;
};

// What one dispatcher call moved and how long it took; read after the call (metrics, traces).
struct DispatchStats {
  std::size_t bytes_sent = 0;      // to other ranks of the group
  std::size_t bytes_received = 0;  // from other ranks of the group
  std::size_t bytes_local = 0;     // rows that stay on this rank (copied, not sent)
  double mpi_seconds = 0;  // inside the transport's MPI_Alltoallw/v (or NCCL), peers' waits too
  // The copy kernel: the own rows' copy (fused path) or the permutation, which moves the own
  // rows too (permute path).
  double permute_seconds = 0;
  // Host staging (TransportMode::host_staged only; zero otherwise): bytes copied to the host
  // buffer before MPI and back after it, the number of those copies and their seconds.
  std::size_t bytes_staged_to_host = 0;
  std::size_t bytes_staged_from_host = 0;
  std::size_t staging_copies = 0;
  double staging_seconds = 0;

  DispatchStats& operator+=(const DispatchStats& other);
};

// How rows reach local-expert order:
//   fused:   MPI reads and writes them in place: one MPI_Alltoallw whose per-peer indexed row types
//            scatter each peer's rows into its local experts' blocks (and gather them back), plus
//            one copy kernel for this rank's own rows, which never enter MPI. No staging buffer,
//            no permutation pass. Needs MPI datatypes: direct and host_staged modes.
//   permute: one MPI_Alltoallv into a staging buffer in received order plus a permutation kernel
//            (which also moves the own rows); with one local expert MPI writes the result
//            directly. Used in nccl mode (NCCL has no datatypes) and as the tests' reference.
// Both move the same bits to the same places.
enum class DispatchPath { fused, permute };

// Moves rows along a DispatchPlan (see DispatchPath). Owns the permute path's staging buffer (one
// growing byte buffer in kernels::MemSpace, shared by both directions and by float and double), so
// that one dispatcher per MoE layer allocates only while the largest routing seen so far grows,
// never per call; the plan's permutation views are allocated once per plan (per layer and step).
// Not thread-safe; calls are collective over the plan's group, every member must pass the same row
// width, and source and destination views must not alias. Counts beyond MPI's int limit are refused
// (DispatchPlan::check_width) before MPI.
//
// Memory: the rows travel through a parallel::Transport over the plan's group, in the mode given
// at construction (by default direct MPI on host memory, NCCL or host staging on device memory,
// see transport.hpp); the transport is remade when a plan names another group.
class TokenDispatcher {
 public:
  explicit TokenDispatcher(
      TransportMode mode = default_transport_mode(host_accessible_v<kernels::MemSpace>),
      DispatchPath path = DispatchPath::fused)
      : mode_(mode), path_(mode == TransportMode::nccl ? DispatchPath::permute : path) {}

  TransportMode mode() const { return mode_; }
  DispatchPath path() const { return path_; }  // permute in nccl mode, whatever was asked

  // packed [P, w] (rows grouped by global expert) -> expert_rows resized to [R, w], expert order.
  // Forward: token activations to experts. Backward: output gradients to experts.
  template <class T>
  void to_experts(const DispatchPlan& plan, const kernels::Matrix<T>& packed,
                  kernels::Matrix<T>& expert_rows);

  // The exact inverse: expert_rows [R, w] in expert order -> packed_out resized to [P, w], row i
  // of packed_out coming from where row i of `packed` went. Forward: expert outputs back to the
  // tokens' ranks. Backward: input gradients back.
  template <class T>
  void to_sources(const DispatchPlan& plan, const kernels::Matrix<T>& expert_rows,
                  kernels::Matrix<T>& packed_out);

  const DispatchStats& last_stats() const { return last_; }    // the latest call
  const DispatchStats& total_stats() const { return total_; }  // sum since the last reset
  void reset_total_stats() { total_ = DispatchStats{}; }

  std::size_t staging_bytes() const { return staging_.extent(0); }  // capacity, for tests

 private:
  template <class T>
  kernels::MatrixRef<T> staging_matrix(std::size_t rows, std::size_t width);
  Transport<>& transport(const DispatchPlan& plan);
  void finish(DispatchStats& stats, const TransportStats& moved);

  TransportMode mode_;
  DispatchPath path_;
  std::optional<Transport<>> transport_;
  Kokkos::View<unsigned char*, kernels::MemSpace> staging_{"dispatch_staging", 0};
  DispatchStats last_, total_;
};

extern template void TokenDispatcher::to_experts<float>(const DispatchPlan&,
                                                        const kernels::Matrix<float>&,
                                                        kernels::Matrix<float>&);
extern template void TokenDispatcher::to_experts<double>(const DispatchPlan&,
                                                         const kernels::Matrix<double>&,
                                                         kernels::Matrix<double>&);
extern template void TokenDispatcher::to_sources<float>(const DispatchPlan&,
                                                        const kernels::Matrix<float>&,
                                                        kernels::Matrix<float>&);
extern template void TokenDispatcher::to_sources<double>(const DispatchPlan&,
                                                         const kernels::Matrix<double>&,
                                                         kernels::Matrix<double>&);

}  // namespace daa::parallel
