// The one exception hierarchy of daa-swarm (DESIGN.md §5). Each error carries the process exit code
// that `main` returns for it, and a message that already names its context ("config: [moe] ...").
#pragma once

#include <stdexcept>
#include <string>

namespace daa {

// Exit codes are part of the user interface: documented in README.md and docs/architecture.md.
enum class ExitCode : int {
  ok = 0,
  internal = 1,   // a bug or an environment failure (MPI, BLAS, out of memory)
  bad_input = 2,  // input file, command line, data files, layout
  diverged = 3,   // NaN or Inf in the loss
  // The watchdog saw no progress for [watchdog] timeout_s: a peer rank died or hung. Restart
  // from the latest checkpoint (on other nodes if one is bad).
  no_progress = 4,
  // Checkpointed on SIGUSR1/SIGTERM before the last step: resubmit (requeue) to continue. 75 is
  // EX_TEMPFAIL of sysexits.h, "try again later".
  resubmit = 75,
};

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what, ExitCode code = ExitCode::internal)
      : std::runtime_error(what), code_(code) {}
  ExitCode exit_code() const { return code_; }

 private:
  ExitCode code_;
};

// Anything the user can fix by changing what they gave us.
class InputError : public Error {
 public:
  explicit InputError(const std::string& what) : Error(what, ExitCode::bad_input) {}
};

class ConfigError : public InputError {
 public:
  explicit ConfigError(const std::string& what) : InputError("config: " + what) {}
};

class DataError : public InputError {
 public:
  explicit DataError(const std::string& what) : InputError("data: " + what) {}
};

class DivergenceError : public Error {
 public:
  explicit DivergenceError(const std::string& what) : Error(what, ExitCode::diverged) {}
};

}  // namespace daa
