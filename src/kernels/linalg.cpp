// Host BLAS back end of the linalg adapter (OpenBLAS cblas). The CUDA build adds a cuBLAS twin.
#include "daa/kernels/linalg.hpp"

#include <cblas.h>

#include <algorithm>

namespace daa::kernels {
namespace {

CBLAS_TRANSPOSE to_cblas(Trans t) {
  return t == Trans::no ? CblasNoTrans : CblasTrans;
}

// BLAS rejects a leading dimension of 0 even for empty operands.
int ld(std::size_t v) {
  return static_cast<int>(std::max<std::size_t>(v, 1));
}

}  // namespace

void gemm(Trans trans_a, Trans trans_b, std::size_t m, std::size_t n, std::size_t k, float alpha,
          const float* a, std::size_t lda, const float* b, std::size_t ldb, float beta, float* c,
          std::size_t ldc) {
  if (m == 0 || n == 0) return;
  cblas_sgemm(CblasRowMajor, to_cblas(trans_a), to_cblas(trans_b), static_cast<int>(m),
              static_cast<int>(n), static_cast<int>(k), alpha, a, ld(lda), b, ld(ldb), beta, c,
              ld(ldc));
}

void gemm(Trans trans_a, Trans trans_b, std::size_t m, std::size_t n, std::size_t k, double alpha,
          const double* a, std::size_t lda, const double* b, std::size_t ldb, double beta,
          double* c, std::size_t ldc) {
  if (m == 0 || n == 0) return;
  cblas_dgemm(CblasRowMajor, to_cblas(trans_a), to_cblas(trans_b), static_cast<int>(m),
              static_cast<int>(n), static_cast<int>(k), alpha, a, ld(lda), b, ld(ldb), beta, c,
              ld(ldc));
}

namespace {

// OpenBLAS 0.3.21 has no batched sgemm; small products still run at most of a large one's rate
// (tests/bench/bench_attention.cpp), so a loop of calls is the host implementation.
template <class T>
void gemm_loop(Trans trans_a, Trans trans_b, std::size_t m, std::size_t n, std::size_t k, T alpha,
               const T* a, std::size_t lda, std::size_t stride_a, const T* b, std::size_t ldb,
               std::size_t stride_b, T beta, T* c, std::size_t ldc, std::size_t stride_c,
               std::size_t batch) {
  for (std::size_t i = 0; i < batch; ++i)
    gemm(trans_a, trans_b, m, n, k, alpha, a + i * stride_a, lda, b + i * stride_b, ldb, beta,
         c + i * stride_c, ldc);
}

}  // namespace

void gemm_strided_batched(Trans trans_a, Trans trans_b, std::size_t m, std::size_t n, std::size_t k,
                          float alpha, const float* a, std::size_t lda, std::size_t stride_a,
                          const float* b, std::size_t ldb, std::size_t stride_b, float beta,
                          float* c, std::size_t ldc, std::size_t stride_c, std::size_t batch) {
  gemm_loop(trans_a, trans_b, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc,
            stride_c, batch);
}

void gemm_strided_batched(Trans trans_a, Trans trans_b, std::size_t m, std::size_t n, std::size_t k,
                          double alpha, const double* a, std::size_t lda, std::size_t stride_a,
                          const double* b, std::size_t ldb, std::size_t stride_b, double beta,
                          double* c, std::size_t ldc, std::size_t stride_c, std::size_t batch) {
  gemm_loop(trans_a, trans_b, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc,
            stride_c, batch);
}

void set_blas_threads(int threads) {
  openblas_set_num_threads(std::max(threads, 1));
}

}  // namespace daa::kernels
