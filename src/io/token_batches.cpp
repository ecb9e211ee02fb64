// Token windows for training and validation (see token_batches.hpp). Each training window is one
// hyperslab read of seq_len + 1 tokens, so a rank reads only its own samples; a validation range
// is one contiguous read.
#include "daa/io/token_batches.hpp"

#include <fmt/format.h>

#include "daa/core/error.hpp"
#include "daa/core/rng.hpp"

namespace daa::io {

std::pair<std::int64_t, std::int64_t> rank_share(std::int64_t total, int d, int dp) {
  if (dp < 1 || d < 0 || d >= dp)
    throw Error(fmt::format("rank_share: data-parallel index {} outside [0, {})", d, dp));
  return {total * d / dp, total * (d + 1) / dp};
}

TokenBatches::TokenBatches(const TokenFile& file, int seq_len, int global_batch, std::uint64_t seed)
    : file_(file), seq_len_(seq_len), global_batch_(global_batch), seed_(seed) {
  if (seq_len < 1 || global_batch < 1)
    throw Error(fmt::format("TokenBatches: seq_len {} and global batch {} must be positive",
                            seq_len, global_batch));
  for (Split split : {Split::train, Split::validation})
    if (file.tokens(split) < std::int64_t(seq_len) + 1)
      throw DataError(fmt::format(
          "token file '{}': the {} split has {} tokens, fewer than one window of seq_len + 1 = {}",
          file.path(), to_string(split), file.tokens(split), seq_len + 1));
}

std::int64_t TokenBatches::window_start(std::int64_t step, std::int64_t sample) const {
  const auto starts = std::uint64_t(file_.tokens(Split::train) - seq_len_);  // >= 1
  const std::uint64_t bits = core::counter_bits(seed_, core::RngPurpose::text_windows,
                                                std::uint64_t(step), std::uint64_t(sample));
  // Multiply-high maps 64 random bits onto [0, starts) without modulo's bias towards low values.
  return std::int64_t((static_cast<unsigned __int128>(bits) * starts) >> 64);
}

TokenWindows TokenBatches::train_samples(std::int64_t step, std::int64_t first,
                                         std::int64_t count) const {
  TokenWindows w;
  w.seq_len = seq_len_;
  w.samples = count;
  const auto len = std::size_t(seq_len_);
  w.tokens.resize(std::size_t(count) * len);
  w.targets.resize(std::size_t(count) * len);
  w.domains.resize(std::size_t(count) * len);
  for (std::int64_t i = 0; i < count; ++i) {
    const std::int64_t start = window_start(step, first + i);
    const std::vector<std::int32_t> window = file_.read(Split::train, start, seq_len_ + 1);
    const std::size_t row = std::size_t(i) * len;
    std::copy(window.begin(), window.end() - 1, w.tokens.begin() + std::ptrdiff_t(row));
    std::copy(window.begin() + 1, window.end(), w.targets.begin() + std::ptrdiff_t(row));
    file_.domains_of(Split::train, start + 1, seq_len_, w.domains.data() + row);
  }
  return w;
}

TokenWindows TokenBatches::train(std::int64_t step, int d, int dp) const {
  const auto [first, last] = rank_share(global_batch_, d, dp);
  return train_samples(step, first, last - first);
}

std::int64_t TokenBatches::validation_windows() const {
  return (file_.tokens(Split::validation) - 1) / seq_len_;
}

TokenWindows TokenBatches::validation(std::int64_t first, std::int64_t count) const {
  if (first < 0 || count < 0 || first + count > validation_windows())
    throw Error(fmt::format("validation windows [{}, {}) outside the {} windows", first,
                            first + count, validation_windows()));
  TokenWindows w;
  w.seq_len = seq_len_;
  w.samples = count;
  const auto len = std::size_t(seq_len_);
  const std::int64_t start = first * seq_len_;
  const std::vector<std::int32_t> stream =
      file_.read(Split::validation, start, count > 0 ? count * seq_len_ + 1 : 0);
  w.tokens.assign(stream.begin(), stream.begin() + std::ptrdiff_t(std::size_t(count) * len));
  if (count > 0) w.targets.assign(stream.begin() + 1, stream.end());
  w.domains.resize(std::size_t(count) * len);
  file_.domains_of(Split::validation, start + 1, count * seq_len_, w.domains.data());
  return w;
}

}  // namespace daa::io
