// Forward and backward of the transformer MoE language model (see language_model.hpp): the block
// loop composes norms, attention, FFNs and residual adds; each layer keeps its own slot state.
#include "daa/model/language_model.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>

#include "daa/core/clock.hpp"
#include "daa/core/error.hpp"
#include "daa/kernels/nn_kernels.hpp"
#include "daa/model/embedding.hpp"
#include "daa/model/linear.hpp"
#include "daa/model/norms.hpp"

namespace daa::model {

using kernels::Matrix;

int LanguageModelShape::moe_layer_of(int block) const {
  if (!is_moe_block(block)) return -1;
  int index = 0;
  for (int b = 0; b < block; ++b) index += is_moe_block(b) ? 1 : 0;
  return index;
}

LanguageModelShape language_model_shape_from_config(const core::Config& config, int vocab,
                                                    int ep_size, int ep_rank) {
  LanguageModelShape s;
  s.vocab = vocab;
  s.d_model = config.model.d_model;
  s.layers = config.model.layers;
  s.heads = config.model.heads;
  s.seq_len = config.model.seq_len;
  s.rope_base = config.model.rope_base;
  s.attention_block = config.model.attention_block;
  s.moe_every = config.model.moe_every;
  s.d_ff_dense = config.model.d_ff_dense;
  s.tie_embeddings = config.model.tie_embeddings;
  s.init_std = config.model.init_std > 0 ? config.model.init_std : 0.02;
  s.seed = config.run.seed;
  s.moe = moe_shape_from_config(config, ep_size, ep_rank);
  s.recompute = config.train.recompute == core::Recompute::block       ? Recompute::block
                : config.train.recompute == core::Recompute::attention ? Recompute::attention
                                                                       : Recompute::none;
  return s;
}

parallel::StageCosts language_model_stage_costs(const core::Config& config, int vocab) {
  const double d = config.model.d_model, e = config.moe.experts, f = config.moe.d_ff;
  const bool swiglu = config.moe.ffn == core::ExpertFfnKind::swiglu;
  // A GELU FFN of width w: 2 d w + w + d; a SwiGLU one: 3 d w.
  auto ffn = [&](double w) { return swiglu ? 3 * d * w : 2 * d * w + w + d; };
  const double attention = 4 * d * d + 2 * d;  // wqkv, wo, two norms
  parallel::StageCosts costs;
  costs.blocks.assign(std::size_t(core::model_blocks(config)),
                      attention + ffn(config.model.d_ff_dense));
  for (const int b : core::moe_blocks(config))
    costs.blocks[std::size_t(b)] = attention + d * e + e * ffn(f);
  costs.first = double(vocab) * d;
  // The head's table, tied or not: with a pipeline the last stage holds a tied table's copy.
  costs.last = d + d * double(vocab);
  return costs;
}

template <class T>
struct LanguageModel<T>::Parts {
  struct Block {
    RMSNorm<T> attn_norm;
    CausalSelfAttention<T> attention;
    RMSNorm<T> ffn_norm;
    std::optional<MoeLayer<T>> moe;  // or the dense FFN
    std::optional<FeedForward<T>> dense;
    // Recompute::block: drop what the block's layers saved for slot (and, after its backward,
    // their backward scratch), so that one block's activations live at a time.
    void release(int slot, bool scratch) {
      attention.release(slot);
      if (moe) moe->release(slot);
      if (dense) dense->release(slot);
      if (!scratch) return;
      attention.release_scratch();
      if (moe) moe->release_scratch();
      if (dense) dense->release_scratch();
    }
  };
  // Saved per micro-batch slot, besides what the layers keep.
  struct Slot {
    std::size_t n = 0;
    int seq_len = 0;
    std::vector<Matrix<T>> residual;  // residual[b]: input of held block b; [blocks]: output
    // Per held block; with Recompute::block every entry is a handle to Parts' one set, which
    // the forward and each block's recompute overwrite.
    std::vector<Matrix<T>> normed_attn, mid, normed_ffn;
    Matrix<T> final_normed{"final_normed", 0, 0};
    // Training: d(loss)/d(final_normed), which the fused head computes during the forward.
    Matrix<T> dfinal_normed{"dfinal_normed", 0, 0};
    Matrix<T> logits{"logits", 0, 0};  // [n, vocab], only with keep_logits(true)
    Matrix<T> input_grad{"input_grad", 0, 0};
    TokenIds targets{"targets", 0};
    std::int64_t targeted = 0;
    std::vector<MoeStats> moe;
  };
  std::optional<Embedding<T>> embedding;
  std::vector<Block> blocks;
  std::optional<RMSNorm<T>> final_norm;
  std::optional<Linear<T>> head;  // untied head
  std::vector<Slot> slots;
  // Scratch shared by the blocks: a sublayer's output, the running residual gradient, a
  // sublayer's input gradient.
  Matrix<T> out{"block_out", 0, 0}, dres{"dres", 0, 0}, dnormed{"dnormed", 0, 0};
  // Recompute::block: the one set of a block's inner activations that every block and slot
  // share (the forward's, then each backward's recompute).
  Matrix<T> normed_attn{"normed_attn", 0, 0}, mid{"mid", 0, 0}, normed_ffn{"normed_ffn", 0, 0};
  Matrix<T> logits_chunk{"logits_chunk", 0, 0};  // the fused head's [rows, vocab] scratch
  kernels::Vector<T> row_loss{"row_loss", 0};
  Kokkos::View<int*, kernels::MemSpace> row_correct{"row_correct", 0};

