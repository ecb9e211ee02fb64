// Timing helpers shared by the MPI benchmark drivers: the median of samples, and one timed body
// whose time is the slowest rank's (a bulk-synchronous step waits for it).
#pragma once

#include <algorithm>
#include <vector>

#include "daa/core/clock.hpp"
#include "daa/parallel/communicator.hpp"

namespace daa::bench {

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Seconds of `body` on the slowest rank, after a barrier so that every rank starts together.
template <class F>
double timed(const parallel::Communicator& world, F&& body) {
  DAA_MPI_CHECK(MPI_Barrier(world.comm()));
  const auto start = core::Clock::now();
  body();
  double seconds = core::seconds_since(start);
  DAA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &seconds, 1, MPI_DOUBLE, MPI_MAX, world.comm()));
  return seconds;
}

}  // namespace daa::bench
