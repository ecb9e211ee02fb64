// What a checkpoint holds and how it comes back (see checkpointing.hpp, docs/checkpoint-format.md).
// Parameters and optimizer moments are written by their first holder and read by every replica,
// so a file written on one layout restores on any other. Per-replica state (worker momentum,
// pending consensus counts) keeps one row per replica; a layout with another replica count
// starts every replica from their mean. A tied copy (a pipelined head's embedding table) is never
// written: it reads its original's datasets, which have its name.
#include "checkpointing.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <deque>
#include <filesystem>
#include <map>
#include <sstream>

#include "daa/build_config.hpp"
#include "daa/core/error.hpp"
#include "daa/io/checkpoint.hpp"
#include "daa/obs/report.hpp"
#include "daa/parallel/exchange.hpp"

namespace daa::train {
namespace {

namespace fs = std::filesystem;
using io::ReadRequest;
using U64s = std::vector<std::uint64_t>;

U64s parameter_dims(const model::ParamInfo& p) {
  return p.cols == 1 ? U64s{p.rows} : U64s{p.rows, p.cols};
}

// Whether this rank writes (and gathers) `p`: its first replica, and never a tied copy, whose
// original another stage holds and writes under the same path.
bool first_holder(const model::ParamInfo& p, const parallel::RankPlace& place) {
  if (p.tied_copy) return false;
  return p.kind == model::ParamKind::dense ? place.dp_index == 0 : place.edp_index == 0;
}

// Replica index and count of a parameter's per-replica state (worker momentum).
std::pair<int, int> replica_of(const model::ParamInfo& p, const parallel::Topology& topology) {
  const parallel::RankPlace& place = topology.place();
  const parallel::Layout& layout = topology.layout();
  return p.kind == model::ParamKind::dense
             ? std::pair{place.dp_index, layout.data_parallel}
             : std::pair{place.edp_index, layout.expert_data_parallel()};
}

std::string bias_path(int layer) {
  return fmt::format("/model/layer{}/routing_bias", layer);
}
std::string pending_path(int layer) {
  return fmt::format("/consensus/pending_counts/layer{}", layer);
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return text;
}

template <class View>
std::span<const float> host_span(const View& v, std::size_t offset, std::size_t size) {
  return {v.data() + offset, size};
}

// Sums a whole-run counter over the world onto rank 0.
template <class T>
std::vector<T> sum_on_root(const parallel::Communicator& world, const std::vector<T>& mine) {
  std::vector<T> total(world.is_root() ? mine.size() : 0);
  const MPI_Datatype type = std::is_same_v<T, double> ? MPI_DOUBLE : MPI_INT64_T;
  DAA_MPI_CHECK(MPI_Reduce(mine.data(), world.is_root() ? total.data() : nullptr,
                           parallel::mpi_count(mine.size(), "checkpoint: run counters"), type,
                           MPI_SUM, 0, world.comm()));
  return total;
}

// Every rank's (path, shape) of the parameters it writes, so that every rank knows the whole
// model's datasets and checks a checkpoint against all of them alike.
std::map<std::string, U64s> whole_model_datasets(model::Model& model,
                                                 const parallel::Topology& topology) {
  std::vector<std::pair<std::string, U64s>> mine;
  for (const model::ParamInfo& p : model.params().infos())
    if (first_holder(p, topology.place()))
      mine.emplace_back("/model/" + model.checkpoint_path(p), parameter_dims(p));
  std::map<std::string, U64s> out;
  for (const auto& theirs : parallel::all_gather_object(topology.world(), mine))
    for (const auto& [path, dims] : theirs) out[path] = dims;
  return out;
}

std::string shape_text(const U64s& dims) {
  std::string s = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) s += fmt::format("{}{}", i ? ", " : "", dims[i]);
  return s + "]";
}

// Refuses a checkpoint of another model, naming the first dataset that differs. Every rank
// holds the same lists, so every rank reaches the same verdict.
void check_fits(const io::CheckpointReader& reader, const std::map<std::string, U64s>& model,
                int layers, int experts) {
  const std::string what = "checkpoint: '" + reader.path() + "' does not fit this input: ";
  for (const auto& [path, dims] : model) {
    const io::DatasetInfo* d = reader.find(path);
    if (!d)
      throw InputError(what + "it has no dataset '" + path + "' ([model] or [moe] sizes differ)");
    if (d->dims != dims)
      throw InputError(what + "dataset '" + path + "' is " + shape_text(d->dims) +
                       " in the checkpoint, " + shape_text(dims) + " for this input");
  }
  for (const io::DatasetInfo& d : reader.datasets()) {
    if (d.path.rfind("/model/", 0) != 0 || d.path.ends_with("/routing_bias")) continue;
    if (!model.count(d.path))
      throw InputError(what + "dataset '" + d.path +
                       "' is not part of this input's model ([model] or [moe] sizes differ)");
  }
  for (int l = 0; l < layers; ++l) {
    const io::DatasetInfo* d = reader.find(bias_path(l));
    if (!d || d->dims != U64s{std::uint64_t(experts)})
      throw InputError(what + "dataset '" + bias_path(l) + "' is missing or not [" +
                       std::to_string(experts) + "]");
  }
}

// Refuses a checkpoint of another kind of model by name. Files without the dataset predate the
// language model: they hold the classifier. (A read of its own: the kind must be known before the
// datasets are matched, so the message names the kind rather than a missing tensor. It verifies
// the file once more, which a restart can afford.)
void check_kind(io::CheckpointReader& reader, const std::string& kind) {
  std::string theirs = "classifier";
  if (reader.find("/meta/model_kind")) {
    std::vector<io::ReadRequest> request(1);
    request[0].path = "/meta/model_kind";
    reader.read(request);
    theirs = request[0].out.text();
  }
  if (theirs != kind)
    throw InputError("checkpoint: '" + reader.path() + "' holds a " + theirs +
                     " model; this input trains a " + kind);
}

// The mean of a [replicas, n] block of rows, for a layout with another replica count.
template <class T>
std::vector<T> mean_of_rows(const std::vector<T>& rows, std::size_t n) {
  const std::size_t count = n == 0 ? 0 : rows.size() / n;
  std::vector<double> sum(n, 0.0);
  for (std::size_t r = 0; r < count; ++r)
    for (std::size_t i = 0; i < n; ++i) sum[i] += double(rows[r * n + i]);
  std::vector<T> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = T(count ? sum[i] / double(count) : 0.0);
  return out;
}

// The ledger's arrays by world rank that hold RankAccount's counters and sums; rank and
// quarantined (other types) and the derived reputation are written beside them.
struct LedgerCounter {
  const char* path;
  std::int64_t robust::RankAccount::*field;
};
struct LedgerSum {
  const char* path;
  double robust::RankAccount::*field;
};
using robust::RankAccount;
const LedgerCounter kLedgerCounters[] = {{"/ledger/rounds", &RankAccount::rounds},
                                         {"/ledger/accepted", &RankAccount::accepted},
                                         {"/ledger/rejected", &RankAccount::rejected},
                                         {"/ledger/accusations", &RankAccount::accusations},
                                         {"/ledger/non_finite", &RankAccount::non_finite},
                                         {"/ledger/duplicates", &RankAccount::duplicates}};
const LedgerSum kLedgerSums[] = {{"/ledger/samples", &RankAccount::samples},
                                 {"/ledger/weight_sum", &RankAccount::weight_sum},
                                 {"/ledger/distance_sum", &RankAccount::distance_sum},
                                 {"/ledger/accepted_mass", &RankAccount::accepted_mass},
                                 {"/ledger/rejected_mass", &RankAccount::rejected_mass},
                                 {"/ledger/reward", &RankAccount::reward},
                                 {"/ledger/position_mass", &RankAccount::position_mass},
                                 {"/ledger/closeness_sum", &RankAccount::closeness_sum},
                                 {"/ledger/pull_sum", &RankAccount::pull_sum}};
// Every array by world rank that a restart reads back.
std::vector<std::string> ledger_array_paths() {
  std::vector<std::string> paths{"/ledger/rank", "/ledger/quarantined"};
  for (const LedgerCounter& c : kLedgerCounters) paths.emplace_back(c.path);
  for (const LedgerSum& c : kLedgerSums) paths.emplace_back(c.path);
  return paths;
}

// The history's one-dimensional columns: rank 0 writes them and reads them back on a restart.
// The columns of one table (steps, eval, reputation) have one length.
struct HistoryColumn {
  const char* path;
  std::vector<std::int64_t> RunRecord::*ints = nullptr;
  std::vector<double> RunRecord::*floats = nullptr;
  bool ledger_only = false;  // the reputation table exists only with a ledger
};
const HistoryColumn kHistoryColumns[] = {
    {"/history/steps/step", &RunRecord::step},
    {"/history/steps/loss", nullptr, &RunRecord::loss},
    {"/history/steps/train_accuracy", nullptr, &RunRecord::train_accuracy},
    {"/history/steps/learning_rate", nullptr, &RunRecord::learning_rate},
    {"/history/steps/samples_per_s", nullptr, &RunRecord::samples_per_s},
    {"/history/steps/imbalance", nullptr, &RunRecord::imbalance},
    {"/history/steps/dropped_tokens", &RunRecord::dropped_tokens},
    {"/history/eval/step", &RunRecord::eval_step},
    {"/history/eval/epoch", &RunRecord::eval_epoch},
    {"/history/eval/test_loss", nullptr, &RunRecord::test_loss},
    {"/history/eval/test_accuracy", nullptr, &RunRecord::test_accuracy},
    {"/history/windows/step", &RunRecord::window_step},
    {"/history/reputation/step", &RunRecord::reputation_step, nullptr, true},
    {"/history/reputation/rank", &RunRecord::reputation_rank, nullptr, true},
    {"/history/reputation/rounds", &RunRecord::reputation_rounds, nullptr, true},
    {"/history/reputation/accepted", &RunRecord::reputation_accepted, nullptr, true},
    {"/history/reputation/reputation", nullptr, &RunRecord::reputation, true},
    {"/history/reputation/reward", nullptr, &RunRecord::reputation_reward, true},
};

}  // namespace

