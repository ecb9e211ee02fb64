// Shape-checked view overloads of gemm, gemm_batched and expert_gemm, and their execution-space
// dispatch (host path, or cuBLAS on Kokkos::Cuda's stream); included by linalg.hpp only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "daa/core/error.hpp"

#if defined(DAA_HAVE_CUDA_ADAPTERS)
#include "daa/cuda/convert.hpp"
#include "daa/cuda/gemm.hpp"
#endif

namespace daa::kernels {

namespace detail {

// op(A)[m,k] * op(B)[k,n] -> C[m,n] from 2-D view extents; throws naming `where` on a mismatch.
struct GemmShape {
  std::size_t m, n, k;
};
template <class ViewA, class ViewB, class ViewC>
GemmShape gemm_shape(const char* where, Trans trans_a, Trans trans_b, const ViewA& a,
                     const ViewB& b, const ViewC& c) {
  const std::size_t m = trans_a == Trans::no ? a.extent(0) : a.extent(1);
  const std::size_t k = trans_a == Trans::no ? a.extent(1) : a.extent(0);
  const std::size_t kb = trans_b == Trans::no ? b.extent(0) : b.extent(1);
  const std::size_t n = trans_b == Trans::no ? b.extent(1) : b.extent(0);
  if (k != kb || c.extent(0) != m || c.extent(1) != n)
    throw Error(std::string(where) + ": shape mismatch (" + std::to_string(m) + "x" +
                std::to_string(k) + ") * (" + std::to_string(kb) + "x" + std::to_string(n) +
                ") -> (" + std::to_string(c.extent(0)) + "x" + std::to_string(c.extent(1)) + ")");
  return {m, n, k};
}

}  // namespace detail

template <class ViewA, class ViewB, class ViewC>
void gemm(Trans trans_a, Trans trans_b, typename ViewC::value_type alpha, const ViewA& a,
          const ViewB& b, typename ViewC::value_type beta, const ViewC& c, Precision precision) {
  const auto [m, n, k] = detail::gemm_shape("kernels::gemm", trans_a, trans_b, a, b, c);
  if (m == 0 || n == 0) return;
  if constexpr (std::is_same_v<typename ViewC::value_type, float>)
    gemm(trans_a, trans_b, m, n, k, alpha, a.data(), a.stride(0), b.data(), b.stride(0), beta,
         c.data(), c.stride(0), precision);
  else
    gemm(trans_a, trans_b, m, n, k, alpha, a.data(), a.stride(0), b.data(), b.stride(0), beta,
         c.data(), c.stride(0));
}

template <class ViewA, class ViewB, class ViewC>
void gemm_batched(Trans trans_a, Trans trans_b, typename ViewC::value_type alpha, const ViewA& a,
                  const ViewB& b, typename ViewC::value_type beta, const ViewC& c) {
  static_assert(ViewA::rank == 3 && ViewB::rank == 3 && ViewC::rank == 3,
                "kernels::gemm_batched takes [batch, rows, cols] views");
  const std::size_t m = trans_a == Trans::no ? a.extent(1) : a.extent(2);
  const std::size_t k = trans_a == Trans::no ? a.extent(2) : a.extent(1);
  const std::size_t kb = trans_b == Trans::no ? b.extent(1) : b.extent(2);
  const std::size_t n = trans_b == Trans::no ? b.extent(2) : b.extent(1);
  const std::size_t batch = c.extent(0);
  if (k != kb || c.extent(1) != m || c.extent(2) != n || a.extent(0) != batch ||
      b.extent(0) != batch)
    throw Error("kernels::gemm_batched: shape mismatch " + std::to_string(a.extent(0)) + " x (" +
                std::to_string(m) + "x" + std::to_string(k) + ") * " + std::to_string(b.extent(0)) +
                " x (" + std::to_string(kb) + "x" + std::to_string(n) + ") -> " +
                std::to_string(batch) + " x (" + std::to_string(c.extent(1)) + "x" +
                std::to_string(c.extent(2)) + ")");
  // BLAS needs unit stride along a row; a one-column operand has any stride there.
  if ((a.extent(2) > 1 && a.stride(2) != 1) || (b.extent(2) > 1 && b.stride(2) != 1) ||
      (c.extent(2) > 1 && c.stride(2) != 1))
    throw Error("kernels::gemm_batched: the last dimension of every operand needs unit stride");
  if (m == 0 || n == 0 || batch == 0) return;
  gemm_strided_batched(trans_a, trans_b, m, n, k, alpha, a.data(), a.stride(1), a.stride(0),
                       b.data(), b.stride(1), b.stride(0), beta, c.data(), c.stride(1), c.stride(0),
                       batch);
}

namespace detail {

// Host spaces and host-readable views only outside the CUDA branch: anything else would hand host
// BLAS pointers it cannot read.
template <class ExecSpace, class... Views>
constexpr bool host_gemm_space =
    Kokkos::SpaceAccessibility<ExecSpace, Kokkos::HostSpace>::accessible &&
    (Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename Views::memory_space>::accessible &&
     ...);

template <class ViewA, class ViewW, class ViewC>
void check_expert_shapes(Trans trans_b, std::span<const std::size_t> offset, const ViewA& a,
                         std::span<const ViewW> weights, const ViewC& c) {
  const std::size_t rows = a.extent(0), k = a.extent(1), n = c.extent(1);
  if (offset.size() != weights.size() + 1 || offset.front() != 0 || offset.back() != rows ||
      c.extent(0) != rows)
    throw Error("kernels::expert_gemm: " + std::to_string(offset.size()) + " offsets (last " +
                std::to_string(offset.empty() ? 0 : offset.back()) + ") for " +
                std::to_string(weights.size()) + " experts over " + std::to_string(rows) +
                " rows of A and " + std::to_string(c.extent(0)) + " of C");
  for (std::size_t e = 0; e < weights.size(); ++e) {
    const std::size_t wk = trans_b == Trans::no ? weights[e].extent(0) : weights[e].extent(1);
    const std::size_t wn = trans_b == Trans::no ? weights[e].extent(1) : weights[e].extent(0);
    if (offset[e] > offset[e + 1] || wk != k || wn != n)
      throw Error("kernels::expert_gemm: expert " + std::to_string(e) + " has rows " +
                  std::to_string(offset[e]) + ".." + std::to_string(offset[e + 1]) +
                  " and a weight of " + std::to_string(wk) + "x" + std::to_string(wn) +
                  ", expected " + std::to_string(k) + "x" + std::to_string(n));
  }
}

#if defined(DAA_HAVE_CUDA_ADAPTERS)
// One daa::cuda::Blas per CUDA stream, created at first use and kept for the process (a cuBLAS
// handle costs far more to create than a GEMM); safe to call from several threads.
cuda::Blas& cuda_blas(cudaStream_t stream);

// A bf16 copy of `count` device floats, converted and (at destruction) freed in stream order on
// `stream`, so it is valid for every call queued on that stream while it lives.
class CudaBf16Copy {
 public:
  CudaBf16Copy(const float* src, std::size_t count, cudaStream_t stream);
  ~CudaBf16Copy();
  CudaBf16Copy(const CudaBf16Copy&) = delete;
  CudaBf16Copy& operator=(const CudaBf16Copy&) = delete;
  const __nv_bfloat16* get() const { return data_; }

