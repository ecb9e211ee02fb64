// The process timeline of step phases (see timeline.hpp).
#include "daa/core/timeline.hpp"

namespace daa::core {

const char* track_name(Track track) {
  switch (track) {
    case Track::step:
      return "step";
    case Track::data:
      return "data";
    case Track::compute:
      return "compute";
    case Track::all_to_all:
      return "all-to-all";
    case Track::pipeline:
      return "pipeline";
    case Track::aggregation:
      return "aggregation";
    case Track::consensus:
      return "consensus";
    case Track::metrics:
      return "metrics";
    case Track::checkpoint:
      return "checkpoint";
    case Track::eval:
      return "eval";
  }
  return "unknown";
}

namespace {
// Constant-initialized, so process() needs no thread-safe-static guard on the hot path.
constinit Timeline process_timeline;
}  // namespace

Timeline& Timeline::process() {
  return process_timeline;
}

void Timeline::start_recording(std::size_t reserve_spans) {
  if (!has_origin_) {
    origin_ = std::chrono::steady_clock::now();
    has_origin_ = true;
  }
  // Reserving up front keeps reallocation (and its copy) out of the timed steps.
  spans_.reserve(reserve_spans);
  recording_.store(true, std::memory_order_relaxed);
}

void Timeline::stop_recording() {
  recording_.store(false, std::memory_order_relaxed);
}

void Timeline::add(Track track, const char* name, std::chrono::steady_clock::time_point begin,
                   std::chrono::steady_clock::time_point end) {
  if (!recording()) return;
  using Micro = std::chrono::duration<double, std::micro>;
  spans_.push_back(
      Span{track, name, step_, Micro(begin - origin_).count(), Micro(end - origin_).count()});
}

}  // namespace daa::core
