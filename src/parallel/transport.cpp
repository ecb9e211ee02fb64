// Transport (see transport.hpp): direct MPI on host-accessible views, counted host staging around
// MPI, and NCCL in the CUDA build; rows -> element counts through mpi_count in one place.
#include "daa/parallel/transport.hpp"

#include <algorithm>
#include <type_traits>
#include <utility>
#include <vector>

#include "daa/core/clock.hpp"
#include "daa/core/error.hpp"

namespace daa::parallel {
namespace {

using core::Clock;
using core::seconds_since;
using RowRange = std::pair<std::size_t, std::size_t>;  // [first, last) rows

template <class T>
MPI_Datatype mpi_type() {
  if constexpr (std::is_same_v<T, float>)
    return MPI_FLOAT;
  else if constexpr (std::is_same_v<T, double>)
    return MPI_DOUBLE;
  else
    static_assert(sizeof(T) == 0, "parallel::Transport: only float and double rows");
}

// An empty view may have a null data(); MPI gets a valid address anyway (its counts are all 0
// then), so no MPI implementation can mistake it for a special value.
template <class T>
T* mpi_buffer(T* data) {
  static std::remove_const_t<T> dummy{};
  return data != nullptr ? data : &dummy;
}

// The row ranges MPI reads (or writes) in one all-to-all, sorted and merged where they touch, so
// that staging copies exactly those rows in as few contiguous copies as possible.
std::vector<RowRange> moved_ranges(std::span<const std::size_t> counts,
                                   std::span<const std::size_t> displs, int skip) {
  std::vector<RowRange> ranges;
  for (std::size_t p = 0; p < counts.size(); ++p)
    if (counts[p] > 0 && int(p) != skip) ranges.emplace_back(displs[p], displs[p] + counts[p]);
  std::sort(ranges.begin(), ranges.end());
  std::vector<RowRange> merged;
  for (const RowRange& r : ranges) {
    if (!merged.empty() && r.first <= merged.back().second)
      merged.back().second = std::max(merged.back().second, r.second);
    else
      merged.push_back(r);
  }
  return merged;
}

// The same for scattered blocks: every row of every peer's blocks but `skip`'s.
std::vector<RowRange> block_ranges(const RowBlocks& blocks, int skip) {
  std::vector<std::size_t> counts, displs;
  for (std::size_t p = 0; p + 1 < blocks.first.size(); ++p)
    for (std::size_t b = blocks.first[p]; b < blocks.first[p + 1]; ++b)
      if (int(p) != skip) counts.push_back(blocks.count[b]), displs.push_back(blocks.displ[b]);
  return moved_ranges(counts, displs, -1);
}

// Committed MPI datatypes, freed when this goes out of scope (an exception between commit and
// free included).
class Datatypes {
 public:
  Datatypes() = default;
  Datatypes(const Datatypes&) = delete;
  Datatypes& operator=(const Datatypes&) = delete;
  ~Datatypes() {
    for (MPI_Datatype& t : types_) MPI_Type_free(&t);
  }
  MPI_Datatype commit(MPI_Datatype type) {
    types_.push_back(type);
    DAA_MPI_CHECK(MPI_Type_commit(&types_.back()));
    return type;
  }

