// NCCL transport (issue 13): all-reduce, uneven all-to-all (grouped ncclSend/ncclRecv, zero
// counts included) and p2p against values computed on the host, outputs poisoned first. Under
// MPI (mpiexec -n N, one device per rank on the node, else skipped) the communicator comes from
// MPI_COMM_WORLD; in a build without MPI it runs on one rank. Exit 77 without enough devices.
#include "cuda_test.hpp"
#include "daa/cuda/nccl_transport.hpp"

#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

#if DAA_CUDA_WITH_MPI
#include <mpi.h>
#endif

using namespace daa::cuda::test;

namespace {

// Elements rank `from` sends to rank `to`: uneven, and zero for one pair when size > 1.
std::size_t count_between(int from, int to, int size) {
  if (size > 1 && from == 0 && to == size - 1) return 0;
  return static_cast<std::size_t>(1000 + 317 * from + 41 * to);
}
// The value of element i of what `from` sends to `to`.
float value_between(int from, int to, std::size_t i) {
  return float(from) * 1e4f + float(to) * 1e2f + float(i % 97);
}

void run(int rank, int size, daa::cuda::NcclComm& comm, Checks& checks) {
  const std::string who = "rank " + std::to_string(rank) + "/" + std::to_string(size) + ": ";
  cudaStream_t stream = nullptr;
  DAA_CUDA_CHECK(cudaStreamCreate(&stream));

  // All-reduce: element i of rank r holds r + i, so the sum is size * i + size (size - 1) / 2.
  const std::size_t count = (1u << 20) + 7;
  std::vector<float> mine(count);
  for (std::size_t i = 0; i < count; ++i) mine[i] = float(rank) + float(i % 1000);
  DeviceBuffer<float> send(count), recv(count);
  send.upload(mine);
  recv.poison();
  comm.all_reduce_sum(send.get(), recv.get(), count, stream);
  DAA_CUDA_CHECK(cudaStreamSynchronize(stream));
  const auto sum = recv.download();
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < count; ++i)
    if (sum[i] != float(size) * float(i % 1000) + float(size * (size - 1) / 2)) ++wrong;
  checks.expect(wrong == 0, who + "all_reduce_sum of " + std::to_string(count) + " floats, " +
                                std::to_string(wrong) + " wrong");

  // Uneven all-to-all.
  std::vector<std::size_t> send_counts(size), send_offsets(size), recv_counts(size),
      recv_offsets(size);
  for (int p = 0; p < size; ++p) {
    send_counts[p] = count_between(rank, p, size);
    recv_counts[p] = count_between(p, rank, size);
  }
  std::exclusive_scan(send_counts.begin(), send_counts.end(), send_offsets.begin(), 0ul);
  std::exclusive_scan(recv_counts.begin(), recv_counts.end(), recv_offsets.begin(), 0ul);
  const std::size_t send_total = send_offsets.back() + send_counts.back();
  const std::size_t recv_total = recv_offsets.back() + recv_counts.back();
  std::vector<float> outgoing(send_total);
  for (int p = 0; p < size; ++p)
    for (std::size_t i = 0; i < send_counts[p]; ++i)
      outgoing[send_offsets[p] + i] = value_between(rank, p, i);
  DeviceBuffer<float> a2a_send(send_total), a2a_recv(recv_total);
  a2a_send.upload(outgoing);
  a2a_recv.poison();
  comm.all_to_all_v(a2a_send.get(), send_counts, send_offsets, a2a_recv.get(), recv_counts,
                    recv_offsets, stream);
  DAA_CUDA_CHECK(cudaStreamSynchronize(stream));
  const auto incoming = a2a_recv.download();
  wrong = 0;
  for (int p = 0; p < size; ++p)
    for (std::size_t i = 0; i < recv_counts[p]; ++i)
      if (incoming[recv_offsets[p] + i] != value_between(p, rank, i)) ++wrong;
  checks.expect(wrong == 0, who + "all_to_all_v of " + std::to_string(recv_total) +
                                " floats received (uneven counts), " + std::to_string(wrong) +
                                " wrong");

  // p2p around a ring (a pipeline's forward hand-off); one rank sends to itself.
  const int next = (rank + 1) % size, previous = (rank + size - 1) % size;
  DeviceBuffer<float> p2p_recv(4096);
  p2p_recv.poison();
  // Grouped, as a pipeline stage posts its send and receive together (no ordering deadlock).
  DAA_NCCL_CHECK(ncclGroupStart());
  comm.send(send.get(), 4096, next, stream);
  comm.recv(p2p_recv.get(), 4096, previous, stream);
  DAA_NCCL_CHECK(ncclGroupEnd());
  DAA_CUDA_CHECK(cudaStreamSynchronize(stream));
  const auto got = p2p_recv.download();
  wrong = 0;
  for (std::size_t i = 0; i < got.size(); ++i)
    if (got[i] != float(previous) + float(i % 1000)) ++wrong;
  checks.expect(wrong == 0, who + "send/recv of 4096 floats from rank " + std::to_string(previous) +
                                ", " + std::to_string(wrong) + " wrong");
  DAA_CUDA_CHECK(cudaStreamDestroy(stream));
}

}  // namespace

int main(int argc, char** argv) {
  Ranks ranks;
  if (!ranks.start(argc, argv)) return 77;
  const int rank = ranks.rank, size = ranks.size;
  Checks checks;
  int status = 0;
  try {
    DAA_CUDA_CHECK(cudaSetDevice(ranks.local_rank));
#if DAA_CUDA_WITH_MPI
    daa::cuda::NcclComm comm(MPI_COMM_WORLD);
#else
    daa::cuda::NcclComm comm(1, 0, daa::cuda::NcclComm::new_id());
#endif
    run(rank, size, comm, checks);
    status = checks.exit_code();
  } catch (const std::exception& e) {
    std::printf("FAILED: %s\n", e.what());
    status = 1;
  }
  return ranks.finish(status);
}
