// HDF5 checkpoint files (DESIGN.md §7, docs/checkpoint-format.md): a collective writer and reader
// of named datasets on parallel HDF5 (MPI-IO), a CRC-32 per dataset, and the run directory's
// checkpoint set (temporary name, rename, an atomically replaced `latest` pointer, the last K
// kept). This layer knows datasets, not models: the train module decides what goes where.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "daa/core/error.hpp"
#include "daa/parallel/communicator.hpp"

namespace daa::io {

// Version of the file layout this program writes and the only one it reads.
inline constexpr std::int64_t kCheckpointFormatVersion = 1;
inline constexpr const char* kCheckpointFormatName = "daa-swarm checkpoint";

// A file that is missing, not a checkpoint, unreadable, corrupt or incompatible. Bad input: the
// message names the file and, where one is at fault, the dataset.
class CheckpointError : public InputError {
 public:
  explicit CheckpointError(const std::string& what) : InputError("checkpoint: " + what) {}
};

enum class ElementType : std::uint8_t { f32, f64, i64, text };
std::size_t element_size(ElementType type);  // text: 1

// What one rank contributes to one dataset: rows [row_begin, row_begin + rows) of a dataset of
// shape `dims` (row = index along the first dimension; a scalar or text dataset is one row).
// Pieces of the same path from different ranks must tile the rows exactly.
struct DatasetPiece {
  std::string path;  // "/model/layer0/expert3/w1"
  ElementType type = ElementType::f32;
  std::vector<std::uint64_t> dims;  // empty: scalar; text: empty, the length is the byte count
  std::uint64_t row_begin = 0;
  std::uint64_t rows = 1;
  std::span<const std::byte> bytes;  // row-major, native (little-endian) order
};

// Collective over `comm`: every rank constructs it, adds its pieces (any order, any number,
// including none), and calls write() once. Pieces keep pointers to the caller's memory until
// write() returns.
class CheckpointWriter {
 public:
  explicit CheckpointWriter(const parallel::Communicator& comm);

  void add(DatasetPiece piece);
  // Helpers for whole datasets written by this rank alone.
  void add_f32(const std::string& path, std::span<const float> values,
               std::vector<std::uint64_t> dims);
  void add_f64(const std::string& path, std::span<const double> values,
               std::vector<std::uint64_t> dims);
  void add_i64(const std::string& path, std::span<const std::int64_t> values,
               std::vector<std::uint64_t> dims);
  void add_scalar(const std::string& path, const std::int64_t& value);
  void add_scalar(const std::string& path, const double& value);
  void add_text(const std::string& path, const std::string& text);

  // Reserves the file's space, creates `path` (truncating) and every dataset with its crc32
  // attribute collectively (collective metadata), writes the data (a dataset in row pieces of
  // several ranks in one collective transfer, a single owner's dataset by that rank alone:
  // docs/performance.md measures why), closes and fsyncs it. Any rank's failure becomes the same
  // daa::Error on every rank, after rank 0 removed the partial file. Returns the bytes of data
  // written, over all ranks.
  std::uint64_t write(const std::string& path);

 private:
  const parallel::Communicator& comm_;
  std::vector<DatasetPiece> pieces_;
  // add_text/add_scalar values; a deque never moves its elements, so pieces may point into them.
  std::deque<std::string> owned_text_;
  std::deque<std::vector<std::byte>> owned_bytes_;
};

struct DatasetInfo {
  std::string path;
  ElementType type = ElementType::f32;
  std::vector<std::uint64_t> dims;     // text: {byte length}
  std::uint32_t crc32 = 0;             // stored checksum
  std::uint64_t elements() const;      // text: bytes
  std::uint64_t row_elements() const;  // elements per first-dimension index
};

// A dataset's values as read: typed views over the bytes.
struct DatasetValues {
  ElementType type = ElementType::f32;
  std::vector<std::byte> bytes;
  template <class T>
  std::vector<T> as() const;  // f32 -> float, f64 -> double, i64 -> int64_t
  std::string text() const;
};

// What a rank wants from the file: rows [row_begin, row_begin + rows) of `path`, or all of it
// (rows = kAllRows); the values arrive in `out`. `optional` requests of missing paths stay empty.
struct ReadRequest {
  static constexpr std::uint64_t kAllRows = ~std::uint64_t(0);
  std::string path;
  std::uint64_t row_begin = 0;
  std::uint64_t rows = kAllRows;
  bool optional = false;
  DatasetValues out;
};

// Collective over `comm`: opens the file and lists its datasets (the same on every rank), checks
// the format name and version. Throws CheckpointError naming the file on every rank alike.
class CheckpointReader {
 public:
  CheckpointReader(const parallel::Communicator& comm, const std::string& path);
  ~CheckpointReader();
  CheckpointReader(const CheckpointReader&) = delete;
  CheckpointReader& operator=(const CheckpointReader&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<DatasetInfo>& datasets() const { return datasets_; }  // sorted by path
  const DatasetInfo* find(const std::string& path) const;

  // Collective: opens every dataset of the file collectively and reads it independently on the
  // ranks that need it, verifying each one's checksum (on one rank each), and hands every rank
  // what it asked for. Nothing is returned
  // until every dataset has passed; a corrupt or unreadable one, or a missing non-optional
  // request, throws the same CheckpointError on every rank, naming the dataset.
  void read(std::span<ReadRequest> requests);

 private:
  const parallel::Communicator& comm_;
  std::string path_;
  std::int64_t file_ = -1;  // hid_t
  std::vector<DatasetInfo> datasets_;
};

// --- the run directory's checkpoint set ------------------------------------------------------

// "step-00000120.h5"
std::string checkpoint_file_name(std::int64_t step);
// Step of a file named like checkpoint_file_name, or nullopt.
std::optional<std::int64_t> checkpoint_step(const std::string& file_name);

struct CheckpointCandidate {
  std::string path;
  std::int64_t step = 0;
};

// Checkpoints of `dir` in the order `--restart auto` tries them: the one `latest` names first,
// then the others by descending step. `notes` receives a line when `latest` is missing or names
// a file that is not there. No I/O beyond directory listing and reading `latest`.
std::vector<CheckpointCandidate> restart_candidates(const std::string& dir,
                                                    std::vector<std::string>& notes);

// After `temp` was written completely: renames it to `final_path`, replaces `dir`/latest
// atomically to name it, fsyncs the directory, and deletes the oldest checkpoints older than
// `step` beyond the newest `keep`. Checkpoints with a later step (an abandoned continuation) are
// left alone. Single process (rank 0). Throws daa::Error naming the path.
void publish_checkpoint(const std::string& dir, const std::string& temp,
                        const std::string& final_path, std::int64_t step, int keep);

}  // namespace daa::io
