// The causal transformer MoE language model, built only from the shared layers:
//   token embedding -> N x [x + attn(rmsnorm(x)); x + ffn(rmsnorm(x))] -> rmsnorm -> head
//   -> next-token cross-entropy fused with the softmax over the vocabulary.
// Every `moe_every`-th block's FFN is an MoeLayer, the others a dense FeedForward; the head is
// the embedding table transposed (tied) or a Linear of its own. A pipeline stage holds blocks
// [first_block, last_block); the first also the embedding, the last the final norm and head.
// A tied head on another stage than the embedding uses a copy of the table (ParamInfo::tied_copy)
// that the model's owner keeps equal to the first stage's (Model::share_tied_gradients).
// Templated on the scalar so gradient checks run in double and training in float.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "daa/core/config.hpp"
#include "daa/kernels/views.hpp"
#include "daa/model/attention.hpp"
#include "daa/model/moe_layer.hpp"
#include "daa/model/params.hpp"
#include "daa/parallel/communicator.hpp"
#include "daa/parallel/topology.hpp"

namespace daa::model {

// Activation checkpointing ([train] recompute): what the backward recomputes instead of keeping.
// attention: each attention layer's internals (CausalSelfAttention::set_recompute_internals);
// block: each block keeps only its input (the residual stream) and reruns its forward in backward.
// Same kernels in the same order either way, so losses and gradients are bit-identical to none.
enum class Recompute { none, attention, block };

struct LanguageModelShape {
  int vocab = 4096;
  int d_model = 128;
  int layers = 4;  // transformer blocks
  int heads = 4;
  int seq_len = 128;  // the longest sequence the model is built for (rotary tables, checks)
  double rope_base = 10000.0;
  int attention_block = 64;  // keys per step of the online softmax
  int moe_every = 1;         // block b has an MoE FFN when (b + 1) % moe_every == 0; 0: none
  int d_ff_dense = 512;      // width of the dense FFN blocks
  bool tie_embeddings = true;
  double init_std = 0.02;     // weights ~ N(0, init_std); residual outputs scaled 1/sqrt(2 layers)
  std::uint64_t seed = 1234;  // [run] seed's default
  MoeShape moe;               // the MoE FFNs (also the dense FFN's kind, GELU or SwiGLU)
  int first_block = 0;
  int last_block = -1;  // -1: all blocks
  Recompute recompute = Recompute::none;

  int end_block() const { return last_block < 0 ? layers : last_block; }
  bool has_embedding() const { return first_block == 0; }
  bool has_head() const { return end_block() == layers; }
  // Tied embeddings with the embedding and the head on different stages: the first stage holds
  // the table, the last stage a copy of it as its head.
  bool tied_across_stages() const { return tie_embeddings && has_embedding() != has_head(); }
  bool is_moe_block(int block) const { return moe_every > 0 && (block + 1) % moe_every == 0; }
  // Index of block's MoE layer among all MoE layers (-1: a dense block); and their count.
  int moe_layer_of(int block) const;
  int moe_layers() const { return moe_every > 0 ? layers / moe_every : 0; }
  bool operator==(const LanguageModelShape&) const = default;
};

// The whole model an input describes ([model], [moe], [run] seed), for a vocabulary of `vocab`
// tokens, with the experts of rank ep_rank of an expert-parallel group of ep_size.
LanguageModelShape language_model_shape_from_config(const core::Config& config, int vocab,
                                                    int ep_size = 1, int ep_rank = 0);

// Parameters per transformer block (norms, attention, the MoE or dense FFN), of the embedding
// (first stage) and of the final norm and head (last stage; a tied head's copy of the table weighs
// as much as an untied head), for the pipeline split.
parallel::StageCosts language_model_stage_costs(const core::Config& config, int vocab);

// What one forward reports: loss summed over the tokens with a target (in nats), its count,
// top-1 hits, the MoE layers' figures, and the aux + z losses of this rank's objective.
struct LmStats {
  std::int64_t tokens = 0;
  double loss_sum = 0;
  std::int64_t correct = 0;
  double aux_loss = 0;
  double expert_seconds = 0, expert_flops = 0, dispatch_seconds = 0;
  double attention_seconds = 0, attention_flops = 0;
  std::vector<MoeStats> moe;     // per MoE layer held, in block order
  std::vector<double> row_loss;  // last stage, forward without train: each row's loss
};

using TokenIds = Kokkos::View<int*, kernels::MemSpace>;

template <class T>
class Embedding;
template <class T>
class RMSNorm;
template <class T>
class Linear;

template <class T>
class LanguageModel {
 public:
  // With shape.moe.ep_size > 1, `expert_group` is the expert-parallel communicator; it must
  // outlive the model.
  explicit LanguageModel(const LanguageModelShape& shape,
                         const parallel::Communicator* expert_group = nullptr);
  ~LanguageModel();
  LanguageModel(const LanguageModel&) = delete;
  LanguageModel& operator=(const LanguageModel&) = delete;