RunRecord::RunRecord(int layers_, int experts_, std::vector<std::string> categories_)
    : layers(layers_),
      experts(experts_),
      categories(std::move(categories_)),
      registry_gate_sum(std::size_t(layers_ * experts_), 0.0),
      specialization(std::size_t(layers_ * experts_) * categories.size(), 0) {}

SavedCheckpoint save_checkpoint(const TrainingParts& parts, std::int64_t step,
                                const std::string& dir) {
  const parallel::Topology& topology = parts.topology;
  const parallel::Communicator& world = topology.world();
  const parallel::RankPlace& place = topology.place();
  const parallel::Layout& layout = topology.layout();
  const core::Config& config = parts.config;
  const auto& params = parts.model.params();
  RunRecord& record = *parts.record;
  io::CheckpointWriter writer(world);

  // Parameters and AdamW moments by their first holders.
  const auto values = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), params.values());
  const auto m =
      Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), parts.optimizer->first_moment());
  const auto v =
      Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), parts.optimizer->second_moment());
  RobustTraining::State robust = parts.robust->state();
  const bool momentum = config.robust.momentum > 0;
  if (momentum) robust.momentum.resize(params.size(), 0.0f);
  for (const model::ParamInfo& p : params.infos()) {
    const std::string path = parts.model.checkpoint_path(p);
    if (first_holder(p, place)) {
      writer.add_f32("/model/" + path, host_span(values, p.offset, p.size()), parameter_dims(p));
      writer.add_f32("/optimizer/m/" + path, host_span(m, p.offset, p.size()), parameter_dims(p));
      writer.add_f32("/optimizer/v/" + path, host_span(v, p.offset, p.size()), parameter_dims(p));
    }
    // A tied copy's momentum rows are the original's (same path), written by the first stage.
    if (momentum && !p.tied_copy) {
      const auto [replica, replicas] = replica_of(p, topology);
      U64s dims = parameter_dims(p);
      dims.insert(dims.begin(), std::uint64_t(replicas));
      writer.add(
          {"/robust/momentum/" + path, io::ElementType::f32, dims, std::uint64_t(replica), 1,
           std::as_bytes(std::span<const float>(robust.momentum.data() + p.offset, p.size()))});
    }
  }
  // Routing bias (identical over the stage's data-parallel group) and pending consensus counts.
  const int experts = config.moe.experts;
  std::vector<std::vector<float>> biases;
  for (int l = place.first_moe_layer; l < place.last_moe_layer; ++l) {
    const auto bias =
        Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), parts.model.routing_bias(l));
    biases.emplace_back(bias.data(), bias.data() + experts);
    if (place.dp_index == 0) writer.add_f32(bias_path(l), biases.back(), {std::uint64_t(experts)});
    if (config.consensus.every_steps > 0)
      writer.add({pending_path(l), io::ElementType::f64,
                  U64s{std::uint64_t(layout.data_parallel), std::uint64_t(experts)},
                  std::uint64_t(place.dp_index), 1,
                  std::as_bytes(std::span<const double>(
                      parts.consensus_counts->data() +
                          std::size_t(l - place.first_moe_layer) * std::size_t(experts),
                      std::size_t(experts)))});
  }

  // Whole-run counters, summed over the ranks that counted them. The registry's token counts are
  // the sum of the history's per-step expert load, which rank 0 already holds.
  std::vector<std::int64_t> tokens(record.registry_gate_sum.size(), 0);
  for (std::size_t i = 0; i < record.expert_load.size(); ++i)
    tokens[i % tokens.size()] += record.expert_load[i];
  const std::vector<double> gate_sum = sum_on_root(world, record.registry_gate_sum);
  const std::vector<std::int64_t> specialization = sum_on_root(world, record.specialization);

  // Everything else is the same on every rank or kept by rank 0: rank 0 writes it.
  std::vector<std::int64_t> stage_blocks(layout.blocks_per_stage.begin(),
                                         layout.blocks_per_stage.end());
  const std::string config_text = core::to_toml(config);
  std::deque<std::vector<std::int64_t>> ledger_ints;  // a deque keeps its elements in place
  std::deque<std::vector<double>> ledger_floats;
  std::vector<double> reputations;
  std::vector<std::int64_t> suspects;
  std::string hosts;
  const auto L = std::uint64_t(record.layers), E = std::uint64_t(record.experts),
             C = std::uint64_t(record.categories.size());
  std::string category_names;
  for (const std::string& c : record.categories) category_names += c + '\n';
  if (world.is_root()) {
    writer.add_text("/meta/format", io::kCheckpointFormatName);
    writer.add_scalar("/meta/format_version", io::kCheckpointFormatVersion);
    writer.add_text("/meta/program_version", kVersion);
    writer.add_text("/meta/created_utc", utc_now());
    writer.add_text("/config/input", config_text);
    writer.add_text("/meta/model_kind", parts.model.kind());
    writer.add_scalar("/layout/ranks", std::int64_t(layout.ranks));
    writer.add_scalar("/layout/pipeline_stages", std::int64_t(layout.pipeline_stages));
    writer.add_scalar("/layout/data_parallel", std::int64_t(layout.data_parallel));
    writer.add_scalar("/layout/expert_parallel", std::int64_t(layout.expert_parallel));
    writer.add_scalar("/layout/micro_batches", std::int64_t(config.parallel.micro_batches));
    writer.add_i64("/layout/stage_blocks", stage_blocks, {stage_blocks.size()});
    writer.add_scalar("/state/step", step);
    writer.add_scalar("/state/epoch", step / parts.steps_per_epoch);
    writer.add_scalar("/state/batch_in_epoch", step % parts.steps_per_epoch);
    writer.add_scalar("/state/steps_per_epoch", parts.steps_per_epoch);
    writer.add_scalar("/state/total_steps", parts.total_steps);
    writer.add_scalar("/state/seed", std::int64_t(config.run.seed));
    writer.add_scalar("/state/epoch_correct", record.epoch_correct);
    writer.add_scalar("/state/epoch_samples", record.epoch_samples);
    if (momentum) writer.add_scalar("/robust/momentum_steps", robust.momentum_steps);
    writer.add_i64("/registry/tokens", tokens, {L, E});
    writer.add_f64("/registry/gate_sum", gate_sum, {L, E});
    writer.add_i64("/specialization/tokens", specialization, {L, E, C});
    writer.add_text("/specialization/categories", category_names);
    for (const HistoryColumn& c : kHistoryColumns) {
      if (c.ledger_only && !robust.ledger) continue;
      if (c.ints)
        writer.add_i64(c.path, record.*c.ints, {(record.*c.ints).size()});
      else
        writer.add_f64(c.path, record.*c.floats, {(record.*c.floats).size()});
    }
    writer.add_i64("/history/steps/expert_load", record.expert_load, {record.step.size(), L, E});
    writer.add_f32("/history/windows/routing_bias", record.window_bias,
                   {record.window_step.size(), L, E});
    if (robust.ledger) {
      const std::vector<RankAccount>& accounts = robust.ledger->accounts();
      const auto ranks = std::uint64_t(accounts.size());
      auto& rank = ledger_ints.emplace_back();
      auto& quarantined = ledger_ints.emplace_back();
      for (const RankAccount& a : accounts) {
        rank.push_back(a.rank);
        quarantined.push_back(a.quarantined ? 1 : 0);
        reputations.push_back(a.reputation());
        hosts += a.host + "\n";
      }
      writer.add_i64("/ledger/rank", rank, {ranks});
      writer.add_i64("/ledger/quarantined", quarantined, {ranks});
      for (const LedgerCounter& c : kLedgerCounters) {
        auto& column = ledger_ints.emplace_back();
        for (const RankAccount& a : accounts) column.push_back(a.*c.field);
        writer.add_i64(c.path, column, {ranks});
      }
      for (const LedgerSum& c : kLedgerSums) {
        auto& column = ledger_floats.emplace_back();
        for (const RankAccount& a : accounts) column.push_back(a.*c.field);
        writer.add_f64(c.path, column, {ranks});
      }
      for (int r : robust.ledger->suspects()) suspects.push_back(r);
      writer.add_f64("/ledger/reputation", reputations, {ranks});
      writer.add_text("/ledger/host", hosts);
      writer.add_i64("/ledger/suspects", suspects, {suspects.size()});
      writer.add_scalar("/ledger/unresolved_rounds", robust.unresolved_rounds);
      std::string notes;
      for (const std::string& n : robust.notes) notes += n + "\n";
      writer.add_text("/ledger/notes", notes);
    }
  }

  SavedCheckpoint saved;
  saved.path = (fs::path(dir) / io::checkpoint_file_name(step)).string();
  const std::string temp = saved.path + ".tmp";
  try {
    saved.bytes = writer.write(temp);
  } catch (const Error& e) {
    throw Error(std::string(e.what()) + "; the earlier checkpoints are untouched");
  }
  std::string failure;
  if (world.is_root()) try {
      io::publish_checkpoint(dir, temp, saved.path, step, config.checkpoint.keep);
    } catch (const std::exception& e) {
      failure = std::string("checkpoint: ") + e.what();
    }
  if (const std::string agreed = world.agree_on_message(failure); !agreed.empty())
    throw Error(agreed);
  return saved;
}

