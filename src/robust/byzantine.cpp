// The collective part of the attack simulation (see daa/robust/byzantine.hpp): honest moments by
// an all-reduce over the honest members, a mimicked contribution by a broadcast from the lowest
// honest member.
#include "daa/robust/byzantine.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

namespace daa::robust {

void simulate_fault(std::span<float> contribution, const parallel::Communicator& group, bool faulty,
                    const SimulatedFault& fault, std::uint64_t round, int world_rank) {
  if (fault.attack == Attack::none) return;
  const bool moments = needs_honest_moments(fault.attack), copy = needs_honest_copy(fault.attack);
  const std::size_t d = contribution.size();
  // Kept between rounds: fresh vectors of the gradient's size cost page faults every step.
  static thread_local std::vector<float> mean, stddev, honest_copy, sums;
  mean.clear();
  stddev.clear();
  honest_copy.clear();
  if (moments || copy) {
    const int n = group.size();
    std::vector<int> flags(std::size_t(n), 0);
    const int mine = faulty ? 1 : 0;
    DAA_MPI_CHECK(MPI_Allgather(&mine, 1, MPI_INT, flags.data(), 1, MPI_INT, group.comm()));
    int honest = 0, first_honest = -1;
    for (int i = 0; i < n; ++i)
      if (!flags[std::size_t(i)]) {
        ++honest;
        if (first_honest < 0) first_honest = i;
      }
    if (honest == 0) return;  // nobody to imitate: the faulty ranks keep their own values
    if (moments) {
      // Sums (and, for the spread, sums of squares) over the honest members. Float sums of a few
      // values lose nothing that matters to an attack, at half the traffic of doubles.
      const bool spread = fault.attack == Attack::little_is_enough;
      sums.assign((spread ? 2 : 1) * d, 0.0f);
      if (!faulty)
        for (std::size_t j = 0; j < d; ++j) {
          sums[j] = contribution[j];
          if (spread) sums[d + j] = contribution[j] * contribution[j];
        }
      group.allreduce_sum(sums.data(), sums.size());
      mean.resize(d);
      stddev.resize(d);
      for (std::size_t j = 0; j < d; ++j) {
        const double m = double(sums[j]) / honest;
        mean[j] = float(m);
        stddev[j] =
            spread ? float(std::sqrt(std::max(0.0, double(sums[d + j]) / honest - m * m))) : 0.0f;
      }
    }
    if (copy) {
      honest_copy.assign(contribution.begin(), contribution.end());
      DAA_MPI_CHECK(MPI_Bcast(honest_copy.data(),
                              parallel::mpi_count(d, "robust attack simulation: honest copy"),
                              MPI_FLOAT, first_honest, group.comm()));
    }
  }
  if (!faulty) return;
  apply_attack(fault.attack, fault.params, contribution, {mean, stddev, honest_copy}, group.size(),
               fault.f, round, world_rank);
}

}  // namespace daa::robust
