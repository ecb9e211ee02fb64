// The classifier and language-model tasks (see task.hpp): batches from their data sets, the
// categories of the specialization statistic, and evaluation through the pipeline schedule.
#include "daa/train/task.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>

#include "daa/core/error.hpp"
#include "daa/io/dataset.hpp"
#include "daa/io/token_batches.hpp"
#include "daa/io/token_file.hpp"
#include "daa/robust/attacks.hpp"

namespace daa::train {
namespace {

using kernels::Matrix;

// Host rows -> the batch's device views (the same memory on host backends).
void upload(model::TokenIds& view, const std::vector<std::int32_t>& values) {
  kernels::ensure_extent(view, values.size());
  auto host = Kokkos::create_mirror_view(view);
  for (std::size_t i = 0; i < values.size(); ++i) host(i) = values[i];
  Kokkos::deep_copy(view, host);
}

// Calls of an evaluation every rank makes: the largest share in chunks, so that expert-parallel
// groups (collective per call) stay in step; ranks with less data pass empty chunks.
std::int64_t evaluation_calls(std::int64_t total, int dp, std::int64_t chunk) {
  const std::int64_t largest = (total + dp - 1) / dp;
  return (largest + chunk - 1) / chunk;
}

// ---- Fashion-MNIST classifier -------------------------------------------------------------------

class ClassifierTask final : public Task {
 public:
  ClassifierTask(const core::Config& config, io::Dataset data)
      : config_(config), data_(std::move(data)) {
    if (data_.train.count < config.train.global_batch)
      throw ConfigError(fmt::format("[train] global_batch = {} exceeds the {} training samples",
                                    config.train.global_batch, data_.train.count));
  }
  const char* kind() const override { return "classifier"; }
  int inputs() const override { return data_.train.features(); }
  int outputs() const override { return data_.train.classes; }
  std::string describe() const override {
    return fmt::format("{} train / {} test images of {}x{} pixels, {} classes", data_.train.count,
                       data_.test.count, data_.train.rows, data_.train.cols, data_.train.classes);
  }
  const char* unit() const override { return "samples"; }
  int rows_per_unit() const override { return 1; }
  std::int64_t steps_per_epoch() const override {
    return data_.train.count / config_.train.global_batch;
  }

  void load(model::StageBatch& batch, std::int64_t step, int micro, int d, int dp,
            bool flip_labels) const override {
    const std::int64_t epoch = step / steps_per_epoch();
    if (epoch != order_epoch_) {
      order_ = io::epoch_permutation(data_.train.count, config_.run.seed, epoch);
      order_epoch_ = epoch;
    }
    fill(batch,
         io::local_batch(order_, step % steps_per_epoch(), config_.train.global_batch, d, dp, micro,
                         config_.parallel.micro_batches),
         data_.train, flip_labels);
  }

  std::vector<std::string> category_names() const override {
    std::vector<std::string> names;
    for (int c = 0; c < data_.train.classes; ++c) names.push_back(fmt::format("class {}", c));
    return names;
  }
  int category_sets() const override { return 1; }

  Evaluation evaluate(model::Model& model, const parallel::Topology& topology,
                      parallel::PipelineSchedule& schedule,
                      const std::function<void()>& progress) const override {
    const io::ImageSet& set = data_.test;
    const int dp = topology.layout().data_parallel, index = topology.place().dp_index;
    const std::int64_t begin = set.count * index / dp, end = set.count * (index + 1) / dp;
    constexpr std::int64_t chunk = 1000;
    std::vector<std::int64_t> indices;
    model::StageBatch batch;
    double sums[3] = {0, 0, 0};  // loss, correct, samples
    parallel::PipelineTiming timing;
    for (std::int64_t c = 0; c < evaluation_calls(set.count, dp, chunk); ++c) {
      progress();
      indices.clear();
      for (std::int64_t i = begin + c * chunk; i < std::min(end, begin + (c + 1) * chunk); ++i)
        indices.push_back(i);
      fill(batch, indices, set, false);
      schedule.forward_only(
          indices.size(),
          [&](int, int slot, const Matrix<float>& received) {
            const model::StepStats stats = model.forward(slot, batch, received, false, {}, {});
            sums[0] += stats.loss_sum;
            sums[1] += double(stats.correct);
            sums[2] += double(stats.scored);
            return model.output(slot);
          },
          timing);
    }
    topology.world().allreduce_sum(sums, 3);
    Evaluation e;
    e.loss = sums[0] / sums[2];
    e.accuracy = sums[1] / sums[2];
    e.rows = std::int64_t(sums[2]);
    return e;
  }

