// exp that element loops can vectorize: for float a branch-free Cody-Waite reduction and a
// degree-6 polynomial (Cephes expf, within 2 ulp of the library's exp), for double the library's
// exp, so gradient checks in double still run against the exact function. Kernel-callable.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include <Kokkos_Core.hpp>

#include "daa/kernels/kokkos_compat.hpp"

namespace daa::kernels {

// Why not std::exp in float kernels: glibc's vector exp is only declared under -ffast-math, so a
// loop calling expf runs one scalar call per element; softmax-shaped loops (attention blocks,
// the vocabulary cross-entropy, SwiGLU's sigmoid) spend most of their time there.
template <class T>
KOKKOS_INLINE_FUNCTION T exp_vectorizable(T x) {
  if constexpr (std::is_same_v<T, float>) {
    // Clamp so that 2^n stays a normal float: exp(-87.33) ~ 1.2e-38 stands in for smaller
    // results (callers mask exact zeros themselves), exp(88.37) ~ 2.5e38 for larger ones.
    x = x < -87.33f ? -87.33f : (x > 88.37f ? 88.37f : x);
    // n = round(x / ln 2) by the 1.5 * 2^23 trick (exact for |x / ln 2| < 2^22).
    const float shifted = x * 1.44269504088896341f + 12582912.0f;
    const float n = shifted - 12582912.0f;
    // r = x - n ln 2 in two steps (ln 2 = 0.693359375 - 2.12194440e-4, the first exact).
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    const float er = p * r * r + r + 1.0f;
    const std::int32_t bits = (static_cast<std::int32_t>(n) + 127) << 23;
    float two_n;
    std::memcpy(&two_n, &bits, sizeof two_n);
    return er * two_n;
  } else {
    return kmath::exp(x);
  }
}

}  // namespace daa::kernels
