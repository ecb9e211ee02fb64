// The rank layout without MPI: where each rank sits (stage, data-parallel index, experts) and how
// the MoE blocks are split over pipeline stages (balanced by parameter count, or as given).
#include <gtest/gtest.h>

#include "daa/core/config.hpp"
#include "daa/core/error.hpp"
#include "daa/model/language_model.hpp"
#include "daa/model/moe_model.hpp"
#include "daa/parallel/topology.hpp"

namespace {

using daa::parallel::make_layout;

daa::parallel::StageCosts costs(const daa::core::Config& c, int inputs, int classes) {
  return daa::model::classifier_stage_costs(c, inputs, classes);
}

daa::core::Config pipeline(int stages, int blocks) {
  daa::core::Config c;  // d_model 128, 8 experts, d_ff 256: a block holds about 530k parameters
  c.model.moe_layers = blocks;
  c.parallel.pipeline_stages = stages;
  return c;
}

TEST(Layout, PlacesRanksByStageThenDataParallelIndex) {
  daa::core::Config c = pipeline(2, 4);
  c.parallel.expert_parallel = 2;
  const auto layout = make_layout(c, 8, costs(c, 784, 10));
  EXPECT_EQ(layout.data_parallel, 4);
  const auto p = layout.place(6);
  EXPECT_EQ(p.stage, 1);
  EXPECT_EQ(p.dp_index, 2);
  EXPECT_EQ(p.ep_rank, 0);
  EXPECT_EQ(p.edp_index, 1);
  EXPECT_EQ(p.first_expert, 0);
  EXPECT_EQ(p.local_experts, 4);
  EXPECT_EQ(p.first_block, 2);
  EXPECT_EQ(p.last_block, 4);
}

TEST(Layout, BalancesStagesByParameterCount) {
  // The input layer (785 x 128, about 100k) is small next to a block: an even split.
  EXPECT_EQ(make_layout(pipeline(2, 4), 2, costs(pipeline(2, 4), 784, 10)).blocks_per_stage,
            (std::vector<int>{2, 2}));
  // An input layer heavier than a block takes a block off the first stage.
  EXPECT_EQ(make_layout(pipeline(2, 4), 2, costs(pipeline(2, 4), 8000, 10)).blocks_per_stage,
            (std::vector<int>{1, 3}));
  // Uneven counts: the extra block goes where it costs least (not on the input-layer stage).
  EXPECT_EQ(make_layout(pipeline(2, 3), 2, costs(pipeline(2, 3), 784, 10)).blocks_per_stage,
            (std::vector<int>{1, 2}));
  EXPECT_EQ(make_layout(pipeline(3, 3), 3, costs(pipeline(3, 3), 784, 10)).blocks_per_stage,
            (std::vector<int>{1, 1, 1}));
  EXPECT_EQ(make_layout(pipeline(1, 5), 1, costs(pipeline(1, 5), 784, 10)).blocks_per_stage,
            (std::vector<int>{5}));
}

TEST(Layout, TakesTheSplitTheInputNames) {
  daa::core::Config c = pipeline(2, 4);
  c.parallel.stage_blocks = "3,1";
  const auto layout = make_layout(c, 4, costs(c, 784, 10));
  EXPECT_EQ(layout.blocks_per_stage, (std::vector<int>{3, 1}));
  EXPECT_EQ(layout.stage_blocks(1), (std::pair<int, int>{3, 4}));
  c.parallel.stage_blocks = "2,1";
  EXPECT_THROW(make_layout(c, 4, costs(c, 784, 10)), daa::ConfigError);
}

TEST(Layout, DescribesStagesAndGroups) {
  daa::core::Config c = pipeline(2, 2);
  c.parallel.expert_parallel = 2;
  const auto lines = make_layout(c, 4, costs(c, 784, 10)).describe();
  EXPECT_EQ(lines[1], "  stage 0: MoE blocks 0..0, input layer");
  EXPECT_EQ(lines[2], "  stage 0 expert-parallel group 0: ranks 0 1");
  EXPECT_EQ(lines.back(),
            "  rank   3: stage 1, data-parallel index 1, experts 4..7 of each MoE layer");
}

// The language model's MoE blocks weigh more than its dense ones, and the embedding sits on the
// first stage: with moe_every = 2 and a large vocabulary, the first stage takes fewer blocks.
TEST(Layout, LanguageModelBlocksWeighTheirExperts) {
  daa::core::Config c = pipeline(2, 4);
  c.data.dataset = "text";
  c.model.layers = 4;
  c.model.moe_every = 2;
  c.model.tie_embeddings = false;  // the head on the last stage, the embedding on the first
  const daa::parallel::StageCosts lm = daa::model::language_model_stage_costs(c, 4096);
  ASSERT_EQ(lm.blocks.size(), 4u);
  EXPECT_GT(lm.blocks[1], lm.blocks[0]);  // block 1 is an MoE block
  EXPECT_EQ(lm.blocks[0], lm.blocks[2]);
  EXPECT_DOUBLE_EQ(lm.first, 4096.0 * 128);
  EXPECT_DOUBLE_EQ(lm.last, 128 + 128 * 4096.0);  // final norm and untied head
  // A tied head on the last stage is a copy of the table: it weighs as much.
  c.model.tie_embeddings = true;
  EXPECT_DOUBLE_EQ(daa::model::language_model_stage_costs(c, 4096).last, lm.last);
  c.model.tie_embeddings = false;
  const auto layout = make_layout(c, 2, lm);
  EXPECT_EQ(layout.moe_blocks, (std::vector<int>{1, 3}));
  EXPECT_EQ(layout.place(0).first_moe_layer, 0);
  EXPECT_EQ(layout.place(1).last_moe_layer, 2);
  EXPECT_EQ(layout.place(0).last_moe_layer, layout.place(1).first_moe_layer);
  EXPECT_EQ(layout.describe()[1].rfind("  stage 0: transformer blocks 0..", 0), 0u);
}

}  // namespace
