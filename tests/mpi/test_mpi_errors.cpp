// MPI errors and MPI counts (DESIGN.md §5): a real MPI error, provoked on purpose, reaches
// DAA_MPI_CHECK (MPI_ERRORS_RETURN, also on split communicators and MPI_COMM_SELF) as an MpiError
// naming the call, file, line, rank and MPI's error string; a count above INT_MAX is refused by
// name before any MPI call instead of wrapping around. Nothing here allocates more than a few
// bytes.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <climits>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "daa/parallel/communicator.hpp"

namespace {

using daa::parallel::Communicator;
using daa::parallel::mpi_count;
using daa::parallel::MpiError;
using testing::HasSubstr;

int world_rank() {
  int rank = -1;
  DAA_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  return rank;
}

std::string error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  EXPECT_EQ(MPI_Error_string(code, text, &length), MPI_SUCCESS);
  return std::string(text, std::size_t(length));
}

// A call through DAA_MPI_CHECK and the line it is on: both __LINE__ are the one of this expansion.
#define CHECKED_AT_LINE(call) std::make_pair(__LINE__, [&] { DAA_MPI_CHECK(call); })

// Runs `send` (an MPI call that must fail) once bare, to learn MPI's code and text, and once
// through DAA_MPI_CHECK; returns the message after checking what it must name.
template <class Send, class Checked>
std::string expect_mpi_error(Send send, std::pair<int, Checked> checked_at, int expected_class) {
  const auto& [line, checked] = checked_at;
  const int code = send();
  EXPECT_NE(code, MPI_SUCCESS) << "MPI_ERRORS_RETURN is not in force: the call did not fail";
  int error_class = MPI_SUCCESS;
  EXPECT_EQ(MPI_Error_class(code, &error_class), MPI_SUCCESS);
  EXPECT_EQ(error_class, expected_class) << error_string(code);
  std::string message;
  try {
    checked();
    ADD_FAILURE() << "DAA_MPI_CHECK did not throw";
  } catch (const MpiError& e) {
    message = e.what();
  }
  EXPECT_THAT(message, HasSubstr("MPI_Send"));
  // The path from the project's root, however the compiler was given it.
  EXPECT_THAT(message,
              HasSubstr(" at tests/mpi/test_mpi_errors.cpp:" + std::to_string(line) + ":"));
  EXPECT_THAT(message, HasSubstr("on rank " + std::to_string(world_rank())));
  EXPECT_THAT(message, HasSubstr(error_string(code)));
  EXPECT_EQ(message.find('\n'), std::string::npos) << "one line: " << message;
  return message;
}

TEST(MpiErrors, SendToAnInvalidRankNamesFileLineRankAndMpisText) {
  int size = 0;
  DAA_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size));
  const int value = 1;
  expect_mpi_error([&] { return MPI_Send(&value, 1, MPI_INT, size, 0, MPI_COMM_WORLD); },
                   CHECKED_AT_LINE(MPI_Send(&value, 1, MPI_INT, size, 0, MPI_COMM_WORLD)),
                   MPI_ERR_RANK);
}

TEST(MpiErrors, NegativeCountIsReturnedNotFatal) {
  const int value = 1;
  expect_mpi_error([&] { return MPI_Send(&value, -1, MPI_INT, 0, 0, MPI_COMM_WORLD); },
                   CHECKED_AT_LINE(MPI_Send(&value, -1, MPI_INT, 0, 0, MPI_COMM_WORLD)),
                   MPI_ERR_COUNT);
}