 private:
  std::vector<MPI_Datatype> types_;
};

// One peer's side of an Alltoallw: its blocks as one indexed type of `row` (displacements in rows
// from the buffer's start, so the byte displacement passed to MPI is 0 and never overflows), and
// the count 1, or 0 when the peer is skipped or has no rows.
void peer_types(const RowBlocks& blocks, MPI_Datatype row, int skip, Datatypes& owned,
                std::vector<int>& counts, std::vector<MPI_Datatype>& types, const char* what) {
  const std::size_t peers = blocks.first.size() - 1;
  counts.assign(peers, 0);
  types.assign(peers, row);
  std::vector<int> lengths, displs;
  for (std::size_t p = 0; p < peers; ++p) {
    if (int(p) == skip || blocks.rows(p) == 0) continue;
    lengths.clear();
    displs.clear();
    for (std::size_t b = blocks.first[p]; b < blocks.first[p + 1]; ++b) {
      if (blocks.count[b] == 0) continue;
      lengths.push_back(mpi_count(blocks.count[b], what, "rows"));
      displs.push_back(mpi_count(blocks.displ[b], what, "rows"));
    }
    MPI_Datatype type = MPI_DATATYPE_NULL;
    DAA_MPI_CHECK(MPI_Type_indexed(int(lengths.size()), lengths.data(), displs.data(), row, &type));
    types[p] = owned.commit(type);
    counts[p] = 1;
  }
}

// One counted deep_copy per range, rows [first, last) of src into the same rows of dst.
template <class Dst, class Src>
void stage(const Dst& dst, const Src& src, const std::vector<RowRange>& ranges, std::size_t& bytes,
           TransportStats& stats) {
  const auto start = Clock::now();
  for (const RowRange& r : ranges) {
    Kokkos::deep_copy(Kokkos::subview(dst, r, Kokkos::ALL), Kokkos::subview(src, r, Kokkos::ALL));
    bytes += (r.second - r.first) * src.extent(1) * sizeof(typename Src::value_type);
    ++stats.staging_copies;
  }
  stats.staging_seconds += seconds_since(start);
}

// rows -> element counts for MPI (each checked against INT_MAX); skip zeroes one rank's count.
void element_counts(std::span<const std::size_t> rows, std::size_t width, int skip,
                    std::vector<int>& out, const char* what) {
  out.resize(rows.size());
  for (std::size_t p = 0; p < rows.size(); ++p)
    out[p] = int(p) == skip ? 0 : mpi_count(rows[p] * width, what);
}

void check_peers(std::size_t entries, const Communicator& comm, const char* what) {
  if (entries != std::size_t(comm.size()))
    throw Error("parallel::Transport over '" + comm.name() + "': " + what + " has " +
                std::to_string(entries) + " entries for " + std::to_string(comm.size()) + " ranks");
}

}  // namespace

const char* to_string(TransportMode mode) {
  switch (mode) {
    case TransportMode::direct:
      return "direct";
    case TransportMode::host_staged:
      return "host_staged";
    case TransportMode::nccl:
      return "nccl";
  }
  return "unknown";
}

std::size_t RowBlocks::rows(std::size_t peer) const {
  std::size_t rows = 0;
  for (std::size_t b = first[peer]; b < first[peer + 1]; ++b) rows += count[b];
  return rows;
}

TransportStats& TransportStats::operator+=(const TransportStats& other) {
  bytes_to_host += other.bytes_to_host;
  bytes_from_host += other.bytes_from_host;
  staging_copies += other.staging_copies;
  staging_seconds += other.staging_seconds;
  mpi_seconds += other.mpi_seconds;
  return *this;
}

TransportMode default_transport_mode(bool host_accessible) {
  if (host_accessible) return TransportMode::direct;
#if defined(KOKKOS_ENABLE_CUDA) && DAA_ENABLE_CUDA
  return TransportMode::nccl;
#else
  return TransportMode::host_staged;
#endif
}

void check_transport_mode(TransportMode mode, bool host_accessible, const std::string& space,
                          const Communicator& comm) {
  const std::string where = "parallel::Transport over '" + comm.name() + "': ";
  if (mode == TransportMode::direct && !host_accessible)
    throw Error(where + "direct mode needs host-accessible memory, but " + space +
                " is not (the MPI here is not CUDA-aware): use host_staged or nccl");
#if defined(KOKKOS_ENABLE_CUDA) && DAA_ENABLE_CUDA
  if (mode == TransportMode::nccl && host_accessible)
    throw Error(where + "nccl mode needs device memory, but " + space + " is host memory");
#else
  if (mode == TransportMode::nccl)
    throw Error(where + "nccl mode is not built in (needs DAA_ENABLE_CUDA and a CUDA Kokkos)");
#endif
}

template <class M>
Transport<M>::PendingSend::~PendingSend() {
  // A send still in flight (an exception left a step midway) must not outlive its buffer.
  if (request_ != MPI_REQUEST_NULL) MPI_Cancel(&request_), MPI_Request_free(&request_);
}

template <class M>
Transport<M>::PendingSend::PendingSend(PendingSend&& other) noexcept
    : request_(std::exchange(other.request_, MPI_REQUEST_NULL)),
      nccl_pending_(std::exchange(other.nccl_pending_, false)),
      host_(std::move(other.host_)) {}

template <class M>
Transport<M>::Transport(const Communicator& comm, TransportMode mode) : comm_(comm), mode_(mode) {
  check_transport_mode(mode, host_accessible_v<M>, M::name(), comm);
#if defined(KOKKOS_ENABLE_CUDA) && DAA_ENABLE_CUDA
  if (mode == TransportMode::nccl) nccl_ = std::make_shared<cuda::NcclComm>(comm.comm());
#endif
}

template <class M>
template <class T>
Kokkos::View<T**, Kokkos::LayoutRight, Kokkos::HostSpace, Kokkos::MemoryUnmanaged>
Transport<M>::host_rows(std::size_t offset_elements, std::size_t rows, std::size_t width) {
  // Grows only, by at least half again, so that a slowly growing message size costs a
  // logarithmic number of reallocations; the caller takes every region it needs before use.
  const std::size_t bytes = (offset_elements + rows * width) * sizeof(T);
  if (host_.extent(0) < bytes) {
    const std::size_t grown = host_.extent(0) + host_.extent(0) / 2;
    host_ = Kokkos::View<unsigned char*, Kokkos::HostSpace>(
        Kokkos::view_alloc("transport_staging", Kokkos::WithoutInitializing),
        std::max(bytes, grown));
  }
  using HostRows =
      Kokkos::View<T**, Kokkos::LayoutRight, Kokkos::HostSpace, Kokkos::MemoryUnmanaged>;
  return HostRows(reinterpret_cast<T*>(host_.data()) + offset_elements, rows, width);
}

template <class M>
template <class T, class Ranges, class Exchange>
TransportStats Transport<M>::staged_exchange(Rows<const T> send, Rows<T> recv, const Ranges& ranges,
                                             const Exchange& exchange) {
  TransportStats stats;
  const T* send_data = send.data();
  T* recv_data = recv.data();
  std::vector<RowRange> received;
  decltype(host_rows<T>(0, 0, 0)) recv_host;
  if (mode_ == TransportMode::host_staged) {
    const std::size_t width = send.extent(1);
    // Both regions first: taking the second may reallocate the buffer under the first.
    host_rows<T>(0, send.extent(0) + recv.extent(0), width);
    const auto send_host = host_rows<T>(0, send.extent(0), width);
    recv_host = host_rows<T>(send.extent(0) * width, recv.extent(0), width);
    stage(send_host, send, ranges(true), stats.bytes_to_host, stats);
    received = ranges(false);
    send_data = send_host.data();
    recv_data = recv_host.data();
  }
  const auto start = Clock::now();
  exchange(send_data, recv_data);
  stats.mpi_seconds = seconds_since(start);
  // Only the rows MPI wrote go back: the rest of `recv` (this rank's own block) is the caller's.
  if (mode_ == TransportMode::host_staged)
    stage(recv, recv_host, received, stats.bytes_from_host, stats);
  total_ += stats;
  return stats;
}

template <class M>
template <class T>
TransportStats Transport<M>::all_to_all_rows(Rows<const T> send,
                                             std::span<const std::size_t> send_counts,
                                             std::span<const std::size_t> send_displs, Rows<T> recv,
                                             std::span<const std::size_t> recv_counts,
                                             std::span<const std::size_t> recv_displs,
                                             bool skip_self) {
  check_peers(send_counts.size(), comm_, "send_counts");
  check_peers(send_displs.size(), comm_, "send_displs");
  check_peers(recv_counts.size(), comm_, "recv_counts");
  check_peers(recv_displs.size(), comm_, "recv_displs");
  const std::size_t width = send.extent(1);
  const int skip = skip_self ? comm_.rank() : -1;
#if defined(KOKKOS_ENABLE_CUDA) && DAA_ENABLE_CUDA
  if (mode_ == TransportMode::nccl) {
    if constexpr (!std::is_same_v<T, float>) {
      throw Error("parallel::Transport: nccl mode moves float rows only");
    } else {
      TransportStats stats;
      std::vector<std::size_t> sc(send_counts.size()), sd(sc.size()), rc(sc.size()), rd(sc.size());
      for (std::size_t p = 0; p < sc.size(); ++p) {
        sc[p] = int(p) == skip ? 0 : send_counts[p] * width;
        rc[p] = int(p) == skip ? 0 : recv_counts[p] * width;
        sd[p] = send_displs[p] * width;
        rd[p] = recv_displs[p] * width;
      }
      const auto start = Clock::now();
      nccl_->all_to_all_v(send.data(), sc, sd, recv.data(), rc, rd, Kokkos::Cuda().cuda_stream());
      Kokkos::fence();
      stats.mpi_seconds = seconds_since(start);
      total_ += stats;
      return stats;
    }
  }
#endif
  element_counts(send_counts, width, skip, send_counts_, "parallel::Transport: send count");
  element_counts(send_displs, width, -1, send_displs_, "parallel::Transport: send displacement");
  element_counts(recv_counts, width, skip, recv_counts_, "parallel::Transport: receive count");
  element_counts(recv_displs, width, -1, recv_displs_, "parallel::Transport: receive displacement");
  return staged_exchange(
      send, recv,
      [&](bool sending) {
        return sending ? moved_ranges(send_counts, send_displs, skip)
                       : moved_ranges(recv_counts, recv_displs, skip);
      },
      [&](const T* send_data, T* recv_data) {
        DAA_MPI_CHECK(MPI_Alltoallv(mpi_buffer(send_data), send_counts_.data(), send_displs_.data(),
                                    mpi_type<T>(), mpi_buffer(recv_data), recv_counts_.data(),
                                    recv_displs_.data(), mpi_type<T>(), comm_.comm()));
      });
}

template <class M>
template <class T>
TransportStats Transport<M>::all_to_all_blocks(Rows<const T> send, const RowBlocks& send_blocks,
                                               Rows<T> recv, const RowBlocks& recv_blocks,
                                               bool skip_self) {
  check_peers(send_blocks.first.size() - 1, comm_, "send_blocks");
  check_peers(recv_blocks.first.size() - 1, comm_, "recv_blocks");
  if (mode_ == TransportMode::nccl)
    throw Error("parallel::Transport over '" + comm_.name() +
                "': all_to_all_blocks needs MPI datatypes, which nccl mode does not have");
  const std::size_t width = send.extent(1);
  const int skip = skip_self ? comm_.rank() : -1;
  Datatypes owned;
  MPI_Datatype row = MPI_DATATYPE_NULL;
  DAA_MPI_CHECK(
      MPI_Type_contiguous(mpi_count(width, "parallel::Transport: row width"), mpi_type<T>(), &row));
  row = owned.commit(row);
  std::vector<int> send_counts, recv_counts;
  std::vector<MPI_Datatype> send_types, recv_types;
  peer_types(send_blocks, row, skip, owned, send_counts, send_types,
             "parallel::Transport: send block");
  peer_types(recv_blocks, row, skip, owned, recv_counts, recv_types,
             "parallel::Transport: receive block");
  const std::vector<int> zero(std::size_t(comm_.size()), 0);  // byte displacements

  // Staged, the host buffers mirror the views row for row, so the same datatypes serve.
  return staged_exchange(
      send, recv,
      [&](bool sending) {
        return sending ? block_ranges(send_blocks, skip) : block_ranges(recv_blocks, skip);
      },
      [&](const T* send_data, T* recv_data) {
        DAA_MPI_CHECK(MPI_Alltoallw(mpi_buffer(send_data), send_counts.data(), zero.data(),
                                    send_types.data(), mpi_buffer(recv_data), recv_counts.data(),
                                    zero.data(), recv_types.data(), comm_.comm()));
      });
}

template <class M>
template <class T>
TransportStats Transport<M>::isend(Rows<const T> rows, int peer, int tag, PendingSend& send) {
  TransportStats stats;
  wait(send);  // a previous send through this slot (its seconds count in total_stats)
  const int count = mpi_count(rows.size(), "parallel::Transport: one message (rows x width)");
#if defined(KOKKOS_ENABLE_CUDA) && DAA_ENABLE_CUDA
  if (mode_ == TransportMode::nccl) {
    if constexpr (!std::is_same_v<T, float>) {
      throw Error("parallel::Transport: nccl mode moves float rows only");
    } else {
      // Stream-ordered, not waited for here: wait() synchronizes the stream.
      nccl_->send(rows.data(), rows.size(), peer, Kokkos::Cuda().cuda_stream());
      send.nccl_pending_ = true;
      total_ += stats;
      return stats;
    }
  }
#endif
  const T* data = rows.data();
  if (mode_ == TransportMode::host_staged) {
    // Staged into the send's own buffer, so several sends can be in flight at once.
    const std::size_t bytes = rows.size() * sizeof(T);
    if (send.host_.extent(0) < bytes)
      send.host_ = Kokkos::View<unsigned char*, Kokkos::HostSpace>(
          Kokkos::view_alloc("transport_send_staging", Kokkos::WithoutInitializing), bytes);
    const Kokkos::View<T**, Kokkos::LayoutRight, Kokkos::HostSpace, Kokkos::MemoryUnmanaged> host(
        reinterpret_cast<T*>(send.host_.data()), rows.extent(0), rows.extent(1));
    if (rows.extent(0) > 0)
      stage(host, rows, {RowRange(0, rows.extent(0))}, stats.bytes_to_host, stats);
    data = host.data();
  }
  DAA_MPI_CHECK(
      MPI_Isend(mpi_buffer(data), count, mpi_type<T>(), peer, tag, comm_.comm(), &send.request_));
  total_ += stats;
  return stats;
}

template <class M>
template <class T>
TransportStats Transport<M>::recv(Rows<T> rows, int peer, int tag) {
  TransportStats stats;
  const int count = mpi_count(rows.size(), "parallel::Transport: one message (rows x width)");
  const auto start = Clock::now();
#if defined(KOKKOS_ENABLE_CUDA) && DAA_ENABLE_CUDA
  if (mode_ == TransportMode::nccl) {
    if constexpr (!std::is_same_v<T, float>) {
      throw Error("parallel::Transport: nccl mode moves float rows only");
    } else {
      nccl_->recv(rows.data(), rows.size(), peer, Kokkos::Cuda().cuda_stream());
      Kokkos::fence();
      stats.mpi_seconds = seconds_since(start);
      total_ += stats;
      return stats;
    }
  }
#endif
  if (mode_ == TransportMode::host_staged) {
    const auto host = host_rows<T>(0, rows.extent(0), rows.extent(1));
    DAA_MPI_CHECK(MPI_Recv(mpi_buffer(host.data()), count, mpi_type<T>(), peer, tag, comm_.comm(),
                           MPI_STATUS_IGNORE));
    stats.mpi_seconds = seconds_since(start);
    if (rows.extent(0) > 0)
      stage(rows, host, {RowRange(0, rows.extent(0))}, stats.bytes_from_host, stats);
  } else {
    DAA_MPI_CHECK(MPI_Recv(mpi_buffer(rows.data()), count, mpi_type<T>(), peer, tag, comm_.comm(),
                           MPI_STATUS_IGNORE));
    stats.mpi_seconds = seconds_since(start);
  }
  total_ += stats;
  return stats;
}

template <class M>
double Transport<M>::wait(PendingSend& send) {
  const auto start = Clock::now();
  if (send.nccl_pending_) {
    Kokkos::fence();
    send.nccl_pending_ = false;
  }
  if (send.request_ != MPI_REQUEST_NULL) DAA_MPI_CHECK(MPI_Wait(&send.request_, MPI_STATUS_IGNORE));
  const double seconds = seconds_since(start);
  total_.mpi_seconds += seconds;
  return seconds;
}

template <class M>
template <class T>
TransportStats Transport<M>::all_reduce_sum(Rows<T> data) {
  TransportStats stats;
  const int count = mpi_count(data.size(), "parallel::Transport: all-reduce");
  auto start = Clock::now();
#if defined(KOKKOS_ENABLE_CUDA) && DAA_ENABLE_CUDA
  if (mode_ == TransportMode::nccl) {
    if constexpr (!std::is_same_v<T, float>) {
      throw Error("parallel::Transport: nccl mode moves float rows only");
    } else {
      nccl_->all_reduce_sum(data.data(), data.data(), data.size(), Kokkos::Cuda().cuda_stream());
      Kokkos::fence();
      stats.mpi_seconds = seconds_since(start);
      total_ += stats;
      return stats;
    }
  }
#endif
  T* buffer = data.data();
  decltype(host_rows<T>(0, 0, 0)) host;
  const std::vector<RowRange> all{RowRange(0, data.extent(0))};
  if (mode_ == TransportMode::host_staged) {
    host = host_rows<T>(0, data.extent(0), data.extent(1));
    if (data.extent(0) > 0) stage(host, data, all, stats.bytes_to_host, stats);
    buffer = host.data();
  }
  start = Clock::now();
  DAA_MPI_CHECK(
      MPI_Allreduce(MPI_IN_PLACE, mpi_buffer(buffer), count, mpi_type<T>(), MPI_SUM, comm_.comm()));
  stats.mpi_seconds = seconds_since(start);
  if (mode_ == TransportMode::host_staged && data.extent(0) > 0)
    stage(data, host, all, stats.bytes_from_host, stats);
  total_ += stats;
  return stats;
}

template class Transport<kernels::MemSpace>;

#define DAA_TRANSPORT_INSTANTIATE(T)                                                      \
  template TransportStats Transport<kernels::MemSpace>::all_to_all_rows<T>(               \
      Rows<const T>, std::span<const std::size_t>, std::span<const std::size_t>, Rows<T>, \
      std::span<const std::size_t>, std::span<const std::size_t>, bool);                  \
  template TransportStats Transport<kernels::MemSpace>::all_to_all_blocks<T>(             \
      Rows<const T>, const RowBlocks&, Rows<T>, const RowBlocks&, bool);                  \
  template TransportStats Transport<kernels::MemSpace>::isend<T>(Rows<const T>, int, int, \
                                                                 PendingSend&);           \
  template TransportStats Transport<kernels::MemSpace>::recv<T>(Rows<T>, int, int);       \
  template TransportStats Transport<kernels::MemSpace>::all_reduce_sum<T>(Rows<T>);
DAA_TRANSPORT_INSTANTIATE(float)
DAA_TRANSPORT_INSTANTIATE(double)
#undef DAA_TRANSPORT_INSTANTIATE

}  // namespace daa::parallel
