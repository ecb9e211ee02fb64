// Unit tests of src/io/dataset.cpp: the IDX reader on small files written here (gzipped and
// plain; good, malformed, truncated, missing), load_dataset on a Fashion-MNIST-named directory,
// the per-epoch permutation, the split of a global batch over ranks, and pixel normalization.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <numeric>
#include <string>
#include <vector>

#include "daa/core/config.hpp"
#include "daa/core/error.hpp"
#include "daa/io/dataset.hpp"

namespace {

namespace fs = std::filesystem;
using daa::io::epoch_permutation;
using daa::io::fill_batch;
using daa::io::ImageSet;
using daa::io::load_dataset;
using daa::io::local_batch;
using daa::io::read_idx_pair;
using ::testing::AllOf;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::StartsWith;

using Bytes = std::vector<std::uint8_t>;

// A fresh directory under the system temp directory, removed with everything in it at the end.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string leaf = "daa-test-data-" + std::to_string(::getpid()) + "-" +
                       std::to_string(counter++) + "-" + (test ? test->name() : "none");
    // Parameterized tests are named "Name/0": keep the directory one level deep.
    std::replace(leaf.begin(), leaf.end(), '/', '_');
    path_ = fs::temp_directory_path() / leaf;
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void put_u32(Bytes& out, std::uint32_t v) {
  out.push_back(std::uint8_t(v >> 24));
  out.push_back(std::uint8_t(v >> 16));
  out.push_back(std::uint8_t(v >> 8));
  out.push_back(std::uint8_t(v));
}

constexpr std::uint32_t kImageMagic = 0x00000803;
constexpr std::uint32_t kLabelMagic = 0x00000801;

// IDX image file: magic, count, rows, cols (big-endian), then the pixels.
Bytes idx_images(std::uint32_t count, std::uint32_t rows, std::uint32_t cols, const Bytes& pixels,
                 std::uint32_t magic = kImageMagic) {
  Bytes out;
  put_u32(out, magic);
  put_u32(out, count);
  put_u32(out, rows);
  put_u32(out, cols);
  out.insert(out.end(), pixels.begin(), pixels.end());
  return out;
}

// IDX label file: magic, count, then the labels.
Bytes idx_labels(std::uint32_t count, const Bytes& labels, std::uint32_t magic = kLabelMagic) {
  Bytes out;
  put_u32(out, magic);
  put_u32(out, count);
  out.insert(out.end(), labels.begin(), labels.end());
  return out;
}

void write_plain(const std::string& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

void write_gz(const std::string& path, const Bytes& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << path;
  if (!bytes.empty()) {
    ASSERT_EQ(gzwrite(f, bytes.data(), unsigned(bytes.size())), int(bytes.size()));
  }
  ASSERT_EQ(gzclose(f), Z_OK) << path;
}

Bytes read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Five 2x3 images with distinct pixels, and labels with largest label 3.
constexpr std::uint32_t kCount = 5, kRows = 2, kCols = 3;
Bytes sample_pixels() {
  Bytes p(kCount * kRows * kCols);
  for (std::size_t i = 0; i < p.size(); ++i) p[i] = std::uint8_t(i * 7 + 1);
  return p;
}
const Bytes kLabels = {0, 3, 1, 2, 3};

// The message of the DataError that `f` throws, or a marker that fails any expectation on it.
std::string data_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const daa::DataError& e) {
    EXPECT_EQ(e.exit_code(), daa::ExitCode::bad_input);
    return e.what();
  } catch (const std::exception& e) {
    return std::string("<not a DataError: ") + e.what() + ">";
  }
  return "<no DataError thrown>";
}

// A pair of files in `dir` with the given contents; `gz` picks gzip or plain.
struct Pair {
  std::string images, labels;
};
Pair write_pair(const TempDir& dir, const Bytes& images, const Bytes& labels, bool gz) {
  Pair p{dir.file(gz ? "images.gz" : "images"), dir.file(gz ? "labels.gz" : "labels")};
  if (gz) {
    write_gz(p.images, images);
    write_gz(p.labels, labels);
  } else {
    write_plain(p.images, images);
    write_plain(p.labels, labels);
  }
  return p;
}

std::string read_error(const Pair& p) {
  return data_error([&] { read_idx_pair(p.images, p.labels, 0, "train"); });
}

// ---------------------------------------------------------------------------------------------
// read_idx_pair on good files

