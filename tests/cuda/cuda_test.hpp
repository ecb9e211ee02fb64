// Shared pieces of the CUDA adapter tests (plain programs, no GoogleTest, so scripts/gpu-check can
// build them on a machine with only CUDA): the skip rule, device buffers, NaN poisoning, random
// inputs and float64 references. Exit 0 pass, 1 fail, 77 skipped (ctest's SKIP_RETURN_CODE).
#pragma once

#include "cuda_device.hpp"
#include "daa/cuda/check.hpp"

#include <cuda_runtime_api.h>
#if DAA_CUDA_WITH_MPI
#include <mpi.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace daa::cuda::test {

// Exits 77 with "skipped: no CUDA device" where the runtime finds no device (no driver, or none
// visible), so ctest counts the test as skipped, not passed.
inline int device_count_or_skip() {
  std::string why;
  const int count = cuda_device_count(&why);
  if (count == 0) {
    std::printf("skipped: no CUDA device (%s)\n", why.c_str());
    std::exit(77);
  }
  return count;
}

// The processes of an NCCL test or benchmark: the MPI ranks where the adapters were built with
// MPI (a node's i-th rank on its i-th GPU), else one process. Ranks::start returns false on every
// rank, after printing why and finishing MPI, where any node has fewer GPUs than ranks (exit 77).
struct Ranks {
  int rank = 0, size = 1, local_rank = 0, local_size = 1;

  bool start(int& argc, char**& argv) {
#if DAA_CUDA_WITH_MPI
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &local_rank);
    MPI_Comm_size(node, &local_size);
    MPI_Comm_free(&node);
#else
    (void)argc;
    (void)argv;
#endif
    int devices = 0;
    int enough = cudaGetDeviceCount(&devices) == cudaSuccess && devices >= local_size;
#if DAA_CUDA_WITH_MPI
    // Nodes may differ: all ranks go on, or all skip, never half in NCCL's set-up.
    MPI_Allreduce(MPI_IN_PLACE, &enough, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
#endif
    if (enough) return true;
    if (rank == 0)
      std::printf("skipped: no CUDA device for each of the %d ranks on this node (%d found)\n",
                  local_size, devices);
#if DAA_CUDA_WITH_MPI
    MPI_Finalize();
#endif
    return false;
  }

  // The worst status over the ranks (any rank's failure fails the run); finishes MPI.
  int finish(int status) const {
#if DAA_CUDA_WITH_MPI
    int worst = 0;
    MPI_Allreduce(&status, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return worst;
#else
    return status;
#endif
  }
};

// Counts failed expectations and prints each with what was compared.
struct Checks {
  int failed = 0;
  void expect(bool ok, const std::string& what) {
    std::printf("%s: %s\n", ok ? "ok" : "FAILED", what.c_str());
    if (!ok) ++failed;
  }
  int exit_code() const {
    std::printf("%s\n", failed == 0 ? "all checks passed" : "some checks failed");
    return failed == 0 ? 0 : 1;
  }
};

template <class T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(std::size_t count) : count_(count) {
    // One element at least: cudaMalloc of 0 bytes returns no usable pointer.
    DAA_CUDA_CHECK(cudaMalloc(&data_, std::max<std::size_t>(count, 1) * sizeof(T)));
  }
  ~DeviceBuffer() { cudaFree(data_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  T* get() const { return data_; }
  std::size_t size() const { return count_; }
  void upload(const std::vector<T>& host) {
    DAA_CUDA_CHECK(cudaMemcpy(data_, host.data(), count_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> host(count_);
    DAA_CUDA_CHECK(cudaMemcpy(host.data(), data_, count_ * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }
  // All bits set: a NaN in fp32 and in bf16, so an output the call did not write shows up.
  void poison() { DAA_CUDA_CHECK(cudaMemset(data_, 0xFF, count_ * sizeof(T))); }

 private:
  T* data_ = nullptr;
  std::size_t count_ = 0;
};

inline std::vector<float> random_floats(std::size_t count, std::uint32_t seed) {
  std::mt19937 generator(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> values(count);
  for (auto& v : values) v = uniform(generator);
  return values;
}

// bfloat16 bits of x rounded to nearest, ties to even (finite inputs), and back: the host's own
// rounding, independent of cuda_bf16.h.
inline std::uint16_t bf16_bits(float x) {
  std::uint32_t bits = 0;
  std::memcpy(&bits, &x, sizeof(bits));
  if (std::isnan(x)) return static_cast<std::uint16_t>((bits >> 16) | 0x40);
  bits += 0x7FFF + ((bits >> 16) & 1);
  return static_cast<std::uint16_t>(bits >> 16);
}
inline float bf16_value(std::uint16_t b) {
  const std::uint32_t bits = std::uint32_t(b) << 16;
  float x = 0;
  std::memcpy(&x, &bits, sizeof(x));
  return x;
}

// Row-major float64 reference: C = alpha op(A) op(B) + beta C.
inline void reference_gemm(bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k,
                           double alpha, const std::vector<float>& a, std::size_t lda,
                           const std::vector<float>& b, std::size_t ldb, double beta,
                           std::vector<double>& c, std::size_t ldc) {
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < n; ++j) {
      double sum = 0;
      for (std::size_t p = 0; p < k; ++p) {
        const double x = trans_a ? a[p * lda + i] : a[i * lda + p];
        const double y = trans_b ? b[j * ldb + p] : b[p * ldb + j];
        sum += x * y;
      }
      c[i * ldc + j] = alpha * sum + beta * c[i * ldc + j];
    }
}

// ||got - ref|| / ||ref|| over the m x n block (leading dimension ld); infinity on any NaN/Inf.
template <class Got>
double relative_error(const std::vector<Got>& got, const std::vector<double>& ref, std::size_t m,
                      std::size_t n, std::size_t ld, float (*to_float)(Got) = nullptr) {
  double diff = 0;
  double norm = 0;
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < n; ++j) {
      const double g = to_float ? to_float(got[i * ld + j]) : double(got[i * ld + j]);
      if (!std::isfinite(g)) return INFINITY;
      diff += (g - ref[i * ld + j]) * (g - ref[i * ld + j]);
      norm += ref[i * ld + j] * ref[i * ld + j];
    }
  return norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff);
}

}  // namespace daa::cuda::test