 private:
  __nv_bfloat16* data_ = nullptr;
  cudaStream_t stream_;
};

inline cuda::Trans cuda_trans(Trans t) {
  return t == Trans::yes ? cuda::Trans::yes : cuda::Trans::no;
}

// Elements from a row-major operand's first to its last used one: what its bf16 copy converts,
// keeping the leading dimension (padding included).
template <class View>
std::size_t operand_span(const View& v) {
  return v.extent(0) == 0 || v.extent(1) == 0 ? 0 : (v.extent(0) - 1) * v.stride(0) + v.extent(1);
}

template <class ViewA, class ViewB, class ViewC>
void gemm_on_stream(cudaStream_t stream, Trans trans_a, Trans trans_b, float alpha, const ViewA& a,
                    const ViewB& b, float beta, const ViewC& c, Precision precision) {
  const auto [m, n, k] = gemm_shape("kernels::gemm", trans_a, trans_b, a, b, c);
  if (m == 0 || n == 0) return;
  cuda::Blas& blas = cuda_blas(stream);
  if (precision == Precision::fp32) {
    blas.gemm(cuda_trans(trans_a), cuda_trans(trans_b), m, n, k, alpha, a.data(), a.stride(0),
              b.data(), b.stride(0), beta, c.data(), c.stride(0));
    return;
  }
  const CudaBf16Copy a16(a.data(), operand_span(a), stream);
  const CudaBf16Copy b16(b.data(), operand_span(b), stream);
  blas.gemm(cuda_trans(trans_a), cuda_trans(trans_b), m, n, k, alpha, a16.get(), a.stride(0),
            b16.get(), b.stride(0), beta, c.data(), c.stride(0));
}

template <class ViewA, class ViewW, class ViewC>
void expert_gemm_on_stream(cudaStream_t stream, Trans trans_b, std::span<const std::size_t> offset,
                           float alpha, const ViewA& a, std::span<const ViewW> weights, float beta,
                           const ViewC& c, Precision precision) {
  const std::size_t k = a.extent(1), n = c.extent(1);
  // The grouped call wants dense A and C and weights at one stride from the first; the experts'
  // weights are separate parameters today, so the per-expert loop is the usual path.
  bool grouped = precision == Precision::fp32 && !weights.empty() && k > 0 && n > 0 &&
                 a.stride(0) == k && c.stride(0) == n;
  // Addresses as integers: the weights are separate allocations, whose pointers C++ does not
  // let us subtract.
  const auto address = [](const float* p) { return reinterpret_cast<std::uintptr_t>(p); };
  const std::uintptr_t first = weights.empty() ? 0 : address(weights[0].data());
  const std::uintptr_t step = weights.size() > 1 ? address(weights[1].data()) - first : 0;
  grouped = grouped && step % sizeof(float) == 0 &&
            (weights.size() < 2 || address(weights[1].data()) > first);
  std::vector<int> rows(weights.size());
  for (std::size_t e = 0; grouped && e < weights.size(); ++e) {
    grouped = weights[e].stride(0) == weights[e].extent(1) &&
              address(weights[e].data()) == first + e * step &&
              offset[e + 1] - offset[e] <= std::size_t(std::numeric_limits<int>::max());
    rows[e] = int(offset[e + 1] - offset[e]);
  }
  if (grouped) {
    cuda_blas(stream).expert_gemm(cuda_trans(trans_b), rows, n, k, alpha, a.data(),
                                  weights[0].data(), step / sizeof(float), beta, c.data());
    return;
  }
  for (std::size_t e = 0; e < weights.size(); ++e) {
    if (offset[e] == offset[e + 1]) continue;
    const auto range = std::make_pair(offset[e], offset[e + 1]);
    gemm_on_stream(stream, Trans::no, trans_b, alpha, Kokkos::subview(a, range, Kokkos::ALL),
                   weights[e], beta, Kokkos::subview(c, range, Kokkos::ALL), precision);
  }
}
#endif

}  // namespace detail

// The CUDA branches need Kokkos::Cuda (a Kokkos built with CUDA) and daa::cuda linked; neither is
// in the Debian Kokkos 3.4 of the CI machines, so there these are the host path alone.
template <class ExecSpace, class ViewA, class ViewB, class ViewC>
requires Kokkos::is_execution_space<ExecSpace>::value void gemm(
    const ExecSpace& space, Trans trans_a, Trans trans_b, typename ViewC::value_type alpha,
    const ViewA& a, const ViewB& b, typename ViewC::value_type beta, const ViewC& c,
    Precision precision) {
#if defined(KOKKOS_ENABLE_CUDA) && defined(DAA_HAVE_CUDA_ADAPTERS)
  if constexpr (std::is_same_v<ExecSpace, Kokkos::Cuda>) {
    if constexpr (std::is_same_v<typename ViewC::value_type, float>)
      detail::gemm_on_stream(space.cuda_stream(), trans_a, trans_b, alpha, a, b, beta, c,
                             precision);
    else
      throw Error("kernels::gemm: double products on Kokkos::Cuda have no cuBLAS adapter");
  } else
#endif
  {
    static_assert(detail::host_gemm_space<ExecSpace, ViewA, ViewB, ViewC>,
                  "kernels::gemm: no GEMM adapter for this space and these views");
    (void)space;
    gemm(trans_a, trans_b, alpha, a, b, beta, c, precision);
  }
}

template <class ExecSpace, class ViewA, class ViewB, class ViewC>
requires Kokkos::is_execution_space<ExecSpace>::value void gemm_batched(
    const ExecSpace& space, Trans trans_a, Trans trans_b, typename ViewC::value_type alpha,
    const ViewA& a, const ViewB& b, typename ViewC::value_type beta, const ViewC& c) {
#if defined(KOKKOS_ENABLE_CUDA) && defined(DAA_HAVE_CUDA_ADAPTERS)
  if constexpr (std::is_same_v<ExecSpace, Kokkos::Cuda>) {
    // One cuBLAS GEMM per batch item on the stream (fp32, like the host's batched products).
    if (a.extent(0) != c.extent(0) || b.extent(0) != c.extent(0))
      throw Error("kernels::gemm_batched: batches of " + std::to_string(a.extent(0)) + ", " +
                  std::to_string(b.extent(0)) + " and " + std::to_string(c.extent(0)));
    for (std::size_t i = 0; i < c.extent(0); ++i)
      gemm(space, trans_a, trans_b, alpha, Kokkos::subview(a, i, Kokkos::ALL, Kokkos::ALL),
           Kokkos::subview(b, i, Kokkos::ALL, Kokkos::ALL), beta,
           Kokkos::subview(c, i, Kokkos::ALL, Kokkos::ALL), Precision::fp32);
  } else
#endif
  {
    static_assert(detail::host_gemm_space<ExecSpace, ViewA, ViewB, ViewC>,
                  "kernels::gemm_batched: no GEMM adapter for this space and these views");
    (void)space;
    gemm_batched(trans_a, trans_b, alpha, a, b, beta, c);
  }
}

template <class ExecSpace, class ViewA, class ViewW, class ViewC>
requires Kokkos::is_execution_space<ExecSpace>::value void expert_gemm(
    const ExecSpace& space, Trans trans_b, std::span<const std::size_t> offset,
    typename ViewC::value_type alpha, const ViewA& a, std::span<const ViewW> weights,
    typename ViewC::value_type beta, const ViewC& c, Precision precision) {
  detail::check_expert_shapes(trans_b, offset, a, weights, c);
#if defined(KOKKOS_ENABLE_CUDA) && defined(DAA_HAVE_CUDA_ADAPTERS)
  if constexpr (std::is_same_v<ExecSpace, Kokkos::Cuda>) {
    if constexpr (std::is_same_v<typename ViewC::value_type, float>)
      detail::expert_gemm_on_stream(space.cuda_stream(), trans_b, offset, alpha, a, weights, beta,
                                    c, precision);
    else
      throw Error("kernels::expert_gemm: double products on Kokkos::Cuda have no cuBLAS adapter");
  } else
#endif
  {
    static_assert(detail::host_gemm_space<ExecSpace, ViewA, ViewW, ViewC>,
                  "kernels::expert_gemm: no GEMM adapter for this space and these views");
    (void)space;
    for (std::size_t e = 0; e < weights.size(); ++e) {
      if (offset[e] == offset[e + 1]) continue;
      const auto range = std::make_pair(offset[e], offset[e + 1]);
      gemm(Trans::no, trans_b, alpha, Kokkos::subview(a, range, Kokkos::ALL), weights[e], beta,
           Kokkos::subview(c, range, Kokkos::ALL), precision);
    }
  }
}

}  // namespace daa::kernels