class ReadIdxPair : public ::testing::TestWithParam<bool> {};  // parameter: gzipped
INSTANTIATE_TEST_SUITE_P(Compression, ReadIdxPair, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "gzip" : "plain"; });

TEST_P(ReadIdxPair, ReadsValuesAndShape) {
  TempDir dir;
  const Pair p = write_pair(dir, idx_images(kCount, kRows, kCols, sample_pixels()),
                            idx_labels(kCount, kLabels), GetParam());
  const ImageSet set = read_idx_pair(p.images, p.labels, 0, "train");
  EXPECT_EQ(set.name, "train");
  EXPECT_EQ(set.count, 5);
  EXPECT_EQ(set.rows, 2);
  EXPECT_EQ(set.cols, 3);
  EXPECT_EQ(set.features(), 6);
  EXPECT_EQ(set.classes, 4);
  EXPECT_THAT(set.pixels, ElementsAreArray(sample_pixels()));
  EXPECT_THAT(set.labels, ElementsAreArray(kLabels));
}

TEST_P(ReadIdxPair, LimitKeepsTheFirstSamples) {
  TempDir dir;
  const Pair p = write_pair(dir, idx_images(kCount, kRows, kCols, sample_pixels()),
                            idx_labels(kCount, kLabels), GetParam());
  const ImageSet set = read_idx_pair(p.images, p.labels, 2, "test");
  EXPECT_EQ(set.name, "test");
  EXPECT_EQ(set.count, 2);
  const Bytes pixels = sample_pixels();
  EXPECT_THAT(set.pixels, ElementsAreArray(pixels.begin(), pixels.begin() + 12));
  EXPECT_THAT(set.labels, ElementsAreArray({0, 3}));
  // The class count comes from the whole file, so a slice cannot shrink the classifier.
  EXPECT_EQ(set.classes, 4);

  // A limit at or above the count, and 0, keep everything.
  EXPECT_EQ(read_idx_pair(p.images, p.labels, 5, "t").count, 5);
  EXPECT_EQ(read_idx_pair(p.images, p.labels, 99, "t").count, 5);
  EXPECT_EQ(read_idx_pair(p.images, p.labels, 0, "t").count, 5);
}

TEST_P(ReadIdxPair, ClassesIsOnePlusTheLargestLabel) {
  TempDir dir;
  const Pair p =
      write_pair(dir, idx_images(3, 1, 1, {1, 2, 3}), idx_labels(3, {0, 9, 4}), GetParam());
  EXPECT_EQ(read_idx_pair(p.images, p.labels, 0, "train").classes, 10);
}

// ---------------------------------------------------------------------------------------------
// read_idx_pair on bad files: every message names the file and the problem.

class ReadIdxPairErrors : public ::testing::TestWithParam<bool> {};  // parameter: gzipped
INSTANTIATE_TEST_SUITE_P(Compression, ReadIdxPairErrors, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "gzip" : "plain"; });

TEST_P(ReadIdxPairErrors, WrongImageMagic) {
  TempDir dir;
  // An image file with the label magic, as when the two files are swapped.
  const Pair p = write_pair(dir, idx_images(kCount, kRows, kCols, sample_pixels(), kLabelMagic),
                            idx_labels(kCount, kLabels), GetParam());
  EXPECT_THAT(read_error(p), AllOf(StartsWith("data: '" + p.images + "'"),
                                   HasSubstr("has magic number 0x00000801, expected 0x00000803"),
                                   HasSubstr("IDX unsigned-byte images")));
}

TEST_P(ReadIdxPairErrors, WrongLabelMagic) {
  TempDir dir;
  const Pair p = write_pair(dir, idx_images(kCount, kRows, kCols, sample_pixels()),
                            idx_labels(kCount, kLabels, 0x00000803), GetParam());
  EXPECT_THAT(read_error(p), AllOf(StartsWith("data: '" + p.labels + "'"),
                                   HasSubstr("has magic number 0x00000803, expected 0x00000801"),
                                   HasSubstr("IDX unsigned-byte labels")));
}

TEST_P(ReadIdxPairErrors, SwappedFiles) {
  TempDir dir;
  const Pair p = write_pair(dir, idx_labels(kCount, kLabels),
                            idx_images(kCount, kRows, kCols, sample_pixels()), GetParam());
  EXPECT_THAT(read_error(p), AllOf(HasSubstr("'" + p.images + "'"), HasSubstr("magic number")));
}

