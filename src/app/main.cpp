// daa-swarm command line: parses arguments with CLI11, sets up MPI and Kokkos, and hands over to
// the train and io modules. Errors end here: one line `daa-swarm: error: ...` from one rank and a
// documented exit code (0 ok, 1 internal, 2 bad input, 3 diverged, 75 checkpointed on a signal:
// resubmit); never a hang.
#include <fmt/format.h>
#include <mpi.h>
#include <CLI/CLI.hpp>
#include <Kokkos_Core.hpp>
#if defined(KOKKOS_ENABLE_CUDA)
#include <cuda_runtime_api.h>  // cudaGetDeviceCount: the GPUs this rank may take
#endif

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <thread>

#include "daa/build_config.hpp"
#include "daa/core/config.hpp"
#include "daa/core/error.hpp"
#include "daa/io/dataset.hpp"
#include "daa/io/replay.hpp"
#include "daa/io/token_file.hpp"
#include "daa/io/vectors_csv.hpp"
#include "daa/kernels/kokkos_compat.hpp"
#include "daa/model/model.hpp"
#include "daa/obs/report.hpp"
#include "daa/parallel/communicator.hpp"
#include "daa/parallel/expert_registry.hpp"
#include "daa/parallel/topology.hpp"
#include "daa/robust/rules.hpp"
#include "daa/train/memory_budget.hpp"
#include "daa/train/trainer.hpp"

