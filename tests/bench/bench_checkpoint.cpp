// bench_checkpoint: write and read bandwidth of the parallel HDF5 checkpoint (io::CheckpointWriter,
// io::CheckpointReader) on a synthetic checkpoint shaped like the default model's. Run under
// mpirun by scripts/bench-checkpoint, which times dd on the same disk in the same run.
#include <fcntl.h>
#include <mpi.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "daa/core/error.hpp"
#include "daa/core/rng.hpp"
#include "daa/io/checkpoint.hpp"
#include "mpi_timing.hpp"

namespace {

using daa::bench::median;
using daa::bench::timed;
using daa::io::DatasetPiece;
using daa::io::ElementType;
using daa::io::ReadRequest;
using daa::parallel::Communicator;

struct Options {
  std::string dir;
  bool print_bytes = false;  // print the checkpoint's data bytes and exit (for the dd comparison)
  int scale = 1;             // multiplies the experts per layer and d_ff
  int repeats = 5;
  int warmup = 1;
};

// The default model (inputs/fashion-mnist.toml); --scale multiplies experts and d_ff, so the
// expert tensors (almost all of the bytes) grow by scale^2.
struct ModelShape {
  std::uint64_t inputs = 784, classes = 10, d_model = 128, d_ff = 256;
  int layers = 2, experts = 8;
};

struct Tensor {
  std::string name;  // below the copy's prefix: "layer0/expert3/w1"
  std::vector<std::uint64_t> dims;
  int expert = -1;  // -1: dense
};

std::vector<Tensor> model_tensors(const ModelShape& m) {
  std::vector<Tensor> tensors{{"input/w", {m.inputs, m.d_model}}, {"input/b", {m.d_model}}};
  for (int l = 0; l < m.layers; ++l) {
    const std::string layer = "layer" + std::to_string(l) + "/";
    tensors.push_back({layer + "norm_gain", {m.d_model}});
    tensors.push_back({layer + "router", {m.d_model, std::uint64_t(m.experts)}});
    for (int e = 0; e < m.experts; ++e) {
      const std::string expert = layer + "expert" + std::to_string(e) + "/";
      tensors.push_back({expert + "w1", {m.d_model, m.d_ff}, e});
      tensors.push_back({expert + "b1", {m.d_ff}, e});
      tensors.push_back({expert + "w2", {m.d_ff, m.d_model}, e});
      tensors.push_back({expert + "b2", {m.d_model}, e});
    }
  }
  tensors.push_back({"classifier/w", {m.d_model, m.classes}});
  tensors.push_back({"classifier/b", {m.classes}});
  return tensors;
}

// Values, AdamW first and second moments: what a checkpoint holds for every tensor.
const char* const kCopies[] = {"/model/", "/optimizer/m/", "/optimizer/v/"};
constexpr int kMetaDatasets = 2;  // /meta/format, /meta/format_version

ModelShape scaled_model(int scale) {
  ModelShape model;
  model.experts *= scale;
  model.d_ff *= std::uint64_t(scale);
  return model;
}

// Bytes of data in the whole checkpoint (what CheckpointWriter::write returns), and its datasets.
struct CheckpointSize {
  std::uint64_t bytes = 0;
  std::uint64_t datasets = 0;
};

CheckpointSize checkpoint_size(const ModelShape& model) {
  CheckpointSize size{std::strlen(daa::io::kCheckpointFormatName) + sizeof(std::int64_t),
                      kMetaDatasets};
  for (const Tensor& t : model_tensors(model)) {
    std::uint64_t elements = 1;
    for (std::uint64_t d : t.dims) elements *= d;
    size.bytes += std::size(kCopies) * elements * sizeof(float);
    size.datasets += std::size(kCopies);
  }
  return size;
}

// This rank's share of the checkpoint, split as training splits it: each expert belongs whole to
// one rank (contiguous groups of experts, as expert parallelism places them), and every dense
// tensor is written in row pieces by all ranks (sharded state of replicated parameters).
struct RankShare {
  std::vector<std::vector<float>> buffers;
  std::vector<DatasetPiece> pieces;  // spans into `buffers`
};

RankShare make_share(const ModelShape& model, const Communicator& world) {
  const auto n = std::uint64_t(world.size()), me = std::uint64_t(world.rank());
  RankShare share;
  std::vector<DatasetPiece> pieces;
  for (const char* copy : kCopies) {
    for (const Tensor& t : model_tensors(model)) {
      const std::uint64_t rows = t.dims[0];
      std::uint64_t begin = 0, count = rows;
      if (t.expert >= 0) {
        if (std::uint64_t(t.expert) * n / std::uint64_t(model.experts) != me) continue;
      } else {
        begin = rows * me / n;
        count = rows * (me + 1) / n - begin;
        if (count == 0) continue;
      }
      const std::uint64_t row_floats = t.dims.size() == 2 ? t.dims[1] : 1;
      std::vector<float> values(count * row_floats);
      // Distinct values per dataset and row, so a misplaced piece cannot read back as correct.
      const std::uint64_t stream = daa::core::mix64(std::hash<std::string>{}(copy + t.name));
      for (std::size_t i = 0; i < values.size(); ++i)
        values[i] = float(daa::core::mix64(stream + begin * row_floats + i) >> 40) * 0x1.0p-24f;
      share.buffers.push_back(std::move(values));
      pieces.push_back({copy + t.name, ElementType::f32, t.dims, begin, count, {}});
    }
  }
  for (std::size_t i = 0; i < pieces.size(); ++i)
    pieces[i].bytes = std::as_bytes(std::span<const float>(share.buffers[i]));
  share.pieces = std::move(pieces);
  return share;
}

std::uint64_t write_checkpoint(const Communicator& world, const RankShare& share,
                               const std::string& path) {
  daa::io::CheckpointWriter writer(world);
  if (world.is_root()) {
    writer.add_text("/meta/format", daa::io::kCheckpointFormatName);
    writer.add_scalar("/meta/format_version", daa::io::kCheckpointFormatVersion);
  }
  for (const DatasetPiece& piece : share.pieces) writer.add(piece);
  return writer.write(path);
}

// What a restart does: open the file and read back this rank's pieces (the reader reads and
// verifies every dataset once, whoever asked for it).
std::vector<ReadRequest> read_checkpoint(const Communicator& world, const RankShare& share,
                                         const std::string& path) {
  std::vector<ReadRequest> requests;
  for (const DatasetPiece& piece : share.pieces)
    requests.push_back({piece.path, piece.row_begin, piece.rows, false, {}});
  daa::io::CheckpointReader reader(world, path);
  reader.read(requests);
  return requests;
}

void check_read_back(const RankShare& share, const std::vector<ReadRequest>& requests) {
  for (std::size_t i = 0; i < share.pieces.size(); ++i) {
    const std::span<const std::byte> written = share.pieces[i].bytes;
    const std::vector<std::byte>& read = requests[i].out.bytes;
    if (read.size() != written.size() || std::memcmp(read.data(), written.data(), read.size()))
      throw daa::Error("bench_checkpoint: '" + share.pieces[i].path +
                       "' read back differs from what was written");
  }
}

// Drops the file's pages from the page cache (they are clean after the writer's fsync), so that
// the next read comes from the disk. One rank suffices: the ranks share one page cache.
void evict_from_page_cache(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw daa::Error("bench_checkpoint: cannot open '" + path + "'");
  const int rc = ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
  if (rc != 0) throw daa::Error("bench_checkpoint: posix_fadvise failed on '" + path + "'");
}

void run(const Communicator& world, const Options& options) {
  const ModelShape model = scaled_model(options.scale);
  const CheckpointSize size = checkpoint_size(model);
  const RankShare share = make_share(model, world);
  const std::string path = (std::filesystem::path(options.dir) / "bench-checkpoint.h5").string();

  std::uint64_t bytes = 0;
  std::vector<double> t_write, t_read_cold, t_read_cached;
  for (int i = -options.warmup; i < options.repeats; ++i) {
    // Training writes every checkpoint to a new file; overwriting the previous one would add
    // its truncation (and ext4's flush-on-close after a truncate) to the timed write.
    if (world.is_root()) std::filesystem::remove(path);
    const double tw = timed(world, [&] { bytes = write_checkpoint(world, share, path); });
    if (world.is_root()) evict_from_page_cache(path);
    std::vector<ReadRequest> requests;
    const double tc = timed(world, [&] { requests = read_checkpoint(world, share, path); });
    check_read_back(share, requests);
    // The same read again, with the file now in the page cache: the reader's own cost.
    const double tr = timed(world, [&] { requests = read_checkpoint(world, share, path); });
    if (bytes != size.bytes)
      throw daa::Error("bench_checkpoint: the writer wrote " + std::to_string(bytes) +
                       " bytes, the layout has " + std::to_string(size.bytes));
    if (i < 0) continue;
    t_write.push_back(tw);
    t_read_cold.push_back(tc);
    t_read_cached.push_back(tr);
  }

  if (world.is_root()) {
    struct stat file {};
    if (::stat(path.c_str(), &file) != 0) throw daa::Error("bench_checkpoint: cannot stat " + path);
    const double mw = median(t_write), mc = median(t_read_cold), mr = median(t_read_cached);
    const auto mb_per_s = [&](double seconds) { return double(bytes) / seconds * 1e-6; };
    std::printf(
        "# scale %d: %d layers x %d experts, d_model %llu, d_ff %llu; values + 2 AdamW "
        "moments; median of %d after %d warm-up, slowest rank; MB = 1e6 bytes of data\n",
        options.scale, model.layers, model.experts, (unsigned long long)model.d_model,
        (unsigned long long)model.d_ff, options.repeats, options.warmup);
    std::printf("# %5s %11s %8s %11s %9s %10s %9s %10s %10s\n", "ranks", "bytes", "datasets",
                "file_bytes", "write_s", "write_MB/s", "read_s", "read_MB/s", "cached_MB/s");
    std::printf("%7d %11llu %8llu %11lld %9.4f %10.1f %9.4f %10.1f %10.1f\n", world.size(),
                (unsigned long long)bytes, (unsigned long long)size.datasets,
                (long long)file.st_size, mw, mb_per_s(mw), mc, mb_per_s(mc), mb_per_s(mr));
    std::fflush(stdout);
    std::filesystem::remove(path);
  }
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  daa::parallel::init_error_handling();
  Options options;
  const auto usage = [&](const std::string& what) {
    std::fprintf(stderr,
                 "bench_checkpoint: %s (--dir DIR [--scale S] [--repeats R] [--warmup W], or "
                 "--print-bytes [--scale S])\n",
                 what.c_str());
    MPI_Abort(MPI_COMM_WORLD, 2);
  };
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--print-bytes") {
      options.print_bytes = true;
      continue;
    }
    if (i + 1 >= argc) usage("'" + arg + "' needs a value or is unknown");
    const std::string value = argv[++i];
    if (arg == "--dir") {
      options.dir = value;
    } else if (arg == "--scale") {
      options.scale = std::atoi(value.c_str());
      if (options.scale < 1 || options.scale > 64) usage("--scale must be in [1, 64]");
    } else if (arg == "--repeats") {
      options.repeats = std::atoi(value.c_str());
      if (options.repeats < 1) usage("--repeats must be at least 1");
    } else if (arg == "--warmup") {
      options.warmup = std::atoi(value.c_str());
      if (options.warmup < 0) usage("--warmup must be at least 0");
    } else {
      usage("unknown argument '" + arg + "'");
    }
  }
  if (options.print_bytes) {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank == 0)
      std::printf("%llu\n", (unsigned long long)checkpoint_size(scaled_model(options.scale)).bytes);
    MPI_Finalize();
    return 0;
  }
  if (options.dir.empty()) usage("--dir is required");
  try {
    const Communicator world(MPI_COMM_WORLD, "world");
    run(world, options);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_checkpoint: error: %s\n", e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Finalize();
  return 0;
}
