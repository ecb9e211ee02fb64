// Bulk-number transport typed by memory space (DESIGN.md §5, issue 13): the only place the token
// dispatcher's all-to-all and the pipeline's stage-to-stage traffic meet MPI (or NCCL). Callers
// hand it Kokkos views, never raw pointers, so the memory each message lives in is known.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "daa/build_config.hpp"
#include "daa/kernels/views.hpp"
#include "daa/parallel/communicator.hpp"

#if defined(KOKKOS_ENABLE_CUDA) && DAA_ENABLE_CUDA
#include "daa/cuda/nccl_transport.hpp"
#endif

namespace daa::parallel {

// How a message reaches the network:
//   direct:      MPI reads and writes the views' memory itself; only for host-accessible spaces
//                (the Open MPI here is not CUDA-aware, DESIGN.md §10).
//   host_staged: deep_copy into a persistent host buffer, MPI, deep_copy back; every staging copy
//                is counted in TransportStats. Forceable on the host too, so that it is tested.
//   nccl:        daa::cuda::NcclComm on the execution space's stream (float only). Compiled only
//                with a CUDA Kokkos and DAA_ENABLE_CUDA, which this machine cannot build: that
//                branch is uncompiled and untested here; in particular, NCCL's send holds the
//                stream until the peer receives, which the pipeline's 1F1B order must survive:
//                the first GPU run has to check that.
enum class TransportMode { direct, host_staged, nccl };

const char* to_string(TransportMode mode);

// What the transport did; `mpi_seconds` (inside MPI or NCCL, waiting for peers included) is kept
// apart from the staging copies.
struct TransportStats {
  std::size_t bytes_to_host = 0;    // staged from the views' memory into the host buffer
  std::size_t bytes_from_host = 0;  // staged from the host buffer back into the views' memory
  std::size_t staging_copies = 0;   // deep_copy calls of the staging (one per contiguous range)
  double staging_seconds = 0;
  double mpi_seconds = 0;

  TransportStats& operator+=(const TransportStats& other);
};

// Throws daa::Error when `mode` cannot serve memory that is (or is not) host-accessible:
// direct on device memory, or nccl where it is not built. `space` names the memory space.
void check_transport_mode(TransportMode mode, bool host_accessible, const std::string& space,
                          const Communicator& comm);

// The default for a memory space: direct when host-accessible, else nccl where built, else
// host_staged.
TransportMode default_transport_mode(bool host_accessible);

template <class MemorySpace>
inline constexpr bool host_accessible_v =
    Kokkos::SpaceAccessibility<Kokkos::HostSpace, MemorySpace>::accessible;

// Row blocks per peer, for all_to_all_blocks: peer p's blocks are entries [first[p], first[p+1])
// of `displ` and `count` (in rows), taken (or filled) in that order. `first` has ranks + 1 entries.
struct RowBlocks {
  std::vector<std::size_t> first;
  std::vector<std::size_t> displ, count;

  std::size_t rows(std::size_t peer) const;  // the sum of peer's counts
};

// Moves rows ([rows, width] LayoutRight views) of float or double over one communicator.
// Instantiated for kernels::MemSpace. Calls that are collective in MPI are collective here.
// Not thread-safe. Fence the execution space before a call; results are complete on return
// (nccl: in the stream's order, which every later kernel of the execution space follows).
template <class MemorySpace = kernels::MemSpace>
class Transport {
 public:
  template <class T>
  using Rows = Kokkos::View<T**, Kokkos::LayoutRight, MemorySpace, Kokkos::MemoryUnmanaged>;

  // A non-blocking send in flight and the host buffer it was staged through (kept, and grown only,
  // for the next send through the same slot). Destroying one that is still pending cancels it.
  class PendingSend {
   public:
    PendingSend() = default;
    ~PendingSend();
    PendingSend(PendingSend&& other) noexcept;
    PendingSend& operator=(PendingSend&&) = delete;
    PendingSend(const PendingSend&) = delete;
    PendingSend& operator=(const PendingSend&) = delete;

