// IDX reader (through zlib, which reads gzipped and plain files alike), the epoch permutation and
// batch assembly (see dataset.hpp).
#include "daa/io/dataset.hpp"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>

#include "daa/core/error.hpp"
#include "daa/core/rng.hpp"

namespace daa::io {
namespace {

struct GzCloser {
  void operator()(gzFile f) const { gzclose(f); }
};
using GzHandle = std::unique_ptr<std::remove_pointer_t<gzFile>, GzCloser>;

class IdxFile {
 public:
  explicit IdxFile(const std::string& path) : path_(path) {
    if (!std::filesystem::exists(path))
      throw DataError("cannot open '" + path + "': file does not exist");
    file_.reset(gzopen(path.c_str(), "rb"));
    if (!file_) throw DataError("cannot open '" + path + "': " + std::strerror(errno));
  }

  void read(void* dst, std::size_t bytes, const char* what) {
    auto* out = static_cast<unsigned char*>(dst);
    std::size_t done = 0;
    while (done < bytes) {
      const unsigned chunk = unsigned(std::min<std::size_t>(bytes - done, 1u << 30));
      const int got = gzread(file_.get(), out + done, chunk);
      if (got < 0) {
        int code = 0;
        throw DataError("'" + path_ + "': corrupt compressed data while reading " + what + ": " +
                        gzerror(file_.get(), &code));
      }
      if (got == 0)
        throw DataError("'" + path_ + "' is truncated: " + what + " needs " +
                        std::to_string(bytes) + " bytes, found " + std::to_string(done));
      done += std::size_t(got);
    }
  }

  std::uint32_t read_u32(const char* what) {
    unsigned char b[4];
    read(b, 4, what);
    return (std::uint32_t(b[0]) << 24) | (std::uint32_t(b[1]) << 16) | (std::uint32_t(b[2]) << 8) |
           b[3];
  }

  // Trailing bytes mean the header lies about the size. Reaching the end also makes zlib check
  // the gzip trailer: a bad checksum, or a stream cut inside the trailer, is an error too.
  void expect_end() {
    unsigned char extra;
    const int got = gzread(file_.get(), &extra, 1);
    if (got > 0) throw DataError("'" + path_ + "' has data past the end announced by its header");
    int code = Z_OK;
    const char* message = gzerror(file_.get(), &code);
    if (got < 0) throw DataError("'" + path_ + "': corrupt compressed data at its end: " + message);
    if (code == Z_BUF_ERROR)  // zlib's "unexpected end of file"
      throw DataError("'" + path_ + "' is truncated: the compressed stream ends early (" + message +
                      ")");
  }

