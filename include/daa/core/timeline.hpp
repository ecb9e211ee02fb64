// The per-process timeline of a training step's phases (data, compute, all-to-all, ...): spans
// recorded only while a trace window is open, written out by obs/trace.hpp as a Chrome trace.
// Cheap enough to leave in the hot path: one relaxed atomic load per span when not recording.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace daa::core {

// Phases of a training step, one trace track each (Chrome trace "thread").
enum class Track : int {
  step,
  data,
  compute,
  all_to_all,
  pipeline,
  aggregation,
  consensus,
  metrics,
  checkpoint,
  eval
};
inline constexpr int kTrackCount = 10;

// "step", "data", "compute", "all-to-all", "pipeline", "aggregation", "consensus", "metrics",
// "checkpoint", "eval".
const char* track_name(Track track);

struct Span {
  Track track;
  const char* name;  // a string literal: recording must not allocate per span
  std::int64_t step;
  double begin_us;  // microseconds since the timeline's origin
  double end_us;
};

// One per process, used from the training thread only: spans are appended without a lock. The
// recording flag is atomic only so that reading it when off is a single relaxed load.
class Timeline {
 public:
  static Timeline& process();

  // The origin (time zero of every span) is the first call's time, so that several windows of
  // one run share one time axis.
  void start_recording(std::size_t reserve_spans = 1 << 16);
  void stop_recording();
  bool recording() const { return recording_.load(std::memory_order_relaxed); }

  // Step number attached to the spans added after this call.
  void set_step(std::int64_t step) { step_ = step; }
  std::int64_t step() const { return step_; }

  // Does nothing unless recording. `name` must outlive the timeline (a string literal).
  void add(Track track, const char* name, std::chrono::steady_clock::time_point begin,
           std::chrono::steady_clock::time_point end);

  const std::vector<Span>& spans() const { return spans_; }
  // Drops the spans (keeping their memory and the origin), e.g. after they were written.
  void clear() { spans_.clear(); }

 private:
  std::atomic<bool> recording_{false};
  bool has_origin_ = false;
  std::chrono::steady_clock::time_point origin_{};
  std::int64_t step_ = 0;
  std::vector<Span> spans_;
};

// Records [construction, destruction) on the process timeline if it was recording at
// construction and still is at destruction; reads no clock otherwise.
class ScopedSpan {
 public:
  ScopedSpan(Track track, const char* name)
      : track_(track), name_(name), active_(Timeline::process().recording()) {
    if (active_) begin_ = std::chrono::steady_clock::now();
  }
  ~ScopedSpan() {
    if (active_) Timeline::process().add(track_, name_, begin_, std::chrono::steady_clock::now());
  }
  ScopedSpan(const ScopedSpan&) = delete;
  ScopedSpan& operator=(const ScopedSpan&) = delete;

 private:
  Track track_;
  const char* name_;
  bool active_;
  std::chrono::steady_clock::time_point begin_{};
};

}  // namespace daa::core
