// The collective HDF5 checkpoint writer and reader over MPI_COMM_WORLD: a round trip of datasets
// written in row pieces by several ranks, by one rank, scalars, text and empty datasets, read back
// in different row ranges on every rank; the stored crc32 equals zlib's; a flipped byte, a
// truncated file, a foreign file, a wrong format name or version, a missing path and a missing
// request each give the same CheckpointError on every rank; pieces that do not tile a dataset's
// rows make write() fail on every rank. Run with 1, 2 and 4 ranks.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <mpi.h>
#include <stdlib.h>
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "daa/core/error.hpp"
#include "daa/io/checkpoint.hpp"

namespace {

namespace fs = std::filesystem;
using daa::io::CheckpointError;
using daa::io::CheckpointReader;
using daa::io::CheckpointWriter;
using daa::io::DatasetInfo;
using daa::io::DatasetPiece;
using daa::io::ElementType;
using daa::io::ReadRequest;
using daa::parallel::Communicator;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

const Communicator& world() {
  static const Communicator comm(MPI_COMM_WORLD, "world");
  return comm;
}

void barrier() {
  MPI_Barrier(MPI_COMM_WORLD);
}

std::uint32_t zlib_crc(const void* data, std::size_t bytes) {
  const uLong empty = crc32(0L, Z_NULL, 0);
  return std::uint32_t(crc32(empty, static_cast<const Bytef*>(data), uInt(bytes)));
}
template <class T>
std::uint32_t zlib_crc(const std::vector<T>& v) {
  return zlib_crc(v.data(), v.size() * sizeof(T));
}

template <class T>
std::vector<std::byte> bytes_of(const std::vector<T>& v) {
  std::vector<std::byte> b(v.size() * sizeof(T));
  if (!b.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// The message of the exception of type E that `f` throws; a test failure if it throws nothing or
// something else.
template <class E>
std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw the wrong exception type: " << e.what();
    return "<wrong exception>";
  }
  ADD_FAILURE() << "threw nothing";
  return "<no exception>";
}

// Every rank got the same text as rank 0 (collective).
void expect_same_on_all_ranks(const std::string& text) {
  EXPECT_EQ(text, world().broadcast(text)) << "on rank " << world().rank();
}

// The identity the reader requires, added by rank 0.
void add_identity(CheckpointWriter& writer, std::int64_t version = 1) {
  if (!world().is_root()) return;
  writer.add_text("/meta/format", daa::io::kCheckpointFormatName);
  writer.add_scalar("/meta/format_version", version);
}

// A directory rank 0 creates and every rank learns; removed after each test.
class CheckpointIo : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string dir;
    if (world().is_root()) {
      std::string pattern = (fs::temp_directory_path() / "daa-ckpt-io-XXXXXX").string();
      if (::mkdtemp(pattern.data())) dir = pattern;
    }
    dir_ = world().broadcast(dir);
    ASSERT_FALSE(dir_.empty()) << "rank 0 could not create a temporary directory";
  }
  void TearDown() override {
    barrier();
    if (world().is_root() && !dir_.empty()) {
      std::error_code ignored;
      fs::remove_all(dir_, ignored);
    }
    barrier();
  }
  std::string file(const std::string& name) const { return (fs::path(dir_) / name).string(); }

  std::string dir_;
};

// Values of /a/rows: row r, column c = r * 10 + c.
constexpr std::uint64_t kRowsPerRank = 3, kCols = 5;
float row_value(std::uint64_t row, std::uint64_t col) {
  return float(row * 10 + col);
}

