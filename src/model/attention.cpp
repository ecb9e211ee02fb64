// Causal self-attention layer (see attention.hpp): projections through the linalg adapter, RoPE
// and the blocked online-softmax attention (batched block GEMMs + Kokkos kernels) from
// attention_kernels.hpp.
#include "daa/model/attention.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "daa/core/error.hpp"
#include "daa/kernels/linalg.hpp"

namespace daa::model {

using kernels::Matrix;
using kernels::Trans;

namespace {

// Grows (never shrinks) a [sequences, block, block] scratch, so slots and layers of other sizes
// reuse one allocation.
template <class T>
void ensure_block_scratch(kernels::BlockScratch<T>& scratch, int sequences, int block) {
  if (scratch.extent_int(0) >= sequences && scratch.extent_int(1) >= block) return;
  scratch = kernels::BlockScratch<T>(
      Kokkos::view_alloc(scratch.label(), Kokkos::WithoutInitializing),
      std::max(sequences, scratch.extent_int(0)), std::max(block, scratch.extent_int(1)),
      std::max(block, scratch.extent_int(2)));
}

}  // namespace

template <class T>
CausalSelfAttention<T>::CausalSelfAttention(ParamStore<T>& store, const std::string& name,
                                            const AttentionShape& shape, const ParamPlace& place)
    : store_(&store), name_(name), shape_(shape), head_dim_(0) {
  const std::string where = "model::CausalSelfAttention '" + name + "'";
  if (shape.d_model < 1 || shape.heads < 1 || shape.d_model % shape.heads != 0)
    throw Error(fmt::format("{}: d_model {} is not a positive multiple of heads {}", where,
                            shape.d_model, shape.heads));
  head_dim_ = shape.d_model / shape.heads;
  if (head_dim_ % 2 != 0)
    throw Error(fmt::format("{}: head_dim {} (d_model {} / heads {}) must be even for RoPE", where,
                            head_dim_, shape.d_model, shape.heads));
  if (shape.block < 1) throw Error(fmt::format("{}: block {} must be >= 1", where, shape.block));
  if (shape.max_seq_len < 1)
    throw Error(fmt::format("{}: max_seq_len {} must be >= 1", where, shape.max_seq_len));
  if (!(shape.rope_base > 1.0))
    throw Error(fmt::format("{}: rope_base {} must be > 1", where, shape.rope_base));
  const std::size_t d = shape.d_model;
  wqkv_ = store.declare(weight_info(name + ".wqkv", d, 3 * d, place));
  wo_ = store.declare(weight_info(name + ".wo", d, d, place));
  kernels::rope_tables(shape.max_seq_len, head_dim_, shape.rope_base, rope_cos_, rope_sin_);
}

template <class T>
void CausalSelfAttention<T>::forward(int slot, const Matrix<T>& x, int seq_len,
                                     const Matrix<T>& y) {
  const std::size_t d = shape_.d_model, n = x.extent(0);
  const std::string where = "model::CausalSelfAttention '" + name_ + "' forward";
  if (seq_len < 1) throw Error(fmt::format("{}: seq_len {} must be >= 1", where, seq_len));
  if (seq_len > shape_.max_seq_len)
    throw Error(
        fmt::format("{}: seq_len {} exceeds max_seq_len {}", where, seq_len, shape_.max_seq_len));
  if (n % std::size_t(seq_len) != 0)
    throw Error(fmt::format("{}: rows {} are not a multiple of seq_len {}", where, n, seq_len));
  if (x.extent(1) != d || y.extent(0) != n || y.extent(1) != d)
    throw Error(fmt::format("{}: x [{}, {}] and y [{}, {}] must both be [rows, d_model {}]", where,
                            n, x.extent(1), y.extent(0), y.extent(1), d));
  State& s = states_[slot];
  s.x = x;
  s.seq_len = seq_len;
  compute_internals(s);
  kernels::gemm(Trans::no, Trans::no, T(1), s.out, store_->value(wo_), T(0), y);
  if (recompute_internals_) {
    Kokkos::fence();
    drop_internals(s);
  }
}

template <class T>
void CausalSelfAttention<T>::compute_internals(State& s) {
  const std::size_t d = shape_.d_model, n = s.x.extent(0);
  const int seq_len = s.seq_len;
  const kernels::AttentionDims dims{seq_len, shape_.heads, head_dim_};
  kernels::ensure_extent(s.qkv, n, 3 * d);
  kernels::ensure_extent(s.out, n, d);
  kernels::ensure_extent(s.lse, n * shape_.heads);
  // A query sees at most seq_len keys, so a block beyond that needs no wider scratch.
  const int block = std::min(shape_.block, seq_len);
  const int per_call = kernels::attention_sequences_per_call(int(n) / seq_len);
  ensure_block_scratch(probs_, per_call, block);
  kernels::ensure_extent(row_stat_, n * shape_.heads);

  kernels::gemm(Trans::no, Trans::no, T(1), s.x, store_->value(wqkv_), T(0), s.qkv);
  kernels::rope_rotate(s.qkv, dims, rope_cos_, rope_sin_, false);
  kernels::causal_attention_forward(s.qkv, dims, block, per_call, probs_, row_stat_, s.out, s.lse);
  Kokkos::fence();
}

template <class T>
void CausalSelfAttention<T>::drop_internals(State& s) {
  s.qkv = Matrix<T>("attn_qkv", 0, 0);
  s.out = Matrix<T>("attn_out", 0, 0);
  s.lse = kernels::Vector<T>("attn_lse", 0);
}

template <class T>
void CausalSelfAttention<T>::release(int slot) {
  State& s = states_[slot];
  drop_internals(s);
  s.x = Matrix<T>("attn_x", 0, 0);
  s.seq_len = 0;
}

template <class T>
void CausalSelfAttention<T>::release_scratch() {
  probs_ = kernels::BlockScratch<T>("attn_probs", 0, 0, 0);
  dprobs_ = kernels::BlockScratch<T>("attn_dprobs", 0, 0, 0);
  dout_ = Matrix<T>("attn_dout", 0, 0);
  dqkv_ = Matrix<T>("attn_dqkv", 0, 0);
  row_stat_ = kernels::Vector<T>("attn_row_stat", 0);
}

template <class T>
void CausalSelfAttention<T>::backward(int slot, const Matrix<T>& dy, const Matrix<T>& dx,
                                      GradMode mode) {
  State& s = states_[slot];
  const std::string where = "model::CausalSelfAttention '" + name_ + "' backward";
  if (s.seq_len == 0) throw Error(fmt::format("{}: slot {} has no forward pending", where, slot));
  const std::size_t d = shape_.d_model, n = s.x.extent(0);
  if (dy.extent(0) != n || dy.extent(1) != d ||
      (dx.extent(0) != 0 && (dx.extent(0) != n || dx.extent(1) != d)))
    throw Error(fmt::format("{}: dy [{}, {}] and dx [{}, {}] must be [rows {}, d_model {}]", where,
                            dy.extent(0), dy.extent(1), dx.extent(0), dx.extent(1), n, d));
  // Checkpointed: the internals the forward dropped, recomputed exactly as it formed them.
  if (recompute_internals_) compute_internals(s);
  const kernels::AttentionDims dims{s.seq_len, shape_.heads, head_dim_};
  kernels::ensure_extent(dout_, n, d);
  kernels::ensure_extent(dqkv_, n, 3 * d);
  kernels::ensure_extent(row_stat_, n * shape_.heads);
  const int block = std::min(shape_.block, s.seq_len);
  const int per_call = kernels::attention_sequences_per_call(int(n) / s.seq_len);
  ensure_block_scratch(probs_, per_call, block);
  ensure_block_scratch(dprobs_, per_call, block);

  // y = out wo: d wo += out^T dy, d out = dy wo^T.
  kernels::gemm(Trans::yes, Trans::no, T(1), s.out, dy, T(1), store_->grad(wo_));
  kernels::gemm(Trans::no, Trans::yes, T(1), dy, store_->value(wo_), T(0), dout_);
  kernels::causal_attention_backward(s.qkv, s.out, s.lse, dout_, dims, block, per_call, probs_,
                                     dprobs_, row_stat_, dqkv_);
  kernels::rope_rotate(dqkv_, dims, rope_cos_, rope_sin_, true);
  Kokkos::fence();
  // qkv = x wqkv: d wqkv += x^T dqkv, dx (+)= dqkv wqkv^T.
  kernels::gemm(Trans::yes, Trans::no, T(1), s.x, dqkv_, T(1), store_->grad(wqkv_));
  if (dx.extent(0) != 0)
    kernels::gemm(Trans::no, Trans::yes, T(1), dqkv_, store_->value(wqkv_),
                  mode == GradMode::accumulate ? T(1) : T(0), dx);
  // The slot's input handle is released: the caller may reuse x.
  s.x = Matrix<T>("attn_x", 0, 0);
  s.seq_len = 0;
  if (recompute_internals_) {
    Kokkos::fence();
    drop_internals(s);
    release_scratch();
  }
}

template <class T>
std::size_t CausalSelfAttention<T>::saved_bytes(int slot) {
  const State& s = states_[slot];
  return (s.qkv.size() + s.out.size() + s.lse.size()) * sizeof(T);
}

template <class T>
double CausalSelfAttention<T>::flops(std::size_t rows, int seq_len, int d_model) {
  const double n = double(rows), d = double(d_model);
  // Per sequence seq_len (seq_len + 1) / 2 causal pairs, i.e. rows (seq_len + 1) / 2 in all.
  const double pairs = n * (double(seq_len) + 1) / 2;
  return 2 * n * d * (3 * d) + 2 * n * d * d + 2 * 2 * d * pairs;
}

template class CausalSelfAttention<float>;
template class CausalSelfAttention<double>;

}  // namespace daa::model