  Slot& slot(int i) {
    if (slots.size() <= std::size_t(i)) slots.resize(std::size_t(i) + 1);
    return slots[std::size_t(i)];
  }
};

template <class T>
LanguageModel<T>::LanguageModel(const LanguageModelShape& shape,
                                const parallel::Communicator* expert_group)
    : shape_(shape), parts_(std::make_unique<Parts>()) {
  const LanguageModelShape& s = shape_;
  if (s.vocab < 2 || s.layers < 1 || s.first_block < 0 || s.end_block() > s.layers ||
      s.first_block > s.end_block())
    throw Error(
        fmt::format("model::LanguageModel: vocab {}, {} layers, blocks [{}, {}) do not "
                    "form a model",
                    s.vocab, s.layers, s.first_block, s.end_block()));
  if (s.moe.d_model != s.d_model)
    throw Error("model::LanguageModel: the MoE layers' d_model differs from the model's");
  Parts& p = *parts_;
  const AttentionShape attention{.d_model = s.d_model,
                                 .heads = s.heads,
                                 .max_seq_len = s.seq_len,
                                 .rope_base = s.rope_base,
                                 .block = s.attention_block};
  MoeShape dense = s.moe;
  dense.d_ff = s.d_ff_dense;
  // A tied head on a stage without the embedding gets a copy of the table, as Megatron does:
  // declared under the same name, so it draws the same initial values and a restart fills it
  // from the same datasets, and flagged so that only the first stage's table is written, counted
  // and trained. The copy's gradient goes to the first stage and the new values come back
  // (Model::share_tied_gradients/parameters), which keeps the two bit-identical.
  const bool tied_copy = s.tie_embeddings && s.has_head() && !s.has_embedding();
  if (s.has_embedding() || tied_copy)
    p.embedding.emplace(params_, "embedding", s.vocab, s.d_model,
                        ParamPlace{.tied_copy = tied_copy});
  p.blocks.reserve(std::size_t(s.end_block() - s.first_block));
  for (int b = s.first_block; b < s.end_block(); ++b) {
    const std::string name = "block" + std::to_string(b);
    const int moe_layer = s.moe_layer_of(b);
    auto& block = p.blocks.emplace_back(typename Parts::Block{
        RMSNorm<T>(params_, name + ".attn_norm", s.d_model),
        CausalSelfAttention<T>(params_, name + ".attn", attention),
        RMSNorm<T>(params_, name + ".ffn_norm", s.d_model), std::nullopt, std::nullopt});
    block.attention.set_recompute_internals(s.recompute == Recompute::attention);
    if (moe_layer >= 0)
      block.moe.emplace(params_, name + ".moe", moe_layer, s.moe, expert_group);
    else
      block.dense.emplace(params_, name + ".ffn", dense);
  }
  if (s.has_head()) {
    p.final_norm.emplace(params_, "final_norm", s.d_model);
    if (!s.tie_embeddings) p.head.emplace(params_, "head", s.d_model, s.vocab, false);
  }
  params_.allocate();
  initialize();
}

template <class T>
LanguageModel<T>::~LanguageModel() = default;

template <class T>
void LanguageModel<T>::initialize() {
  // GPT-2's scheme: N(0, init_std), the projections that write into the residual stream scaled
  // down by sqrt(2 * layers) so the stream's variance does not grow with depth.
  const double residual_scale = 1.0 / std::sqrt(2.0 * shape_.layers);
  params_.initialize(shape_.seed, [&](const ParamInfo& p) {
    const bool writes_residual = p.name.ends_with(".wo") || p.name.ends_with(".w2");
    return shape_.init_std * (writes_residual ? residual_scale : 1.0);
  });
}

template <class T>
LmStats LanguageModel<T>::forward(int slot_index, int seq_len, const TokenIds& tokens,
                                  const Matrix<T>& input, const TokenIds& targets, bool train,
                                  const StatsReducer& reduce_stats,
                                  const RoutingObserver& observer) {
  const LanguageModelShape& s = shape_;
  Parts& p = *parts_;
  typename Parts::Slot& slot = p.slot(slot_index);
  const std::size_t n = s.has_embedding() ? tokens.extent(0) : input.extent(0);
  const auto d = std::size_t(s.d_model);
  if (!s.has_embedding() && input.extent(1) != d)
    throw Error(fmt::format("model::LanguageModel::forward: input is [{}, {}], expected width {}",
                            input.extent(0), input.extent(1), d));
  if (s.has_head() && targets.extent(0) != n)
    throw Error(fmt::format("model::LanguageModel::forward: {} targets for {} tokens",
                            targets.extent(0), n));
  const int held = s.end_block() - s.first_block;
  slot.n = n;
  slot.seq_len = seq_len;
  slot.residual.resize(std::size_t(held) + 1);
  slot.normed_attn.resize(std::size_t(held));
  slot.mid.resize(std::size_t(held));
  slot.normed_ffn.resize(std::size_t(held));
  slot.moe.clear();
  LmStats stats;

  if (s.has_embedding()) {
    kernels::ensure_extent(slot.residual[0], n, d);
    p.embedding->forward(slot_index, tokens, slot.residual[0]);
  } else {
    slot.residual[0] = input;
  }
  for (int i = 0; i < held; ++i)
    block_forward(slot_index, i, BlockPass::first, train, reduce_stats, observer, stats);

  if (s.has_head()) {
    const Matrix<T>& h = slot.residual[std::size_t(held)];
    kernels::ensure_extent(slot.final_normed, n, d);
    p.final_norm->forward(slot_index, h, slot.final_normed);
    const auto targets_h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), targets);
    std::int64_t targeted = 0;
    for (std::size_t t = 0; t < n; ++t) {
      if (targets_h(t) >= s.vocab || targets_h(t) < -1)
        throw Error(
            fmt::format("model::LanguageModel::forward: target {} at row {} is outside "
                        "the vocabulary of {} tokens",
                        targets_h(t), t, s.vocab));
      targeted += targets_h(t) >= 0 ? 1 : 0;
    }
    slot.targets = targets;
    slot.targeted = targeted;
    head_and_loss(slot_index, train, targeted > 0 ? T(1) / T(targeted) : T(0));
    const auto loss_h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), p.row_loss);
    const auto correct_h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), p.row_correct);
    if (!train) stats.row_loss.resize(n);
    for (std::size_t t = 0; t < n; ++t) {
      stats.loss_sum += double(loss_h(t));
      stats.correct += correct_h(t);
      if (!train) stats.row_loss[t] = double(loss_h(t));
    }
    stats.tokens = targeted;
  }
  return stats;
}