namespace {

// Before MPI_Init the launcher's environment tells which rank we are, so that argument errors
// under `mpirun -np 4` are printed once, not four times.
bool launcher_rank_zero() {
  for (const char* var : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"})
    if (const char* v = std::getenv(var)) return std::atoi(v) == 0;
  return true;
}

// Whether an MPI launcher (mpirun, or srun with a PMI plugin) started this process, so that
// MPI_Init joins the other ranks. SLURM_PROCID alone is also set in a batch script's own shell.
bool launched_by_mpi() {
  for (const char* var : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"})
    if (std::getenv(var)) return true;
  return false;
}

void print_error(const std::string& message, int rank = -1) {
  if (rank >= 0)
    std::fprintf(stderr, "daa-swarm: error: rank %d: %s\n", rank, message.c_str());
  else
    std::fprintf(stderr, "daa-swarm: error: %s\n", message.c_str());
  std::fflush(stderr);
}

struct TrainArgs {
  std::string input;
  std::vector<std::string> overrides;
  std::string summary_json;
  std::string restart;
  std::string checkpoint;  // eval
};

// The collective setup of train and eval: input, layout and data, checked on every rank; any
// rank's error ends every rank with the lowest failing rank's message.
// With `budget_line`, [train] memory_budget_gb picks the micro-batch count and the line says how.
void load_inputs(const TrainArgs& args, const daa::parallel::Communicator& world,
                 daa::core::Config& config, std::unique_ptr<daa::train::Task>& task,
                 std::string* budget_line = nullptr) {
  world.agreed([&] {
    config = daa::core::load_config(args.input, args.overrides);
    daa::core::validate_layout(config, world.size());
    daa::train::check_robust_layout(config, world.size());
    task = daa::train::load_task(config);
    if (budget_line)
      *budget_line = daa::train::apply_memory_budget(
                         config,
                         daa::parallel::make_layout(
                             config, world.size(),
                             daa::model::stage_costs(config, task->inputs(), task->outputs())),
                         task->outputs())
                         .line;
    if (!args.summary_json.empty() && world.is_root()) {
      const auto parent = std::filesystem::absolute(args.summary_json).parent_path();
      if (!std::filesystem::is_directory(parent))
        throw daa::InputError("--summary-json: directory '" + parent.string() + "' does not exist");
    }
  });
}

// The GPU this rank drives, one per rank (parallel::device_for_rank); -1 (none) on a host build.
int gpu_of_this_rank(const daa::parallel::Communicator& world) {
#if defined(KOKKOS_ENABLE_CUDA)
  int visible = 0;
  if (cudaGetDeviceCount(&visible) != cudaSuccess) visible = 0;
  return daa::parallel::device_for_rank(daa::parallel::node_ranks(world), visible);
#else
  (void)world;
  return -1;
#endif
}

// Runs `body(world)` between MPI/Kokkos start and finish with the error policy of the file header:
// agreed failures and divergence end every rank with one message; anything else aborts the job.
template <class Body>
int run_parallel(Body&& body) {
  MPI_Init(nullptr, nullptr);
  daa::parallel::init_error_handling();  // MPI errors reach DAA_MPI_CHECK (file, line, rank)
  int code = 0;
  {
    daa::parallel::Communicator world(MPI_COMM_WORLD, "world");
    daa::kernels::KokkosOptions kokkos;  // warnings off
    try {
      kokkos.device_id = world.agreed([&] { return gpu_of_this_rank(world); });
    } catch (const daa::parallel::AgreedFailure& e) {
      MPI_Finalize();
      return e.exit_code();
    }
    daa::kernels::initialize_kokkos(kokkos);
    try {
      code = body(world);
    } catch (const daa::parallel::AgreedFailure& e) {
      code = e.exit_code();
    } catch (const daa::DivergenceError& e) {
      // Decided from globally reduced values: every rank throws it at the same step.
      if (world.is_root()) print_error(e.what());
      code = int(e.exit_code());
    } catch (const std::exception& e) {
      // Possibly this rank alone: abort the job rather than leave the others waiting.
      const int exit_code = dynamic_cast<const daa::Error*>(&e)
                                ? int(static_cast<const daa::Error&>(e).exit_code())
                                : int(daa::ExitCode::internal);
      print_error(e.what(), world.rank());
      MPI_Abort(MPI_COMM_WORLD, exit_code);
    }
    Kokkos::finalize();
  }
  MPI_Finalize();
  return code;
}

int run_train(const TrainArgs& args) {
  // A signal asks for a checkpoint at the next step boundary (Slurm: --signal=B:USR1@...).
  daa::train::install_checkpoint_signals();
  return run_parallel([&](const daa::parallel::Communicator& world) {
    daa::core::Config config;
    std::unique_ptr<daa::train::Task> task;
    std::string budget_line;
    load_inputs(args, world, config, task, &budget_line);
    if (world.is_root() && !budget_line.empty()) std::cout << budget_line << std::endl;
    daa::train::TrainOptions options;
    options.restart = args.restart;
    const daa::train::TrainResult result = daa::train::run_training(config, *task, world, options);
    if (world.is_root() && !args.summary_json.empty())
      daa::obs::write_text_file(args.summary_json, daa::obs::summary_json(result.summary));
    return result.summary.stopped_by_signal ? int(daa::ExitCode::resubmit) : 0;
  });
}

int run_eval(const TrainArgs& args) {
  return run_parallel([&](const daa::parallel::Communicator& world) {
    daa::core::Config config;
    std::unique_ptr<daa::train::Task> task;
    load_inputs(args, world, config, task);
    const daa::train::CheckpointEvaluation result =
        daa::train::evaluate_checkpoint(config, *task, world, args.checkpoint);
    const daa::train::Evaluation& e = result.evaluation;
    if (world.is_root()) {
      std::string figures =
          fmt::format("test loss {:.4f} | test accuracy {:.2f}% ({} {})", e.loss, 100 * e.accuracy,
                      e.rows, std::string(task->kind()) == "classifier" ? "images" : "tokens");
      if (!e.domains.empty()) {
        figures =
            fmt::format("validation loss {:.4f} | {:.3f} bits/byte |", e.loss, e.bits_per_byte);
        for (std::size_t k = 0; k < e.domains.size(); ++k)
          figures += fmt::format(" {} {:.3f}", e.domains[k], e.domain_bits_per_byte[k]);
        figures +=
            fmt::format(" | next-token accuracy {:.2f}% ({} tokens)", 100 * e.accuracy, e.rows);
      }
      std::cout << fmt::format("eval: {} (step {}) on {} rank{}: {}\n", args.checkpoint,
                               result.step, world.size(), world.size() == 1 ? "" : "s", figures);
    }
    return 0;
  });
}

struct GenerateArgs {
  std::string input;
  std::vector<std::string> overrides;
  daa::train::GenerateOptions options;
};

int run_generate(const GenerateArgs& args) {
  return run_parallel([&](const daa::parallel::Communicator& world) {
    daa::core::Config config;
    std::unique_ptr<daa::train::Task> task;
    world.agreed([&] {
      config = daa::train::generation_config(daa::core::load_config(args.input, args.overrides),
                                             world.size());
      daa::core::validate_layout(config, world.size());
      task = daa::train::load_task(config);
    });
    const daa::train::GeneratedText g =
        daa::train::generate_text(config, *task, world, args.options);
    if (world.is_root()) {
      std::cout << g.prompt << g.text << '\n';
      std::cout << fmt::format(
          "generate: {} (step {}) on {} rank{}: {} prompt tokens + {} new tokens in {:.2f} s, "
          "{:.0f} tokens/s (temperature {}, top-k {}, seed {}){}\n",
          args.options.checkpoint, g.step, world.size(), world.size() == 1 ? "" : "s",
          g.prompt_tokens, g.new_tokens, g.seconds, g.new_tokens / g.seconds,
          args.options.temperature, args.options.top_k, args.options.seed,
          g.context_full ? "; stopped at the model's context length" : "");
    }
    return 0;
  });
}

int run_replay(const daa::io::ReplayOptions& options) {
  return run_parallel([&](const daa::parallel::Communicator& world) {
    // One process and no collectives: errors end here without MPI_Abort's noise.
    try {
      if (world.size() != 1)
        throw daa::InputError("replay runs as one process; start it without mpirun");
      daa::io::replay(options, std::cout);
      return 0;
    } catch (const daa::Error& e) {
      if (world.is_root()) print_error(e.what());
      return int(e.exit_code());
    }
  });
}

// Extracts, tokenizes and writes the token file; prints the summary or the error. Exit code.
int prepare_once(const std::string& input, const std::vector<std::string>& overrides) {
  const auto t0 = std::chrono::steady_clock::now();
  try {
    const daa::core::Config config = daa::core::load_config(input, overrides);
    std::cout << fmt::format("prepare: {} -> {} (tokenizer {})\n", input, config.data.tokens,
                             config.text.tokenizer)
              << std::flush;
    const daa::io::PrepareSummary summary = daa::io::prepare_token_file(config);
    for (const std::string& line : daa::io::describe(summary)) std::cout << line << '\n';
    std::cout << fmt::format(
                     "prepare: done in {:.1f} s\n",
                     std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count())
              << std::flush;
    return 0;
  } catch (const daa::Error& e) {
    print_error(e.what());
    return int(e.exit_code());
  } catch (const std::exception& e) {
    print_error(e.what());
    return int(daa::ExitCode::internal);
  }
}

// One process works. Started by an MPI launcher, rank 0 works and the others wait for its exit
// code, sleeping rather than spinning in MPI so that they leave it the cores; started alone it
// needs no MPI at all (a singleton MPI_Init costs a second or more).
int run_prepare(const std::string& input, const std::vector<std::string>& overrides) {
  const bool launched =
      std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMIX_RANK") || std::getenv("PMI_SIZE");
  if (!launched) return prepare_once(input, overrides);
  return run_parallel([&](const daa::parallel::Communicator& world) {
    int code = world.is_root() ? prepare_once(input, overrides) : 0;
    MPI_Request request;
    DAA_MPI_CHECK(MPI_Ibcast(&code, 1, MPI_INT, 0, world.comm(), &request));
    for (int done = 0; !done;) {
      DAA_MPI_CHECK(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
      if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return code;
  });
}

int run_validate(const std::string& input, const std::vector<std::string>& overrides, int ranks) {
  daa::core::Config config = daa::core::load_config(input, overrides);
  daa::core::validate_layout(config, ranks);  // before the data: layout errors come first
  daa::train::check_robust_layout(config, ranks);
  const std::unique_ptr<daa::train::Task> task = daa::train::load_task(config);
  const daa::parallel::Layout layout = daa::parallel::make_layout(
      config, ranks, daa::model::stage_costs(config, task->inputs(), task->outputs()));
  const std::string budget_line =
      daa::train::apply_memory_budget(config, layout, task->outputs()).line;
  std::cout << fmt::format("{}: valid for {} ranks\n", input, ranks);
  if (!budget_line.empty()) std::cout << budget_line << '\n';
  for (const std::string& line : layout.describe()) std::cout << line << '\n';
  std::cout << "expert registry (home ranks):\n";
  for (const std::string& line :
       daa::parallel::ExpertRegistry::from_layout(layout).describe_homes())
    std::cout << line << '\n';
  {
    const int dp = ranks / config.parallel.pipeline_stages, ep = config.parallel.expert_parallel;
    std::string groups = fmt::format("data-parallel groups of {}", dp);
    if (ep > 1) groups += fmt::format(", expert-data-parallel groups of {}", dp / ep);
    std::cout << fmt::format("robust aggregation: rule {} in mode {} with f = {}{} over {}\n",
                             config.robust.rule, config.robust.mode, config.robust.f,
                             config.robust.nnm ? " (after NNM)" : "", groups);
    if (config.consensus.every_steps > 0)
      std::cout << fmt::format("consensus routing: every {} steps, rule {}, bias step {}\n",
                               config.consensus.every_steps, config.consensus.rule,
                               config.consensus.bias_rate);
    if (!config.byzantine.ranks.empty())
      std::cout << fmt::format("simulated faults: ranks {} send {}\n", config.byzantine.ranks,
                               config.byzantine.attack);
  }
  const int local = config.train.global_batch / ranks;
  std::cout << fmt::format(
      "batch: global {} = {} ranks x {} samples, in {} micro-batch{} of {} per rank\n",
      config.train.global_batch, ranks, local, config.parallel.micro_batches,
      config.parallel.micro_batches == 1 ? "" : "es", local / config.parallel.micro_batches);
  std::cout << "data: " << task->describe() << '\n';
  return 0;
}

// `--param key=value` of `aggregate`, onto the rule's parameters.
void apply_rule_param(const std::string& text, daa::robust::RuleParams& params) {
  const auto eq = text.find('=');
  const std::string key = text.substr(0, eq);
  const std::string value = eq == std::string::npos ? "" : text.substr(eq + 1);
  auto number = [&]() {
    std::size_t used = 0;
    double v = 0;
    try {
      v = std::stod(value, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (value.empty() || used != value.size())
      throw daa::InputError("--param " + text + ": '" + value + "' is not a number");
    return v;
  };
  auto integer = [&]() {
    const double v = number();
    if (v != std::floor(v) || v < 0 || v > 1e9)
      throw daa::InputError("--param " + text + ": expected a non-negative integer");
    return int(v);
  };
  if (key == "multi_krum_m")
    params.multi_krum_m = integer();
  else if (key == "clip_tau")
    params.clip_tau = number();
  else if (key == "clip_iterations")
    params.clip_iterations = integer();
  else if (key == "weiszfeld_iterations")
    params.weiszfeld_iterations = integer();
  else if (key == "weiszfeld_nu")
    params.weiszfeld_nu = number();
  else if (key == "weiszfeld_tolerance")
    params.weiszfeld_tolerance = number();
  else
    throw daa::InputError("--param " + text +
                          ": unknown key; known: multi_krum_m, clip_tau, clip_iterations, "
                          "weiszfeld_iterations, weiszfeld_nu, weiszfeld_tolerance");
}

struct AggregateArgs {
  std::string rule;
  int f = 0;
  bool nnm = false;
  std::vector<std::string> params;
  std::string input;
};

int run_aggregate(const AggregateArgs& args) {
  daa::robust::RuleParams params;
  params.f = args.f;
  params.nnm = args.nnm;
  for (const std::string& p : args.params) apply_rule_param(p, params);
  const daa::robust::Rule rule = daa::robust::parse_rule(args.rule);
  const daa::io::VectorTable table = daa::io::read_vectors_csv(args.input);
  daa::robust::check_requirement(rule, table.rows, args.f, args.input);
  const std::vector<double> result =
      daa::robust::aggregate(rule, table.values, table.rows, table.columns, params);
  std::cout << daa::io::format_csv_row(result) << '\n';
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // A file-size limit (ulimit -f) must fail a write with a message, not kill the rank.
  std::signal(SIGXFSZ, SIG_IGN);
  CLI::App app{
      "daa-swarm: distributed, Byzantine-robust Mixture-of-Experts training on MPI clusters",
      "daa-swarm"};
  app.set_version_flag("--version", std::string("daa-swarm ") + daa::kVersion + " (" +
                                        daa::kBuildType + ", " + daa::kCompiler + ")");
  app.require_subcommand(1);

  TrainArgs train_args;
  CLI::App* train =
      app.add_subcommand("train", "train a model as described by an input file (run under mpirun)");
  train->add_option("input", train_args.input, "input file (TOML)")->required();
  train
      ->add_option("--set", train_args.overrides,
                   "override one key: section.key=value (repeatable)")
      ->type_name("KEY=VALUE");
  train->add_option("--summary-json", train_args.summary_json,
                    "write the final figures as JSON to this file");
  train
      ->add_option("--restart", train_args.restart,
                   "continue from a checkpoint: 'auto' (the newest valid one of the run directory, "
                   "or none) or a checkpoint file")
      ->type_name("auto|FILE");

  TrainArgs eval_args;
  CLI::App* eval = app.add_subcommand(
      "eval", "test loss and accuracy of a checkpoint's model (run under mpirun, any rank count)");
  eval->add_option("input", eval_args.input, "input file (TOML) describing model, data and layout")
      ->required();
  eval->add_option("--checkpoint", eval_args.checkpoint, "checkpoint file (.h5)")->required();
  eval->add_option("--set", eval_args.overrides, "override one key: section.key=value (repeatable)")
      ->type_name("KEY=VALUE");

  GenerateArgs generate_args;
  CLI::App* generate = app.add_subcommand(
      "generate",
      "continue a prompt with a language-model checkpoint, sampling with a key/value cache (one "
      "rank, or experts sharded over the ranks of mpirun)");
  generate->add_option("input", generate_args.input, "input file (TOML) of the language model")
      ->required();
  generate->add_option("--checkpoint", generate_args.options.checkpoint, "checkpoint file (.h5)")
      ->required();
  generate->add_option("--prompt", generate_args.options.prompt, "text to continue")->required();
  generate->add_option("--tokens", generate_args.options.tokens, "new tokens at most (100)")
      ->check(CLI::Range(0, 1 << 20));
  generate
      ->add_option("--temperature", generate_args.options.temperature,
                   "softmax temperature; 0 picks the most likely token (0.8)")
      ->check(CLI::Range(0.0, 100.0));
  generate
      ->add_option("--top-k", generate_args.options.top_k,
                   "sample among the k most likely tokens; 0: all (40)")
      ->check(CLI::Range(0, 1 << 24));
  generate->add_option("--seed", generate_args.options.seed, "sampling seed (1)");
  generate->add_option("--set", generate_args.overrides, "override one key: section.key=value")
      ->type_name("KEY=VALUE");

  daa::io::ReplayOptions replay_options;
  CLI::App* replay = app.add_subcommand(
      "replay",
      "tell a run's story from its checkpoints: history, expert load, specialization, "
      "ledger");
  replay->add_option("path", replay_options.path, "checkpoint file or run directory")->required();
  replay->add_option("--csv", replay_options.csv_dir, "also write the tables as CSV files here")
      ->type_name("DIR");
  replay->add_flag("--json", replay_options.json, "print one JSON document instead of text");

  std::string validate_input;
  std::vector<std::string> validate_overrides;
  int validate_ranks = 1;
  CLI::App* validate = app.add_subcommand(
      "validate", "check an input file and its layout for N ranks, without training");
  validate->add_option("input", validate_input, "input file (TOML)")->required();
  validate->add_option("--ranks", validate_ranks, "number of MPI ranks to check the layout for")
      ->check(CLI::Range(1, 1 << 20));
  validate
      ->add_option("--set", validate_overrides, "override one key: section.key=value (repeatable)")
      ->type_name("KEY=VALUE");

  std::string prepare_input;
  std::vector<std::string> prepare_overrides;
  CLI::App* prepare = app.add_subcommand(
      "prepare",
      "extract the [text] sources, train the tokenizer and write the token file [data] tokens "
      "(one process)");
  prepare->add_option("input", prepare_input, "input file (TOML)")->required();
  prepare
      ->add_option("--set", prepare_overrides, "override one key: section.key=value (repeatable)")
      ->type_name("KEY=VALUE");

  AggregateArgs aggregate_args;
  CLI::App* aggregate = app.add_subcommand(
      "aggregate",
      "apply one robust aggregation rule to vectors, one per CSV row; print the result");
  aggregate
      ->add_option("--rule", aggregate_args.rule,
                   "mean, median, trimmed-mean, geometric-median, krum, multi-krum, bulyan, "
                   "centered-clipping")
      ->required();
  aggregate->add_option("--f", aggregate_args.f, "Byzantine vectors to tolerate")
      ->check(CLI::NonNegativeNumber);
  aggregate->add_flag("--nnm", aggregate_args.nnm, "nearest-neighbour mixing before the rule");
  aggregate->add_option("--param", aggregate_args.params, "rule parameter key=value (repeatable)")
      ->type_name("KEY=VALUE");
  aggregate->add_option("--input", aggregate_args.input, "CSV file, one vector per row")
      ->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Under a launcher every rank hits the same argument error. Rank 0 prints it, and the others
    // wait for that in a barrier: a rank that exited at once could make the launcher kill the job,
    // rank 0 included, before its message is out.
    const bool launched = launched_by_mpi();
    if (launched) {
      MPI_Init(nullptr, nullptr);
      daa::parallel::init_error_handling();
    }
    int code = e.get_exit_code() == 0 ? 0 : int(daa::ExitCode::bad_input);
    if (launcher_rank_zero()) {
      if (e.get_exit_code() == 0) {
        code = app.exit(e);  // --help, --version
      } else {
        print_error(e.what());
        std::fprintf(stderr, "run 'daa-swarm --help' for usage\n");
        std::fflush(stderr);
      }
    }
    if (launched) {
      try {
        DAA_MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
      } catch (const daa::Error& mpi_error) {
        print_error(mpi_error.what());
        MPI_Abort(MPI_COMM_WORLD, int(mpi_error.exit_code()));
      }
      MPI_Finalize();
    }
    return code;
  }

  try {
    if (*train) return run_train(train_args);
    if (*eval) return run_eval(eval_args);
    if (*replay) return run_replay(replay_options);
    if (*aggregate) return run_aggregate(aggregate_args);
    if (*prepare) return run_prepare(prepare_input, prepare_overrides);
    if (*generate) return run_generate(generate_args);
    return run_validate(validate_input, validate_overrides, validate_ranks);
  } catch (const daa::Error& e) {
    print_error(e.what());
    return int(e.exit_code());
  } catch (const std::exception& e) {
    print_error(e.what());
    return int(daa::ExitCode::internal);
  }
}