TEST_F(CheckpointIo, RoundTripOfEveryKindOfDataset) {
  const int rank = world().rank(), size = world().size();
  const auto n = std::uint64_t(size);
  const std::string path = file("round-trip.h5");

  // /a/rows [3n, 5] f32: rank r writes rows [3r, 3r + 3).
  std::vector<float> my_rows;
  for (std::uint64_t row = kRowsPerRank * std::uint64_t(rank);
       row < kRowsPerRank * (std::uint64_t(rank) + 1); ++row)
    for (std::uint64_t c = 0; c < kCols; ++c) my_rows.push_back(row_value(row, c));
  std::vector<float> all_rows;
  for (std::uint64_t row = 0; row < kRowsPerRank * n; ++row)
    for (std::uint64_t c = 0; c < kCols; ++c) all_rows.push_back(row_value(row, c));

  // /d/uneven [n(n+1)/2] i64: rank r writes r + 1 rows starting at r(r+1)/2, value = 1000 + row.
  const std::uint64_t uneven_rows = n * (n + 1) / 2;
  const std::uint64_t my_uneven_begin = std::uint64_t(rank) * std::uint64_t(rank + 1) / 2;
  std::vector<std::int64_t> my_uneven, all_uneven;
  for (std::uint64_t row = 0; row < uneven_rows; ++row) {
    all_uneven.push_back(1000 + std::int64_t(row));
    if (row >= my_uneven_begin && row < my_uneven_begin + std::uint64_t(rank) + 1)
      my_uneven.push_back(1000 + std::int64_t(row));
  }

  // Whole datasets of a single writer (the f64 one by the last rank, the rest by rank 0).
  const std::vector<double> f64 = {0.1,  -0.0, 1e308, -2.5e-310 /* subnormal */,
                                   3.25, -7.0, 1e-3,  std::numeric_limits<double>::max()};
  const std::vector<std::int64_t> i64 = {std::numeric_limits<std::int64_t>::min(), -1, 0, 1, 42,
                                         std::numeric_limits<std::int64_t>::max()};
  const std::string text = "[run]\nname = \"round trip\"\nsteps = 120\n";
  const std::int64_t step = 123456789012;
  const double lr = 3e-4;

  CheckpointWriter writer(world());
  // Added in an order other than the file's.
  writer.add({"/a/rows",
              ElementType::f32,
              {kRowsPerRank * n, kCols},
              kRowsPerRank * std::uint64_t(rank),
              kRowsPerRank,
              std::as_bytes(std::span(my_rows))});
  writer.add({"/d/uneven",
              ElementType::i64,
              {uneven_rows},
              my_uneven_begin,
              std::uint64_t(rank) + 1,
              std::as_bytes(std::span(my_uneven))});
  if (rank == size - 1) writer.add_f64("/b/f64", f64, {4, 2});
  add_identity(writer);
  if (world().is_root()) {
    writer.add_i64("/c/i64", i64, {6});
    writer.add_scalar("/scalars/step", step);
    writer.add_scalar("/scalars/lr", lr);
    writer.add_text("/text/config", text);
    writer.add_f32("/empty/f32", std::span<const float>(), {0});
    writer.add_text("/empty/text", "");
  }
  const std::uint64_t written = writer.write(path);
  // Data bytes over all ranks: the empty text is stored as one NUL byte.
  const std::uint64_t expected_bytes = all_rows.size() * 4 + all_uneven.size() * 8 +
                                       f64.size() * 8 +
                                       std::strlen(daa::io::kCheckpointFormatName) + 8 +
                                       i64.size() * 8 + 8 + 8 + text.size() + 0 + 1;
  EXPECT_EQ(written, expected_bytes);
  ASSERT_TRUE(fs::is_regular_file(path));

  CheckpointReader reader(world(), path);
  EXPECT_EQ(reader.path(), path);

  // The listing: exactly what was written, sorted by path, with its dims, type and zlib's crc32.
  struct Expected {
    std::string path;
    ElementType type;
    std::vector<std::uint64_t> dims;
    std::uint32_t crc;
  };
  const std::string format = daa::io::kCheckpointFormatName;
  const std::int64_t version = 1;
  const std::vector<Expected> expected = {
      {"/a/rows", ElementType::f32, {kRowsPerRank * n, kCols}, zlib_crc(all_rows)},
      {"/b/f64", ElementType::f64, {4, 2}, zlib_crc(f64)},
      {"/c/i64", ElementType::i64, {6}, zlib_crc(i64)},
      {"/d/uneven", ElementType::i64, {uneven_rows}, zlib_crc(all_uneven)},
      {"/empty/f32", ElementType::f32, {0}, zlib_crc(nullptr, 0)},
      {"/empty/text", ElementType::text, {1}, zlib_crc("", 1)},
      {"/meta/format", ElementType::text, {format.size()}, zlib_crc(format.data(), format.size())},
      {"/meta/format_version", ElementType::i64, {}, zlib_crc(&version, 8)},
      {"/scalars/lr", ElementType::f64, {}, zlib_crc(&lr, 8)},
      {"/scalars/step", ElementType::i64, {}, zlib_crc(&step, 8)},
      {"/text/config", ElementType::text, {text.size()}, zlib_crc(text.data(), text.size())},
  };
  const std::vector<DatasetInfo>& listed = reader.datasets();
  ASSERT_EQ(listed.size(), expected.size());
  for (std::size_t i = 0; i < expected.size(); ++i) {
    SCOPED_TRACE(expected[i].path);
    EXPECT_EQ(listed[i].path, expected[i].path);
    EXPECT_EQ(listed[i].type, expected[i].type);
    EXPECT_EQ(listed[i].dims, expected[i].dims);
    EXPECT_EQ(listed[i].crc32, expected[i].crc);
    ASSERT_EQ(reader.find(expected[i].path), &listed[i]);
  }
  EXPECT_EQ(zlib_crc(nullptr, 0), 0u);
  EXPECT_EQ(reader.find("/a"), nullptr);
  EXPECT_EQ(reader.find("/nothing"), nullptr);
  EXPECT_EQ(reader.find("/a/rows")->elements(), kRowsPerRank * n * kCols);
  EXPECT_EQ(reader.find("/a/rows")->row_elements(), kCols);
  EXPECT_EQ(reader.find("/empty/f32")->elements(), 0u);
  EXPECT_EQ(reader.find("/empty/f32")->row_elements(), 0u);
  EXPECT_EQ(reader.find("/scalars/step")->elements(), 1u);
  EXPECT_EQ(reader.find("/text/config")->elements(), text.size());

  // Each rank a different row range of /a/rows (some of them the whole), everything else whole;
  // the uneven dataset only on odd ranks (the others take part without asking for it).
  const std::uint64_t total_rows = kRowsPerRank * n;
  const std::uint64_t begin = (2 * std::uint64_t(rank)) % total_rows;
  const std::uint64_t count =
      rank == 1 ? total_rows - begin : std::min<std::uint64_t>(2, total_rows - begin);
  std::vector<ReadRequest> requests;
  auto request = [&](const std::string& p, std::uint64_t b = 0,
                     std::uint64_t r = ReadRequest::kAllRows) {
    ReadRequest q;
    q.path = p;
    q.row_begin = b;
    q.rows = r;
    requests.push_back(std::move(q));
  };
  request("/a/rows", begin, count);
  request("/b/f64");
  request("/c/i64");
  request("/empty/f32");
  request("/empty/text");
  request("/meta/format");
  request("/meta/format_version");
  request("/scalars/lr");
  request("/scalars/step");
  request("/text/config");
  if (rank % 2 == 1) request("/d/uneven", 1);
  reader.read(requests);

  std::vector<float> expected_rows(all_rows.begin() + std::ptrdiff_t(begin * kCols),
                                   all_rows.begin() + std::ptrdiff_t((begin + count) * kCols));
  EXPECT_EQ(requests[0].rows, count);
  EXPECT_EQ(requests[0].out.type, ElementType::f32);
  EXPECT_EQ(requests[0].out.as<float>(), expected_rows);
  EXPECT_EQ(requests[0].out.bytes, bytes_of(expected_rows));
  EXPECT_EQ(requests[1].out.as<double>(), f64);
  EXPECT_EQ(requests[1].out.bytes, bytes_of(f64));  // -0.0 and the subnormal bit for bit
  EXPECT_EQ(requests[1].rows, 4u);
  EXPECT_EQ(requests[2].out.as<std::int64_t>(), i64);
  EXPECT_EQ(requests[3].out.type, ElementType::f32);
  EXPECT_THAT(requests[3].out.bytes, IsEmpty());
  EXPECT_EQ(requests[3].rows, 0u);
  EXPECT_EQ(requests[4].out.type, ElementType::text);
  EXPECT_EQ(requests[4].out.text(), "");
  EXPECT_EQ(requests[5].out.text(), format);
  EXPECT_THAT(requests[6].out.as<std::int64_t>(), ElementsAre(1));
  EXPECT_THAT(requests[7].out.as<double>(), ElementsAre(lr));
  EXPECT_THAT(requests[8].out.as<std::int64_t>(), ElementsAre(step));
  EXPECT_EQ(requests[9].out.type, ElementType::text);
  EXPECT_EQ(requests[9].out.text(), text);
  EXPECT_EQ(requests[9].out.bytes.size(), text.size());
  if (rank % 2 == 1) {
    EXPECT_EQ(requests[10].rows, uneven_rows - 1);
    EXPECT_THAT(requests[10].out.as<std::int64_t>(),
                ElementsAreArray(all_uneven.begin() + 1, all_uneven.end()));
  }
  // A typed view of the wrong type is refused.
  EXPECT_THROW(requests[2].out.as<double>(), daa::Error);
  EXPECT_THROW(requests[1].out.as<float>(), daa::Error);

  // A second read of the same reader gives the same values (whole /a/rows this time).
  std::vector<ReadRequest> again(1);
  again[0].path = "/a/rows";
  reader.read(again);
  EXPECT_EQ(again[0].rows, total_rows);
  EXPECT_EQ(again[0].out.as<float>(), all_rows);
}