std::int64_t load_checkpoint(const TrainingParts& parts, const std::string& file, LoadScope scope,
                             std::vector<std::string>& notes) {
  const parallel::Topology& topology = parts.topology;
  const parallel::Communicator& world = topology.world();
  const parallel::RankPlace& place = topology.place();
  const parallel::Layout& layout = topology.layout();
  const core::Config& config = parts.config;
  auto& params = parts.model.params();
  const bool everything = scope == LoadScope::everything;
  const int experts = config.moe.experts;

  io::CheckpointReader reader(world, file);
  check_kind(reader, parts.model.kind());
  check_fits(reader, whole_model_datasets(parts.model, topology), layout.moe_layers(), experts);

  // What this rank asks for; indices into `requests` by name.
  std::vector<ReadRequest> requests;
  std::map<std::string, std::size_t> index;
  auto want = [&](const std::string& path, bool optional = false, std::uint64_t row = 0,
                  std::uint64_t rows = ReadRequest::kAllRows) {
    index[path] = requests.size();
    requests.push_back({path, row, rows, optional, {}});
  };
  auto got = [&](const std::string& path) -> const io::DatasetValues& {
    return requests[index.at(path)].out;
  };
  auto has = [&](const std::string& path) { return index.count(path) && !got(path).bytes.empty(); };
  auto scalar = [&](const std::string& path) { return got(path).as<std::int64_t>().at(0); };

  for (const char* p :
       {"/state/step", "/layout/ranks", "/layout/pipeline_stages", "/layout/data_parallel",
        "/layout/expert_parallel", "/state/steps_per_epoch"})
    want(p);
  for (const model::ParamInfo& p : params.infos()) {
    const std::string path = parts.model.checkpoint_path(p);
    want("/model/" + path);
    // A tied copy's gradient is always zero (the first stage trains the table), so its moments
    // and worker momentum stay zero, as in a run without the restart.
    if (!everything || p.tied_copy) continue;
    want("/optimizer/m/" + path);
    want("/optimizer/v/" + path);
  }
  for (int l = place.first_moe_layer; l < place.last_moe_layer; ++l) want(bias_path(l));

  RobustTraining::State* robust = nullptr;
  std::optional<RobustTraining::State> robust_state;
  const bool momentum = everything && config.robust.momentum > 0;
  const bool consensus = everything && config.consensus.every_steps > 0;
  if (everything) {
    robust_state.emplace(parts.robust->state());
    robust = &*robust_state;
    for (const char* p : {"/state/epoch_correct", "/state/epoch_samples"}) want(p);
    if (momentum) {
      want("/robust/momentum_steps", true);
      for (const model::ParamInfo& p : params.infos()) {
        if (p.tied_copy) continue;
        const std::string path = "/robust/momentum/" + parts.model.checkpoint_path(p);
        const io::DatasetInfo* d = reader.find(path);
        const auto [replica, replicas] = replica_of(p, topology);
        const bool same = d && !d->dims.empty() && d->dims[0] == std::uint64_t(replicas);
        want(path, true, same ? std::uint64_t(replica) : 0, same ? 1 : ReadRequest::kAllRows);
      }
    }
    if (consensus)
      for (int l = place.first_moe_layer; l < place.last_moe_layer; ++l) {
        const io::DatasetInfo* d = reader.find(pending_path(l));
        const bool same =
            d && !d->dims.empty() && d->dims[0] == std::uint64_t(layout.data_parallel);
        want(pending_path(l), true, same ? std::uint64_t(place.dp_index) : 0,
             same ? 1 : ReadRequest::kAllRows);
      }
    if (robust->ledger) {
      for (const std::string& p : ledger_array_paths()) want(p, true);
      for (const char* p : {"/ledger/host", "/ledger/unresolved_rounds", "/ledger/notes"})
        want(p, true);
    }
    if (world.is_root()) {
      for (const char* p : {"/registry/gate_sum", "/specialization/tokens",
                            "/history/steps/expert_load", "/history/windows/routing_bias"})
        want(p);
      for (const HistoryColumn& c : kHistoryColumns) want(c.path, c.ledger_only);
    }
  }
  reader.read(requests);  // verified as a whole before anything below changes
  // The ledger's columns must agree in length (a file written by another tool may not); the same
  // verdict on every rank, before anything changes.
  if (robust && robust->ledger && has("/ledger/rank")) {
    const std::size_t ranks = got("/ledger/rank").bytes.size() / 8;
    auto check = [&](const std::string& path) {
      if (got(path).bytes.size() / 8 != ranks)
        throw io::CheckpointError(fmt::format("'{}': dataset '{}' has {} entries, /ledger/rank {}",
                                              file, path, got(path).bytes.size() / 8, ranks));
    };
    for (const std::string& p : ledger_array_paths()) check(p);
  }

  const std::int64_t step = scalar("/state/step");
  const auto written_by = fmt::format(
      "{} ranks (PP {}, DP {}, EP {})", scalar("/layout/ranks"), scalar("/layout/pipeline_stages"),
      scalar("/layout/data_parallel"), scalar("/layout/expert_parallel"));
  notes.push_back(fmt::format("restart: '{}' at step {}, written by {}", file, step, written_by));

  auto host_values = Kokkos::create_mirror_view(params.values());
  auto host_m = everything ? Kokkos::create_mirror_view(parts.optimizer->first_moment())
                           : decltype(host_values)();
  auto host_v = everything ? Kokkos::create_mirror_view(parts.optimizer->second_moment())
                           : decltype(host_values)();
  for (const model::ParamInfo& p : params.infos()) {
    const std::string path = parts.model.checkpoint_path(p);
    auto place_values = [&](const std::string& dataset, auto& host) {
      const std::vector<float> data = got(dataset).as<float>();
      std::copy(data.begin(), data.end(), host.data() + p.offset);
    };
    place_values("/model/" + path, host_values);
    if (!everything) continue;
    if (p.tied_copy) {
      std::fill_n(host_m.data() + p.offset, p.size(), 0.0f);
      std::fill_n(host_v.data() + p.offset, p.size(), 0.0f);
      continue;
    }
    place_values("/optimizer/m/" + path, host_m);
    place_values("/optimizer/v/" + path, host_v);
  }
  Kokkos::deep_copy(params.values(), host_values);
  if (everything) {
    Kokkos::deep_copy(parts.optimizer->first_moment(), host_m);
    Kokkos::deep_copy(parts.optimizer->second_moment(), host_v);
  }
  for (int l = place.first_moe_layer; l < place.last_moe_layer; ++l) {
    auto bias = Kokkos::create_mirror_view(parts.model.routing_bias(l));
    const std::vector<float> data = got(bias_path(l)).as<float>();
    std::copy(data.begin(), data.end(), bias.data());
    Kokkos::deep_copy(parts.model.routing_bias(l), bias);
  }
  if (!everything) return step;

  RunRecord& record = *parts.record;
  record.epoch_correct = got("/state/epoch_correct").as<double>().at(0);
  record.epoch_samples = got("/state/epoch_samples").as<double>().at(0);
  if (scalar("/state/steps_per_epoch") != parts.steps_per_epoch)
    notes.push_back(fmt::format(
        "restart: an epoch had {} steps in the checkpoint and has {} now ([train] global_batch or "
        "the data changed); the data order continues from step {}",
        scalar("/state/steps_per_epoch"), parts.steps_per_epoch, step));

  if (momentum) {
    robust->momentum.assign(params.size(), 0.0f);
    bool averaged = false, missing = false;
    for (const model::ParamInfo& p : params.infos()) {
      if (p.tied_copy) continue;  // zero, as above
      const std::string path = "/robust/momentum/" + parts.model.checkpoint_path(p);
      if (!has(path)) {
        missing = true;
        continue;
      }
      std::vector<float> rows = got(path).as<float>();
      if (rows.size() != p.size()) {
        rows = mean_of_rows(rows, p.size());
        averaged = true;
      }
      std::copy(rows.begin(), rows.end(), robust->momentum.begin() + std::ptrdiff_t(p.offset));
    }
    robust->momentum_steps = has("/robust/momentum_steps") ? scalar("/robust/momentum_steps") : 0;
    if (missing) {
      robust->momentum_steps = 0;
      robust->momentum.clear();
      notes.push_back("restart: the checkpoint has no worker momentum; it starts from zero");
    } else if (averaged) {
      notes.push_back(
          "restart: the replica count changed; every rank's worker momentum starts from the "
          "mean of the checkpoint's replicas");
    }
  }
  if (consensus)
    for (int l = place.first_moe_layer; l < place.last_moe_layer; ++l) {
      if (!has(pending_path(l))) continue;
      std::vector<double> rows = got(pending_path(l)).as<double>();
      if (rows.size() != std::size_t(experts)) {
        // Another data-parallel width: the counts so far, shared out evenly.
        std::vector<double> share = mean_of_rows(rows, std::size_t(experts));
        const double scale = double(rows.size() / std::size_t(experts)) / layout.data_parallel;
        for (double& x : share) x *= scale;
        rows = share;
      }
      std::copy(rows.begin(), rows.end(),
                parts.consensus_counts->begin() +
                    std::ptrdiff_t(l - place.first_moe_layer) * std::ptrdiff_t(experts));
    }
  if (robust->ledger) {
    if (!has("/ledger/rank")) {
      notes.push_back("restart: the checkpoint has no ledger; it starts empty");
    } else if (got("/ledger/rank").bytes.size() / 8 != std::size_t(world.size())) {
      notes.push_back(fmt::format(
          "restart: the checkpoint's ledger covers {} ranks, this run has {}; it starts empty",
          got("/ledger/rank").bytes.size() / 8, world.size()));
    } else {
      std::vector<RankAccount> accounts = robust->ledger->accounts();
      const std::vector<std::int64_t> rank = got("/ledger/rank").as<std::int64_t>();
      const std::vector<std::int64_t> quarantined = got("/ledger/quarantined").as<std::int64_t>();
      for (std::size_t r = 0; r < accounts.size(); ++r) {
        accounts[r].rank = int(rank[r]);
        accounts[r].quarantined = quarantined[r] != 0;
      }
      for (const LedgerCounter& c : kLedgerCounters) {
        const std::vector<std::int64_t> column = got(c.path).as<std::int64_t>();
        for (std::size_t r = 0; r < accounts.size(); ++r) accounts[r].*c.field = column[r];
      }
      for (const LedgerSum& c : kLedgerSums) {
        const std::vector<double> column = got(c.path).as<double>();
        for (std::size_t r = 0; r < accounts.size(); ++r) accounts[r].*c.field = column[r];
      }
      robust->ledger->restore_accounts(std::move(accounts));
      for (const robust::RankAccount& a : robust->ledger->accounts())
        robust->quarantined[std::size_t(a.rank)] = a.quarantined ? 1 : 0;
      robust->unresolved_rounds = scalar("/ledger/unresolved_rounds");
      robust->notes.clear();
      std::istringstream lines(got("/ledger/notes").text());
      for (std::string line; std::getline(lines, line);)
        if (!line.empty()) robust->notes.push_back(line);
    }
  }

  if (world.is_root()) {
    auto ints = [&](const std::string& p) { return got(p).as<std::int64_t>(); };
    auto floats = [&](const std::string& p) { return got(p).as<double>(); };
    record.registry_gate_sum = floats("/registry/gate_sum");
    record.specialization = ints("/specialization/tokens");
    record.expert_load = ints("/history/steps/expert_load");
    record.window_bias = got("/history/windows/routing_bias").as<float>();
    for (const HistoryColumn& c : kHistoryColumns) {
      if (!reader.find(c.path)) continue;  // the reputation table of a run without a ledger
      if (c.ints)
        record.*c.ints = ints(c.path);
      else
        record.*c.floats = floats(c.path);
    }
  }
  return step;
}

