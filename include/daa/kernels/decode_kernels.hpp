// Kokkos kernels of incremental (key/value-cached) decoding for causal self-attention: RoPE at
// explicit positions, appending roped keys and values to a cache, and the attention of new queries
// against every cached position. Same conventions as attention_kernels.hpp; GPU-ready.
#pragma once

#include <cmath>

#include "daa/kernels/attention_kernels.hpp"
#include "daa/kernels/kokkos_compat.hpp"
#include "daa/kernels/views.hpp"

namespace daa::kernels {

// rope_rotate for rows that are consecutive positions of one sequence starting at `first_pos`
// (row r at position first_pos + r) rather than whole sequences from position 0. The same
// arithmetic as rope_rotate, so a row gets the values the full forward gives it.
template <class T>
void rope_rotate_from(const Matrix<T>& qkv, const AttentionDims& dims, int first_pos,
                      const Matrix<T>& cos_table, const Matrix<T>& sin_table) {
  const int heads = dims.heads, half = dims.head_dim / 2;
  const int d = dims.d_model(), head_dim = dims.head_dim;
  Kokkos::parallel_for(
      "rope_rotate_from", Range(0, qkv.extent(0) * heads), KOKKOS_LAMBDA(const int item) {
        const int row = item / heads, h = item % heads;
        const int pos = first_pos + row;
        for (int part = 0; part < 2; ++part) {
          const int base = part * d + h * head_dim;
          for (int i = 0; i < half; ++i) {
            const T c = cos_table(pos, i), s = sin_table(pos, i);
            const T x1 = qkv(row, base + i), x2 = qkv(row, base + i + half);
            qkv(row, base + i) = x1 * c - x2 * s;
            qkv(row, base + i + half) = x2 * c + x1 * s;
          }
        }
      });
}

// Copies the (roped) k and v parts of qkv row r into row first_pos + r of the caches
// [capacity, d_model].
template <class T>
void append_kv(const Matrix<T>& qkv, int first_pos, const Matrix<T>& k_cache,
               const Matrix<T>& v_cache) {
  const int d = int(k_cache.extent(1));
  Kokkos::parallel_for(
      "append_kv", Range(0, qkv.extent(0)), KOKKOS_LAMBDA(const int row) {
        for (int c = 0; c < d; ++c) {
          k_cache(first_pos + row, c) = qkv(row, d + c);
          v_cache(first_pos + row, c) = qkv(row, 2 * d + c);
        }
      });
}

// out[r] = softmax(q_r K^T / sqrt(head_dim)) V per head, over the cached keys 0 .. first_pos + r
// (the query at row r sits at position first_pos + r; its own key must already be cached). One
// thread per (row, head) walks the keys once with a running max and sum (online softmax), adding
// into its slice of out; no scratch, no atomics, keys in index order. q is read from qkv's q part.
template <class T>
void cached_attention(const Matrix<T>& qkv, const AttentionDims& dims, int first_pos,
                      const Matrix<T>& k_cache, const Matrix<T>& v_cache, const Matrix<T>& out) {
  const int heads = dims.heads, head_dim = dims.head_dim;
  const T scale = T(1) / T(std::sqrt(double(head_dim)));
  Kokkos::parallel_for(
      "cached_attention", Range(0, qkv.extent(0) * heads), KOKKOS_LAMBDA(const int item) {
        const int row = item / heads, h = item % heads;
        const int c0 = h * head_dim, last = first_pos + row;
        T running_max = 0, running_sum = 0;
        for (int j = 0; j <= last; ++j) {
          T s = 0;
          for (int c = 0; c < head_dim; ++c) s += qkv(row, c0 + c) * k_cache(j, c0 + c);
          s *= scale;
          if (j == 0) {
            running_max = s;
            for (int c = 0; c < head_dim; ++c) out(row, c0 + c) = 0;
          } else if (s > running_max) {
            // A new maximum: rescale what came before so every weight stays <= 1.
            const T alpha = kmath::exp(running_max - s);
            running_sum *= alpha;
            for (int c = 0; c < head_dim; ++c) out(row, c0 + c) *= alpha;
            running_max = s;
          }
          const T p = kmath::exp(s - running_max);
          running_sum += p;
          for (int c = 0; c < head_dim; ++c) out(row, c0 + c) += p * v_cache(j, c0 + c);
        }
        const T inv = T(1) / running_sum;
        for (int c = 0; c < head_dim; ++c) out(row, c0 + c) *= inv;
      });
}

}  // namespace daa::kernels