TEST_P(ReadIdxPairErrors, CountMismatchNamesBothFilesAndBothCounts) {
  TempDir dir;
  const Pair p = write_pair(dir, idx_images(kCount, kRows, kCols, sample_pixels()),
                            idx_labels(4, {0, 1, 2, 3}), GetParam());
  EXPECT_THAT(read_error(p), AllOf(HasSubstr("'" + p.labels + "' holds 4 labels"),
                                   HasSubstr("'" + p.images + "' holds 5 images")));
}

TEST_P(ReadIdxPairErrors, ImpossibleHeader) {
  TempDir dir;
  const Pair p = write_pair(dir, idx_images(0, kRows, kCols, {}), idx_labels(0, {}), GetParam());
  EXPECT_THAT(read_error(p), AllOf(HasSubstr("'" + p.images + "'"),
                                   HasSubstr("announces 0 images of 2x3 pixels")));
}

TEST_P(ReadIdxPairErrors, TruncatedHeader) {
  TempDir dir;
  Bytes header = idx_images(kCount, kRows, kCols, {});
  header.resize(6);  // the magic and half of the count
  const Pair p = write_pair(dir, header, idx_labels(kCount, kLabels), GetParam());
  EXPECT_THAT(read_error(p), AllOf(HasSubstr("'" + p.images + "' is truncated"),
                                   HasSubstr("the image count needs 4 bytes, found 2")));
}

TEST_P(ReadIdxPairErrors, TruncatedPixels) {
  TempDir dir;
  Bytes pixels = sample_pixels();
  pixels.resize(20);  // the header announces 5 * 6 = 30
  const Pair p = write_pair(dir, idx_images(kCount, kRows, kCols, pixels),
                            idx_labels(kCount, kLabels), GetParam());
  EXPECT_THAT(read_error(p), AllOf(HasSubstr("'" + p.images + "' is truncated"),
                                   HasSubstr("the pixels needs 30 bytes, found 20")));
}

TEST_P(ReadIdxPairErrors, TruncatedLabels) {
  TempDir dir;
  const Pair p = write_pair(dir, idx_images(kCount, kRows, kCols, sample_pixels()),
                            idx_labels(kCount, {0, 1, 2}), GetParam());
  EXPECT_THAT(read_error(p), AllOf(HasSubstr("'" + p.labels + "' is truncated"),
                                   HasSubstr("the labels needs 5 bytes, found 3")));
}

TEST_P(ReadIdxPairErrors, TrailingPixelData) {
  TempDir dir;
  Bytes pixels = sample_pixels();
  pixels.push_back(42);
  const Pair p = write_pair(dir, idx_images(kCount, kRows, kCols, pixels),
                            idx_labels(kCount, kLabels), GetParam());
  EXPECT_THAT(read_error(p), AllOf(StartsWith("data: '" + p.images + "'"),
                                   HasSubstr("has data past the end announced by its header")));
}

TEST_P(ReadIdxPairErrors, TrailingLabelData) {
  TempDir dir;
  const Pair p = write_pair(dir, idx_images(kCount, kRows, kCols, sample_pixels()),
                            idx_labels(kCount, {0, 3, 1, 2, 3, 1}), GetParam());
  EXPECT_THAT(read_error(p), AllOf(StartsWith("data: '" + p.labels + "'"),
                                   HasSubstr("has data past the end announced by its header")));
}

TEST_P(ReadIdxPairErrors, MissingImageFile) {
  TempDir dir;
  const Pair p = write_pair(dir, idx_images(kCount, kRows, kCols, sample_pixels()),
                            idx_labels(kCount, kLabels), GetParam());
  const std::string missing = dir.file("no-such-images.gz");
  EXPECT_EQ(data_error([&] { read_idx_pair(missing, p.labels, 0, "train"); }),
            "data: cannot open '" + missing + "': file does not exist");
}

TEST_P(ReadIdxPairErrors, MissingLabelFile) {
  TempDir dir;
  const Pair p = write_pair(dir, idx_images(kCount, kRows, kCols, sample_pixels()),
                            idx_labels(kCount, kLabels), GetParam());
  const std::string missing = dir.file("no-such-labels.gz");
  EXPECT_EQ(data_error([&] { read_idx_pair(p.images, missing, 0, "train"); }),
            "data: cannot open '" + missing + "': file does not exist");
}