 private:
  static void fill(model::StageBatch& batch, std::span<const std::int64_t> indices,
                   const io::ImageSet& set, bool flip_labels) {
    const std::size_t n = indices.size();
    kernels::ensure_extent(batch.features, n, std::size_t(set.features()));
    kernels::ensure_extent(batch.targets, n);
    auto x = Kokkos::create_mirror_view(batch.features);
    auto y = Kokkos::create_mirror_view(batch.targets);
    io::fill_batch(set, indices, x.data(), y.data());
    if (flip_labels)
      for (std::size_t i = 0; i < n; ++i) y(i) = robust::flip_label(y(i), set.classes);
    Kokkos::deep_copy(batch.features, x);
    Kokkos::deep_copy(batch.targets, y);
    batch.rows = n;
    batch.seq_len = 1;
    batch.category_sets = 1;
    batch.categories.assign(y.data(), y.data() + n);
  }

  const core::Config config_;  // a copy: a task may outlive the caller's config
  io::Dataset data_;
  mutable std::vector<std::int64_t> order_;
  mutable std::int64_t order_epoch_ = -1;
};

// ---- Next-token language modelling --------------------------------------------------------------

class LanguageTask final : public Task {
 public:
  LanguageTask(const core::Config& config, io::TokenFile file)
      : config_(config),
        file_(std::move(file)),
        batches_(file_, config.model.seq_len, config.train.global_batch, config.run.seed) {
    const io::Tokenizer& tokenizer = file_.tokenizer();
    const std::string kind = io::to_string(tokenizer.kind());
    if (kind != config.text.tokenizer)
      throw DataError(
          fmt::format("'{}' was written with the {} tokenizer; the input names "
                      "[text] tokenizer = \"{}\" (run `daa-swarm prepare` again)",
                      file_.path(), kind, config.text.tokenizer));
    if (kind == "bpe" && tokenizer.vocab_size() != config.text.vocab_size)
      throw DataError(
          fmt::format("'{}' holds a vocabulary of {} tokens; the input names [text] "
                      "vocab_size = {} (run `daa-swarm prepare` again)",
                      file_.path(), tokenizer.vocab_size(), config.text.vocab_size));
    for (int id = 0; id < tokenizer.vocab_size(); ++id) {
      token_bytes_.push_back(tokenizer.token_bytes(id));
      token_kind_.push_back(int(tokenizer.token_kind(id)));
    }
  }
  const char* kind() const override { return "language-model"; }
  int inputs() const override { return 0; }
  int outputs() const override { return file_.tokenizer().vocab_size(); }
  std::string describe() const override {
    return fmt::format("{} train / {} validation tokens of {} ({} tokenizer, {} tokens)",
                       file_.tokens(io::Split::train), file_.tokens(io::Split::validation),
                       fmt::join(file_.domains(), ", "), io::to_string(file_.tokenizer().kind()),
                       file_.tokenizer().vocab_size());
  }
  const char* unit() const override { return "sequences"; }
  int rows_per_unit() const override { return config_.model.seq_len; }
  // An epoch: as many windows as the training stream holds tokens.
  std::int64_t steps_per_epoch() const override {
    const std::int64_t tokens_per_step =
        std::int64_t(config_.train.global_batch) * config_.model.seq_len;
    return std::max<std::int64_t>(1, file_.tokens(io::Split::train) / tokens_per_step);
  }

  void load(model::StageBatch& batch, std::int64_t step, int micro, int d, int dp,
            bool) const override {
    const std::int64_t micro_size = config_.train.global_batch / config_.parallel.micro_batches;
    const std::int64_t local = micro_size / dp;
    fill(batch, batches_.train_samples(step, micro * micro_size + d * local, local));
  }