   private:
    friend class Transport;
    MPI_Request request_ = MPI_REQUEST_NULL;
    bool nccl_pending_ = false;
    Kokkos::View<unsigned char*, Kokkos::HostSpace> host_{"transport_send_staging", 0};
  };

  // Refuses (check_transport_mode) a mode that cannot serve MemorySpace. nccl mode is collective
  // over `comm` (it makes the NCCL communicator).
  explicit Transport(const Communicator& comm,
                     TransportMode mode = default_transport_mode(host_accessible_v<MemorySpace>));

  const Communicator& comm() const { return comm_; }
  TransportMode mode() const { return mode_; }

  // Uneven all-to-all: rows [send_displs[p], +send_counts[p]) of `send` go to rank p, and rank p's
  // rows arrive at [recv_displs[p], +recv_counts[p]) of `recv`; counts and displacements in rows,
  // one entry per rank, each turned into elements with mpi_count. With skip_self this rank's own
  // block is left out (the caller moves it). Every member passes the same width.
  template <class T>
  TransportStats all_to_all_rows(Rows<const T> send, std::span<const std::size_t> send_counts,
                                 std::span<const std::size_t> send_displs, Rows<T> recv,
                                 std::span<const std::size_t> recv_counts,
                                 std::span<const std::size_t> recv_displs, bool skip_self);

  // Uneven all-to-all on scattered rows: the rows of send's blocks for peer p, in block order,
  // arrive in the blocks that peer p names for this rank, in block order (one MPI_Alltoallw with an
  // indexed row type per peer, so MPI itself scatters and gathers the rows: no copy into a
  // contiguous buffer). Row totals must match pairwise (MPI's truncation error otherwise); with
  // skip_self this rank's own blocks are left out (the caller moves them). Counts and
  // displacements are rows, each checked against INT_MAX. Not in nccl mode (throws daa::Error):
  // NCCL has no datatypes.
  template <class T>
  TransportStats all_to_all_blocks(Rows<const T> send, const RowBlocks& send_blocks, Rows<T> recv,
                                   const RowBlocks& recv_blocks, bool skip_self);

  // Point to point: `rows` to rank `peer` with `tag` without waiting for the peer (it first waits
  // for `send`'s previous message); the view must stay unchanged until wait(send). recv blocks
  // until exactly rows.size() elements have arrived.
  template <class T>
  TransportStats isend(Rows<const T> rows, int peer, int tag, PendingSend& send);
  template <class T>
  TransportStats recv(Rows<T> rows, int peer, int tag);
  // Completes one send (a no-op when none is pending); returns the seconds spent waiting.
  double wait(PendingSend& send);

  // In place: data = sum over the members (fixed algorithm per size and count).
  template <class T>
  TransportStats all_reduce_sum(Rows<T> data);

  const TransportStats& total_stats() const { return total_; }

 private:
  // The exchange of an all-to-all, staged through host_ in host_staged mode: send's rows and
  // recv's rows as two regions of one buffer, only the rows MPI reads (ranges(true)) copied in and
  // only those it writes (ranges(false)) copied back. exchange(send_data, recv_data) is the MPI
  // call; its seconds and the staging's count in the returned stats and in total_.
  template <class T, class Ranges, class Exchange>
  TransportStats staged_exchange(Rows<const T> send, Rows<T> recv, const Ranges& ranges,
                                 const Exchange& exchange);
  template <class T>
  Kokkos::View<T**, Kokkos::LayoutRight, Kokkos::HostSpace, Kokkos::MemoryUnmanaged> host_rows(
      std::size_t offset_elements, std::size_t rows, std::size_t width);

  Communicator comm_;
  TransportMode mode_;
  Kokkos::View<unsigned char*, Kokkos::HostSpace> host_{"transport_staging", 0};
  TransportStats total_;
  std::vector<int> send_counts_, send_displs_, recv_counts_, recv_displs_;  // reused, in elements
#if defined(KOKKOS_ENABLE_CUDA) && DAA_ENABLE_CUDA
  std::shared_ptr<cuda::NcclComm> nccl_;  // shared: dispatchers stay copyable
#endif
};

extern template class Transport<kernels::MemSpace>;

}  // namespace daa::parallel
