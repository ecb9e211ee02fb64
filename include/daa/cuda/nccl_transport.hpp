// NCCL for device buffers (issue 13): a communicator made from an MPI communicator (MPI stays the
// control plane and broadcasts NCCL's unique id), all-reduce, all-to-all with uneven counts as
// grouped ncclSend/ncclRecv (NCCL's own all-to-all is equal-count only), and pipeline p2p.
// Every call is asynchronous on the given stream; buffers are device memory, counts in elements.
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstddef>
#include <span>

#if DAA_CUDA_WITH_MPI
#include <mpi.h>
#endif

namespace daa::cuda {

class NcclComm {
 public:
  // A fresh id for `NcclComm(size, rank, id)`: one rank makes it, every rank gets a copy.
  static ncclUniqueId new_id();
  // Collective over the `size` ranks that hold the same id; binds to the current CUDA device.
  NcclComm(int size, int rank, const ncclUniqueId& id);
#if DAA_CUDA_WITH_MPI
  // Collective over `comm`: rank 0 makes the id, MPI_Bcast hands it to the others. The caller
  // has selected this rank's device (cudaSetDevice) before.
  explicit NcclComm(MPI_Comm comm);
#endif
  ~NcclComm();
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  int rank() const {
    return rank_;
  }
  int size() const {
    return size_;
  }
  ncclComm_t get() const {
    return comm_;
  }

  // recv = sum over ranks of send (in place when send == recv).
  void all_reduce_sum(const float* send, float* recv, std::size_t count, cudaStream_t stream);
  // Rank r sends send_counts[p] elements from send + send_offsets[p] to each rank p and receives
  // recv_counts[p] into recv + recv_offsets[p]; counts may differ and be zero. Spans have size()
  // entries; the counts must match pairwise (what p sends to r is what r receives from p).
  void all_to_all_v(const float* send, std::span<const std::size_t> send_counts,
                    std::span<const std::size_t> send_offsets, float* recv,
                    std::span<const std::size_t> recv_counts,
                    std::span<const std::size_t> recv_offsets, cudaStream_t stream);
  // Pipeline p2p: blocking only in the stream's order (the peer posts the matching call).
  void send(const float* buffer, std::size_t count, int peer, cudaStream_t stream);
  void recv(float* buffer, std::size_t count, int peer, cudaStream_t stream);

 private:
  void check_peer(int peer, const char* what) const;

  ncclComm_t comm_ = nullptr;
  int rank_ = 0;
  int size_ = 0;
};

}  // namespace daa::cuda
