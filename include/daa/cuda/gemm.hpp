// The cuBLAS adapter: row-major GEMMs on device pointers, fp32 and bf16 (fp32 accumulate), and the
// experts' grouped GEMM through cublasGemmGroupedBatchedEx. What kernels/linalg.hpp will call in
// the CUDA build; no Kokkos here, so it compiles wherever nvcc and cuBLAS are.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <span>

namespace daa::cuda {

enum class Trans { no, yes };

// One cuBLAS handle bound to one stream, plus a device scratch buffer for the grouped GEMM's
// pointer arrays. Calls are asynchronous on that stream; every pointer is device memory.
// Row-major like the views: C[m,n] = alpha * op(A)[m,k] * op(B)[k,n] + beta * C, leading
// dimensions in elements. BLAS semantics: beta = 0 does not read C. Sizes above INT_MAX are
// refused by name (cuBLAS takes int).
class Blas {
 public:
  explicit Blas(cudaStream_t stream = nullptr);
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;

  cublasHandle_t handle() const { return handle_; }
  cudaStream_t stream() const { return stream_; }

  // fp32 operands and result, fp32 arithmetic (no TF32: the math mode stays the default).
  void gemm(Trans trans_a, Trans trans_b, std::size_t m, std::size_t n, std::size_t k, float alpha,
            const float* a, std::size_t lda, const float* b, std::size_t ldb, float beta, float* c,
            std::size_t ldc);
  // Mixed precision: bf16 operands, fp32 accumulation and fp32 result (kernels' Precision::bf16).
  void gemm(Trans trans_a, Trans trans_b, std::size_t m, std::size_t n, std::size_t k, float alpha,
            const __nv_bfloat16* a, std::size_t lda, const __nv_bfloat16* b, std::size_t ldb,
            float beta, float* c, std::size_t ldc);

  // The experts' GEMM in one call: expert e multiplies its rows[e] packed rows of A (the tokens
  // routed to it, expert after expert: A is [sum(rows), k] with leading dimension k when not
  // transposed) by its own weight B_e = b + e * stride_b ([k, n] row-major, or [n, k] when
  // trans_b), into its rows of C ([sum(rows), n], leading dimension n). Experts with no rows are
  // skipped. fp32: fp32 everywhere; bf16: bf16 A, B and C with fp32 accumulation (the type set
  // cublasGemmGroupedBatchedEx supports for bf16).
  void expert_gemm(Trans trans_b, std::span<const int> rows, std::size_t n, std::size_t k,
                   float alpha, const float* a, const float* b, std::size_t stride_b, float beta,
                   float* c);
  void expert_gemm(Trans trans_b, std::span<const int> rows, std::size_t n, std::size_t k,
                   float alpha, const __nv_bfloat16* a, const __nv_bfloat16* b,
                   std::size_t stride_b, float beta, __nv_bfloat16* c);

 private:
  void expert_gemm_any(Trans trans_b, std::span<const int> rows, std::size_t n, std::size_t k,
                       float alpha, const void* a, const void* b, std::size_t stride_b, float beta,
                       void* c, cudaDataType_t type, std::size_t element_bytes);
  void* pointer_scratch(std::size_t bytes);

  cublasHandle_t handle_ = nullptr;
  cudaStream_t stream_ = nullptr;
  void* scratch_ = nullptr;
  std::size_t scratch_bytes_ = 0;
};

}  // namespace daa::cuda