template <class T>
void LanguageModel<T>::backward(int slot_index, const Matrix<T>& grad_output, LmStats& stats) {
  const LanguageModelShape& s = shape_;
  Parts& p = *parts_;
  typename Parts::Slot& slot = p.slot(slot_index);
  const std::size_t n = slot.n;
  const auto d = std::size_t(s.d_model);
  const int held = s.end_block() - s.first_block;
  kernels::ensure_extent(p.dres, n, d);
  kernels::ensure_extent(p.dnormed, n, d);
  if (s.has_head()) {
    // The training forward left d(mean loss)/d(final_normed) and the head's weight gradient.
    p.final_norm->backward(slot_index, slot.dfinal_normed, p.dres);
  } else {
    if (grad_output.extent(0) != n || grad_output.extent(1) != d)
      throw Error(
          fmt::format("model::LanguageModel::backward: output gradient is [{}, {}], "
                      "expected [{}, {}]",
                      grad_output.extent(0), grad_output.extent(1), n, d));
    Kokkos::deep_copy(p.dres, grad_output);
  }
  std::size_t moe_index = slot.moe.size();
  const bool block_recompute = s.recompute == Recompute::block;
  for (int i = held - 1; i >= 0; --i) {
    typename Parts::Block& block = p.blocks[std::size_t(i)];
    if (block_recompute) block_forward(slot_index, i, BlockPass::again, true, {}, {}, stats);
    // dres: the gradient of residual[i+1] = mid + ffn(norm(mid)); then of mid = x + attn(norm(x)).
    if (block.moe) {
      MoeStats& moe = slot.moe[--moe_index];
      const double seconds = moe.expert_seconds, flops = moe.expert_flops,
                   dispatch = moe.dispatch_seconds;
      block.moe->backward(slot_index, p.dres, p.dnormed, GradMode::overwrite, moe);
      stats.expert_seconds += moe.expert_seconds - seconds;
      stats.expert_flops += moe.expert_flops - flops;
      stats.dispatch_seconds += moe.dispatch_seconds - dispatch;
    } else {
      block.dense->backward(slot_index, p.dres, p.dnormed, GradMode::overwrite);
    }
    block.ffn_norm.backward(slot_index, p.dnormed, p.dres, GradMode::accumulate);
    Kokkos::fence();
    const auto attention_start = core::Clock::now();
    block.attention.backward(slot_index, p.dres, p.dnormed, GradMode::overwrite);
    Kokkos::fence();
    stats.attention_seconds += core::seconds_since(attention_start);
    stats.attention_flops += 2.0 * CausalSelfAttention<T>::flops(n, slot.seq_len, s.d_model);
    block.attn_norm.backward(slot_index, p.dnormed, p.dres, GradMode::accumulate);
    if (block_recompute) {
      Kokkos::fence();
      block.release(slot_index, true);
    }
  }
  if (s.has_embedding()) {
    p.embedding->backward(slot_index, p.dres);
  } else {
    // For the previous stage; a copy per slot, since its send may still be in flight.
    kernels::ensure_extent(slot.input_grad, n, d);
    Kokkos::deep_copy(slot.input_grad, p.dres);
  }
  Kokkos::fence();
}

