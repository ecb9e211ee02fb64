// The one GEMM adapter: every matrix product of the model goes through `gemm`, which calls host
// BLAS (OpenBLAS) here and will call cuBLAS in the CUDA build. Row-major, like the views.
#pragma once

#include <Kokkos_Core.hpp>
#include <cstddef>
#include <span>

namespace daa::kernels {

enum class Trans { no, yes };

// Precision of float products. bf16 is mixed precision's GEMM: both operands rounded to bfloat16
// (to nearest even), the products summed in fp32 and the result fp32, so the caller keeps fp32
// master weights and fp32 everywhere outside the product. Double products are always double.
enum class Precision { fp32, bf16 };

// Whether this build runs bf16 products (host: AVX512_BF16 compiled in; CUDA: cuBLAS).
bool bf16_available();
// The precision of float products that do not name one, process-wide like the BLAS thread count
// ([train] precision sets it). Throws daa::Error naming what is missing where bf16 is unavailable.
void set_default_precision(Precision precision);
Precision default_precision();

// C[m,n] = alpha * op(A)[m,k] * op(B)[k,n] + beta * C, row-major with leading dimensions. On the
// host, a cache-blocked kernel of our own where it measured faster than OpenBLAS (AVX-512 builds,
// one BLAS thread, n of at least half a 32-float panel) and OpenBLAS otherwise; BLAS semantics
// either way (beta = 0 does not read C, alpha = 0 reads neither A nor B).
// The caller fences the execution space before host BLAS reads device-written data (on the
// host backends the fence is a no-op).
void gemm(Trans trans_a, Trans trans_b, std::size_t m, std::size_t n, std::size_t k, float alpha,
          const float* a, std::size_t lda, const float* b, std::size_t ldb, float beta, float* c,
          std::size_t ldc, Precision precision = default_precision());
void gemm(Trans trans_a, Trans trans_b, std::size_t m, std::size_t n, std::size_t k, double alpha,
          const double* a, std::size_t lda, const double* b, std::size_t ldb, double beta,
          double* c, std::size_t ldc);

// Strided batch: for i < batch, C_i = alpha * op(A_i) op(B_i) + beta * C_i with X_i at
// x + i * stride_x. Many small products (attention's per-sequence blocks) in one call: on the
// host a register-blocked kernel of our own for small products and a loop of `gemm` calls for
// larger ones, one cublas<T>gemmStridedBatched in the CUDA build.
void gemm_strided_batched(Trans trans_a, Trans trans_b, std::size_t m, std::size_t n, std::size_t k,
                          float alpha, const float* a, std::size_t lda, std::size_t stride_a,
                          const float* b, std::size_t ldb, std::size_t stride_b, float beta,
                          float* c, std::size_t ldc, std::size_t stride_c, std::size_t batch);
void gemm_strided_batched(Trans trans_a, Trans trans_b, std::size_t m, std::size_t n, std::size_t k,
                          double alpha, const double* a, std::size_t lda, std::size_t stride_a,
                          const double* b, std::size_t ldb, std::size_t stride_b, double beta,
                          double* c, std::size_t ldc, std::size_t stride_c, std::size_t batch);

namespace detail {
// The two host implementations behind `gemm`, whatever the shape: the blocked kernel of our own
// and OpenBLAS. For tests and benchmarks, which compare them; the model calls `gemm`.
void gemm_own(Trans trans_a, Trans trans_b, std::size_t m, std::size_t n, std::size_t k,
              float alpha, const float* a, std::size_t lda, const float* b, std::size_t ldb,
              float beta, float* c, std::size_t ldc);
void gemm_own(Trans trans_a, Trans trans_b, std::size_t m, std::size_t n, std::size_t k,
              double alpha, const double* a, std::size_t lda, const double* b, std::size_t ldb,
              double beta, double* c, std::size_t ldc);
void gemm_blas(Trans trans_a, Trans trans_b, std::size_t m, std::size_t n, std::size_t k,
               float alpha, const float* a, std::size_t lda, const float* b, std::size_t ldb,
               float beta, float* c, std::size_t ldc);
void gemm_blas(Trans trans_a, Trans trans_b, std::size_t m, std::size_t n, std::size_t k,
               double alpha, const double* a, std::size_t lda, const double* b, std::size_t ldb,
               double beta, double* c, std::size_t ldc);
}  // namespace detail

// Sets the BLAS thread count of this process (one per rank unless configured).
void set_blas_threads(int threads);

// Convenience for row-major 2-D views: C = alpha * op(A) op(B) + beta * C, shapes checked; float
// products in `precision` (the router names fp32: mixed precision keeps it there).
template <class ViewA, class ViewB, class ViewC>
void gemm(Trans trans_a, Trans trans_b, typename ViewC::value_type alpha, const ViewA& a,
          const ViewB& b, typename ViewC::value_type beta, const ViewC& c,
          Precision precision = default_precision());

// The same over 3-D views [batch, rows, cols] whose last dimension has unit stride (e.g.
// subviews of row-major matrices: one head's columns of every sequence), shapes checked:
// C(i,:,:) = alpha * op(A(i,:,:)) op(B(i,:,:)) + beta * C(i,:,:).
template <class ViewA, class ViewB, class ViewC>
void gemm_batched(Trans trans_a, Trans trans_b, typename ViewC::value_type alpha, const ViewA& a,
                  const ViewB& b, typename ViewC::value_type beta, const ViewC& c);

// The same products on an execution-space instance, where the GPU backend puts them on that
// instance's stream. Host spaces run the host path above (no fence beyond the caller's, results
// bit-identical); Kokkos::Cuda, in builds with the CUDA adapters (DAA_HAVE_CUDA_ADAPTERS), calls
// cuBLAS asynchronously on space.cuda_stream() through one daa::cuda::Blas per stream, float only,
// bf16 operands converted on that stream.
template <class ExecSpace, class ViewA, class ViewB, class ViewC>
requires Kokkos::is_execution_space<ExecSpace>::value void gemm(
    const ExecSpace& space, Trans trans_a, Trans trans_b, typename ViewC::value_type alpha,
    const ViewA& a, const ViewB& b, typename ViewC::value_type beta, const ViewC& c,
    Precision precision = default_precision());
template <class ExecSpace, class ViewA, class ViewB, class ViewC>
requires Kokkos::is_execution_space<ExecSpace>::value void gemm_batched(
    const ExecSpace& space, Trans trans_a, Trans trans_b, typename ViewC::value_type alpha,
    const ViewA& a, const ViewB& b, typename ViewC::value_type beta, const ViewC& c);

// The experts' GEMM: expert e's rows offset[e] .. offset[e+1] of the packed rows A [rows, k]
// (tokens grouped expert after expert, offset.size() = experts + 1, offset.back() = rows) times
// its own weight op(W_e) [k, n] into the same rows of C [rows, n]; experts without rows are
// skipped. On the host a loop of `gemm` (what the MoE experts did per expert); on CUDA fp32 one
// cublasGemmGroupedBatchedEx where the weights sit evenly strided in memory, else one cuBLAS
// GEMM per expert on the stream (bf16 always the latter: the grouped call's bf16 form writes a
// bf16 C, and this adapter's bf16 results are fp32).
template <class ExecSpace, class ViewA, class ViewW, class ViewC>
requires Kokkos::is_execution_space<ExecSpace>::value void expert_gemm(
    const ExecSpace& space, Trans trans_b, std::span<const std::size_t> offset,
    typename ViewC::value_type alpha, const ViewA& a, std::span<const ViewW> weights,
    typename ViewC::value_type beta, const ViewC& c, Precision precision = default_precision());

}  // namespace daa::kernels

#include "daa/kernels/linalg_impl.hpp"