TEST_F(CheckpointIo, RowPiecesWrittenInAnyOrderOnAnyRank) {
  // A 3-D dataset whose row blocks lie on the ranks in reverse order: rank r writes rows
  // [2(n-1-r), 2(n-1-r) + 2).
  const int rank = world().rank(), size = world().size();
  const auto n = std::uint64_t(size);
  const std::uint64_t rows = 2 * n, d1 = 3, d2 = 2;
  const std::uint64_t my_begin = (n - 1 - std::uint64_t(rank)) * 2;
  std::vector<double> mine, all;
  for (std::uint64_t i = 0; i < rows * d1 * d2; ++i) {
    const double v = double(i) * 0.5 - 1.0;
    all.push_back(v);
    if (i / (d1 * d2) >= my_begin && i / (d1 * d2) < my_begin + 2) mine.push_back(v);
  }
  const std::string path = file("permuted.h5");
  CheckpointWriter writer(world());
  add_identity(writer);
  writer.add(
      {"/x/cube", ElementType::f64, {rows, d1, d2}, my_begin, 2, std::as_bytes(std::span(mine))});
  EXPECT_EQ(writer.write(path), all.size() * 8 + std::strlen(daa::io::kCheckpointFormatName) + 8);

  CheckpointReader reader(world(), path);
  ASSERT_NE(reader.find("/x/cube"), nullptr);
  EXPECT_THAT(reader.find("/x/cube")->dims, ElementsAre(rows, d1, d2));
  EXPECT_EQ(reader.find("/x/cube")->crc32, zlib_crc(all));
  EXPECT_EQ(reader.find("/x/cube")->row_elements(), d1 * d2);
  // Each rank reads back the last row only.
  std::vector<ReadRequest> requests(1);
  requests[0].path = "/x/cube";
  requests[0].row_begin = rows - 1;
  requests[0].rows = 1;
  reader.read(requests);
  EXPECT_THAT(requests[0].out.as<double>(),
              ElementsAreArray(all.end() - std::ptrdiff_t(d1 * d2), all.end()));
}

