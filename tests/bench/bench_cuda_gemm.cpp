// GPU GEMM rates through daa::cuda::Blas (issue 13), run by scripts/gpu-check: the experts'
// grouped bf16 GEMM (uneven tokens per expert, cublasGemmGroupedBatchedEx) against one dense bf16
// cuBLAS GEMM of the same FLOPs (goal: ratio >= 0.8), and dense bf16 and fp32 GEMM rates (the
// peak a training step's model-FLOP utilization is measured against). Exit 77 without a GPU.
#include "../cuda/cuda_test.hpp"
#include "daa/cuda/gemm.hpp"

#include <cstdio>
#include <functional>
#include <numeric>
#include <vector>

using daa::cuda::Blas;
using daa::cuda::Trans;
using namespace daa::cuda::test;

namespace {

// Milliseconds per call: 3 warm-up calls, then the mean of `iterations` timed by CUDA events.
double time_ms(const std::function<void()>& call, int iterations = 20) {
  for (int i = 0; i < 3; ++i) call();
  cudaEvent_t start, stop;
  DAA_CUDA_CHECK(cudaEventCreate(&start));
  DAA_CUDA_CHECK(cudaEventCreate(&stop));
  DAA_CUDA_CHECK(cudaEventRecord(start));
  for (int i = 0; i < iterations; ++i) call();
  DAA_CUDA_CHECK(cudaEventRecord(stop));
  DAA_CUDA_CHECK(cudaEventSynchronize(stop));
  float ms = 0;
  DAA_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  DAA_CUDA_CHECK(cudaEventDestroy(start));
  DAA_CUDA_CHECK(cudaEventDestroy(stop));
  return double(ms) / iterations;
}

double report(const char* name, double flops, double ms) {
  const double tflops = flops / (ms * 1e-3) / 1e12;
  std::printf("bench_cuda_gemm: %-34s %9.3f ms %8.1f TFLOP/s\n", name, ms, tflops);
  return tflops;
}

}  // namespace

int main() {
  device_count_or_skip();
  try {
    cudaDeviceProp prop{};
    DAA_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("bench_cuda_gemm: device %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
    Blas blas;

    // Experts: 8 experts, d_model 2048 -> d_ff 8192, 16384 routed tokens spread unevenly
    // (+-40 % around the mean, as a router's load is).
    const std::size_t k = 2048, n = 8192;
    const std::vector<int> rows = {2867, 1229, 2458, 1638, 2253, 1843, 2662, 1434};
    const std::size_t total = std::accumulate(rows.begin(), rows.end(), std::size_t(0));
    const double flops = 2.0 * double(total) * double(n) * double(k);
    DeviceBuffer<std::uint16_t> a(total * k), b(rows.size() * k * n), c(total * n);
    // Values do not change cuBLAS's speed; zeros keep the inputs finite.
    DAA_CUDA_CHECK(cudaMemset(a.get(), 0, a.size() * 2));
    DAA_CUDA_CHECK(cudaMemset(b.get(), 0, b.size() * 2));
    auto* a16 = reinterpret_cast<const __nv_bfloat16*>(a.get());
    auto* b16 = reinterpret_cast<const __nv_bfloat16*>(b.get());
    auto* c16 = reinterpret_cast<__nv_bfloat16*>(c.get());
    const double grouped =
        report("grouped bf16 experts (8, uneven)", flops, time_ms([&] {
                 blas.expert_gemm(Trans::no, rows, n, k, 1.0f, a16, b16, k * n, 0.0f, c16);
               }));
    // The same FLOPs as one GEMM with the same types (bf16 in and out, fp32 accumulate).
    const float one = 1.0f, zero = 0.0f;
    const double dense =
        report("dense bf16, same FLOPs", flops, time_ms([&] {
                 DAA_CUBLAS_CHECK(cublasGemmEx(blas.handle(), CUBLAS_OP_N, CUBLAS_OP_N, int(n),
                                               int(total), int(k), &one, b16, CUDA_R_16BF, int(n),
                                               a16, CUDA_R_16BF, int(k), &zero, c16, CUDA_R_16BF,
                                               int(n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
               }));
    std::printf("bench_cuda_gemm: grouped/dense ratio %.3f (goal >= 0.8)\n", grouped / dense);

    // Dense peaks at 8192^3: bf16 operands with fp32 result (Blas::gemm), and fp32.
    const std::size_t s = 8192;
    const double big = 2.0 * double(s) * double(s) * double(s);
    DeviceBuffer<std::uint16_t> x16(s * s), y16(s * s);
    DeviceBuffer<float> x(s * s), y(s * s), z(s * s);
    DAA_CUDA_CHECK(cudaMemset(x16.get(), 0, s * s * 2));
    DAA_CUDA_CHECK(cudaMemset(y16.get(), 0, s * s * 2));
    DAA_CUDA_CHECK(cudaMemset(x.get(), 0, s * s * 4));
    DAA_CUDA_CHECK(cudaMemset(y.get(), 0, s * s * 4));
    report("dense bf16 -> fp32 8192^3", big, time_ms([&] {
             blas.gemm(Trans::no, Trans::no, s, s, s, 1.0f,
                       reinterpret_cast<const __nv_bfloat16*>(x16.get()), s,
                       reinterpret_cast<const __nv_bfloat16*>(y16.get()), s, 0.0f, z.get(), s);
           }));
    report("dense fp32 8192^3", big,
           time_ms(
               [&] {
                 blas.gemm(Trans::no, Trans::no, s, s, s, 1.0f, x.get(), s, y.get(), s, 0.0f,
                           z.get(), s);
               },
               5));
  } catch (const std::exception& e) {
    std::printf("bench_cuda_gemm: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
