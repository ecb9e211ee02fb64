// A per-process deadline on progress: when the training thread does not come back within the
// time it announced (a collective blocked on a dead or hung peer), this process exits with
// ExitCode::no_progress. Open MPI 4.1 has no fault tolerance (no ULFM), so a blocked collective
// never returns; each rank decides on its own clock, without needing the lost rank.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "daa/core/clock.hpp"

namespace daa::core {

class Watchdog {
 public:
  // `rank` and `host` name this process in the message. `last_words`, if given, runs on the
  // watchdog's thread just before the exit (e.g. to mark status.json failed); it must not call
  // MPI, which the blocked thread is inside.
  Watchdog(int rank, std::string host, std::function<void(const std::string&)> last_words = {});
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // The calling thread promises to call again (or disarm) within `seconds`; `activity` (a
  // string literal) and `step` go into the message. seconds <= 0 disarms.
  void expect_progress(const char* activity, std::int64_t step, double seconds);
  void disarm();

 private:
  void watch();

  const int rank_;
  const std::string host_;
  const std::function<void(const std::string&)> last_words_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool armed_ = false, stopping_ = false;
  Clock::time_point armed_at_, deadline_;
  const char* activity_ = "";
  std::int64_t step_ = 0;
  std::thread thread_;  // last: started once every member above is ready
};

}  // namespace daa::core
