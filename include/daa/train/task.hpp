// A task owns what a model is trained on and judged by: its data, the batches of each step, the
// categories the expert-specialization statistic counts, and the evaluation. Two tasks: the
// Fashion-MNIST classifier (images -> classes) and next-token language modelling on an HDF5
// token file (tokens -> next tokens, with domains and bits per byte). The training loop sees
// only this interface and model::Model.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "daa/core/config.hpp"
#include "daa/io/tokenizer.hpp"
#include "daa/model/model.hpp"
#include "daa/parallel/pipeline.hpp"
#include "daa/parallel/topology.hpp"

namespace daa::train {

// The held-out data's figures. Loss is per scored row (sample or token), in nats.
struct Evaluation {
  double loss = 0;
  double accuracy = 0;
  std::int64_t rows = 0;
  // Language model: bits per byte of text overall and per domain (NaN / empty otherwise).
  double bits_per_byte = std::numeric_limits<double>::quiet_NaN();
  std::vector<std::string> domains;
  std::vector<double> domain_bits_per_byte;
};

class Task {
 public:
  virtual ~Task() = default;
  virtual const char* kind() const = 0;  // the model kind: "classifier" or "language-model"
  // Width of the model's input (features; 0 for tokens) and of its output (classes or vocab).
  virtual int inputs() const = 0;
  virtual int outputs() const = 0;
  // One line on the data: "60000 train / 10000 test samples".
  virtual std::string describe() const = 0;
  virtual const char* unit() const = 0;  // what the global batch counts: samples or sequences
  // Rows of the model per unit (1 sample, or seq_len tokens of a sequence).
  virtual int rows_per_unit() const = 0;
  virtual std::int64_t steps_per_epoch() const = 0;
  // Data-parallel index d of dp's share of micro-batch `micro` of step `step`: the same global
  // micro-batch whatever the layout. flip_labels: a simulated label-flipping rank.
  virtual void load(model::StageBatch& batch, std::int64_t step, int micro, int d, int dp,
                    bool flip_labels) const = 0;
  // Names of the specialization statistic's columns (classes; domains then token kinds), and
  // how many of them each row has (StageBatch::category_sets).
  virtual std::vector<std::string> category_names() const = 0;
  virtual int category_sets() const = 0;
  // The held-out data through the pipeline, each data-parallel index taking its share in chunks;
  // collective over the world (every rank makes the same model calls). `progress` is called
  // before each chunk (the watchdog's promise).
  // The tokenizer of a text task (prompts for generation); null for the classifier.
  virtual const io::Tokenizer* tokenizer() const { return nullptr; }
  virtual Evaluation evaluate(model::Model& model, const parallel::Topology& topology,
                              parallel::PipelineSchedule& schedule,
                              const std::function<void()>& progress) const = 0;
};

// Loads the data the input names and checks it against the input (the global batch fits, a
// token file matches [text] and [model]). Throws InputError / DataError / ConfigError.
std::unique_ptr<Task> load_task(const core::Config& config);

}  // namespace daa::train
