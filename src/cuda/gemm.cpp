// cuBLAS behind daa::cuda::Blas. cuBLAS is column-major: a row-major C = op(A) op(B) is the
// column-major C^T = op(B)^T op(A)^T, so every call swaps A with B and m with n.
#include "daa/cuda/gemm.hpp"

#include "daa/core/error.hpp"
#include "daa/cuda/check.hpp"

#include <climits>
#include <string>
#include <vector>

namespace daa::cuda {
namespace {

int checked_int(std::size_t value, const char* what) {
  if (value > static_cast<std::size_t>(INT_MAX))
    throw daa::Error("cuda: gemm: " + std::string(what) + " = " + std::to_string(value) +
                     " exceeds cuBLAS's int limit " + std::to_string(INT_MAX));
  return static_cast<int>(value);
}

cublasOperation_t op(Trans t) {
  return t == Trans::yes ? CUBLAS_OP_T : CUBLAS_OP_N;
}

void gemm_ex(cublasHandle_t handle, Trans trans_a, Trans trans_b, std::size_t m, std::size_t n,
             std::size_t k, float alpha, const void* a, std::size_t lda, const void* b,
             std::size_t ldb, float beta, void* c, std::size_t ldc, cudaDataType_t ab_type) {
  if (m == 0 || n == 0) return;
  DAA_CUBLAS_CHECK(cublasGemmEx(handle, op(trans_b), op(trans_a), checked_int(n, "n"),
                                checked_int(m, "m"), checked_int(k, "k"), &alpha, b, ab_type,
                                checked_int(ldb, "ldb"), a, ab_type, checked_int(lda, "lda"), &beta,
                                c, CUDA_R_32F, checked_int(ldc, "ldc"), CUBLAS_COMPUTE_32F,
                                CUBLAS_GEMM_DEFAULT));
}

}  // namespace

Blas::Blas(cudaStream_t stream) : stream_(stream) {
  DAA_CUBLAS_CHECK(cublasCreate(&handle_));
  DAA_CUBLAS_CHECK(cublasSetStream(handle_, stream_));
  // Scalars live on the host (alpha, beta and the grouped call's arrays).
  DAA_CUBLAS_CHECK(cublasSetPointerMode(handle_, CUBLAS_POINTER_MODE_HOST));
}

Blas::~Blas() {
  // No throw from a destructor: a failure here leaves nothing the caller could repair.
  if (scratch_ != nullptr) cudaFreeAsync(scratch_, stream_);
  if (handle_ != nullptr) cublasDestroy(handle_);
}

void Blas::gemm(Trans trans_a, Trans trans_b, std::size_t m, std::size_t n, std::size_t k,
                float alpha, const float* a, std::size_t lda, const float* b, std::size_t ldb,
                float beta, float* c, std::size_t ldc) {
  gemm_ex(handle_, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, CUDA_R_32F);
}

void Blas::gemm(Trans trans_a, Trans trans_b, std::size_t m, std::size_t n, std::size_t k,
                float alpha, const __nv_bfloat16* a, std::size_t lda, const __nv_bfloat16* b,
                std::size_t ldb, float beta, float* c, std::size_t ldc) {
  gemm_ex(handle_, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, CUDA_R_16BF);
}

void Blas::expert_gemm(Trans trans_b, std::span<const int> rows, std::size_t n, std::size_t k,
                       float alpha, const float* a, const float* b, std::size_t stride_b,
                       float beta, float* c) {
  expert_gemm_any(trans_b, rows, n, k, alpha, a, b, stride_b, beta, c, CUDA_R_32F, sizeof(float));
}

void Blas::expert_gemm(Trans trans_b, std::span<const int> rows, std::size_t n, std::size_t k,
                       float alpha, const __nv_bfloat16* a, const __nv_bfloat16* b,
                       std::size_t stride_b, float beta, __nv_bfloat16* c) {
  expert_gemm_any(trans_b, rows, n, k, alpha, a, b, stride_b, beta, c, CUDA_R_16BF,
                  sizeof(__nv_bfloat16));
}

void* Blas::pointer_scratch(std::size_t bytes) {
  if (bytes > scratch_bytes_) {
    // Stream-ordered: the old buffer is freed after the calls that still read it.
    if (scratch_ != nullptr) DAA_CUDA_CHECK(cudaFreeAsync(scratch_, stream_));
    scratch_ = nullptr;
    DAA_CUDA_CHECK(cudaMallocAsync(&scratch_, bytes, stream_));
    scratch_bytes_ = bytes;
  }
  return scratch_;
}

void Blas::expert_gemm_any(Trans trans_b, std::span<const int> rows, std::size_t n, std::size_t k,
                           float alpha, const void* a, const void* b, std::size_t stride_b,
                           float beta, void* c, cudaDataType_t type, std::size_t element_bytes) {
  const int n_int = checked_int(n, "n");
  const int k_int = checked_int(k, "k");
  // One group per expert with rows (their m differ); host arrays of group_count entries, device
  // arrays of one pointer per problem.
  std::vector<cublasOperation_t> trans_a_array, trans_b_array;
  std::vector<int> m_array, n_array, k_array, lda_array, ldb_array, ldc_array, group_size;
  std::vector<float> alpha_array, beta_array;
  std::vector<const void*> pointers_a, pointers_b;
  std::vector<void*> pointers_c;
  const auto* a_bytes = static_cast<const char*>(a);
  const auto* b_bytes = static_cast<const char*>(b);
  auto* c_bytes = static_cast<char*>(c);
  std::size_t row = 0;
  for (std::size_t e = 0; e < rows.size(); ++e) {
    if (rows[e] < 0)
      throw daa::Error("cuda: expert_gemm: expert " + std::to_string(e) + " has " +
                       std::to_string(rows[e]) + " rows");
    if (rows[e] > 0) {
      // Column-major view: C_e^T[n, rows] = op(B_e)^T[n, k] A_e^T[k, rows].
      trans_a_array.push_back(op(trans_b));
      trans_b_array.push_back(CUBLAS_OP_N);
      m_array.push_back(n_int);
      n_array.push_back(rows[e]);
      k_array.push_back(k_int);
      lda_array.push_back(trans_b == Trans::yes ? k_int : n_int);
      ldb_array.push_back(k_int);
      ldc_array.push_back(n_int);
      alpha_array.push_back(alpha);
      beta_array.push_back(beta);
      group_size.push_back(1);
      pointers_a.push_back(b_bytes + e * stride_b * element_bytes);
      pointers_b.push_back(a_bytes + row * k * element_bytes);
      pointers_c.push_back(c_bytes + row * n * element_bytes);
    }
    row += static_cast<std::size_t>(rows[e]);
  }
  const std::size_t problems = group_size.size();
  if (problems == 0) return;
  // The three pointer arrays go to the device in one copy; from pageable memory the copy has
  // read the host vector before cudaMemcpyAsync returns.
  std::vector<const void*> all;
  all.reserve(3 * problems);
  all.insert(all.end(), pointers_a.begin(), pointers_a.end());
  all.insert(all.end(), pointers_b.begin(), pointers_b.end());
  all.insert(all.end(), pointers_c.begin(), pointers_c.end());
  auto* device = static_cast<void**>(pointer_scratch(all.size() * sizeof(void*)));
  DAA_CUDA_CHECK(cudaMemcpyAsync(device, all.data(), all.size() * sizeof(void*),
                                 cudaMemcpyHostToDevice, stream_));
  DAA_CUBLAS_CHECK(cublasGemmGroupedBatchedEx(
      handle_, trans_a_array.data(), trans_b_array.data(), m_array.data(), n_array.data(),
      k_array.data(), alpha_array.data(), device, type, lda_array.data(), device + problems, type,
      ldb_array.data(), beta_array.data(), device + 2 * problems, type, ldc_array.data(),
      static_cast<int>(problems), group_size.data(), CUBLAS_COMPUTE_32F));
}

}  // namespace daa::cuda
