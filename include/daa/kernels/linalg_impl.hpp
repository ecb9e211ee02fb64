// Shape-checked view overload of gemm; included by linalg.hpp only.
#pragma once

#include <string>
#include <type_traits>

#include "daa/core/error.hpp"

namespace daa::kernels {

template <class ViewA, class ViewB, class ViewC>
void gemm(Trans trans_a, Trans trans_b, typename ViewC::value_type alpha, const ViewA& a,
          const ViewB& b, typename ViewC::value_type beta, const ViewC& c, Precision precision) {
  const std::size_t m = trans_a == Trans::no ? a.extent(0) : a.extent(1);
  const std::size_t k = trans_a == Trans::no ? a.extent(1) : a.extent(0);
  const std::size_t kb = trans_b == Trans::no ? b.extent(0) : b.extent(1);
  const std::size_t n = trans_b == Trans::no ? b.extent(1) : b.extent(0);
  if (k != kb || c.extent(0) != m || c.extent(1) != n)
    throw Error("kernels::gemm: shape mismatch (" + std::to_string(m) + "x" + std::to_string(k) +
                ") * (" + std::to_string(kb) + "x" + std::to_string(n) + ") -> (" +
                std::to_string(c.extent(0)) + "x" + std::to_string(c.extent(1)) + ")");
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

}  // namespace daa::kernels
