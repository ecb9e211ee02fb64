// The per-rank memory estimate of the language model's training and [train] memory_budget_gb:
// bytes of parameters, gradients, AdamW state and activations per token for a layout (pipeline
// stages, experts per rank), precision and recompute mode, and the micro-batch count that fits.
#pragma once

#include <cstdint>
#include <string>

#include "daa/core/config.hpp"
#include "daa/parallel/topology.hpp"

namespace daa::train {

// One rank's estimate, for the stage whose total is largest.
struct MemoryEstimate {
  int stage = 0;
  double parameter_bytes = 0;  // fp32 master weights held by the rank
  double gradient_bytes = 0;   // fp32 gradients, one per parameter
  double optimizer_bytes = 0;  // AdamW's two fp32 moments
  // Per token of a micro-batch: what the forward saves for the backward (times the micro-batches
  // in flight), and the working set that lives once (one block's recompute, backward scratch).
  double saved_bytes_per_token = 0;
  double work_bytes_per_token = 0;
  double fixed_work_bytes = 0;  // the fused head's logits chunk
  int micro_batches = 1;
  int in_flight = 1;  // micro-batches whose saved activations coexist (1F1B: min(mb, stages))
  std::int64_t micro_batch_sequences = 0;
  std::int64_t micro_batch_tokens = 0;
  double activation_bytes() const {
    return double(micro_batch_tokens) *
               (double(in_flight) * saved_bytes_per_token + work_bytes_per_token) +
           fixed_work_bytes;
  }
  double total_bytes() const {
    return parameter_bytes + gradient_bytes + optimizer_bytes + activation_bytes();
  }
  // "parameters 16.1 MB, gradients 16.1 MB, AdamW state 32.2 MB, activations 210.3 MB (...)".
  std::string figures() const;
};

// The estimate of a language-model config on `layout` with `micro_batches` micro-batches and a
// vocabulary of `vocab` tokens.
MemoryEstimate estimate_memory(const core::Config& config, const parallel::Layout& layout,
                               int vocab, int micro_batches);

struct BudgetChoice {
  MemoryEstimate estimate;
  std::string line;  // "memory budget: ..." (what was picked and why)
};

// With [train] memory_budget_gb > 0 (language model only): the fewest micro-batches dividing the
// per-rank batch whose estimate fits the budget, written into config.parallel.micro_batches.
// A budget that even micro-batches of one sequence exceed is an InputError naming the key and
// the figures. Returns nothing (empty line) when the budget is off.
BudgetChoice apply_memory_budget(core::Config& config, const parallel::Layout& layout, int vocab);

}  // namespace daa::train
