// Consensus routing (DESIGN.md §1, §2): every K steps each rank proposes the load fraction of
// every expert of its stage's MoE layers; a robust rule turns the proposals into one agreed load
// per layer, identical on every rank; each routing bias then takes a sign step towards balance
// (auxiliary-loss-free balancing as in DeepSeek-V3), changing expert selection, not gate values.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "daa/robust/allreduce.hpp"

namespace daa::robust {

// Load fractions of `counts` (layers x experts token counts), each layer normalized to sum 1
// (a layer without tokens proposes the uniform load).
std::vector<float> load_fractions(std::span<const double> counts, int experts);

// bias[l][e] += rate * sign(1/experts - load[l][e]): up for an under-loaded expert, down for an
// over-loaded one, unchanged when exactly balanced. Both arrays are layers x experts.
void balance_step(std::span<const float> agreed_load, int experts, double rate,
                  std::span<float> bias);

}  // namespace daa::robust
