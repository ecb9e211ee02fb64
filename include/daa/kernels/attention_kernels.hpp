// Kokkos kernels of causal multi-head self-attention: rotary position embedding (RoPE) and a
// blocked, online-softmax (FlashAttention-style) forward and backward that never form a
// [seq, seq] matrix. Used by model/attention.hpp; templated on the scalar, GPU-ready.
#pragma once

#include <cmath>

#include "daa/kernels/views.hpp"

namespace daa::kernels {

// Kokkos 3.4 has its math functions in Kokkos::Experimental; 3.7 moved them to Kokkos:: and
// 4.x dropped the old names. One spelling for the kernels below.
namespace attention_math {
#if KOKKOS_VERSION >= 30700
using Kokkos::exp;
using Kokkos::log;
#else
using Kokkos::Experimental::exp;
using Kokkos::Experimental::log;
#endif
}  // namespace attention_math

// Per-thread scratch of the forward: one row of `block` scores per (sequence, head, query). The
// default layout of the memory space makes a thread's row contiguous on the host and adjacent
// threads' entries contiguous (coalesced) on a GPU.
template <class T>
using ScoreScratch = Kokkos::View<T**, MemSpace>;

// Layout of a qkv row [3 * d_model]: q | k | v, each split into heads of head_dim columns.
// Position of row r is r % seq_len (rows of one sequence are consecutive).
struct AttentionDims {
  int seq_len = 1;
  int heads = 1;
  int head_dim = 2;
  int d_model() const { return heads * head_dim; }
};

// RoPE tables [max_seq_len, head_dim / 2]: angle(pos, i) = pos * base^(-2i / head_dim), evaluated
// in double on the host and rounded once to T.
template <class T>
void rope_tables(int max_seq_len, int head_dim, double base, Matrix<T>& cos_table,
                 Matrix<T>& sin_table) {
  const int half = head_dim / 2;
  cos_table = Matrix<T>("rope_cos", max_seq_len, half);
  sin_table = Matrix<T>("rope_sin", max_seq_len, half);
  auto cos_h = Kokkos::create_mirror_view(cos_table);
  auto sin_h = Kokkos::create_mirror_view(sin_table);
  for (int pos = 0; pos < max_seq_len; ++pos)
    for (int i = 0; i < half; ++i) {
      const double angle = pos * std::pow(base, -2.0 * i / head_dim);
      cos_h(pos, i) = T(std::cos(angle));
      sin_h(pos, i) = T(std::sin(angle));
    }
  Kokkos::deep_copy(cos_table, cos_h);
  Kokkos::deep_copy(sin_table, sin_h);
}

// Rotates the q and k parts of every head in place, "rotate half" (GPT-NeoX / LLaMA-HF) pairing:
// column i of a head pairs with column i + head_dim/2,
//   (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin).
// inverse = true rotates by the negative angle: the transpose, which maps the gradient with
// respect to the rotated vectors back to the unrotated ones. v columns are left alone.
template <class T>
void rope_rotate(const Matrix<T>& qkv, const AttentionDims& dims, const Matrix<T>& cos_table,
                 const Matrix<T>& sin_table, bool inverse) {
  const int seq_len = dims.seq_len, heads = dims.heads, half = dims.head_dim / 2;
  const int d = dims.d_model(), head_dim = dims.head_dim;
  const T sign = inverse ? T(-1) : T(1);
  Kokkos::parallel_for(
      "rope_rotate", Range(0, qkv.extent(0) * heads), KOKKOS_LAMBDA(const int item) {
        const int row = item / heads, h = item % heads;
        const int pos = row % seq_len;
        for (int part = 0; part < 2; ++part) {
          const int base = part * d + h * head_dim;
          for (int i = 0; i < half; ++i) {
            const T c = cos_table(pos, i), s = sign * sin_table(pos, i);
            const T x1 = qkv(row, base + i), x2 = qkv(row, base + i + half);
            qkv(row, base + i) = x1 * c - x2 * s;
            qkv(row, base + i + half) = x2 * c + x1 * s;
          }
        }
      });
}

// out = softmax(q k^T / sqrt(head_dim)) v per sequence and head, causal (key j <= query i), from
// the roped qkv. One thread per (sequence, head, query) row walks the keys in blocks of `block`:
// it scores a block into its scratch row, raises the running max, rescales its running sum and
// output accumulator (kept in `out`), then adds the block's weighted values. Writes
// lse[(b * heads + h) * seq_len + i] = log sum_j exp(score_ij), all backward needs to recompute
// the probabilities. scores: [batch * heads * seq_len, >= block].
template <class T>
void causal_attention_forward(const Matrix<T>& qkv, const AttentionDims& dims, int block,
                              const ScoreScratch<T>& scores, const Matrix<T>& out,
                              const Vector<T>& lse) {
  const int seq_len = dims.seq_len, heads = dims.heads, head_dim = dims.head_dim;
  const int d = dims.d_model();
  const T scale = T(1) / T(std::sqrt(double(head_dim)));
  Kokkos::parallel_for(
      "causal_attention_forward", Range(0, qkv.extent(0) * heads), KOKKOS_LAMBDA(const int item) {
        const int i = item % seq_len, bh = item / seq_len;
        const int h = bh % heads, seq_start = (bh / heads) * seq_len;
        const int row = seq_start + i;
        const int qc = h * head_dim, kc = d + h * head_dim, vc = 2 * d + h * head_dim;
        T running_max = 0, running_sum = 0;
        for (int c = 0; c < head_dim; ++c) out(row, qc + c) = 0;
        for (int j0 = 0; j0 <= i; j0 += block) {
          const int j1 = j0 + block <= i + 1 ? j0 + block : i + 1;
          T block_max = 0;
          for (int j = j0; j < j1; ++j) {
            T s = 0;
            for (int c = 0; c < head_dim; ++c) s += qkv(row, qc + c) * qkv(seq_start + j, kc + c);
            s *= scale;
            scores(item, j - j0) = s;
            block_max = (j == j0 || s > block_max) ? s : block_max;
          }
          // The first block sets the max; later ones rescale what came before.
          if (j0 == 0) {
            running_max = block_max;
          } else if (block_max > running_max) {
            const T alpha = attention_math::exp(running_max - block_max);
            running_sum *= alpha;
            for (int c = 0; c < head_dim; ++c) out(row, qc + c) *= alpha;
            running_max = block_max;
          }
          for (int j = j0; j < j1; ++j) {
            const T p = attention_math::exp(scores(item, j - j0) - running_max);
            running_sum += p;
            for (int c = 0; c < head_dim; ++c) out(row, qc + c) += p * qkv(seq_start + j, vc + c);
          }
        }
        const T inv = T(1) / running_sum;
        for (int c = 0; c < head_dim; ++c) out(row, qc + c) *= inv;
        lse(item) = running_max + attention_math::log(running_sum);
      });
}

// Gradients of causal_attention_forward with respect to the roped q, k and v, written (not
// added) into dqkv [n, 3 * d_model]. Probabilities are recomputed as exp(score - lse). With
// delta_i = dout_i . out_i and ds_ij = p_ij (dout_i . v_j - delta_i):
//   dq_i = scale sum_{j<=i} ds_ij k_j      (one thread per query row)
//   dk_j = scale sum_{i>=j} ds_ij q_i,  dv_j = sum_{i>=j} p_ij dout_i   (one thread per key row)
// Each thread owns the rows it writes, so no atomics; sums run in index order. delta: scratch
// [batch * heads * seq_len].
template <class T>
void causal_attention_backward(const Matrix<T>& qkv, const Matrix<T>& out, const Vector<T>& lse,
                               const Matrix<T>& dout, const AttentionDims& dims,
                               const Vector<T>& delta, const Matrix<T>& dqkv) {
  const int seq_len = dims.seq_len, heads = dims.heads, head_dim = dims.head_dim;
  const int d = dims.d_model();
  const T scale = T(1) / T(std::sqrt(double(head_dim)));
  const int items = qkv.extent(0) * heads;
  Kokkos::parallel_for(
      "attention_backward_delta", Range(0, items), KOKKOS_LAMBDA(const int item) {
        const int i = item % seq_len, bh = item / seq_len;
        const int row = (bh / heads) * seq_len + i, oc = (bh % heads) * head_dim;
        T sum = 0;
        for (int c = 0; c < head_dim; ++c) sum += dout(row, oc + c) * out(row, oc + c);
        delta(item) = sum;
      });
  Kokkos::parallel_for(
      "attention_backward_dq", Range(0, items), KOKKOS_LAMBDA(const int item) {
        const int i = item % seq_len, bh = item / seq_len;
        const int h = bh % heads, seq_start = (bh / heads) * seq_len;
        const int row = seq_start + i;
        const int qc = h * head_dim, kc = d + h * head_dim, vc = 2 * d + h * head_dim;
        const T row_lse = lse(item), row_delta = delta(item);
        for (int c = 0; c < head_dim; ++c) dqkv(row, qc + c) = 0;
        for (int j = 0; j <= i; ++j) {
          const int key = seq_start + j;
          T s = 0, dp = 0;
          for (int c = 0; c < head_dim; ++c) {
            s += qkv(row, qc + c) * qkv(key, kc + c);
            dp += dout(row, qc + c) * qkv(key, vc + c);
          }
          const T ds = attention_math::exp(s * scale - row_lse) * (dp - row_delta) * scale;
          for (int c = 0; c < head_dim; ++c) dqkv(row, qc + c) += ds * qkv(key, kc + c);
        }
      });
  Kokkos::parallel_for(
      "attention_backward_dkv", Range(0, items), KOKKOS_LAMBDA(const int item) {
        const int j = item % seq_len, bh = item / seq_len;
        const int h = bh % heads, seq_start = (bh / heads) * seq_len;
        const int key = seq_start + j, lse_base = bh * seq_len;
        const int qc = h * head_dim, kc = d + h * head_dim, vc = 2 * d + h * head_dim;
        for (int c = 0; c < head_dim; ++c) {
          dqkv(key, kc + c) = 0;
          dqkv(key, vc + c) = 0;
        }
        for (int i = j; i < seq_len; ++i) {
          const int row = seq_start + i;
          T s = 0, dp = 0;
          for (int c = 0; c < head_dim; ++c) {
            s += qkv(row, qc + c) * qkv(key, kc + c);
            dp += dout(row, qc + c) * qkv(key, vc + c);
          }
          const T p = attention_math::exp(s * scale - lse(lse_base + i));
          const T ds = p * (dp - delta(lse_base + i)) * scale;
          for (int c = 0; c < head_dim; ++c) {
            dqkv(key, kc + c) += ds * qkv(row, qc + c);
            dqkv(key, vc + c) += p * dout(row, qc + c);
          }
        }
      });
}

}  // namespace daa::kernels
