// NcclComm: NCCL communicators and the collectives of daa/cuda/nccl_transport.hpp. Uneven
// all-to-all is one ncclGroupStart/End around a send and a receive per peer, so NCCL schedules
// them together and no pair of ranks waits on the other's order.
#include "daa/cuda/nccl_transport.hpp"

#include "daa/core/error.hpp"
#include "daa/cuda/check.hpp"

#include <string>

namespace daa::cuda {

ncclUniqueId NcclComm::new_id() {
  ncclUniqueId id;
  DAA_NCCL_CHECK(ncclGetUniqueId(&id));
  return id;
}

NcclComm::NcclComm(int size, int rank, const ncclUniqueId& id) : rank_(rank), size_(size) {
  if (size < 1 || rank < 0 || rank >= size)
    throw daa::Error("nccl: rank " + std::to_string(rank) + " of " + std::to_string(size) +
                     " is no rank of the communicator");
  DAA_NCCL_CHECK(ncclCommInitRank(&comm_, size, id, rank));
}

#if DAA_CUDA_WITH_MPI
namespace {
ncclUniqueId id_over_mpi(MPI_Comm comm) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  ncclUniqueId id{};
  if (rank == 0) id = NcclComm::new_id();
  const int rc = MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, comm);
  if (rc != MPI_SUCCESS) {
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    MPI_Error_string(rc, text, &length);
    throw daa::Error("nccl: " + std::string(__FILE__) + ":" + std::to_string(__LINE__) + ": rank " +
                     std::to_string(rank) +
                     ": MPI_Bcast of the NCCL unique id failed: " + std::string(text, length));
  }
  return id;
}
int comm_rank(MPI_Comm comm) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  return rank;
}
int comm_size(MPI_Comm comm) {
  int size = 0;
  MPI_Comm_size(comm, &size);
  return size;
}
}  // namespace

NcclComm::NcclComm(MPI_Comm comm) : NcclComm(comm_size(comm), comm_rank(comm), id_over_mpi(comm)) {}
#endif

NcclComm::~NcclComm() {
  if (comm_ != nullptr) ncclCommDestroy(comm_);
}

void NcclComm::check_peer(int peer, const char* what) const {
  if (peer < 0 || peer >= size_)
    throw daa::Error("nccl: " + std::string(what) + ": peer " + std::to_string(peer) +
                     " is no rank of the communicator (size " + std::to_string(size_) + ")");
}

void NcclComm::all_reduce_sum(const float* send, float* recv, std::size_t count,
                              cudaStream_t stream) {
  DAA_NCCL_CHECK(ncclAllReduce(send, recv, count, ncclFloat32, ncclSum, comm_, stream));
}

void NcclComm::all_to_all_v(const float* send, std::span<const std::size_t> send_counts,
                            std::span<const std::size_t> send_offsets, float* recv,
                            std::span<const std::size_t> recv_counts,
                            std::span<const std::size_t> recv_offsets, cudaStream_t stream) {
  const auto n = static_cast<std::size_t>(size_);
  if (send_counts.size() != n || send_offsets.size() != n || recv_counts.size() != n ||
      recv_offsets.size() != n)
    throw daa::Error("nccl: all_to_all_v: counts and offsets need " + std::to_string(n) +
                     " entries (one per rank), got " + std::to_string(send_counts.size()) + ", " +
                     std::to_string(send_offsets.size()) + ", " +
                     std::to_string(recv_counts.size()) + ", " +
                     std::to_string(recv_offsets.size()));
  DAA_NCCL_CHECK(ncclGroupStart());
  try {
    for (int peer = 0; peer < size_; ++peer) {
      const auto p = static_cast<std::size_t>(peer);
      // Zero counts are legal in NCCL but skipped: no message is cheaper than an empty one.
      if (send_counts[p] > 0)
        DAA_NCCL_CHECK(
            ncclSend(send + send_offsets[p], send_counts[p], ncclFloat32, peer, comm_, stream));
      if (recv_counts[p] > 0)
        DAA_NCCL_CHECK(
            ncclRecv(recv + recv_offsets[p], recv_counts[p], ncclFloat32, peer, comm_, stream));
    }
  } catch (...) {
    // Close the group before the error travels on, so this thread's next NCCL call is not
    // silently taken into a half-built group.
    ncclGroupEnd();
    throw;
  }
  DAA_NCCL_CHECK(ncclGroupEnd());
}

void NcclComm::send(const float* buffer, std::size_t count, int peer, cudaStream_t stream) {
  check_peer(peer, "send");
  DAA_NCCL_CHECK(ncclSend(buffer, count, ncclFloat32, peer, comm_, stream));
}

void NcclComm::recv(float* buffer, std::size_t count, int peer, cudaStream_t stream) {
  check_peer(peer, "recv");
  DAA_NCCL_CHECK(ncclRecv(buffer, count, ncclFloat32, peer, comm_, stream));
}

}  // namespace daa::cuda
