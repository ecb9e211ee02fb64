// Causal multi-head self-attention with rotary positions, a layer of the language model (issue
// 12) following the contract of layer.hpp: y = Attention(RoPE(x Wqkv)) Wo, no biases. Memory per
// micro-batch slot is O(tokens * d_model): the kernels never form a [seq, seq] matrix.
#pragma once

#include <cstddef>
#include <string>

#include "daa/kernels/attention_kernels.hpp"
#include "daa/kernels/views.hpp"
#include "daa/model/layer.hpp"
#include "daa/model/params.hpp"

namespace daa::model {

struct AttentionShape {
  int d_model = 128;
  int heads = 4;  // head_dim = d_model / heads, even (RoPE rotates pairs of columns)
  int max_seq_len = 256;
  double rope_base = 10000.0;
  int block = 64;  // keys per step of the online softmax
};

// Parameters: "<name>.wqkv" [d_model, 3 * d_model] (columns q | k | v; head h uses columns
// [h * head_dim, (h + 1) * head_dim) of each) and "<name>.wo" [d_model, d_model], applied as
// x * W. Rotary embedding: "rotate half" pairing (column i with i + head_dim / 2 of each head),
// angle pos * rope_base^(-2i / head_dim), pos = row index within its sequence.
template <class T>
class CausalSelfAttention {
 public:
  CausalSelfAttention(ParamStore<T>& store, const std::string& name, const AttentionShape& shape,
                      const ParamPlace& place = {});

  // x: [batch * seq_len, d_model], sequence b in rows [b * seq_len, (b + 1) * seq_len). y has the
  // same shape (caller-sized). x is saved by handle until backward(slot).
  void forward(int slot, const kernels::Matrix<T>& x, int seq_len, const kernels::Matrix<T>& y);
  void backward(int slot, const kernels::Matrix<T>& dy, const kernels::Matrix<T>& dx,
                GradMode mode = GradMode::overwrite);

  const AttentionShape& shape() const { return shape_; }
  const std::string& name() const { return name_; }
  int wqkv_id() const { return wqkv_; }
  int wo_id() const { return wo_; }
  // Bytes of the views a slot's forward saved (roped qkv, pre-projection output, log-sum-exp),
  // not counting x, which the caller owns: O(tokens * d_model), for memory checks.
  std::size_t saved_bytes(int slot);

  // Activation checkpointing ([train] recompute = "attention"): the forward drops the roped qkv,
  // the pre-projection output and the log-sum-exps once y is formed, keeping only x's handle;
  // the backward recomputes them with the same kernels (bit-identical) and drops them again with
  // its scratch, so at most one layer's internals live at a time.
  void set_recompute_internals(bool recompute) { recompute_internals_ = recompute; }
  // Drops everything slot's forward saved (x included): for a caller that recomputes the whole
  // forward before backward(slot) ([train] recompute = "block").
  void release(int slot);
  // Drops the backward's scratch (shared by the slots; regrown on the next backward).
  void release_scratch();

  // Forward FLOPs for `rows` tokens in sequences of seq_len: the two projections (8 rows d^2)
  // and the causal q k^T and p v products (2 * 2 * d per (query, key <= query) pair).
  static double flops(std::size_t rows, int seq_len, int d_model);

 private:
  struct State {
    kernels::Matrix<T> x{"attn_x", 0, 0};
    kernels::Matrix<T> qkv{"attn_qkv", 0, 0};  // after RoPE on q and k
    kernels::Matrix<T> out{"attn_out", 0, 0};  // attention output before wo
    kernels::Vector<T> lse{"attn_lse", 0};     // [batch * heads * seq_len]
    int seq_len = 0;                           // 0: no forward pending
  };

  // Roped qkv, output before wo and log-sum-exps of s.x into s (the forward minus wo).
  void compute_internals(State& s);
  void drop_internals(State& s);

  ParamStore<T>* store_;
  std::string name_;
  AttentionShape shape_;
  bool recompute_internals_ = false;
  int head_dim_;
  int wqkv_ = -1, wo_ = -1;
  kernels::Matrix<T> rope_cos_{"rope_cos", 0, 0}, rope_sin_{"rope_sin", 0, 0};
  SlotStates<State> states_;
  // Scratch shared by all slots: one block of scores (probabilities) and of their gradients per
  // sequence of a batched call, row sums / deltas per (sequence, head, query).
  kernels::BlockScratch<T> probs_{"attn_probs", 0, 0, 0}, dprobs_{"attn_dprobs", 0, 0, 0};
  kernels::Matrix<T> dout_{"attn_dout", 0, 0}, dqkv_{"attn_dqkv", 0, 0};
  kernels::Vector<T> row_stat_{"attn_row_stat", 0};
};

}  // namespace daa::model
