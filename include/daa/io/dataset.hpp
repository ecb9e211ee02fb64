// Image-classification data sets in IDX format (MNIST family, gzipped or plain), checked on read
// (magic numbers, sizes, truncation), and the deterministic batch order: a permutation per epoch
// from the counter-based RNG keyed by (seed, epoch), each global batch split over the
// data-parallel ranks so that the global batch, not the rank count, defines the optimization.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "daa/core/config.hpp"

namespace daa::io {

struct ImageSet {
  std::string name;  // e.g. "train", for messages
  std::int64_t count = 0;
  int rows = 0;
  int cols = 0;
  int classes = 0;                   // 1 + largest label
  std::vector<std::uint8_t> pixels;  // count * rows * cols
  std::vector<std::uint8_t> labels;  // count
  int features() const { return rows * cols; }
};

// Reads an IDX image file (magic 0x00000803) and its label file (0x00000801), gzipped or not.
// `limit` > 0 keeps the first `limit` samples. Throws DataError naming the file on any problem.
ImageSet read_idx_pair(const std::string& images_path, const std::string& labels_path,
                       std::int64_t limit, const std::string& name);

struct Dataset {
  ImageSet train;
  ImageSet test;
};

// Loads the data set named by [data] (Fashion-MNIST:
// {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz).
Dataset load_dataset(const core::DataConfig& config);

// Fashion-MNIST pixel statistics used for normalization: x = (p/255 - mean) / std.
inline constexpr float kPixelMean = 0.2860f;
inline constexpr float kPixelStd = 0.3530f;

// Permutation of [0, n) for one epoch: Fisher-Yates driven by counter_uniform(seed, shuffle,
// epoch, i), so it depends only on (seed, epoch, n).
std::vector<std::int64_t> epoch_permutation(std::int64_t n, std::uint64_t seed, std::int64_t epoch);

// Sample indices of this rank's share of micro-batch `micro` of global batch `batch` in an epoch
// order. The global batch splits into `micro_batches` contiguous micro-batches first, and each of
// those over the ranks, so the samples of a global micro-batch do not depend on the rank count:
// order[batch*global + micro*(global/micro_batches) + rank*local .. + local),
// local = global / micro_batches / ranks.
std::span<const std::int64_t> local_batch(const std::vector<std::int64_t>& order,
                                          std::int64_t batch, int global_batch, int rank, int ranks,
                                          int micro = 0, int micro_batches = 1);

// Writes normalized pixels [indices.size(), features] row-major and labels into host buffers.
void fill_batch(const ImageSet& set, std::span<const std::int64_t> indices, float* x, int* labels);
void fill_batch(const ImageSet& set, std::span<const std::int64_t> indices, double* x, int* labels);

}  // namespace daa::io
