// SwiGLU (Shazeer 2020; Mixtral's expert shape): act = silu(gate_pre) * up, element-wise over
// [rows, width] views, and its backward. Written once for every Kokkos backend.
#pragma once

#include <cmath>

#include "daa/kernels/fast_exp.hpp"
#include "daa/kernels/views.hpp"

namespace daa::kernels {

// exp_vectorizable: the element loops below then vectorize in float (double keeps std::exp).
template <class T>
KOKKOS_INLINE_FUNCTION T sigmoid(T x) {
  return T(1) / (T(1) + exp_vectorizable(-x));
}

// act = silu(pre) * up, silu(x) = x * sigmoid(x).
template <class Pre, class Up, class Act>
void swiglu_forward(const Pre& pre, const Up& up, const Act& act) {
  const int cols = pre.extent(1);
  Kokkos::parallel_for(
      "swiglu_forward", Range(0, pre.extent(0)), KOKKOS_LAMBDA(const int i) {
        for (int j = 0; j < cols; ++j) {
          const auto x = pre(i, j);
          act(i, j) = x * sigmoid(x) * up(i, j);
        }
      });
}

// From dact: dpre = dact * up * silu'(pre), dup = dact * silu(pre);
// silu'(x) = s + x s (1 - s) with s = sigmoid(x).
template <class Pre, class Up, class Grad>
void swiglu_backward(const Pre& pre, const Up& up, const Grad& dact, const Grad& dpre,
                     const Grad& dup) {
  const int cols = pre.extent(1);
  Kokkos::parallel_for(
      "swiglu_backward", Range(0, pre.extent(0)), KOKKOS_LAMBDA(const int i) {
        for (int j = 0; j < cols; ++j) {
          const auto x = pre(i, j);
          const auto s = sigmoid(x);
          const auto g = dact(i, j);
          dpre(i, j) = g * up(i, j) * (s + x * s * (1 - s));
          dup(i, j) = g * x * s;
        }
      });
}

}  // namespace daa::kernels