  std::vector<std::string> category_names() const override {
    std::vector<std::string> names;
    for (const std::string& domain : file_.domains()) names.push_back(domain);
    for (int k = 0; k < io::kTokenKinds; ++k) names.push_back(io::to_string(io::TokenKind(k)));
    return names;
  }
  int category_sets() const override { return 2; }
  const io::Tokenizer* tokenizer() const override { return &file_.tokenizer(); }

  Evaluation evaluate(model::Model& model, const parallel::Topology& topology,
                      parallel::PipelineSchedule& schedule,
                      const std::function<void()>& progress) const override {
    const int dp = topology.layout().data_parallel, index = topology.place().dp_index;
    const auto [first, last] = batches_.validation_range(index, dp);
    constexpr std::int64_t chunk = 16;  // windows per model call
    const std::size_t domains = file_.domains().size();
    // Per domain: loss (nats), target bytes, targets; then correct and all targets.
    std::vector<double> sums(3 * domains + 2, 0.0);
    model::StageBatch batch;
    parallel::PipelineTiming timing;
    const bool last_stage = topology.place().stage == topology.layout().pipeline_stages - 1;
    for (std::int64_t c = 0; c < evaluation_calls(batches_.validation_windows(), dp, chunk); ++c) {
      progress();
      const std::int64_t from = std::min(last, first + c * chunk);
      const std::int64_t count = std::min(last, from + chunk) - from;
      const io::TokenWindows windows = batches_.validation(from, count);
      fill(batch, windows);
      schedule.forward_only(
          batch.rows,
          [&](int, int slot, const Matrix<float>& received) {
            const model::StepStats stats = model.forward(slot, batch, received, false, {}, {});
            if (last_stage) {
              for (std::size_t r = 0; r < batch.rows; ++r) {
                const auto domain = std::size_t(batch.categories[2 * r]);
                sums[3 * domain] += stats.row_loss[r];
                sums[3 * domain + 1] += token_bytes_[std::size_t(windows.targets[r])];
                sums[3 * domain + 2] += 1;
              }
              sums[3 * domains] += double(stats.correct);
              sums[3 * domains + 1] += double(stats.scored);
            }
            return model.output(slot);
          },
          timing);
    }
    topology.world().allreduce_sum(sums.data(), sums.size());
    Evaluation e;
    double loss = 0, bytes = 0;
    for (std::size_t k = 0; k < domains; ++k) {
      loss += sums[3 * k];
      bytes += sums[3 * k + 1];
      e.domains.push_back(file_.domains()[k]);
      e.domain_bits_per_byte.push_back(sums[3 * k] / std::numbers::ln2 / sums[3 * k + 1]);
    }
    e.rows = std::int64_t(sums[3 * domains + 1]);
    e.loss = loss / sums[3 * domains + 1];
    e.accuracy = sums[3 * domains] / sums[3 * domains + 1];
    e.bits_per_byte = loss / std::numbers::ln2 / bytes;
    return e;
  }

 private:
  // Windows -> tokens and targets on the device, domain and token kind per row on the host.
  void fill(model::StageBatch& batch, const io::TokenWindows& windows) const {
    upload(batch.tokens, windows.tokens);
    upload(batch.targets, windows.targets);
    batch.rows = windows.tokens.size();
    batch.seq_len = windows.seq_len;
    batch.category_sets = 2;
    batch.categories.resize(2 * batch.rows);
    const int domains = int(file_.domains().size());
    for (std::size_t r = 0; r < batch.rows; ++r) {
      batch.categories[2 * r] = windows.domains[r];
      batch.categories[2 * r + 1] = domains + token_kind_[std::size_t(windows.tokens[r])];
    }
  }

  const core::Config config_;  // a copy: a task may outlive the caller's config
  io::TokenFile file_;
  io::TokenBatches batches_;
  std::vector<int> token_bytes_, token_kind_;
};

}  // namespace

std::unique_ptr<Task> load_task(const core::Config& config) {
  if (core::is_language_model(config))
    return std::make_unique<LanguageTask>(config, io::TokenFile(config.data.tokens));
  return std::make_unique<ClassifierTask>(config, io::load_dataset(config.data));
}

}  // namespace daa::train