// Byte offset of the first run of `count` floats equal to `value` in `bytes`, or npos.
std::size_t find_float_run(const std::string& bytes, float value, std::size_t count) {
  std::string run(count * sizeof value, '\0');
  for (std::size_t i = 0; i < count; ++i) std::memcpy(run.data() + i * sizeof value, &value, 4);
  return bytes.find(run);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

// A valid checkpoint holding `/big/pattern` (4096 floats 1234.5f, written by the last rank),
// `/a/rows` pieces from every rank and the identity.
void write_pattern_checkpoint(const std::string& path) {
  const int rank = world().rank(), size = world().size();
  static const std::vector<float> pattern(4096, 1234.5f);
  std::vector<float> my_rows(kCols);
  for (std::uint64_t c = 0; c < kCols; ++c) my_rows[c] = row_value(std::uint64_t(rank), c);
  CheckpointWriter writer(world());
  add_identity(writer);
  if (rank == size - 1) writer.add_f32("/big/pattern", pattern, {4096});
  writer.add({"/a/rows",
              ElementType::f32,
              {std::uint64_t(size), kCols},
              std::uint64_t(rank),
              1,
              std::as_bytes(std::span(my_rows))});
  writer.write(path);
}

TEST_F(CheckpointIo, AFlippedByteIsReportedAsCorruptOnEveryRank) {
  const std::string path = file("corrupt.h5");
  write_pattern_checkpoint(path);
  {  // Intact, it reads.
    CheckpointReader reader(world(), path);
    std::vector<ReadRequest> requests(1);
    requests[0].path = "/big/pattern";
    reader.read(requests);
    EXPECT_EQ(requests[0].out.as<float>(), std::vector<float>(4096, 1234.5f));
  }
  barrier();
  std::string located;
  if (world().is_root()) {
    std::string bytes = read_file(path);
    const std::size_t at = find_float_run(bytes, 1234.5f, 4096);
    if (at == std::string::npos) {
      located = "no";
    } else {
      bytes[at + 4096 * 4 / 2 + 1] ^= 0x10;  // a mantissa bit of float 2048
      write_file(path, bytes);
      located = "yes";
    }
  }
  ASSERT_EQ(world().broadcast(located), "yes") << "the pattern was not found in the file";
  barrier();

  // The file still opens (the listing is intact) ...
  CheckpointReader reader(world(), path);
  ASSERT_NE(reader.find("/big/pattern"), nullptr);
  // ... but reading it fails on every rank, whatever each rank asked for.
  std::vector<ReadRequest> requests(1);
  requests[0].path = "/a/rows";
  requests[0].row_begin = std::uint64_t(world().rank());
  requests[0].rows = 1;
  const std::string message = message_of<CheckpointError>([&] { reader.read(requests); });
  EXPECT_THAT(message, HasSubstr("/big/pattern"));
  EXPECT_THAT(message, HasSubstr("corrupt"));
  EXPECT_THAT(message, HasSubstr(path));
  EXPECT_THAT(message, ::testing::StartsWith("checkpoint: "));
  EXPECT_THAT(requests[0].out.bytes, IsEmpty()) << "nothing is handed out from a corrupt file";
  expect_same_on_all_ranks(message);
}

TEST_F(CheckpointIo, ATruncatedFileIsRefusedOnEveryRank) {
  const std::string path = file("truncated.h5");
  write_pattern_checkpoint(path);
  barrier();
  if (world().is_root()) fs::resize_file(path, fs::file_size(path) / 2);
  barrier();
  const std::string message =
      message_of<CheckpointError>([&] { CheckpointReader reader(world(), path); });
  EXPECT_THAT(message, HasSubstr(path));
  expect_same_on_all_ranks(message);
}

TEST_F(CheckpointIo, AFileThatIsNotHdf5IsRefusedOnEveryRank) {
  const std::string path = file("garbage.h5");
  if (world().is_root()) write_file(path, std::string(10000, 'x'));
  barrier();
  const std::string message =
      message_of<CheckpointError>([&] { CheckpointReader reader(world(), path); });
  EXPECT_THAT(message, HasSubstr(path));
  EXPECT_THAT(message, HasSubstr("not a readable HDF5 file"));
  expect_same_on_all_ranks(message);
}

TEST_F(CheckpointIo, AnotherFormatVersionIsRefused) {
  const std::string path = file("version2.h5");
  CheckpointWriter writer(world());
  add_identity(writer, 2);
  writer.write(path);
  const std::string message =
      message_of<CheckpointError>([&] { CheckpointReader reader(world(), path); });
  EXPECT_THAT(message, HasSubstr("format version 2"));
  EXPECT_THAT(message, HasSubstr(path));
  expect_same_on_all_ranks(message);
}

TEST_F(CheckpointIo, AFileWithoutTheFormatNameIsRefused) {
  const std::string path = file("anonymous.h5");
  const std::vector<float> values = {1, 2, 3};
  CheckpointWriter writer(world());
  if (world().is_root()) {
    writer.add_f32("/some/values", values, {3});
    writer.add_scalar("/meta/format_version", std::int64_t(1));
  }
  writer.write(path);
  const std::string message =
      message_of<CheckpointError>([&] { CheckpointReader reader(world(), path); });
  EXPECT_THAT(message, HasSubstr("not a daa-swarm checkpoint"));
  EXPECT_THAT(message, HasSubstr(path));
  expect_same_on_all_ranks(message);
}

TEST_F(CheckpointIo, AWrongFormatNameIsRefused) {
  const std::string path = file("other.h5");
  CheckpointWriter writer(world());
  if (world().is_root()) {
    writer.add_text("/meta/format", "some other program");
    writer.add_scalar("/meta/format_version", std::int64_t(1));
  }
  writer.write(path);
  const std::string message =
      message_of<CheckpointError>([&] { CheckpointReader reader(world(), path); });
  EXPECT_THAT(message, HasSubstr("not a daa-swarm checkpoint"));
  expect_same_on_all_ranks(message);
}

TEST_F(CheckpointIo, AMissingFileIsRefused) {
  const std::string path = file("never-written.h5");
  const std::string message =
      message_of<CheckpointError>([&] { CheckpointReader reader(world(), path); });
  EXPECT_THAT(message, HasSubstr("does not exist"));
  EXPECT_THAT(message, HasSubstr(path));
  expect_same_on_all_ranks(message);
  // A directory is not a file either.
  const std::string not_file =
      message_of<CheckpointError>([&] { CheckpointReader reader(world(), dir_); });
  EXPECT_THAT(not_file, HasSubstr("is not a file"));
}

TEST_F(CheckpointIo, MissingRequestsFailUnlessOptional) {
  const std::string path = file("requests.h5");
  write_pattern_checkpoint(path);
  CheckpointReader reader(world(), path);

  {  // Optional and missing: empty, no error; the others are read.
    std::vector<ReadRequest> requests(2);
    requests[0].path = "/not/there";
    requests[0].optional = true;
    requests[1].path = "/meta/format_version";
    reader.read(requests);
    EXPECT_THAT(requests[0].out.bytes, IsEmpty());
    EXPECT_THAT(requests[1].out.as<std::int64_t>(), ElementsAre(1));
  }
  {  // Missing on one rank only (the last): every rank fails, naming the path.
    std::vector<ReadRequest> requests(1);
    requests[0].path = world().rank() == world().size() - 1 ? "/not/there" : "/big/pattern";
    const std::string message = message_of<CheckpointError>([&] { reader.read(requests); });
    EXPECT_THAT(message, HasSubstr("/not/there"));
    EXPECT_THAT(message, HasSubstr(path));
    EXPECT_THAT(requests[0].out.bytes, IsEmpty());
    expect_same_on_all_ranks(message);
  }
  {  // Rows beyond the end: refused on every rank.
    std::vector<ReadRequest> requests(1);
    requests[0].path = "/a/rows";
    requests[0].row_begin = std::uint64_t(world().size()) - 1;
    requests[0].rows = 2;
    const std::string message = message_of<CheckpointError>([&] { reader.read(requests); });
    EXPECT_THAT(message, HasSubstr("/a/rows"));
    expect_same_on_all_ranks(message);
  }
  {  // The reader is still usable afterwards.
    std::vector<ReadRequest> requests(1);
    requests[0].path = "/a/rows";
    reader.read(requests);
    std::vector<float> all;
    for (std::uint64_t r = 0; r < std::uint64_t(world().size()); ++r)
      for (std::uint64_t c = 0; c < kCols; ++c) all.push_back(row_value(r, c));
    EXPECT_EQ(requests[0].out.as<float>(), all);
  }
}

// write() of pieces that do not tile: daa::Error naming the path on every rank, and no file.
void expect_write_refused(const std::string& path, const std::string& dataset,
                          const std::function<void(CheckpointWriter&)>& add) {
  CheckpointWriter writer(world());
  add_identity(writer);
  add(writer);
  const std::string message = message_of<daa::Error>([&] { writer.write(path); });
  EXPECT_THAT(message, HasSubstr(dataset));
  expect_same_on_all_ranks(message);
  barrier();
  EXPECT_FALSE(fs::exists(path));
}

TEST_F(CheckpointIo, PiecesThatDoNotTileTheRowsAreRefused) {
  const int rank = world().rank(), size = world().size();
  static const std::vector<float> values(16, 2.0f);
  const auto piece = [](std::uint64_t rows_total, std::uint64_t begin, std::uint64_t rows) {
    return DatasetPiece{"/gap/rows",
                        ElementType::f32,
                        {rows_total, 2},
                        begin,
                        rows,
                        std::as_bytes(std::span(values.data(), rows * 2))};
  };

  // A gap: rows [0, 2) of 3 on rank 0 (and, with more ranks, nothing else).
  expect_write_refused(file("gap.h5"), "/gap/rows", [&](CheckpointWriter& w) {
    if (rank == 0) w.add(piece(3, 0, 2));
  });
  // A gap between two ranks: rows [0, 1) and [2, 3) of 3.
  if (size >= 2)
    expect_write_refused(file("gap2.h5"), "/gap/rows", [&](CheckpointWriter& w) {
      if (rank == 0) w.add(piece(3, 0, 1));
      if (rank == 1) w.add(piece(3, 2, 1));
    });
  // An overlap: two ranks both claim rows [0, 2) of 2.
  if (size >= 2)
    expect_write_refused(file("overlap.h5"), "/gap/rows", [&](CheckpointWriter& w) {
      if (rank == 0 || rank == 1) w.add(piece(2, 0, 2));
    });
  // Too many rows: rows [0, 4) of 3.
  expect_write_refused(file("over.h5"), "/gap/rows", [&](CheckpointWriter& w) {
    if (rank == size - 1) w.add(piece(3, 0, 4));
  });
  // Ranks that disagree on the shape.
  if (size >= 2)
    expect_write_refused(file("shape.h5"), "/gap/rows", [&](CheckpointWriter& w) {
      if (rank == 0) w.add(piece(2, 0, 1));
      if (rank == 1) w.add(piece(3, 1, 1));
    });

  // And after all that, a good write still works.
  CheckpointWriter writer(world());
  add_identity(writer);
  if (rank == 0) writer.add(piece(3, 0, 3));
  writer.write(file("good.h5"));
  CheckpointReader reader(world(), file("good.h5"));
  EXPECT_THAT(reader.find("/gap/rows")->dims, ElementsAre(3u, 2u));
}

TEST_F(CheckpointIo, ZeroRowPiecesAreAllowed) {
  // A rank may contribute an empty piece (a row range of length 0), e.g. where a layout gives it
  // no rows: here rank 0 a piece of 0 rows at row 0 of each of 12 datasets, next to rank 1's
  // piece that starts there; every rank r > 0 writes row r - 1 (on 1 rank the datasets have 0
  // rows). Twelve datasets, so that the order of the pieces cannot come out right by chance.
  const int rank = world().rank(), size = world().size();
  const auto n = std::uint64_t(size);
  const std::uint64_t rows = n - 1;
  constexpr int kDatasets = 12;
  std::vector<std::vector<float>> mine(kDatasets);
  CheckpointWriter writer(world());
  add_identity(writer);
  for (int k = 0; k < kDatasets; ++k) {
    if (rank > 0) mine[std::size_t(k)] = {float(rank), float(k)};
    writer.add({"/z/rows" + std::to_string(100 + k),
                ElementType::f32,
                {rows, 2},
                rank == 0 ? 0 : std::uint64_t(rank) - 1,
                rank == 0 ? 0u : 1u,
                std::as_bytes(std::span(mine[std::size_t(k)]))});
  }
  writer.write(file("zero.h5"));
  CheckpointReader reader(world(), file("zero.h5"));
  std::vector<ReadRequest> requests(kDatasets);
  for (int k = 0; k < kDatasets; ++k)
    requests[std::size_t(k)].path = "/z/rows" + std::to_string(100 + k);
  reader.read(requests);
  for (int k = 0; k < kDatasets; ++k) {
    std::vector<float> all;
    for (int r = 1; r < size; ++r) all.insert(all.end(), {float(r), float(k)});
    EXPECT_EQ(requests[std::size_t(k)].out.as<float>(), all) << requests[std::size_t(k)].path;
    EXPECT_EQ(reader.find(requests[std::size_t(k)].path)->crc32, zlib_crc(all));
  }
}

TEST_F(CheckpointIo, TwoPiecesOfOneDatasetOnOneRankAreRefused) {
  // The writer refuses this locally (rank 0 only), so only one rank may be asked: no collective.
  CheckpointWriter writer(world());
  if (!world().is_root()) return;
  static const std::vector<float> values(4, 1.0f);
  writer.add({"/dup", ElementType::f32, {2}, 0, 1, std::as_bytes(std::span(values.data(), 1))});
  writer.add({"/dup", ElementType::f32, {2}, 1, 1, std::as_bytes(std::span(values.data(), 1))});
  const std::string message = message_of<daa::Error>([&] { writer.write(file("dup.h5")); });
  EXPECT_THAT(message, HasSubstr("/dup"));
}

}  // namespace
