// Collective side of the attack simulation: what an omniscient faulty rank knows about a round
// (the honest members' mean and spread, or one honest contribution) is gathered from the group,
// then attacks.hpp turns the faulty rank's honest contribution into what it sends.
#pragma once

#include <cstdint>
#include <span>

#include "daa/parallel/communicator.hpp"
#include "daa/robust/attacks.hpp"

namespace daa::robust {

struct SimulatedFault {
  Attack attack = Attack::none;
  AttackParams params;
  int f = 0;  // the f the group tolerates (little-is-enough derives z from n and f)
};

// Every member of `group` calls this with the same `fault` and `round`; `faulty` says whether
// this rank misbehaves. Honest members keep `contribution`; faulty ones replace it in place.
// Collective only when the attack needs the honest view (inner-product, little-is-enough,
// mimic: one small all-gather of the faulty flags and one all-reduce or broadcast of d values).
void simulate_fault(std::span<float> contribution, const parallel::Communicator& group, bool faulty,
                    const SimulatedFault& fault, std::uint64_t round, int world_rank);

}  // namespace daa::robust