template <class T>
void LanguageModel<T>::block_forward(int slot_index, int i, BlockPass pass, bool train,
                                     const StatsReducer& reduce_stats,
                                     const RoutingObserver& observer, LmStats& stats) {
  // The first pass writes the block's output residual[i+1]; with Recompute::block it then frees
  // what the layers saved. The second pass (before the block's backward) repeats the same calls
  // on the same kept input, so the layers save what they saved the first time; the MoE layer
  // reuses the first pass's routing figures instead of reducing and observing them again.
  Parts& p = *parts_;
  typename Parts::Slot& slot = p.slot(slot_index);
  typename Parts::Block& block = p.blocks[std::size_t(i)];
  const auto b = std::size_t(i);
  const std::size_t n = slot.n, d = std::size_t(shape_.d_model);
  const bool again = pass == BlockPass::again;
  if (shape_.recompute == Recompute::block) {
    // Every block and slot shares Parts' one set of inner activations.
    kernels::ensure_extent(p.normed_attn, n, d);
    kernels::ensure_extent(p.mid, n, d);
    kernels::ensure_extent(p.normed_ffn, n, d);
    slot.normed_attn[b] = p.normed_attn;
    slot.mid[b] = p.mid;
    slot.normed_ffn[b] = p.normed_ffn;
  } else {
    kernels::ensure_extent(slot.normed_attn[b], n, d);
    kernels::ensure_extent(slot.mid[b], n, d);
    kernels::ensure_extent(slot.normed_ffn[b], n, d);
  }
  kernels::ensure_extent(p.out, n, d);
  const Matrix<T> x = slot.residual[b], normed_attn = slot.normed_attn[b], mid = slot.mid[b],
                  normed_ffn = slot.normed_ffn[b], out = p.out;

  block.attn_norm.forward(slot_index, x, normed_attn);
  Kokkos::fence();
  const auto attention_start = core::Clock::now();
  block.attention.forward(slot_index, normed_attn, slot.seq_len, out);
  Kokkos::fence();
  stats.attention_seconds += core::seconds_since(attention_start);
  stats.attention_flops += CausalSelfAttention<T>::flops(n, slot.seq_len, shape_.d_model);
  kernels::residual_add(mid, x, out);
  block.ffn_norm.forward(slot_index, mid, normed_ffn);
  if (block.moe) {
    MoeStats moe;
    if (again) {
      block.moe->recompute(slot_index, normed_ffn, out, moe);
    } else {
      moe = block.moe->forward(slot_index, normed_ffn, out, train, reduce_stats, observer);
      stats.aux_loss += moe.aux_loss + moe.z_loss;
    }
    stats.expert_seconds += moe.expert_seconds;
    stats.expert_flops += moe.expert_flops;
    stats.dispatch_seconds += moe.dispatch_seconds;
    if (!again) {
      slot.moe.push_back(moe);
      stats.moe.push_back(std::move(moe));
    }
  } else {
    block.dense->forward(slot_index, normed_ffn, out);
  }
  if (!again) {
    kernels::ensure_extent(slot.residual[b + 1], n, d);
    kernels::residual_add(slot.residual[b + 1], mid, out);
  }
  if (again) {
    Kokkos::fence();
  } else if (shape_.recompute == Recompute::block) {
    Kokkos::fence();
    block.release(slot_index, false);
  }
}

