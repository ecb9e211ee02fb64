// Incremental decoding of the language model (model/generation.hpp): the key/value cache gives the
// logits a full forward of the prefix gives, at every position and prompt length, in double and
// float; sampling is reproducible per seed, greedy at temperature 0 and top-k 1, follows the
// softmax, and the generator refuses prompts and steps it cannot serve with messages that say why.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "daa/core/error.hpp"
#include "daa/model/generation.hpp"
#include "daa/model/language_model.hpp"
#include "gradient_check.hpp"

namespace daa::model::test {
namespace {

using kernels::Matrix;

// Three blocks: dense, MoE, dense. seq_len 12 so a 12-token sequence fills the context; the
// attention block of 5 keys does not divide it.
LanguageModelShape small_shape(ExpertFfn ffn, bool tied, double init_std = 0.3) {
  LanguageModelShape s;
  s.vocab = 23;
  s.d_model = 16;
  s.layers = 3;
  s.heads = 2;
  s.seq_len = 12;
  s.attention_block = 5;
  s.moe_every = 2;
  s.d_ff_dense = 20;
  s.tie_embeddings = tied;
  s.init_std = init_std;
  s.seed = 11;
  s.moe = MoeShape{.d_model = 16, .experts = 4, .top_k = 2, .d_ff = 12, .ffn = ffn};
  return s;
}

const std::vector<int> kSequence = {3, 17, 0, 22, 9, 9, 14, 1, 6, 20, 11, 5};

// Logits [tokens.size(), vocab] of one full forward (train = false) over `tokens`, on the host.
template <class T>
std::vector<std::vector<double>> full_forward_logits(LanguageModel<T>& model,
                                                     const std::vector<int>& tokens) {
  const std::size_t n = tokens.size();
  model.keep_logits(true);
  model.forward(0, int(n), token_view(tokens), Matrix<T>("none", 0, 0),
                token_view(std::vector<int>(n, -1)), false);
  const auto host = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), model.logits(0));
  std::vector<std::vector<double>> rows(n);
  for (std::size_t t = 0; t < n; ++t)
    for (std::size_t v = 0; v < host.extent(1); ++v) rows[t].push_back(double(host(t, v)));
  return rows;
}

// Largest |a - b| / max(1, |b|) over a row.
template <class T>
double row_error(const std::vector<T>& got, const std::vector<double>& expected) {
  EXPECT_EQ(got.size(), expected.size());
  double worst = 0;
  for (std::size_t v = 0; v < std::min(got.size(), expected.size()); ++v)
    worst = std::max(worst,
                     std::abs(double(got[v]) - expected[v]) / std::max(1.0, std::abs(expected[v])));
  return worst;
}

// For every prompt length k of kSequence: prefill(first k tokens) gives row k-1 of the full
// forward, then step() with each later token gives the next row. One generator serves all prompt
// lengths, so each prefill also shows the cache starts afresh.
template <class T>
void expect_cache_matches_full_forward(const LanguageModelShape& shape, double tolerance) {
  LanguageModel<T> model(shape);
  const auto reference = full_forward_logits(model, kSequence);
  Generator<T> generator(model);
  double worst = 0;
  int compared = 0;
  for (std::size_t k = 1; k <= kSequence.size(); ++k) {
    const std::vector<int> prompt(kSequence.begin(), kSequence.begin() + std::ptrdiff_t(k));
    worst = std::max(worst, row_error(generator.prefill(prompt), reference[k - 1]));
    ++compared;
    EXPECT_EQ(generator.position(), int(k));
    for (std::size_t p = k; p < kSequence.size(); ++p) {
      const double error = row_error(generator.step(kSequence[p]), reference[p]);
      EXPECT_LE(error, tolerance) << "prompt " << k << ", position " << p;
      worst = std::max(worst, error);
      ++compared;
    }
    EXPECT_TRUE(generator.full());
  }
  EXPECT_EQ(compared, 78);
  EXPECT_LE(worst, tolerance);
  std::printf("[ cache    ] %s: %d rows, worst relative logit error %.3g\n",
              sizeof(T) == 8 ? "double" : "float", compared, worst);
}

TEST(Generation, CacheEqualsFullForwardTiedSwigluDouble) {
  expect_cache_matches_full_forward<double>(small_shape(ExpertFfn::swiglu, true), 1e-12);
}

TEST(Generation, CacheEqualsFullForwardUntiedGeluDouble) {
  expect_cache_matches_full_forward<double>(small_shape(ExpertFfn::gelu, false), 1e-12);
}

