// Kokkos kernels of causal multi-head self-attention: rotary position embedding (RoPE) and a
// blocked, online-softmax (FlashAttention-style) forward and backward that never form a
// [seq, seq] matrix. Used by model/attention.hpp; templated on the scalar, GPU-ready.
#pragma once

#include <cmath>
#include <utility>

#include "daa/kernels/fast_exp.hpp"
#include "daa/kernels/kokkos_compat.hpp"
#include "daa/kernels/linalg.hpp"
#include "daa/kernels/views.hpp"

namespace daa::kernels {

// Scratch of one block of scores (or probabilities, or their gradients) per sequence of a call:
// [sequences, block, block].
template <class T>
using BlockScratch = Kokkos::View<T***, Kokkos::LayoutRight, MemSpace>;

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

// Sequences per batched block product on this memory space: on the host a few, so that one call's
// blocks (q, k, v, scores) stay in the core's L2 cache; on a GPU all, for one large launch.
inline int attention_sequences_per_call(int sequences) {
  constexpr bool host = Kokkos::SpaceAccessibility<Kokkos::HostSpace, MemSpace>::accessible;
  return host ? (sequences < 4 ? sequences : 4) : sequences;
}

// Rows [r0, r1) and columns [c0, c1) of sequences [s0, s1) of a matrix whose rows are sequences
// of seq_len consecutive rows: a [sequences, rows, cols] view for gemm_batched. The matrix must
// be contiguous (row stride = columns), as every Matrix allocated here is.
template <class T>
auto sequence_block(const Matrix<T>& m, int seq_len, int s0, int s1, int r0, int r1, int c0,
                    int c1) {
  const Kokkos::View<T***, Kokkos::LayoutRight, MemSpace, Kokkos::MemoryUnmanaged> whole(
      m.data(), m.extent(0) / seq_len, seq_len, m.extent(1));
  return Kokkos::subview(whole, std::make_pair(s0, s1), std::make_pair(r0, r1),
                         std::make_pair(c0, c1));
}

// out = softmax(q k^T / sqrt(head_dim)) v per sequence and head, causal (key j <= query i), from
// the roped qkv, FlashAttention-style: per head and block of `block` queries, the keys are walked
// in blocks of `block`; each block's scores S = scale Q K^T and its contribution O += P V are
// batched GEMMs over `sequences_per_call` sequences (linalg adapter), and one kernel between them
// masks the causal diagonal block, raises each row's running max, rescales the row's running sum
// and output accumulator (kept in `out`) and turns S into P = exp(S - max) in place. Writes
// lse[(b * heads + h) * seq_len + i] = log sum_j exp(score_ij), all backward needs to recompute
// the probabilities. Scratch: scores [>= sequences_per_call, >= block', >= block'] with block' =
// min(block, seq_len); row_sum [batch * heads * seq_len]. Nothing of size seq_len^2 is formed.
template <class T>
void causal_attention_forward(const Matrix<T>& qkv, const AttentionDims& dims, int block,
                              int sequences_per_call, const BlockScratch<T>& scores,
                              const Vector<T>& row_sum, const Matrix<T>& out,
                              const Vector<T>& lse) {
  const int seq_len = dims.seq_len, heads = dims.heads, head_dim = dims.head_dim;
  const int d = dims.d_model(), batch = int(qkv.extent(0)) / seq_len;
  const int bs = block < seq_len ? block : seq_len, blocks = (seq_len + bs - 1) / bs;
  const T scale = T(1) / T(std::sqrt(double(head_dim)));
  for (int s0 = 0; s0 < batch; s0 += sequences_per_call) {
    const int s1 = s0 + sequences_per_call < batch ? s0 + sequences_per_call : batch;
    for (int h = 0; h < heads; ++h) {
      const int qc = h * head_dim, kc = d + qc, vc = 2 * d + qc;
      for (int qb = 0; qb < blocks; ++qb) {
        const int q0 = qb * bs, q1 = q0 + bs < seq_len ? q0 + bs : seq_len, rows = q1 - q0;
        const auto q = sequence_block(qkv, seq_len, s0, s1, q0, q1, qc, qc + head_dim);
        const auto o = sequence_block(out, seq_len, s0, s1, q0, q1, qc, qc + head_dim);
        for (int kb = 0; kb <= qb; ++kb) {
          const int k0 = kb * bs, k1 = k0 + bs < seq_len ? k0 + bs : seq_len, keys = k1 - k0;
          const auto s = Kokkos::subview(scores, std::make_pair(0, s1 - s0),
                                         std::make_pair(0, rows), std::make_pair(0, keys));
          Kokkos::fence();
          gemm_batched(Trans::no, Trans::yes, scale, q,
                       sequence_block(qkv, seq_len, s0, s1, k0, k1, kc, kc + head_dim), T(0), s);
          Kokkos::parallel_for(
              "attention_forward_block", Range(0, (s1 - s0) * rows), KOKKOS_LAMBDA(const int item) {
                const int sq = item / rows, r = item % rows, i = q0 + r;
                const int stat = ((s0 + sq) * heads + h) * seq_len + i;
                // Keys k0 .. min(k1, i + 1) - 1 are visible; at least k0 itself, since k0 <= q0.
                const int visible = (i + 1 < k1 ? i + 1 : k1) - k0;
                T block_max = s(sq, r, 0);
                for (int j = 1; j < visible; ++j)
                  block_max = s(sq, r, j) > block_max ? s(sq, r, j) : block_max;
                // The first block sets the max; later ones rescale what came before.
                T running_max = block_max, sum = 0;
                if (kb > 0) {
                  running_max = lse(stat);
                  sum = row_sum(stat);
                  if (block_max > running_max) {
                    const T alpha = exp_vectorizable(running_max - block_max);
                    sum *= alpha;
                    for (int c = 0; c < head_dim; ++c) o(sq, r, c) *= alpha;
                    running_max = block_max;
                  }
                }
                // Two loops: the first (exp) vectorizes; the in-order sum cannot.
                for (int j = 0; j < keys; ++j)
                  s(sq, r, j) = j < visible ? exp_vectorizable(s(sq, r, j) - running_max) : T(0);
                for (int j = 0; j < visible; ++j) sum += s(sq, r, j);
                lse(stat) = running_max;  // the running max until the last block
                row_sum(stat) = sum;
              });
          Kokkos::fence();
          gemm_batched(Trans::no, Trans::no, T(1), s,
                       sequence_block(qkv, seq_len, s0, s1, k0, k1, vc, vc + head_dim),
                       kb == 0 ? T(0) : T(1), o);
        }
        Kokkos::fence();
        Kokkos::parallel_for(
            "attention_forward_finish", Range(0, (s1 - s0) * rows), KOKKOS_LAMBDA(const int item) {
              const int sq = item / rows, r = item % rows;
              const int stat = ((s0 + sq) * heads + h) * seq_len + q0 + r;
              const T inv = T(1) / row_sum(stat);
              for (int c = 0; c < head_dim; ++c) o(sq, r, c) *= inv;
              lse(stat) = lse(stat) + kmath::log(row_sum(stat));
            });
      }
    }
  }
}

// Gradients of causal_attention_forward with respect to the roped q, k and v, written (not
// added) into dqkv [n, 3 * d_model]. With delta_i = dout_i . out_i, p_ij = exp(score_ij - lse_i)
// recomputed per block and ds_ij = p_ij (dout_i . v_j - delta_i), per head, key block and query
// block (FlashAttention-2's order: key blocks outer, so dK and dV of a block are finished in one
// pass) as batched GEMMs through the linalg adapter:
//   S = scale Q K^T, dP = dO V^T; (kernel) P, dS; dV += P^T dO, dK += scale dS^T Q,
//   dQ += scale dS K.
// Sums over key blocks and query blocks run in block order; inside a block BLAS chooses the order
// (tests compare against a full-matrix reference, not bit patterns). Scratch: probs and dprobs as
// scores in the forward; delta [batch * heads * seq_len].
template <class T>
void causal_attention_backward(const Matrix<T>& qkv, const Matrix<T>& out, const Vector<T>& lse,
                               const Matrix<T>& dout, const AttentionDims& dims, int block,
                               int sequences_per_call, const BlockScratch<T>& probs,
                               const BlockScratch<T>& dprobs, const Vector<T>& delta,
                               const Matrix<T>& dqkv) {
  const int seq_len = dims.seq_len, heads = dims.heads, head_dim = dims.head_dim;
  const int d = dims.d_model(), batch = int(qkv.extent(0)) / seq_len;
  const int bs = block < seq_len ? block : seq_len, blocks = (seq_len + bs - 1) / bs;
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
  for (int s0 = 0; s0 < batch; s0 += sequences_per_call) {
    const int s1 = s0 + sequences_per_call < batch ? s0 + sequences_per_call : batch;
    for (int h = 0; h < heads; ++h) {
      const int qc = h * head_dim, kc = d + qc, vc = 2 * d + qc;
      for (int kb = 0; kb < blocks; ++kb) {
        const int k0 = kb * bs, k1 = k0 + bs < seq_len ? k0 + bs : seq_len, keys = k1 - k0;
        const auto k = sequence_block(qkv, seq_len, s0, s1, k0, k1, kc, kc + head_dim);
        const auto v = sequence_block(qkv, seq_len, s0, s1, k0, k1, vc, vc + head_dim);
        const auto dk = sequence_block(dqkv, seq_len, s0, s1, k0, k1, kc, kc + head_dim);
        const auto dv = sequence_block(dqkv, seq_len, s0, s1, k0, k1, vc, vc + head_dim);
        for (int qb = kb; qb < blocks; ++qb) {
          const int q0 = qb * bs, q1 = q0 + bs < seq_len ? q0 + bs : seq_len, rows = q1 - q0;
          const auto q = sequence_block(qkv, seq_len, s0, s1, q0, q1, qc, qc + head_dim);
          const auto dq = sequence_block(dqkv, seq_len, s0, s1, q0, q1, qc, qc + head_dim);
          const auto dO = sequence_block(dout, seq_len, s0, s1, q0, q1, qc, qc + head_dim);
          const auto p = Kokkos::subview(probs, std::make_pair(0, s1 - s0), std::make_pair(0, rows),
                                         std::make_pair(0, keys));
          const auto dp = Kokkos::subview(dprobs, std::make_pair(0, s1 - s0),
                                          std::make_pair(0, rows), std::make_pair(0, keys));
          Kokkos::fence();
          gemm_batched(Trans::no, Trans::yes, scale, q, k, T(0), p);
          gemm_batched(Trans::no, Trans::yes, T(1), dO, v, T(0), dp);
          Kokkos::parallel_for(
              "attention_backward_block", Range(0, (s1 - s0) * rows),
              KOKKOS_LAMBDA(const int item) {
                const int sq = item / rows, r = item % rows, i = q0 + r;
                const int stat = ((s0 + sq) * heads + h) * seq_len + i;
                const int visible = (i + 1 < k1 ? i + 1 : k1) - k0;
                const T row_lse = lse(stat), row_delta = delta(stat);
                for (int j = 0; j < keys; ++j) {
                  const T pj = j < visible ? exp_vectorizable(p(sq, r, j) - row_lse) : T(0);
                  p(sq, r, j) = pj;
                  dp(sq, r, j) = pj * (dp(sq, r, j) - row_delta);
                }
              });
          Kokkos::fence();
          // The diagonal block is the first to reach dK, dV of key block kb; key block 0 the
          // first to reach dQ of query block qb.
          const T first_kv = qb == kb ? T(0) : T(1), first_q = kb == 0 ? T(0) : T(1);
          gemm_batched(Trans::yes, Trans::no, T(1), p, dO, first_kv, dv);
          gemm_batched(Trans::yes, Trans::no, scale, dp, q, first_kv, dk);
          gemm_batched(Trans::no, Trans::no, scale, dp, k, first_q, dq);
        }
      }
    }
  }
}

}  // namespace daa::kernels
