// Checked MPI: every MPI call goes through DAA_MPI_CHECK, which turns a failure into an MpiError
// naming the call, file, line, rank and MPI's error string, and every count through mpi_count.
// Communicator wraps one MPI communicator with a name that appears in errors and traces ("world",
// "data-parallel", ...), and the collectives we use.
#pragma once

#include <mpi.h>

#include <climits>
#include <concepts>
#include <cstdint>
#include <exception>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "daa/core/error.hpp"

namespace daa::parallel {

// A failed MPI call or a count MPI cannot carry. It may happen on this rank alone, in the middle
// of a collective the others are already waiting in, so no further collective can be trusted to
// report it: Communicator::agreed lets it through, and main prints it with the rank and calls
// MPI_Abort (DESIGN.md §5), which ends every rank instead of leaving them waiting.
class MpiError : public Error {
 public:
  explicit MpiError(const std::string& what) : Error(what, ExitCode::internal) {}
};

// Call right after MPI_Init: sets MPI_ERRORS_RETURN on MPI_COMM_WORLD and MPI_COMM_SELF (and so on
// every communicator split or duplicated from them), so that a failing call returns its code to
// DAA_MPI_CHECK instead of MPI_ERRORS_ARE_FATAL ending the job without file, line or rank.
void init_error_handling();

[[noreturn]] void throw_mpi_error(int code, const char* call, const char* file, int line);
[[noreturn]] void throw_count_error(const std::string& n, const char* what, const char* unit);

// `n` as an MPI count or displacement (an int): throws MpiError naming `what`, n, the rank and the
// limit INT_MAX when n is negative or above INT_MAX, instead of a narrowing that wraps around.
template <std::integral T>
int mpi_count(T n, const char* what, const char* unit = "elements") {
  if (std::cmp_less(n, 0) || std::cmp_greater(n, INT_MAX))
    throw_count_error(std::to_string(n), what, unit);
  return static_cast<int>(n);
}

#define DAA_MPI_CHECK(call)                                                     \
  do {                                                                          \
    const int daa_mpi_rc_ = (call);                                             \
    if (daa_mpi_rc_ != MPI_SUCCESS)                                             \
      ::daa::parallel::throw_mpi_error(daa_mpi_rc_, #call, __FILE__, __LINE__); \
  } while (0)

class Communicator {
 public:
  // Borrows `comm` (not freed by this object); MPI_COMM_NULL means "not a member".
  Communicator(MPI_Comm comm, std::string name);

  MPI_Comm comm() const { return comm_; }
  const std::string& name() const { return name_; }
  int rank() const { return rank_; }
  int size() const { return size_; }
  bool is_root() const { return rank_ == 0; }

  // In-place sums; fixed algorithm per (size, count), so repeatable run to run.
  void allreduce_sum(float* data, std::size_t count) const;
  void allreduce_sum(double* data, std::size_t count) const;
  void allreduce_sum(std::int64_t* data, std::size_t count) const;
  std::int64_t allreduce_max(std::int64_t value) const;
  double allreduce_max(double value) const;

  // Rank `root`'s text on every rank (collective). Structured messages go through
  // daa/parallel/exchange.hpp, which builds on these two.
  std::string broadcast(const std::string& text, int root = 0) const;
  // Every member's bytes, by member rank, on every member (collective; lengths may differ).
  // Both throw daa::Error on every rank alike for more bytes than one MPI message can count.
  std::vector<std::string> all_gather(const std::string& mine) const;

  // The MPI_COMM_WORLD rank of each member, by member rank (not collective).
  std::vector<int> world_ranks() const;

  // Every rank calls this with the error it hit in a phase, or nullptr. If any rank failed, all
  // of them learn it: the lowest failing rank prints its message, every rank throws
  // AgreedFailure carrying that rank's exit code, and nobody is left waiting in a collective.
  void agree_on_failure(std::exception_ptr local_error) const;
  // Every rank passes the error it hit in a phase, or "" for none; every rank gets the message of
  // the lowest failing rank, or "" when none failed. For errors the caller recovers from alike.
  std::string agree_on_message(const std::string& local_message) const;
  // Runs `phase` and agrees on its failure as agree_on_failure does; returns what it returned
  // (default-constructible results only). For phases whose errors must end every rank alike.
  // An MpiError passes through unagreed: the ranks may be out of step in their collectives.
  template <class Phase>
  auto agreed(Phase&& phase) const;

 private:
  MPI_Comm comm_;
  std::string name_;
  int rank_ = 0;
  int size_ = 1;
};

// Thrown by agree_on_failure on every rank once the failure has been reported.
class AgreedFailure : public std::exception {
 public:
  explicit AgreedFailure(int exit_code) : exit_code_(exit_code) {}
  int exit_code() const { return exit_code_; }
  const char* what() const noexcept override { return "failure reported by another rank"; }

 private:
  int exit_code_;
};

template <class Phase>
auto Communicator::agreed(Phase&& phase) const {
  using Result = decltype(phase());
  std::exception_ptr error;
  if constexpr (std::is_void_v<Result>) {
    try {
      phase();
    } catch (const MpiError&) {
      throw;  // possibly this rank alone, inside a collective: main aborts (see MpiError)
    } catch (...) {
      error = std::current_exception();
    }
    agree_on_failure(error);
  } else {
    Result result{};
    try {
      result = phase();
    } catch (const MpiError&) {
      throw;  // as above
    } catch (...) {
      error = std::current_exception();
    }
    agree_on_failure(error);
    return result;
  }
}

// Rank in MPI_COMM_WORLD, or -1 before MPI_Init: for error messages.
int world_rank();

}  // namespace daa::parallel