// Gzip-specific damage: the compressed stream itself is cut or corrupted.

// 200 images of 28x28 with pseudo-random pixels, so that the compressed file stays large.
Bytes noisy_pixels(std::size_t count) {
  Bytes p(count * 28 * 28);
  std::uint32_t x = 12345;
  for (auto& b : p) {
    x = x * 1664525u + 1013904223u;
    b = std::uint8_t(x >> 24);
  }
  return p;
}

TEST(ReadIdxPairGzip, TruncatedCompressedStream) {
  TempDir dir;
  const std::string images = dir.file("images.gz"), labels = dir.file("labels.gz");
  write_gz(images, idx_images(200, 28, 28, noisy_pixels(200)));
  write_gz(labels, idx_labels(200, Bytes(200, 1)));
  Bytes compressed = read_bytes(images);
  ASSERT_GT(compressed.size(), 10'000u);
  compressed.resize(compressed.size() / 2);
  write_plain(images, compressed);
  EXPECT_THAT(data_error([&] { read_idx_pair(images, labels, 0, "train"); }),
              AllOf(StartsWith("data: '" + images + "'"), HasSubstr("is truncated"),
                    HasSubstr("the pixels needs 156800 bytes")));
}

TEST(ReadIdxPairGzip, TrailerCutOff) {
  // All data present but the last 4 bytes of the gzip trailer (the uncompressed size) missing:
  // the file is still truncated, and it must not be accepted.
  TempDir dir;
  const std::string images = dir.file("images.gz"), labels = dir.file("labels.gz");
  write_gz(images, idx_images(kCount, kRows, kCols, sample_pixels()));
  write_gz(labels, idx_labels(kCount, kLabels));
  Bytes compressed = read_bytes(images);
  compressed.resize(compressed.size() - 4);
  write_plain(images, compressed);
  EXPECT_THAT(data_error([&] { read_idx_pair(images, labels, 0, "train"); }),
              AllOf(StartsWith("data: '" + images + "'"), HasSubstr("truncated")));
}

TEST(ReadIdxPairGzip, CorruptChecksum) {
  // The CRC-32 in the trailer does not match the data.
  TempDir dir;
  const std::string images = dir.file("images.gz"), labels = dir.file("labels.gz");
  write_gz(images, idx_images(kCount, kRows, kCols, sample_pixels()));
  write_gz(labels, idx_labels(kCount, kLabels));
  Bytes compressed = read_bytes(images);
  compressed[compressed.size() - 8] ^= 0xff;  // first byte of the CRC-32
  write_plain(images, compressed);
  EXPECT_THAT(data_error([&] { read_idx_pair(images, labels, 0, "train"); }),
              AllOf(StartsWith("data: '" + images + "'"), HasSubstr("corrupt")));
}

TEST(ReadIdxPairGzip, CorruptChecksumOfALargeFile) {
  // Here the checksum is verified only after the last pixel has been delivered.
  TempDir dir;
  const std::string images = dir.file("images.gz"), labels = dir.file("labels.gz");
  write_gz(images, idx_images(200, 28, 28, noisy_pixels(200)));
  write_gz(labels, idx_labels(200, Bytes(200, 1)));
  Bytes compressed = read_bytes(images);
  compressed[compressed.size() - 8] ^= 0xff;
  write_plain(images, compressed);
  EXPECT_THAT(data_error([&] { read_idx_pair(images, labels, 0, "train"); }),
              AllOf(StartsWith("data: '" + images + "'"), HasSubstr("corrupt")));
}

TEST(ReadIdxPairGzip, CorruptDeflateData) {
  TempDir dir;
  const std::string images = dir.file("images.gz"), labels = dir.file("labels.gz");
  write_gz(images, idx_images(200, 28, 28, noisy_pixels(200)));
  write_gz(labels, idx_labels(200, Bytes(200, 1)));
  Bytes compressed = read_bytes(images);
  // Overwrite a stretch in the middle of the deflate stream with 0xff: not a valid code sequence,
  // or at least one whose check fails.
  std::fill(compressed.begin() + 2000, compressed.begin() + 2400, std::uint8_t(0xff));
  write_plain(images, compressed);
  EXPECT_THAT(data_error([&] { read_idx_pair(images, labels, 0, "train"); }),
              AllOf(StartsWith("data: '" + images + "'"), HasSubstr("corrupt")));
}

// ---------------------------------------------------------------------------------------------
// load_dataset

daa::core::DataConfig data_config(const TempDir& dir) {
  daa::core::DataConfig config;
  config.dataset = "fashion-mnist";
  config.dir = dir.path().string();
  return config;
}

// Fashion-MNIST file names in `dir`: 5 train and 3 test images of 2x3 pixels.
void write_fashion_files(const TempDir& dir) {
  write_gz(dir.file("train-images-idx3-ubyte.gz"),
           idx_images(kCount, kRows, kCols, sample_pixels()));
  write_gz(dir.file("train-labels-idx1-ubyte.gz"), idx_labels(kCount, kLabels));
  write_gz(dir.file("t10k-images-idx3-ubyte.gz"), idx_images(3, kRows, kCols, Bytes(18, 200)));
  write_gz(dir.file("t10k-labels-idx1-ubyte.gz"), idx_labels(3, {5, 0, 1}));
}

TEST(LoadDataset, ReadsTheFourFashionMnistFiles) {
  TempDir dir;
  write_fashion_files(dir);
  const daa::io::Dataset data = load_dataset(data_config(dir));
  EXPECT_EQ(data.train.name, "train");
  EXPECT_EQ(data.test.name, "test");
  EXPECT_EQ(data.train.count, 5);
  EXPECT_EQ(data.test.count, 3);
  EXPECT_EQ(data.train.features(), 6);
  EXPECT_THAT(data.train.pixels, ElementsAreArray(sample_pixels()));
  EXPECT_THAT(data.test.labels, ElementsAreArray({5, 0, 1}));
  // Both sets use the larger class count (test has label 5, train at most 3).
  EXPECT_EQ(data.train.classes, 6);
  EXPECT_EQ(data.test.classes, 6);
}

TEST(LoadDataset, AppliesTheLimits) {
  TempDir dir;
  write_fashion_files(dir);
  auto config = data_config(dir);
  config.train_limit = 4;
  config.test_limit = 1;
  const daa::io::Dataset data = load_dataset(config);
  EXPECT_EQ(data.train.count, 4);
  EXPECT_EQ(data.test.count, 1);
}

TEST(LoadDataset, PrefersAnUncompressedFile) {
  TempDir dir;
  write_fashion_files(dir);
  write_plain(dir.file("train-images-idx3-ubyte"), idx_images(kCount, kRows, kCols, Bytes(30, 9)));
  const daa::io::Dataset data = load_dataset(data_config(dir));
  EXPECT_THAT(data.train.pixels, ::testing::Each(9));
}

TEST(LoadDataset, MissingFileIsNamed) {
  TempDir dir;
  write_fashion_files(dir);
  fs::remove(dir.file("t10k-labels-idx1-ubyte.gz"));
  EXPECT_EQ(
      data_error([&] { load_dataset(data_config(dir)); }),
      "data: cannot open '" + dir.file("t10k-labels-idx1-ubyte.gz") + "': file does not exist");
}

TEST(LoadDataset, EmptyDirectoryNamesTheFirstFile) {
  TempDir dir;
  EXPECT_EQ(
      data_error([&] { load_dataset(data_config(dir)); }),
      "data: cannot open '" + dir.file("train-images-idx3-ubyte.gz") + "': file does not exist");
}

TEST(LoadDataset, TrainAndTestShapesMustAgree) {
  TempDir dir;
  write_fashion_files(dir);
  write_gz(dir.file("t10k-images-idx3-ubyte.gz"), idx_images(3, 3, 3, Bytes(27, 1)));
  EXPECT_EQ(data_error([&] { load_dataset(data_config(dir)); }),
            "data: train images are 2x3 but test images are 3x3");
}

TEST(LoadDataset, UnknownDataSet) {
  TempDir dir;
  auto config = data_config(dir);
  config.dataset = "cifar-10";
  EXPECT_EQ(data_error([&] { load_dataset(config); }), "data: unknown data set 'cifar-10'");
}

// ---------------------------------------------------------------------------------------------
// Epoch order and batches

TEST(EpochPermutation, IsAPermutation) {
  for (std::int64_t n : {1, 2, 7, 1000}) {
    std::vector<std::int64_t> order = epoch_permutation(n, 1234, 0);
    ASSERT_EQ(std::int64_t(order.size()), n);
    std::sort(order.begin(), order.end());
    std::vector<std::int64_t> identity(n);
    std::iota(identity.begin(), identity.end(), 0);
    EXPECT_EQ(order, identity) << "n = " << n;
  }
  EXPECT_TRUE(epoch_permutation(0, 1234, 0).empty());
}

TEST(EpochPermutation, ShufflesTheOrder) {
  const std::vector<std::int64_t> order = epoch_permutation(1000, 1234, 0);
  std::int64_t fixed_points = 0;
  for (std::int64_t i = 0; i < 1000; ++i) fixed_points += order[i] == i;
  EXPECT_LT(fixed_points, 20);  // about 1 expected for a random permutation
}

TEST(EpochPermutation, DeterministicForSeedAndEpoch) {
  EXPECT_EQ(epoch_permutation(1000, 1234, 3), epoch_permutation(1000, 1234, 3));
  EXPECT_EQ(epoch_permutation(1000, 7, 0), epoch_permutation(1000, 7, 0));
}

TEST(EpochPermutation, DiffersBetweenEpochsAndSeeds) {
  const auto base = epoch_permutation(1000, 1234, 0);
  EXPECT_NE(base, epoch_permutation(1000, 1234, 1));
  EXPECT_NE(base, epoch_permutation(1000, 1235, 0));
  EXPECT_NE(epoch_permutation(1000, 1234, 1), epoch_permutation(1000, 1235, 1));
}

TEST(LocalBatch, RanksTogetherCoverTheGlobalBatchInOrder) {
  constexpr int kGlobal = 16;
  const std::vector<std::int64_t> order = epoch_permutation(70, 99, 2);  // 4 full batches
  for (int ranks : {1, 2, 4}) {
    for (std::int64_t batch = 0; batch < 4; ++batch) {
      std::vector<std::int64_t> joined;
      for (int rank = 0; rank < ranks; ++rank) {
        const auto local = local_batch(order, batch, kGlobal, rank, ranks);
        EXPECT_EQ(int(local.size()), kGlobal / ranks);
        joined.insert(joined.end(), local.begin(), local.end());
      }
      const std::vector<std::int64_t> global(order.begin() + batch * kGlobal,
                                             order.begin() + (batch + 1) * kGlobal);
      EXPECT_EQ(joined, global) << ranks << " ranks, batch " << batch;
    }
  }
}

TEST(LocalBatch, PastTheEndOfTheEpochThrows) {
  const std::vector<std::int64_t> order = epoch_permutation(70, 99, 2);
  EXPECT_NO_THROW(local_batch(order, 3, 16, 3, 4));
  try {
    local_batch(order, 4, 16, 0, 4);  // would need samples 64..67 of 70: fine for rank 0
    local_batch(order, 4, 16, 3, 4);  // samples 76..79: past the end
    FAIL() << "no error for a batch past the end";
  } catch (const daa::Error& e) {
    EXPECT_THAT(std::string(e.what()), HasSubstr("batch 4 is past the end of the epoch"));
  }
}

TEST(FillBatch, NormalizesPixelsAndCopiesLabels) {
  ImageSet set;
  set.name = "train";
  set.count = 3;
  set.rows = 1;
  set.cols = 2;
  set.classes = 10;
  set.pixels = {0, 255, 128, 51, 7, 200};
  set.labels = {4, 9, 2};
  const std::vector<std::int64_t> indices = {2, 0};
  const auto expected = [](int p) { return (p / 255.0 - 0.2860) / 0.3530; };

  float xf[4];
  double xd[4];
  int labels_f[2] = {-1, -1}, labels_d[2] = {-1, -1};
  fill_batch(set, indices, xf, labels_f);
  fill_batch(set, indices, xd, labels_d);
  const int pixels[4] = {7, 200, 0, 255};  // rows of images 2 then 0
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(xf[i], expected(pixels[i]), 1e-6) << i;
    EXPECT_NEAR(xd[i], expected(pixels[i]), 1e-6) << i;
  }
  EXPECT_NEAR(xd[2], -0.2860 / 0.3530, 1e-6);
  EXPECT_NEAR(xd[3], (1 - 0.2860) / 0.3530, 1e-6);
  EXPECT_THAT(labels_f, ElementsAreArray({2, 4}));
  EXPECT_THAT(labels_d, ElementsAreArray({2, 4}));
}

}  // namespace
