// Checked MPI wrapper (see communicator.hpp).
#include "daa/parallel/communicator.hpp"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <string_view>

#include "daa/core/error.hpp"

namespace daa::parallel {

int world_rank() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) return -1;
  int rank = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

void init_error_handling() {
  // Unchecked on purpose: until these return, MPI_ERRORS_ARE_FATAL is still in force and reports
  // its own failure by ending the job.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
}

namespace {
// __FILE__ from the project's root on ("src/parallel/pipeline.cpp"), whether the compiler was
// given an absolute path or, under ccache's base directory, a relative one.
std::string_view source_path(std::string_view file) {
  std::size_t from = 0;
  for (const std::string_view root : {"/src/", "/include/", "/tests/"})
    if (const std::size_t at = file.rfind(root); at != std::string_view::npos)
      from = std::max(from, at + 1);
  return file.substr(from);
}
}  // namespace

void throw_mpi_error(int code, const char* call, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS)
    length = std::snprintf(text, sizeof text, "MPI error code %d", code);
  throw MpiError("MPI: " + std::string(call) + " failed on rank " + std::to_string(world_rank()) +
                 " at " + std::string(source_path(file)) + ":" + std::to_string(line) + ": " +
                 std::string(text, length));
}

void throw_count_error(const std::string& n, const char* what, const char* unit) {
  throw MpiError("MPI: " + std::string(what) + " of " + n + " " + unit + " on rank " +
                 std::to_string(world_rank()) +
                 " does not fit one MPI count (0 to INT_MAX = " + std::to_string(INT_MAX) + ")");
}

Communicator::Communicator(MPI_Comm comm, std::string name) : comm_(comm), name_(std::move(name)) {
  if (comm_ == MPI_COMM_NULL) return;
  DAA_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  DAA_MPI_CHECK(MPI_Comm_size(comm_, &size_));
}

void Communicator::allreduce_sum(float* data, std::size_t count) const {
  DAA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data, mpi_count(count, "Communicator::allreduce_sum"),
                              MPI_FLOAT, MPI_SUM, comm_));
}
void Communicator::allreduce_sum(double* data, std::size_t count) const {
  DAA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data, mpi_count(count, "Communicator::allreduce_sum"),
                              MPI_DOUBLE, MPI_SUM, comm_));
}
void Communicator::allreduce_sum(std::int64_t* data, std::size_t count) const {
  DAA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data, mpi_count(count, "Communicator::allreduce_sum"),
                              MPI_INT64_T, MPI_SUM, comm_));
}
std::int64_t Communicator::allreduce_max(std::int64_t value) const {
  DAA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &value, 1, MPI_INT64_T, MPI_MAX, comm_));
  return value;
}
double Communicator::allreduce_max(double value) const {
  DAA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &value, 1, MPI_DOUBLE, MPI_MAX, comm_));
  return value;
}

std::vector<int> Communicator::world_ranks() const {
  const auto count = static_cast<std::size_t>(size_);
  std::vector<int> members(count), world(count);
  for (int i = 0; i < size_; ++i) members[std::size_t(i)] = i;
  MPI_Group group = MPI_GROUP_NULL, world_group = MPI_GROUP_NULL;
  DAA_MPI_CHECK(MPI_Comm_group(comm_, &group));
  DAA_MPI_CHECK(MPI_Comm_group(MPI_COMM_WORLD, &world_group));
  DAA_MPI_CHECK(MPI_Group_translate_ranks(group, size_, members.data(), world_group, world.data()));
  DAA_MPI_CHECK(MPI_Group_free(&group));
  DAA_MPI_CHECK(MPI_Group_free(&world_group));
  return world;
}

void Communicator::agree_on_failure(std::exception_ptr local_error) const {
  int code = 0;
  std::string message;
  if (local_error) {
    try {
      std::rethrow_exception(local_error);
    } catch (const Error& e) {
      code = int(e.exit_code());
      message = e.what();
    } catch (const std::exception& e) {
      code = int(ExitCode::internal);
      message = e.what();
    }
  }
  // Lowest failing rank (size_ if none), then its exit code.
  int failing = local_error ? rank_ : size_;
  DAA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &failing, 1, MPI_INT, MPI_MIN, comm_));
  if (failing == size_) return;
  DAA_MPI_CHECK(MPI_Bcast(&code, 1, MPI_INT, failing, comm_));
  if (rank_ == failing) {
    std::fprintf(stderr, "daa-swarm: error: %s\n", message.c_str());
    std::fflush(stderr);
  }
  throw AgreedFailure(code);
}

// MPI counts are ints: a message of more bytes is refused on every rank alike, which the
// lengths (exchanged as 64-bit numbers first) make possible without a hang.
namespace {
void check_message_size(const Communicator& comm, const char* what, std::int64_t bytes, int rank) {
  if (bytes > std::numeric_limits<int>::max())
    throw Error("parallel::Communicator::" + std::string(what) + " over '" + comm.name() +
                "': " + (rank >= 0 ? "rank " + std::to_string(rank) + "'s message" : "the total") +
                " of " + std::to_string(bytes) + " bytes exceeds one MPI message's " +
                std::to_string(std::numeric_limits<int>::max()) + " bytes");
}
}  // namespace

std::string Communicator::broadcast(const std::string& text, int root) const {
  std::string out = rank_ == root ? text : "";
  auto length = std::int64_t(out.size());
  DAA_MPI_CHECK(MPI_Bcast(&length, 1, MPI_INT64_T, root, comm_));
  check_message_size(*this, "broadcast", length, root);
  out.resize(std::size_t(length));
  DAA_MPI_CHECK(MPI_Bcast(out.data(), mpi_count(length, "Communicator::broadcast", "bytes"),
                          MPI_CHAR, root, comm_));
  return out;
}

std::vector<std::string> Communicator::all_gather(const std::string& mine) const {
  const auto ranks = static_cast<std::size_t>(size_);
  std::vector<std::int64_t> lengths(ranks);
  const auto my_length = std::int64_t(mine.size());
  DAA_MPI_CHECK(MPI_Allgather(&my_length, 1, MPI_INT64_T, lengths.data(), 1, MPI_INT64_T, comm_));
  std::vector<int> sizes(ranks), displs(ranks);
  std::int64_t total = 0;
  for (std::size_t r = 0; r < ranks; ++r) {
    check_message_size(*this, "all_gather", lengths[r], int(r));
    check_message_size(*this, "all_gather", total + lengths[r], -1);
    sizes[r] = mpi_count(lengths[r], "Communicator::all_gather count", "bytes");
    displs[r] = mpi_count(total, "Communicator::all_gather displacement", "bytes");
    total += lengths[r];
  }
  std::string all(std::size_t(total), '\0');
  DAA_MPI_CHECK(MPI_Allgatherv(mine.data(),
                               mpi_count(my_length, "Communicator::all_gather", "bytes"), MPI_CHAR,
                               all.data(), sizes.data(), displs.data(), MPI_CHAR, comm_));
  std::vector<std::string> out;
  for (std::size_t r = 0; r < ranks; ++r)
    out.push_back(all.substr(std::size_t(displs[r]), std::size_t(sizes[r])));
  return out;
}

std::string Communicator::agree_on_message(const std::string& local_message) const {
  int failing = local_message.empty() ? size_ : rank_;
  DAA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &failing, 1, MPI_INT, MPI_MIN, comm_));
  if (failing == size_) return "";
  return broadcast(local_message, failing);
}

}  // namespace daa::parallel
