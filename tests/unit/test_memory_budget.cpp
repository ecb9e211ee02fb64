// The memory estimate and [train] memory_budget_gb (daa/train/memory_budget.hpp) on the main
// language-model input: what each recompute mode keeps, the micro-batch count a budget picks,
// and the refusal of a budget too small for one sequence.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "daa/core/config.hpp"
#include "daa/core/error.hpp"
#include "daa/model/model.hpp"
#include "daa/parallel/topology.hpp"
#include "daa/train/memory_budget.hpp"

namespace daa::train::test {
namespace {

constexpr int kVocab = 4096;

core::Config main_job(const std::vector<std::string>& overrides = {}) {
  const auto path =
      std::filesystem::path(__FILE__).parent_path() / ".." / ".." / "inputs" / "text-mixture.toml";
  return core::load_config(path.string(), overrides);
}

parallel::Layout layout_of(const core::Config& config, int ranks) {
  return parallel::make_layout(config, ranks, model::stage_costs(config, 0, kVocab));
}

MemoryEstimate estimate(const std::string& recompute, int ranks = 1, int micro_batches = 1,
                        const std::vector<std::string>& more = {}) {
  std::vector<std::string> overrides = more;
  overrides.push_back("train.recompute=" + recompute);
  const core::Config c = main_job(overrides);
  return estimate_memory(c, layout_of(c, ranks), kVocab, micro_batches);
}

TEST(MemoryBudget, RecomputeKeepsLessPerToken) {
  const MemoryEstimate none = estimate("none"), attention = estimate("attention"),
                       block = estimate("block");
  // The parameters and their state do not depend on recompute: 4 blocks of attention (4 d^2)
  // and 8 SwiGLU experts (3 d F each) plus the router, and the tied 4096 x 128 table.
  const double d = 128, params = 4 * (4 * d * d + 2 * d + d * 8 + 8 * 3 * d * 256) + 4096 * d + d;
  EXPECT_DOUBLE_EQ(none.parameter_bytes, 4 * params);
  EXPECT_DOUBLE_EQ(none.optimizer_bytes, 8 * params);
  EXPECT_DOUBLE_EQ(block.parameter_bytes, none.parameter_bytes);
  EXPECT_EQ(none.micro_batch_tokens, 32 * 128);
  EXPECT_LT(attention.activation_bytes(), none.activation_bytes());
  EXPECT_LT(block.activation_bytes(), attention.activation_bytes());
  // The goal at the main job's sizes: block recompute at least 40 % less activation
  // memory than none.
  EXPECT_LT(block.activation_bytes(), 0.6 * none.activation_bytes());
}

TEST(MemoryBudget, ExpertParallelismAndPipelineStagesSplitTheParameters) {
  const MemoryEstimate one = estimate("none"),
                       ep = estimate("none", 2, 1, {"parallel.expert_parallel=2"});
  EXPECT_LT(ep.parameter_bytes, one.parameter_bytes);
  // Two ranks of data parallelism halve each rank's batch.
  EXPECT_EQ(ep.micro_batch_tokens, one.micro_batch_tokens / 2);
  const MemoryEstimate pp = estimate("none", 2, 4, {"parallel.pipeline_stages=2"});
  EXPECT_LT(pp.parameter_bytes, one.parameter_bytes);
  EXPECT_EQ(pp.in_flight, 2);  // 1F1B keeps min(micro-batches, stages) in flight
  EXPECT_EQ(pp.micro_batch_tokens, 8 * 128);
}

TEST(MemoryBudget, PicksTheFewestMicroBatchesThatFit) {
  core::Config c = main_job({"train.recompute=none"});
  const parallel::Layout layout = layout_of(c, 1);
  const MemoryEstimate whole = estimate_memory(c, layout, kVocab, 1);
  const MemoryEstimate quarter = estimate_memory(c, layout, kVocab, 4);
  // A budget between the 4- and the 2-micro-batch estimates picks 4.
  const MemoryEstimate half = estimate_memory(c, layout, kVocab, 2);
  ASSERT_LT(quarter.total_bytes(), half.total_bytes());
  c.train.memory_budget_gb = (quarter.total_bytes() + half.total_bytes()) / 2 * 1e-9;
  const BudgetChoice choice = apply_memory_budget(c, layout, kVocab);
  EXPECT_EQ(c.parallel.micro_batches, 4);
  EXPECT_EQ(choice.estimate.micro_batches, 4);
  EXPECT_LE(choice.estimate.total_bytes(), c.train.memory_budget_gb * 1e9);
  EXPECT_EQ(choice.line.rfind("memory budget: ", 0), 0u) << choice.line;
  EXPECT_NE(choice.line.find("4 micro-batches of 8 sequences (1024 tokens)"), std::string::npos)
      << choice.line;
  // A generous budget keeps one micro-batch; a budget of 0 changes nothing.
  c.train.memory_budget_gb = whole.total_bytes() * 2e-9;
  apply_memory_budget(c, layout, kVocab);
  EXPECT_EQ(c.parallel.micro_batches, 1);
  c.parallel.micro_batches = 2;
  c.train.memory_budget_gb = 0;
  EXPECT_TRUE(apply_memory_budget(c, layout, kVocab).line.empty());
  EXPECT_EQ(c.parallel.micro_batches, 2);
}

TEST(MemoryBudget, RefusesABudgetTooSmallForOneSequence) {
  core::Config c = main_job({"train.memory_budget_gb=0.01"});
  try {
    apply_memory_budget(c, layout_of(c, 1), kVocab);
    ADD_FAILURE() << "no error";
  } catch (const InputError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("[train] memory_budget_gb = 0.01 is too small"), std::string::npos) << what;
    EXPECT_NE(what.find("(128 tokens)"), std::string::npos) << what;
    EXPECT_NE(what.find("AdamW state"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace daa::train::test
