// Each module's parameter struct is built from the input by one function beside it; an input with
// every key at its default must give the struct's own defaults, so the two cannot drift apart (a
// struct whose seed defaulted to 1 while the run's was 1234 is how it went wrong before).
#include <gtest/gtest.h>

#include "daa/core/config.hpp"
#include "daa/model/language_model.hpp"
#include "daa/model/moe_layer.hpp"
#include "daa/model/moe_model.hpp"

namespace {

using daa::core::Config;

TEST(FromConfig, DefaultInputGivesDefaultMoeShape) {
  EXPECT_TRUE(daa::model::moe_shape_from_config(Config{}) == daa::model::MoeShape{});
}

TEST(FromConfig, DefaultInputGivesDefaultClassifierShape) {
  EXPECT_TRUE(daa::model::shape_from_config(Config{}, 784, 10) == daa::model::ModelShape{});
}

TEST(FromConfig, DefaultInputGivesDefaultLanguageModelShape) {
  Config text;
  text.data.dataset = "text";
  EXPECT_TRUE(daa::model::language_model_shape_from_config(text, 4096) ==
              daa::model::LanguageModelShape{});
}

// And a changed key arrives: the functions read the input, not their own defaults.
TEST(FromConfig, ChangedKeysArrive) {
  Config c;
  c.run.seed = 7;
  c.moe.ffn = daa::core::ExpertFfnKind::swiglu;
  c.model.moe_every = 2;
  c.moe.expert_groups = 0;
  const daa::model::LanguageModelShape s =
      daa::model::language_model_shape_from_config(c, 300, 4, 1);
  EXPECT_EQ(s.seed, 7u);
  EXPECT_EQ(s.moe.ffn, daa::model::ExpertFfn::swiglu);
  EXPECT_EQ(s.moe_every, 2);
  EXPECT_EQ(s.vocab, 300);
  EXPECT_EQ(s.moe.ep_size, 4);
  EXPECT_EQ(s.moe.ep_rank, 1);
  EXPECT_EQ(s.moe.expert_groups, 4);  // one group per expert-parallel rank
  EXPECT_EQ(daa::model::shape_from_config(c, 784, 10).seed, 7u);
}

}  // namespace
