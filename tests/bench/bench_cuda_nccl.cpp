// NCCL transport rates (issue 13), run by scripts/gpu-check: all-reduce and equal-count
// all-to-all (through all_to_all_v's grouped send/recv) from 1 MiB to 256 MiB, as algorithm and
// bus bandwidth in nccl-tests' sense (bus = alg x 2(n-1)/n for all-reduce, x (n-1)/n for
// all-to-all; 0 on one rank, where no link is used). Exit 77 without a device per rank.
#include "../cuda/cuda_test.hpp"
#include "daa/cuda/nccl_transport.hpp"

#include <cstdio>
#include <vector>

#if DAA_CUDA_WITH_MPI
#include <mpi.h>
#endif

using namespace daa::cuda::test;

int main(int argc, char** argv) {
  Ranks ranks;
  if (!ranks.start(argc, argv)) return 77;
  const int rank = ranks.rank, size = ranks.size;
  int status = 0;
  try {
    DAA_CUDA_CHECK(cudaSetDevice(ranks.local_rank));
#if DAA_CUDA_WITH_MPI
    daa::cuda::NcclComm comm(MPI_COMM_WORLD);
#else
    daa::cuda::NcclComm comm(1, 0, daa::cuda::NcclComm::new_id());
#endif
    cudaStream_t stream = nullptr;
    DAA_CUDA_CHECK(cudaStreamCreate(&stream));
    const std::size_t max_count = (256u << 20) / sizeof(float);
    DeviceBuffer<float> send(max_count), recv(max_count);
    DAA_CUDA_CHECK(cudaMemset(send.get(), 0, max_count * sizeof(float)));
    cudaEvent_t start, stop;
    DAA_CUDA_CHECK(cudaEventCreate(&start));
    DAA_CUDA_CHECK(cudaEventCreate(&stop));
    const double n = size;
    for (std::size_t bytes = 1u << 20; bytes <= (256u << 20); bytes *= 4) {
      const std::size_t count = bytes / sizeof(float);
      const std::size_t per_peer = count / std::size_t(size);
      std::vector<std::size_t> counts(size, per_peer), offsets(size);
      for (int p = 0; p < size; ++p) offsets[p] = std::size_t(p) * per_peer;
      for (int op = 0; op < 2; ++op) {
        const auto call = [&] {
          if (op == 0)
            comm.all_reduce_sum(send.get(), recv.get(), count, stream);
          else
            comm.all_to_all_v(send.get(), counts, offsets, recv.get(), counts, offsets, stream);
        };
        const int iterations = 20;
        for (int i = 0; i < 3; ++i) call();
        DAA_CUDA_CHECK(cudaEventRecord(start, stream));
        for (int i = 0; i < iterations; ++i) call();
        DAA_CUDA_CHECK(cudaEventRecord(stop, stream));
        DAA_CUDA_CHECK(cudaEventSynchronize(stop));
        float ms = 0;
        DAA_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
        const double seconds = double(ms) * 1e-3 / iterations;
        const double alg = double(bytes) / seconds / 1e9;
        const double bus = op == 0 ? alg * 2 * (n - 1) / n : alg * (n - 1) / n;
        if (rank == 0)
          std::printf(
              "bench_cuda_nccl: %-10s ranks=%d %10zu bytes %9.3f ms alg %7.1f GB/s bus "
              "%7.1f GB/s\n",
              op == 0 ? "all_reduce" : "all_to_all", size, bytes, seconds * 1e3, alg, bus);
      }
    }
    DAA_CUDA_CHECK(cudaStreamDestroy(stream));
  } catch (const std::exception& e) {
    std::printf("bench_cuda_nccl: error: %s\n", e.what());
    status = 1;
  }
  return ranks.finish(status);
}