TEST(Generation, CacheEqualsFullForwardTiedSwigluFloat) {
  expect_cache_matches_full_forward<float>(small_shape(ExpertFfn::swiglu, true), 1e-5);
}

TEST(Generation, CacheEqualsFullForwardUntiedGeluFloat) {
  expect_cache_matches_full_forward<float>(small_shape(ExpertFfn::gelu, false), 1e-5);
}

// The logits really are a function of the whole prefix (else the test above proves little).
TEST(Generation, LogitsDependOnEarlierTokens) {
  LanguageModel<double> model(small_shape(ExpertFfn::swiglu, true));
  Generator<double> generator(model);
  generator.prefill({3, 17, 0});
  const std::vector<double> a = generator.step(9);
  generator.prefill({4, 17, 0});
  const std::vector<double> b = generator.step(9);
  double differ = 0;
  for (std::size_t v = 0; v < a.size(); ++v) differ = std::max(differ, std::abs(a[v] - b[v]));
  EXPECT_GT(differ, 1e-3);
}

// Greedy decoding by full forwards of the growing sequence, the slow way.
std::vector<int> greedy_by_full_forward(LanguageModel<double>& model, std::vector<int> sequence,
                                        int new_tokens) {
  std::vector<int> out;
  for (int i = 0; i < new_tokens; ++i) {
    const auto rows = full_forward_logits(model, sequence);
    const std::vector<double>& last = rows.back();
    const int token = int(std::max_element(last.begin(), last.end()) - last.begin());
    out.push_back(token);
    sequence.push_back(token);
  }
  return out;
}

TEST(Generation, TemperatureZeroAndTopKOneAreGreedy) {
  for (const bool tied : {true, false}) {
    LanguageModel<double> model(small_shape(tied ? ExpertFfn::swiglu : ExpertFfn::gelu, tied, 1.0));
    const std::vector<int> prompt = {5, 2, 19};
    const std::vector<int> expected = greedy_by_full_forward(model, prompt, 8);
    Generator<double> generator(model);
    const Generated zero = generator.generate(prompt, 8, {.temperature = 0.0, .seed = 3});
    EXPECT_EQ(zero.tokens, expected);
    EXPECT_FALSE(zero.context_full);
    const Generated top1 =
        generator.generate(prompt, 8, {.temperature = 1.5, .top_k = 1, .seed = 4});
    EXPECT_EQ(top1.tokens, expected);
    // Not a constant, so the comparison means something: with weights of std 1 the random
    // model's greedy text varies (at 0.3 it settles on repeating one token).
    EXPECT_GT(std::set<int>(expected.begin(), expected.end()).size(), 2u)
        << ::testing::PrintToString(expected);
  }
}

TEST(Generation, SameSeedSameTextOtherSeedOtherText) {
  // Tiny weights: every logit near 0, the next-token distribution near uniform.
  LanguageModel<double> model(small_shape(ExpertFfn::swiglu, true, 1e-4));
  Generator<double> generator(model);
  const std::vector<double> logits = generator.prefill({7});
  const auto [low, high] = std::minmax_element(logits.begin(), logits.end());
  ASSERT_LT(*high - *low, 1e-3) << "the model is not flat";

  const SamplingOptions first{.temperature = 1.0, .seed = 42};
  const Generated a = generator.generate({7}, 100, first);
  const Generated again = generator.generate({7}, 100, first);
  Generator<double> other_generator(model);
  const Generated b = other_generator.generate({7}, 100, {.temperature = 1.0, .seed = 43});
  // Prompt of 1 in a context of 12: 11 tokens fed back and a 12th drawn from the full context.
  EXPECT_EQ(a.tokens.size(), 12u);
  EXPECT_TRUE(a.context_full);
  EXPECT_EQ(a.tokens, again.tokens);
  EXPECT_EQ(b.tokens.size(), 12u);
  EXPECT_NE(a.tokens, b.tokens);
  // Near-uniform draws of 12 tokens out of 23 hit several distinct tokens.
  EXPECT_GT(std::set<int>(a.tokens.begin(), a.tokens.end()).size(), 5u);
  // max_new_tokens counts exactly when the context has room.
  EXPECT_EQ(generator.generate({7, 1}, 4, first).tokens.size(), 4u);
  EXPECT_TRUE(generator.generate({7, 1}, 0, first).tokens.empty());
}

