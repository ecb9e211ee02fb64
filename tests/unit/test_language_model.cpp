// The whole transformer MoE language model in double: finite-difference gradients of every
// parameter (tied and untied heads, dense and MoE blocks, SwiGLU and GELU experts), a model split
// into two pipeline stages equal to the whole (tied: a copy of the table on the last stage), and
// the bad inputs the model itself refuses; the fused head and loss also in several chunks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "daa/core/error.hpp"
#include "daa/core/rng.hpp"
#include "daa/model/language_model.hpp"
#include "gradient_check.hpp"

namespace daa::model::test {
namespace {

using kernels::Matrix;

LanguageModelShape small_shape(ExpertFfn ffn, bool tied) {
  LanguageModelShape s;
  s.vocab = 11;
  s.d_model = 8;
  s.layers = 2;
  s.heads = 2;
  s.seq_len = 5;
  s.attention_block = 2;
  s.moe_every = 2;  // block 0 dense, block 1 MoE
  s.d_ff_dense = 6;
  s.tie_embeddings = tied;
  s.init_std = 0.3;  // large enough that every path carries gradient
  s.seed = 7;
  s.moe = MoeShape{.d_model = 8,
                   .experts = 4,
                   .top_k = 2,
                   .d_ff = 5,
                   .ffn = ffn,
                   .aux_loss_coef = 0.1,
                   .z_loss_coef = 0.01};
  return s;
}

// Two sequences of 5 tokens; the last position of the second sequence has no target.
struct Batch {
  TokenIds tokens = token_view({1, 4, 2, 9, 0, 3, 3, 10, 7, 5});
  TokenIds targets = token_view({4, 2, 9, 0, 6, 3, 10, 7, 5, -1});
};

struct Result {
  double objective = 0;  // mean cross-entropy + aux + z
  std::vector<int> routing;
};

Result evaluate(LanguageModel<double>& model, const Batch& batch, bool train) {
  Result r;
  const LmStats stats =
      model.forward(0, 5, batch.tokens, Matrix<double>("none", 0, 0), batch.targets, train, {},
                    [&](const RoutingEvent& e) {
                      r.routing.insert(r.routing.end(), e.choice.begin(), e.choice.end());
                    });
  r.objective = stats.loss_sum / double(stats.tokens) + stats.aux_loss;
  return r;
}

void expect_gradients_match(const LanguageModelShape& shape, std::size_t head_chunk_rows = 0) {
  LanguageModel<double> model(shape);
  model.set_head_chunk_rows(head_chunk_rows);
  const Batch batch;
  const Result base = evaluate(model, batch, false);
  model.params().zero_grads();
  evaluate(model, batch, true);
  LmStats stats;
  model.backward(0, Matrix<double>("none", 0, 0), stats);
  const auto analytic = to_host(model.params().grads());
  const auto values_view = model.params().values();
  const auto values = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), values_view);
  int checked = 0, skipped = 0;
  for (const ParamInfo& p : model.params().infos()) {
    std::vector<double> analytic_kept, numeric;
    // Every entry of small tensors, a spread sample of large ones.
    const std::size_t stride = p.size() > 64 ? 7 : 1;
    for (std::size_t i = 0; i < p.size(); i += stride) {
      const std::size_t at = p.offset + i;
      const auto [plus, minus] =
          evaluate_around(values_view, values, at, [&] { return evaluate(model, batch, false); });
      ++checked;
      if (plus.routing != base.routing || minus.routing != base.routing) {
        ++skipped;
        continue;
      }
      analytic_kept.push_back(analytic[at]);
      numeric.push_back((plus.objective - minus.objective) / (2 * kFiniteDifferenceStep));
    }
    // Relative to the tensor's gradient scale, with an absolute floor for (near-)zero tensors.
    EXPECT_LE(relative_error(analytic_kept, numeric, 1e-3), 1e-6) << p.name;
    EXPECT_GT(max_abs(analytic_kept), 0.0) << p.name << " receives no gradient";
  }
  EXPECT_LT(skipped, checked / 20 + 1);
}

TEST(LanguageModel, GradientsMatchFiniteDifferencesTiedSwiglu) {
  expect_gradients_match(small_shape(ExpertFfn::swiglu, true));
}

TEST(LanguageModel, GradientsMatchFiniteDifferencesUntiedGelu) {
  expect_gradients_match(small_shape(ExpertFfn::gelu, false));
}

// The fused head and loss over 10 rows in chunks of 3, 3, 3 and 1 (the last row untargeted).
TEST(LanguageModel, GradientsMatchFiniteDifferencesWithTheHeadInChunks) {
  expect_gradients_match(small_shape(ExpertFfn::swiglu, true), 3);
  expect_gradients_match(small_shape(ExpertFfn::gelu, false), 3);
}