// All parameters in the order a one-rank model holds them, on rank 0 (empty elsewhere): each rank
// sends what it holds first (its dense parameters if it is data-parallel index 0 of its stage,
// its expert shard if it is the first holder; no tied copy), named, and rank 0 places them by name
// in the layout of a one-rank model. Independent of the layout, so checksums compare across
// layouts.
std::vector<float> gather_parameters(const model::ParamStore<float>& params,
                                     const parallel::Topology& topology,
                                     const model::ParamStore<float>& whole_model) {
  const parallel::Communicator& world = topology.world();
  const parallel::RankPlace& place = topology.place();
  auto host = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), params.values());
  std::vector<std::string> names;
  std::vector<float> values;
  for (const model::ParamInfo& p : params.infos()) {
    if (!first_holder(p, place)) continue;
    names.push_back(p.name);
    values.insert(values.end(), host.data() + p.offset, host.data() + p.offset + p.size());
  }
  // The names are a control message; the values, bulk numbers, one MPI_Gatherv onto rank 0.
  const std::vector<std::vector<std::string>> all_names = parallel::all_gather_object(world, names);
  const bool root = world.rank() == 0;
  std::vector<int> value_counts(root ? world.size() : 0), value_displs(root ? world.size() : 0);
  const int count = parallel::mpi_count(values.size(), "checkpoint: this rank's parameters");
  DAA_MPI_CHECK(MPI_Gather(&count, 1, MPI_INT, value_counts.data(), 1, MPI_INT, 0, world.comm()));
  // Rank 0 receives every rank's parameters into one buffer: its offsets are counts too.
  std::size_t gathered = 0;
  for (std::size_t r = 0; r < value_counts.size(); ++r) {
    value_displs[r] = parallel::mpi_count(gathered, "checkpoint: gathered parameters' offset");
    gathered += std::size_t(value_counts[r]);
  }
  std::vector<float> all_values(gathered);
  DAA_MPI_CHECK(MPI_Gatherv(values.data(), count, MPI_FLOAT, all_values.data(), value_counts.data(),
                            value_displs.data(), MPI_FLOAT, 0, world.comm()));
  if (!root) return {};
  // The one-rank layout: names, offsets and sizes (its own values are not used).
  std::map<std::string, const model::ParamInfo*> by_name;
  for (const model::ParamInfo& p : whole_model.infos()) by_name[p.name] = &p;
  std::vector<float> global(whole_model.size());
  std::size_t placed = 0, cursor = 0;
  for (const std::vector<std::string>& theirs : all_names)
    for (const std::string& name : theirs) {
      const auto it = by_name.find(name);
      if (it == by_name.end() || cursor + it->second->size() > all_values.size())
        throw Error("train::gather_parameters: unexpected parameter '" + name + "'");
      std::copy_n(all_values.begin() + std::ptrdiff_t(cursor), it->second->size(),
                  global.begin() + std::ptrdiff_t(it->second->offset));
      cursor += it->second->size();
      placed += it->second->size();
    }
  if (placed != global.size())
    throw Error("train::gather_parameters: gathered " + std::to_string(placed) + " of " +
                std::to_string(global.size()) + " parameters");
  return global;
}