// Communicators split from MPI_COMM_WORLD inherit its error handler; MPI_COMM_SELF has its own.
TEST(MpiErrors, SplitCommunicatorsAndCommSelfReturnErrorsToo) {
  MPI_Comm split = MPI_COMM_NULL;
  DAA_MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, world_rank() % 2, world_rank(), &split));
  int split_size = 0;
  DAA_MPI_CHECK(MPI_Comm_size(split, &split_size));
  const int value = 1;
  expect_mpi_error([&] { return MPI_Send(&value, 1, MPI_INT, split_size, 0, split); },
                   CHECKED_AT_LINE(MPI_Send(&value, 1, MPI_INT, split_size, 0, split)),
                   MPI_ERR_RANK);
  DAA_MPI_CHECK(MPI_Comm_free(&split));
  expect_mpi_error([&] { return MPI_Send(&value, 1, MPI_INT, 1, 0, MPI_COMM_SELF); },
                   CHECKED_AT_LINE(MPI_Send(&value, 1, MPI_INT, 1, 0, MPI_COMM_SELF)),
                   MPI_ERR_RANK);
}

// An MPI error inside an agreed phase is not agreed on (the ranks may be out of step in their
// collectives): it leaves agreed() as itself, for main to print and MPI_Abort. Here every rank
// fails alike, so every rank sees it and nobody waits.
TEST(MpiErrors, AgreedPhasesLetMpiErrorsThrough) {
  const Communicator world(MPI_COMM_WORLD, "world");
  const int value = 1;
  std::string message;
  try {
    world.agreed(
        [&] { DAA_MPI_CHECK(MPI_Send(&value, 1, MPI_INT, world.size(), 0, world.comm())); });
    ADD_FAILURE() << "agreed() did not throw";
  } catch (const MpiError& e) {
    message = e.what();
  }
  // The call as written (the other tests pass it through one more macro, which expands MPI_INT).
  EXPECT_THAT(message,
              HasSubstr("MPI: MPI_Send(&value, 1, MPI_INT, world.size(), 0, world.comm()) "
                        "failed on rank " +
                        std::to_string(world.rank()) + " at tests/mpi/test_mpi_errors.cpp:"));
  // The communicator still works afterwards: the failed call never started a transfer.
  EXPECT_EQ(world.allreduce_max(std::int64_t(world.rank())), std::int64_t(world.size() - 1));
}

TEST(MpiCount, AcceptsEverythingUpToIntMax) {
  EXPECT_EQ(mpi_count(std::size_t(0), "nothing"), 0);
  EXPECT_EQ(mpi_count(std::size_t(INT_MAX), "the largest message"), INT_MAX);
  EXPECT_EQ(mpi_count(std::int64_t(INT_MAX), "the largest message"), INT_MAX);
}

TEST(MpiCount, RefusesTwoToTheThirtyFirstByName) {
  const std::size_t count = std::size_t(1) << 31;
  std::string message;
  try {
    mpi_count(count, "test payload", "bytes");
    ADD_FAILURE() << "mpi_count accepted 2^31";
  } catch (const MpiError& e) {
    message = e.what();
  }
  EXPECT_THAT(message, HasSubstr("test payload of 2147483648 bytes"));
  EXPECT_THAT(message, HasSubstr("on rank " + std::to_string(world_rank())));
  EXPECT_THAT(message, HasSubstr("INT_MAX = 2147483647"));
  EXPECT_THROW(mpi_count(std::int64_t(-1), "a negative count"), MpiError);
  EXPECT_THROW(mpi_count(SIZE_MAX, "the largest size_t"), MpiError);
}

// A collective asked for 2^31 elements is refused before MPI sees the count: the buffer is never
// touched (it holds one element), and every rank refuses alike.
TEST(MpiCount, CollectiveWithTwoToTheThirtyFirstElementsIsRefusedNotCrashed) {
  const Communicator world(MPI_COMM_WORLD, "world");
  float one = 1.0f;
  std::string message;
  try {
    world.allreduce_sum(&one, std::size_t(1) << 31);
    ADD_FAILURE() << "allreduce_sum accepted 2^31 elements";
  } catch (const MpiError& e) {
    message = e.what();
  }
  EXPECT_THAT(message, HasSubstr("Communicator::allreduce_sum of 2147483648 elements"));
  EXPECT_THAT(message, HasSubstr("INT_MAX = 2147483647"));
  EXPECT_EQ(one, 1.0f);
}

}  // namespace