template <class T>
Matrix<T> LanguageModel<T>::output(int slot) const {
  return parts_->slot(slot).residual.back();
}

template <class T>
Matrix<T> LanguageModel<T>::input_grad(int slot) const {
  return parts_->slot(slot).input_grad;
}

template <class T>
Matrix<T> LanguageModel<T>::logits(int slot) const {
  if (!keep_logits_)
    throw Error(
        "model::LanguageModel::logits: the model keeps no logits; call keep_logits(true) "
        "before the forward");
  return parts_->slot(slot).logits;
}

template <class T>
void LanguageModel<T>::head_and_loss(int slot_index, bool train, T grad_scale) {
  Parts& p = *parts_;
  typename Parts::Slot& slot = p.slot(slot_index);
  const std::size_t n = slot.n, vocab = std::size_t(shape_.vocab), d = std::size_t(shape_.d_model);
  kernels::ensure_extent(p.row_loss, n);
  kernels::ensure_extent(p.row_correct, n);
  if (train) kernels::ensure_extent(slot.dfinal_normed, n, d);
  const bool keep = keep_logits_ && !train;
  if (keep) kernels::ensure_extent(slot.logits, n, vocab);
  // Rows per chunk: a [rows, vocab] block of logits small enough to stay in the core's cache
  // between its product, the softmax and the two gradient products.
  const std::size_t chunk =
      std::clamp<std::size_t>(head_chunk_rows_ > 0 ? head_chunk_rows_ : kHeadChunkElements / vocab,
                              1, std::max(n, std::size_t(1)));
  if (!keep) kernels::ensure_extent(p.logits_chunk, chunk, vocab);
  for (std::size_t r0 = 0; r0 < n; r0 += chunk) {
    const auto rows = std::make_pair(r0, std::min(n, r0 + chunk));
    const Matrix<T> x = Kokkos::subview(slot.final_normed, rows, Kokkos::ALL);
    const Matrix<T> logits =
        keep ? Matrix<T>(Kokkos::subview(slot.logits, rows, Kokkos::ALL))
             : Matrix<T>(Kokkos::subview(
                   p.logits_chunk, std::make_pair(std::size_t(0), rows.second - r0), Kokkos::ALL));
    if (p.head)
      p.head->forward(slot_index, x, logits);
    else
      p.embedding->head_forward(slot_index, x, logits);
    kernels::softmax_cross_entropy_in_place(
        logits, Kokkos::View<const int*, kernels::MemSpace>(Kokkos::subview(slot.targets, rows)),
        grad_scale, train, kernels::Vector<T>(Kokkos::subview(p.row_loss, rows)),
        Kokkos::View<int*, kernels::MemSpace>(Kokkos::subview(p.row_correct, rows)));
    if (!train) continue;
    // The loss is the last operation, so its gradient is known here: the logits chunk becomes
    // d(loss)/d(logits) in place and feeds the head's backward before the next chunk reuses it.
    const Matrix<T> dx = Kokkos::subview(slot.dfinal_normed, rows, Kokkos::ALL);
    if (p.head)
      p.head->backward(slot_index, logits, dx);
    else
      p.embedding->head_backward(slot_index, logits, dx);
  }
  Kokkos::fence();
}

template <class T>
kernels::Vector<T> LanguageModel<T>::routing_bias(int moe_layer) const {
  for (const typename Parts::Block& block : parts_->blocks)
    if (block.moe && block.moe->layer() == moe_layer) return block.moe->routing_bias();
  throw Error(fmt::format("model::LanguageModel::routing_bias: MoE layer {} is not on this stage",
                          moe_layer));
}

template <class T>
typename LanguageModel<T>::Layers LanguageModel<T>::layers() {
  Parts& p = *parts_;
  Layers layers{.embedding = p.embedding ? &*p.embedding : nullptr,
                .blocks = {},
                .final_norm = p.final_norm ? &*p.final_norm : nullptr,
                .head = p.head ? &*p.head : nullptr};
  for (typename Parts::Block& b : p.blocks)
    layers.blocks.push_back({.attn_norm = &b.attn_norm,
                             .attention = &b.attention,
                             .ffn_norm = &b.ffn_norm,
                             .moe = b.moe ? &*b.moe : nullptr,
                             .dense = b.dense ? &*b.dense : nullptr});
  return layers;
}

template class LanguageModel<float>;
template class LanguageModel<double>;

}  // namespace daa::model
