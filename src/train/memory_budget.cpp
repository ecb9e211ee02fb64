// The language model's per-rank memory estimate and the micro-batch choice of
// [train] memory_budget_gb (see memory_budget.hpp). The per-token figures follow what
// src/model/language_model.cpp, attention.cpp and moe_layer.cpp keep per micro-batch slot and
// per layer; all activations are fp32 (bf16 rounds operands only while a product packs them).
#include "daa/train/memory_budget.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "daa/core/error.hpp"

namespace daa::train {

namespace {

constexpr double kFloat = 4, kInt = 4;
// LanguageModel's fused head works on [rows, vocab] chunks of at most 2^20 logits.
constexpr std::int64_t kHeadChunkElements = std::int64_t(1) << 20;

std::string megabytes(double bytes) {
  return fmt::format("{:.1f} MB", bytes * 1e-6);
}

// Bytes per token that one block keeps for its backward (saved) and its backward's scratch, by
// what the layers hold: norms, attention, then the MoE or dense FFN.
struct BlockBytes {
  double residual = 0;   // the block's input, kept in every mode
  double inner = 0;      // normed inputs, mid, norm statistics
  double attention = 0;  // roped qkv, output before wo, log-sum-exps
  double ffn = 0;        // router, packed rows, expert hidden activations
  double attention_scratch = 0, ffn_scratch = 0;
};

BlockBytes block_bytes(const core::Config& c, bool moe, int ep) {
  const double d = c.model.d_model, h = c.model.heads, k = c.moe.top_k, E = c.moe.experts;
  const bool swiglu = c.moe.ffn == core::ExpertFfnKind::swiglu;
  const double hidden_views = swiglu ? 3 : 2;  // pre, act (and up)
  BlockBytes b;
  b.residual = d * kFloat;
  b.inner = (3 * d + 2) * kFloat;  // normed_attn, mid, normed_ffn; two rows of 1 / rms
  b.attention = (4 * d + h) * kFloat;
  b.attention_scratch = 4 * d * kFloat;  // d out, d qkv
  if (moe) {
    // probs, lse, gates; choices, slot positions, packed-row tokens; packed input and expert
    // output (k rows per token, dropless average), their received copies under expert
    // parallelism; hidden activations of the k expert rows.
    const double routed = k * d * (ep > 1 ? 4 : 2);
    b.ffn = (E + 1 + k) * kFloat + 3 * k * kInt + routed * kFloat +
            hidden_views * k * c.moe.d_ff * kFloat;
    b.ffn_scratch = (E + k + d + (ep > 1 ? 4 : 2) * k * d) * kFloat +
                    (swiglu ? 2 : 1) * k * c.moe.d_ff * kFloat;
  } else {
    b.ffn = hidden_views * c.model.d_ff_dense * kFloat;
    b.ffn_scratch = (d + (swiglu ? 2 : 1) * c.model.d_ff_dense) * kFloat;
  }
  return b;
}

}  // namespace

std::string MemoryEstimate::figures() const {
  return fmt::format(
      "parameters {}, gradients {}, AdamW state {}, activations {} ({:.1f} KB per token saved x "
      "{} micro-batch{} in flight + {:.1f} KB per token working set, of {} tokens) = {}",
      megabytes(parameter_bytes), megabytes(gradient_bytes), megabytes(optimizer_bytes),
      megabytes(activation_bytes()), saved_bytes_per_token * 1e-3, in_flight,
      in_flight == 1 ? "" : "es", work_bytes_per_token * 1e-3, micro_batch_tokens,
      megabytes(total_bytes()));
}

MemoryEstimate estimate_memory(const core::Config& c, const parallel::Layout& layout, int vocab,
                               int micro_batches) {
  const double d = c.model.d_model, E = c.moe.experts, F = c.moe.d_ff;
  const bool swiglu = c.moe.ffn == core::ExpertFfnKind::swiglu;
  const int ep = std::max(1, layout.expert_parallel);
  auto ffn_params = [&](double w) { return swiglu ? 3 * d * w : 2 * d * w + w + d; };
  const std::int64_t local = c.train.global_batch / std::max(1, layout.data_parallel);
  MemoryEstimate best;
  for (int stage = 0; stage < layout.pipeline_stages; ++stage) {
    const auto [first, last] = layout.stage_blocks(stage);
    MemoryEstimate e;
    e.stage = stage;
    e.micro_batches = micro_batches;
    e.in_flight = std::min(micro_batches, layout.pipeline_stages);
    e.micro_batch_sequences = local / micro_batches;
    e.micro_batch_tokens = e.micro_batch_sequences * c.model.seq_len;
    double params = 0, saved = 0, work = 0, largest_block = 0;
    for (int block = first; block < last; ++block) {
      const bool moe = std::find(layout.moe_blocks.begin(), layout.moe_blocks.end(), block) !=
                       layout.moe_blocks.end();
      params += 4 * d * d + 2 * d +
                (moe ? d * E + E / ep * ffn_params(F) : ffn_params(c.model.d_ff_dense));
      const BlockBytes b = block_bytes(c, moe, ep);
      const double whole = b.inner + b.attention + b.ffn + b.attention_scratch + b.ffn_scratch;
      largest_block = std::max(largest_block, whole);
      switch (c.train.recompute) {
        case core::Recompute::none:
          saved += b.residual + b.inner + b.attention + b.ffn;
          work += b.attention_scratch + b.ffn_scratch;  // each layer keeps its own
          break;
        case core::Recompute::attention:
          saved += b.residual + b.inner + b.ffn;
          work += b.ffn_scratch;  // attention's internals and scratch live one layer at a time
          break;
        case core::Recompute::block:
          saved += b.residual;
          break;
      }
    }
    if (c.train.recompute == core::Recompute::attention && last > first) {
      const BlockBytes b = block_bytes(c, false, ep);
      work += b.attention + b.attention_scratch;  // one attention layer's, recomputed
    } else if (c.train.recompute == core::Recompute::block) {
      work += largest_block;  // one block's forward, recomputed, and its backward scratch
    }
    work += 3 * d * kFloat;  // the blocks' shared sublayer output and residual gradients
    if (first == 0) params += double(vocab) * d;
    if (last == layout.blocks) {
      params += d + double(vocab) * d;  // final norm; untied head or a tied table's copy
      if (c.model.tie_embeddings && first == 0) params -= double(vocab) * d;
      saved += (3 * d + 1) * kFloat;  // the output, final-normed rows and their gradient
      const std::int64_t rows = std::max<std::int64_t>(
          1, std::min(e.micro_batch_tokens, kHeadChunkElements / std::max(1, vocab)));
      e.fixed_work_bytes = double(rows) * double(vocab) * kFloat;
    }
    e.parameter_bytes = params * kFloat;
    e.gradient_bytes = params * kFloat;
    e.optimizer_bytes = 2 * params * kFloat;
    e.saved_bytes_per_token = saved;
    e.work_bytes_per_token = work;
    if (stage == 0 || e.total_bytes() > best.total_bytes()) best = e;
  }
  return best;
}

BudgetChoice apply_memory_budget(core::Config& config, const parallel::Layout& layout, int vocab) {
  BudgetChoice choice;
  const double budget_gb = config.train.memory_budget_gb;
  if (!(budget_gb > 0) || !core::is_language_model(config)) return choice;
  const double budget = budget_gb * 1e9;
  const std::int64_t local = config.train.global_batch / std::max(1, layout.data_parallel);
  for (std::int64_t mb = 1; mb <= local; ++mb) {
    if (local % mb != 0) continue;
    const MemoryEstimate e = estimate_memory(config, layout, vocab, int(mb));
    choice.estimate = e;
    if (e.total_bytes() <= budget) {
      config.parallel.micro_batches = int(mb);
      choice.line = fmt::format(
          "memory budget: {:g} GB per rank fits {} micro-batch{} of {} sequence{} ({} tokens) "
          "per rank with recompute = \"{}\": stage {} needs {}",
          budget_gb, mb, mb == 1 ? "" : "es", e.micro_batch_sequences,
          e.micro_batch_sequences == 1 ? "" : "s", e.micro_batch_tokens,
          core::to_string(config.train.recompute), e.stage, e.figures());
      return choice;
    }
  }
  throw InputError(fmt::format(
      "config: [train] memory_budget_gb = {:g} is too small: a micro-batch of one sequence "
      "({} tokens) with recompute = \"{}\" needs {:.3f} GB on stage {}: {}",
      budget_gb, config.model.seq_len, core::to_string(config.train.recompute),
      choice.estimate.total_bytes() * 1e-9, choice.estimate.stage, choice.estimate.figures()));
}

}  // namespace daa::train
