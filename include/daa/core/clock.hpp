// The one clock for timing phases (compute, communication, rounds) and the one way to read it:
// monotonic, so a wall-clock adjustment during a run cannot make a phase negative.
#pragma once

#include <chrono>

namespace daa::core {

using Clock = std::chrono::steady_clock;

// Seconds from `start` to now.
inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace daa::core
