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

void set_blas_threads(int threads) {
  openblas_set_num_threads(std::max(threads, 1));
}

}  // namespace daa::kernels