TEST(Generation, SamplingFollowsTheSoftmaxOfTheTopK) {
  const std::vector<double> logits = {1.0, 2.0, 0.5, -1.0, 3.0};
  const double temperature = 0.7;
  const int draws = 40000;
  for (const int top_k : {0, 2, 5, 9}) {
    const std::size_t kept = top_k == 0 ? logits.size() : std::min<std::size_t>(top_k, 5);
    // The kept tokens, largest logits first: 4, 1, 0, 2, 3.
    const std::vector<int> order = {4, 1, 0, 2, 3};
    std::vector<double> expected(logits.size(), 0.0);
    double total = 0;
    for (std::size_t i = 0; i < kept; ++i) total += std::exp(logits[order[i]] / temperature);
    for (std::size_t i = 0; i < kept; ++i)
      expected[order[i]] = std::exp(logits[order[i]] / temperature) / total;
    std::vector<int> count(logits.size(), 0);
    for (int position = 0; position < draws; ++position)
      ++count[std::size_t(sample(logits, temperature, top_k, 5, position))];
    for (std::size_t v = 0; v < logits.size(); ++v) {
      // Binomial standard deviation is at most 0.0025 here; 4 of them.
      EXPECT_NEAR(double(count[v]) / draws, expected[v], 0.01)
          << "top_k " << top_k << " token " << v;
      if (expected[v] == 0) {
        EXPECT_EQ(count[v], 0) << "top_k " << top_k << " token " << v;
      }
    }
  }
  // The same (seed, position) draws the same token, in float as in double for these logits.
  const std::vector<float> as_float(logits.begin(), logits.end());
  for (int position = 0; position < 200; ++position)
    ASSERT_EQ(sample(as_float, temperature, 0, 8, position),
              sample(logits, temperature, 0, 8, position));
  // Greedy: the first of equal maxima.
  EXPECT_EQ(sample(std::vector<double>{1.0, 3.0, 3.0}, 0.0, 0, 1, 0), 1);
  EXPECT_EQ(sample(std::vector<double>{1.0, 3.0, 3.0}, 2.0, 1, 1, 0), 1);
  // -inf logits are never drawn.
  const double minus_inf = -std::numeric_limits<double>::infinity();
  for (int position = 0; position < 100; ++position)
    EXPECT_EQ(sample(std::vector<double>{minus_inf, 0.0, minus_inf}, 1.0, 0, 2, position), 1);
}

template <class E, class F>
void expect_error(F&& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no error";
  } catch (const E& e) {
    for (const std::string& part : parts)
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos)
          << "'" << part << "' not in: " << e.what();
  }
}

TEST(Generation, RefusesWhatItCannotServe) {
  LanguageModel<double> model(small_shape(ExpertFfn::gelu, false));
  Generator<double> generator(model);
  expect_error<InputError>([&] { generator.prefill({}); }, {"prefill", "prompt is empty"});
  expect_error<InputError>([&] { generator.prefill(std::vector<int>(13, 1)); },
                           {"prompt of 13 tokens", "seq_len 12"});
  expect_error<Error>([&] { generator.step(1); }, {"no prefill"});
  expect_error<InputError>(
      [&] {
        generator.prefill({1, 23});
      },
      {"token 23 at position 1", "vocabulary [0, 23)"});
  generator.prefill(std::vector<int>(11, 2));
  expect_error<InputError>([&] { generator.step(-1); }, {"token -1 at position 11"});
  generator.step(4);
  EXPECT_TRUE(generator.full());
  expect_error<InputError>([&] { generator.step(4); },
                           {"context is full", "12 of seq_len 12", "does not slide"});
  expect_error<InputError>([&] { generator.generate({1}, -1, {}); }, {"max_new_tokens -1"});

  const std::vector<double> logits = {0.0, 1.0};
  expect_error<InputError>([&] { sample(logits, -0.5, 0, 1, 0); }, {"temperature -0.5"});
  expect_error<InputError>([&] { sample(logits, std::nan(""), 0, 1, 0); }, {"temperature nan"});
  expect_error<InputError>([&] { sample(logits, 1.0, -2, 1, 0); }, {"top_k -2"});
  expect_error<InputError>([&] { sample(std::vector<double>{}, 1.0, 0, 1, 0); }, {"empty"});
  expect_error<Error>(
      [&] {
        sample(std::vector<double>{0.0, std::nan("")}, 1.0, 0, 1, 0);
      },
      {"token 1"});

  // A pipeline stage is not a whole model.
  LanguageModelShape stage = small_shape(ExpertFfn::gelu, false);
  stage.last_block = 2;
  LanguageModel<double> first_stage(stage);
  expect_error<Error>([&] { Generator<double> g(first_stage); }, {"blocks [0, 2) of 3"});
}

}  // namespace
}  // namespace daa::model::test