  const LanguageModelShape& shape() const { return shape_; }
  ParamStore<T>& params() { return params_; }
  const ParamStore<T>& params() const { return params_; }
  void initialize();

  // One stage on micro-batch `slot` of `sequences` sequences of `seq_len` tokens (rows of one
  // sequence contiguous). The first stage reads `tokens` [n], the others `input` [n, d_model]
  // (kept alive by the caller until backward(slot)). The last stage scores `targets` [n] (-1: no
  // target) with mean cross-entropy over the targeted tokens; with `train`, its backward starts
  // from that mean (plus the aux losses). `observer` sees every MoE layer's routing.
  // The head and the loss are fused and run in chunks of rows, so no [n, vocab] buffer exists:
  // with `train` the forward already adds the head's weight gradient (grads must be zeroed
  // before the forward, not between forward and backward).
  LmStats forward(int slot, int seq_len, const TokenIds& tokens, const kernels::Matrix<T>& input,
                  const TokenIds& targets, bool train, const StatsReducer& reduce_stats = {},
                  const RoutingObserver& observer = {});
  // Backward of forward(slot): the last stage from its loss (grad_output unused), the others
  // from the gradient of their output.
  void backward(int slot, const kernels::Matrix<T>& grad_output, LmStats& stats);
  kernels::Matrix<T> output(int slot) const;      // this stage's output [n, d]
  kernels::Matrix<T> input_grad(int slot) const;  // gradient of its input (not the first stage)
  // Logits [n, vocab] of the last forward(slot, ..., train = false) on the last stage, kept only
  // after keep_logits(true) (tests and analysis; training and evaluation never form them).
  kernels::Matrix<T> logits(int slot) const;
  void keep_logits(bool keep) { keep_logits_ = keep; }
  // Rows per chunk of the fused head; 0 (the default): as many as kHeadChunkElements logits hold.
  void set_head_chunk_rows(std::size_t rows) { head_chunk_rows_ = rows; }

  // Routing bias of MoE layer `moe_layer` (global index), held by this stage.
  kernels::Vector<T> routing_bias(int moe_layer) const;

  // This stage's layers, for code that runs them one by one (the incremental decoding of
  // generation.hpp); null where the stage does not hold a layer. Pointers into the model.
  struct BlockLayers {
    RMSNorm<T>* attn_norm;
    CausalSelfAttention<T>* attention;
    RMSNorm<T>* ffn_norm;
    MoeLayer<T>* moe;  // exactly one of moe and dense is set
    FeedForward<T>* dense;
  };
  struct Layers {
    Embedding<T>* embedding;          // on the last stage of a split tied model: the head's copy
    std::vector<BlockLayers> blocks;  // held blocks, in order
    RMSNorm<T>* final_norm;
    Linear<T>* head;  // null with tied embeddings: the embedding's head_forward is the head
  };
  Layers layers();

 private:
  struct Parts;
  // Logits elements per chunk of the fused head (4 MB in float).
  static constexpr std::size_t kHeadChunkElements = std::size_t(1) << 20;
  // Final-norm output of slot -> head -> softmax cross-entropy, chunk by chunk; with `train`
  // also the head's backward into the weight gradient and the slot's dfinal_normed.
  void head_and_loss(int slot, bool train, T grad_scale);
  // Held block i's forward for slot: `first` from forward(), `again` (Recompute::block) before
  // the block's backward, from the input the first pass kept.
  enum class BlockPass { first, again };
  void block_forward(int slot, int i, BlockPass pass, bool train, const StatsReducer& reduce_stats,
                     const RoutingObserver& observer, LmStats& stats);

  LanguageModelShape shape_;
  ParamStore<T> params_;
  std::unique_ptr<Parts> parts_;
  bool keep_logits_ = false;
  std::size_t head_chunk_rows_ = 0;
};

extern template class LanguageModel<float>;
extern template class LanguageModel<double>;

}  // namespace daa::model