 private:
  std::string path_;
  GzHandle file_;
};

constexpr std::uint32_t kImageMagic = 0x00000803;  // unsigned byte, 3 dimensions
constexpr std::uint32_t kLabelMagic = 0x00000801;  // unsigned byte, 1 dimension

std::string hex(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

}  // namespace

ImageSet read_idx_pair(const std::string& images_path, const std::string& labels_path,
                       std::int64_t limit, const std::string& name) {
  ImageSet set;
  set.name = name;
  IdxFile images(images_path);
  const std::uint32_t magic = images.read_u32("the magic number");
  if (magic != kImageMagic)
    throw DataError("'" + images_path + "' has magic number " + hex(magic) + ", expected " +
                    hex(kImageMagic) + " (IDX unsigned-byte images)");
  const std::uint32_t count = images.read_u32("the image count");
  set.rows = int(images.read_u32("the row count"));
  set.cols = int(images.read_u32("the column count"));
  if (count == 0 || set.rows <= 0 || set.cols <= 0 || set.rows > 4096 || set.cols > 4096)
    throw DataError("'" + images_path + "' announces " + std::to_string(count) + " images of " +
                    std::to_string(set.rows) + "x" + std::to_string(set.cols) + " pixels");

  IdxFile labels(labels_path);
  const std::uint32_t label_magic = labels.read_u32("the magic number");
  if (label_magic != kLabelMagic)
    throw DataError("'" + labels_path + "' has magic number " + hex(label_magic) + ", expected " +
                    hex(kLabelMagic) + " (IDX unsigned-byte labels)");
  const std::uint32_t label_count = labels.read_u32("the label count");
  if (label_count != count)
    throw DataError("'" + labels_path + "' holds " + std::to_string(label_count) + " labels but '" +
                    images_path + "' holds " + std::to_string(count) + " images");

  set.count = count;
  set.pixels.resize(std::size_t(count) * set.features());
  set.labels.resize(count);
  images.read(set.pixels.data(), set.pixels.size(), "the pixels");
  images.expect_end();
  labels.read(set.labels.data(), set.labels.size(), "the labels");
  labels.expect_end();

  set.classes = 1 + *std::max_element(set.labels.begin(), set.labels.end());
  if (limit > 0 && limit < set.count) {
    set.count = limit;
    set.pixels.resize(std::size_t(limit) * set.features());
    set.labels.resize(limit);
  }
  return set;
}

Dataset load_dataset(const core::DataConfig& config) {
  if (config.dataset != "fashion-mnist")
    throw DataError("unknown data set '" + config.dataset + "'");
  const std::filesystem::path dir(config.dir);
  auto file = [&](const char* stem) {
    const auto gz = dir / (std::string(stem) + ".gz");
    return std::filesystem::exists(dir / stem) ? (dir / stem).string() : gz.string();
  };
  Dataset data;
  data.train = read_idx_pair(file("train-images-idx3-ubyte"), file("train-labels-idx1-ubyte"),
                             config.train_limit, "train");
  data.test = read_idx_pair(file("t10k-images-idx3-ubyte"), file("t10k-labels-idx1-ubyte"),
                            config.test_limit, "test");
  if (data.train.features() != data.test.features())
    throw DataError("train images are " + std::to_string(data.train.rows) + "x" +
                    std::to_string(data.train.cols) + " but test images are " +
                    std::to_string(data.test.rows) + "x" + std::to_string(data.test.cols));
  data.train.classes = data.test.classes = std::max(data.train.classes, data.test.classes);
  return data;
}

std::vector<std::int64_t> epoch_permutation(std::int64_t n, std::uint64_t seed,
                                            std::int64_t epoch) {
  std::vector<std::int64_t> order(n);
  for (std::int64_t i = 0; i < n; ++i) order[i] = i;
  for (std::int64_t i = n - 1; i > 0; --i) {
    const double u = core::counter_uniform(seed, core::RngPurpose::shuffle, std::uint64_t(epoch),
                                           std::uint64_t(i));
    const auto j = std::min<std::int64_t>(std::int64_t(u * double(i + 1)), i);
    std::swap(order[i], order[j]);
  }
  return order;
}

std::span<const std::int64_t> local_batch(const std::vector<std::int64_t>& order,
                                          std::int64_t batch, int global_batch, int rank, int ranks,
                                          int micro, int micro_batches) {
  const std::int64_t micro_size = global_batch / micro_batches;
  const std::int64_t local = micro_size / ranks;
  const std::int64_t start = batch * global_batch + micro * micro_size + rank * local;
  if (start + local > std::int64_t(order.size()))
    throw Error("io::local_batch: batch " + std::to_string(batch) +
                " is past the end of the epoch");
  return {order.data() + start, std::size_t(local)};
}

template <class T>
static void fill_batch_impl(const ImageSet& set, std::span<const std::int64_t> indices, T* x,
                            int* labels) {
  const std::size_t f = set.features();
  for (std::size_t r = 0; r < indices.size(); ++r) {
    const std::uint8_t* src = set.pixels.data() + std::size_t(indices[r]) * f;
    for (std::size_t j = 0; j < f; ++j)
      x[r * f + j] = (T(src[j]) / T(255) - T(kPixelMean)) / T(kPixelStd);
    labels[r] = set.labels[indices[r]];
  }
}

void fill_batch(const ImageSet& set, std::span<const std::int64_t> indices, float* x, int* labels) {
  fill_batch_impl(set, indices, x, labels);
}
void fill_batch(const ImageSet& set, std::span<const std::int64_t> indices, double* x,
                int* labels) {
  fill_batch_impl(set, indices, x, labels);
}

}  // namespace daa::io
