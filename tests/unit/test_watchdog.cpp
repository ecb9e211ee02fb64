// The watchdog ends a process whose thread misses its announced deadline, with exit code 4 and a
// message naming rank, activity and step; it stays quiet while promises are kept or disarmed.
#include "daa/core/watchdog.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "daa/core/error.hpp"

namespace {

using namespace std::chrono_literals;

class WatchdogDeathTest : public ::testing::Test {
 protected:
  // The watchdog runs a thread: fork-and-exec death tests avoid forking a threaded process.
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

TEST_F(WatchdogDeathTest, MissedDeadlineExitsWithNoProgress) {
  EXPECT_EXIT(
      {
        daa::core::Watchdog watchdog(3, "node7");
        watchdog.expect_progress("training step", 42, 0.2);
        std::this_thread::sleep_for(5s);  // blocked, like a collective waiting for a dead peer
      },
      ::testing::ExitedWithCode(int(daa::ExitCode::no_progress)),
      "rank 3 \\(node7\\): no progress for [0-9.]+ s in training step at step 42");
}

TEST_F(WatchdogDeathTest, LastWordsRunBeforeTheExit) {
  EXPECT_EXIT(
      {
        daa::core::Watchdog watchdog(0, "h", [](const std::string& message) {
          std::fprintf(stderr, "last words: %s\n", message.substr(0, 6).c_str());
        });
        watchdog.expect_progress("checkpoint write", 7, 0.1);
        std::this_thread::sleep_for(5s);
      },
      ::testing::ExitedWithCode(int(daa::ExitCode::no_progress)), "last words: rank 0");
}

// The two tests below run in a child process that must reach its own exit(0): a watchdog that
// fired would end it with exit code 4 first. Deadlines are 25 times the renewal interval, so a
// loaded 2-core machine that delays a 20 ms sleep by a few hundred milliseconds still passes.
TEST_F(WatchdogDeathTest, KeptPromisesAndDisarmingNeverFire) {
  EXPECT_EXIT(
      {
        daa::core::Watchdog watchdog(0, "h");
        // Each promise is renewed well within its deadline; the total exceeds two deadlines.
        for (int i = 0; i < 60; ++i) {
          watchdog.expect_progress("training step", i, 0.5);
          std::this_thread::sleep_for(20ms);
        }
        watchdog.disarm();
        std::this_thread::sleep_for(800ms);                // longer than the last deadline
        watchdog.expect_progress("training step", 60, 0);  // zero seconds: disarmed too
        std::this_thread::sleep_for(800ms);
        std::exit(0);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST_F(WatchdogDeathTest, ALongerPromiseReplacesAShorterOne) {
  EXPECT_EXIT(
      {
        daa::core::Watchdog watchdog(0, "h");
        watchdog.expect_progress("training step", 1, 0.1);
        watchdog.expect_progress("checkpoint write", 1, 30);
        std::this_thread::sleep_for(600ms);  // six times the replaced promise
        watchdog.disarm();
        std::exit(0);
      },
      ::testing::ExitedWithCode(0), "");
}

}  // namespace