// --restart: the checkpoint to continue from, loaded into `parts`; returns its step (0: none).
// With "auto", rank 0 lists the run directory's checkpoints and every rank tries them in that
// order, skipping (with a warning) those that fail verification. Collective; every error is
// thrown on every rank alike.
std::int64_t resume(const TrainingParts& parts, const std::string& restart, const std::string& dir,
                    obs::ProgressLog& log) {
  const parallel::Communicator& world = parts.topology.world();
  std::vector<std::string> candidates;
  if (restart == "auto") {
    std::vector<std::string> notes;
    if (world.is_root())
      for (const io::CheckpointCandidate& c : io::restart_candidates(dir, notes))
        candidates.push_back(c.path);
    for (const std::string& note : notes) log.line("restart: " + note);
    candidates = parallel::broadcast_object(world, candidates);
  } else {
    candidates.push_back(restart);
  }
  for (const std::string& file : candidates) {
    std::vector<std::string> notes;
    try {
      const std::int64_t step = load_checkpoint(parts, file, LoadScope::everything, notes);
      for (const std::string& note : notes) log.line(note);
      return step;
    } catch (const io::CheckpointError& e) {
      if (restart != "auto") throw;
      log.line(std::string("warning: ") + e.what() + "; trying the next older checkpoint");
    }
  }
  log.line("restart: no valid checkpoint in '" + dir + "'; starting from step 0");
  return 0;
}

}  // namespace daa::train
