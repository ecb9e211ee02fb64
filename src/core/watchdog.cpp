// The watchdog thread (see watchdog.hpp): sleeps until the deadline or a change, and ends the
// process with one line on stderr when a deadline passes.
#include "daa/core/watchdog.hpp"

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>

#include "daa/core/error.hpp"

namespace daa::core {

Watchdog::Watchdog(int rank, std::string host, std::function<void(const std::string&)> last_words)
    : rank_(rank),
      host_(std::move(host)),
      last_words_(std::move(last_words)),
      thread_([this] { watch(); }) {}

Watchdog::~Watchdog() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

void Watchdog::expect_progress(const char* activity, std::int64_t step, double seconds) {
  {
    std::lock_guard lock(mutex_);
    armed_ = seconds > 0;
    armed_at_ = Clock::now();
    deadline_ = armed_at_ +
                std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
    activity_ = activity;
    step_ = step;
  }
  wake_.notify_one();
}

void Watchdog::disarm() {
  expect_progress("", 0, 0);
}

void Watchdog::watch() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    if (!armed_) {
      wake_.wait(lock);
      continue;
    }
    // Woken early by every new promise; the deadline is checked against the latest one.
    if (wake_.wait_until(lock, deadline_) == std::cv_status::no_timeout) continue;
    if (!armed_ || stopping_ || Clock::now() < deadline_) continue;
    const std::string message = fmt::format(
        "rank {} ({}): no progress for {:.1f} s in {} at step {}; a peer rank has probably died "
        "or hung, exiting with code {} (restart with --restart auto)",
        rank_, host_, seconds_since(armed_at_), activity_, step_, int(ExitCode::no_progress));
    std::fprintf(stderr, "daa-swarm: error: %s\n", message.c_str());
    std::fflush(stderr);
    if (last_words_) last_words_(message);
    // No unwinding and no MPI_Finalize: the training thread is inside MPI and never returns.
    std::_Exit(int(ExitCode::no_progress));
  }
}

}  // namespace daa::core