TEST(LanguageModel, DeclaresTheBlocksItDescribes) {
  LanguageModel<double> model(small_shape(ExpertFfn::swiglu, true));
  std::vector<std::string> names;
  for (const ParamInfo& p : model.params().infos()) names.push_back(p.name);
  const auto has = [&](const std::string& n) {
    return std::find(names.begin(), names.end(), n) != names.end();
  };
  EXPECT_TRUE(has("embedding.table"));
  EXPECT_TRUE(has("block0.attn.wqkv"));
  EXPECT_TRUE(has("block0.ffn.w1"));  // dense FFN in block 0
  EXPECT_TRUE(has("block1.moe.router.w"));
  EXPECT_TRUE(has("block1.moe.expert3.w3"));
  EXPECT_TRUE(has("final_norm.gain"));
  EXPECT_FALSE(has("head.w"));  // tied
  EXPECT_EQ(model.shape().moe_layers(), 1);
  EXPECT_EQ(model.shape().moe_layer_of(1), 0);
  EXPECT_EQ(model.shape().moe_layer_of(0), -1);
}

// Stage 0 holds block 0, stage 1 block 1 and the head: the same loss and gradients as the whole.
// With tied embeddings stage 1 holds a copy of the table (flagged tied_copy, the same initial
// values); the two stages' table gradients add up to the whole model's, which is what the
// trainer's share_tied_gradients hands the first stage.
void expect_two_stages_equal_the_whole(bool tied) {
  LanguageModelShape whole_shape = small_shape(ExpertFfn::swiglu, tied);
  LanguageModel<double> whole(whole_shape);
  LanguageModelShape first = whole_shape, second = whole_shape;
  first.last_block = 1;
  second.first_block = 1;
  LanguageModel<double> stage0(first), stage1(second);
  EXPECT_EQ(stage0.shape().tied_across_stages(), tied);
  EXPECT_EQ(stage1.shape().tied_across_stages(), tied);
  const Batch batch;
  const Matrix<double> none("none", 0, 0);
  const LmStats w = whole.forward(0, 5, batch.tokens, none, batch.targets, true);
  LmStats ws;
  whole.backward(0, none, ws);

  stage0.forward(0, 5, batch.tokens, none, TokenIds("none", 0), true);
  const Matrix<double> activations = stage0.output(0);
  const LmStats s1 = stage1.forward(0, 5, TokenIds("none", 0), activations, batch.targets, true);
  LmStats s1s, s0s;
  stage1.backward(0, none, s1s);
  stage0.backward(0, stage1.input_grad(0), s0s);
  EXPECT_NEAR(s1.loss_sum, w.loss_sum, 1e-12);
  EXPECT_NEAR(s1.aux_loss, w.aux_loss, 1e-12);

  const auto grads = to_host(whole.params().grads());
  const auto values = to_host(whole.params().values());
  const auto stage0_grads = to_host(stage0.params().grads());
  const auto find = [](const LanguageModel<double>& model, const std::string& name) {
    const auto& infos = model.params().infos();
    return std::find_if(infos.begin(), infos.end(),
                        [&](const ParamInfo& q) { return q.name == name; });
  };
  int copies = 0;
  for (const LanguageModel<double>* stage : {&stage0, &stage1}) {
    const auto stage_grads = to_host(stage->params().grads());
    const auto stage_values = to_host(stage->params().values());
    for (const ParamInfo& p : stage->params().infos()) {
      const auto it = find(whole, p.name);
      ASSERT_NE(it, whole.params().infos().end()) << p.name;
      for (std::size_t i = 0; i < p.size(); ++i)
        ASSERT_EQ(stage_values[p.offset + i], values[it->offset + i]) << p.name;
      if (!p.tied_copy) {
        // The first stage's table holds only the embedding's part when tied.
        if (tied && p.name == "embedding.table") continue;
        for (std::size_t i = 0; i < p.size(); ++i)
          ASSERT_NEAR(stage_grads[p.offset + i], grads[it->offset + i], 1e-12) << p.name;
        continue;
      }
      ++copies;
      EXPECT_EQ(stage, &stage1) << p.name;
      EXPECT_EQ(stage->params().tied_copy_size(), p.size());
      const auto original = find(stage0, p.name);
      ASSERT_NE(original, stage0.params().infos().end()) << p.name;
      EXPECT_FALSE(original->tied_copy);
      for (std::size_t i = 0; i < p.size(); ++i)
        ASSERT_NEAR(stage_grads[p.offset + i] + stage0_grads[original->offset + i],
                    grads[it->offset + i], 1e-12)
            << p.name;
    }
  }
  EXPECT_EQ(copies, tied ? 1 : 0);
  EXPECT_EQ(stage0.params().tied_copy_size(), 0u);
}

TEST(LanguageModel, TwoPipelineStagesEqualTheWholeModel) {
  expect_two_stages_equal_the_whole(false);
}

TEST(LanguageModel, TwoPipelineStagesWithTiedEmbeddingsEqualTheWholeModel) {
  expect_two_stages_equal_the_whole(true);
}

// Activation checkpointing ([train] recompute): two micro-batch slots in flight (forward 0,
// forward 1, backward 1, backward 0, as 1F1B interleaves them), on the whole model and on the two
// stages of a pipeline split, in float as training runs. Losses, aux losses and every gradient
// must be bit-identical to recompute = none, and the checkpointed modes must hold no attention
// internals between forward and backward.
struct RecomputeRun {
  std::vector<double> loss, aux;
  std::vector<double> grads;        // float gradients, converted exactly
  std::size_t attention_saved = 0;  // attention internals held after the forwards
};

RecomputeRun run_recompute(Recompute mode, int first_block, int last_block) {
  LanguageModelShape shape = small_shape(ExpertFfn::swiglu, true);
  shape.recompute = mode;
  LanguageModelShape stage0 = shape, stage1 = shape;
  stage0.last_block = 1;
  stage1.first_block = 1;
  const bool split = first_block == 1 || last_block == 1;
  LanguageModel<float> a(split ? stage0 : shape);
  std::optional<LanguageModel<float>> b;
  if (split) b.emplace(stage1);
  const Batch batch;
  const TokenIds tokens2 = token_view({3, 3, 10, 7, 5, 1, 4, 2, 9, 0});
  const TokenIds targets2 = token_view({3, 10, 7, 5, 2, 4, 2, 9, 0, 6});
  const Matrix<float> none("none", 0, 0);
  const TokenIds no_ids("none", 0);
  RecomputeRun r;
  a.params().zero_grads();
  if (b) b->params().zero_grads();
  LmStats stats[2];
  for (int slot = 0; slot < 2; ++slot) {
    const TokenIds& t = slot == 0 ? batch.tokens : tokens2;
    const TokenIds& y = slot == 0 ? batch.targets : targets2;
    stats[slot] = a.forward(slot, 5, t, none, b ? no_ids : y, true);
    if (b) stats[slot] = b->forward(slot, 5, no_ids, a.output(slot), y, true);
    r.loss.push_back(stats[slot].loss_sum);
    r.aux.push_back(stats[slot].aux_loss);
  }
  for (LanguageModel<float>* m : {&a, b ? &*b : nullptr}) {
    if (!m) continue;
    for (const auto& layers : m->layers().blocks)
      for (int slot = 0; slot < 2; ++slot) r.attention_saved += layers.attention->saved_bytes(slot);
  }
  for (int slot = 1; slot >= 0; --slot) {
    LmStats s;
    if (b) {
      b->backward(slot, none, s);
      a.backward(slot, b->input_grad(slot), s);
    } else {
      a.backward(slot, none, s);
    }
  }
  for (LanguageModel<float>* m : {&a, b ? &*b : nullptr}) {
    if (!m) continue;
    const auto g = to_host(m->params().grads());
    r.grads.insert(r.grads.end(), g.begin(), g.end());
  }
  return r;
}

void expect_recompute_is_exact(int first_block, int last_block) {
  const RecomputeRun none = run_recompute(Recompute::none, first_block, last_block);
  EXPECT_GT(none.attention_saved, 0u);
  for (const Recompute mode : {Recompute::attention, Recompute::block}) {
    SCOPED_TRACE(mode == Recompute::attention ? "attention" : "block");
    const RecomputeRun r = run_recompute(mode, first_block, last_block);
    EXPECT_EQ(r.attention_saved, 0u);
    EXPECT_EQ(r.loss, none.loss);
    EXPECT_EQ(r.aux, none.aux);
    ASSERT_EQ(r.grads.size(), none.grads.size());
    EXPECT_EQ(std::memcmp(r.grads.data(), none.grads.data(), r.grads.size() * sizeof(double)), 0);
    double norm = 0;
    for (const double g : r.grads) norm += g * g;
    EXPECT_GT(norm, 0.0);
  }
}

TEST(LanguageModel, RecomputeGivesBitIdenticalLossAndGradients) {
  expect_recompute_is_exact(0, -1);
}

TEST(LanguageModel, RecomputeOnTwoPipelineStagesGivesBitIdenticalGradients) {
  expect_recompute_is_exact(1, -1);
}

TEST(LanguageModel, RefusesTargetsOutsideTheVocabulary) {
  LanguageModel<double> model(small_shape(ExpertFfn::gelu, true));
  const Batch batch;
  const TokenIds bad = token_view({4, 2, 9, 0, 6, 3, 10, 7, 5, 11});
  try {
    model.forward(0, 5, batch.tokens, Matrix<double>("none", 0, 0), bad, false);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("target 11"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace daa::model::test
