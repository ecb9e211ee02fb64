// The robust all-reduce over a communicator (see daa/robust/allreduce.hpp). Sharded mode: chunk c
// of every contribution goes to its holders c, c+1, ..., c+h-1; summaries and results of each
// chunk are compared across its holders, and a chunk they disagree on is recomputed by every rank
// from an all-gather of that chunk, the holders that published something else being accused.
#include "daa/robust/allreduce.hpp"

#include <algorithm>
#include <cstring>

#include "daa/core/error.hpp"
#include "name_table.hpp"
#include "round_engine.hpp"

namespace daa::robust {
namespace {

constexpr NameOf<Mode> kModeNames[] = {
    {Mode::allreduce, "allreduce"}, {Mode::replicated, "replicated"}, {Mode::sharded, "sharded"}};

std::vector<char> active_mask(std::span<const char> excluded, int n) {
  std::vector<char> active(n, 1);
  if (excluded.empty()) return active;
  if (int(excluded.size()) != n)
    throw Error("robust all-reduce: " + std::to_string(excluded.size()) +
                " exclusion flags for a group of " + std::to_string(n));
  for (int i = 0; i < n; ++i) active[i] = excluded[i] ? 0 : 1;
  return active;
}

RoundReport to_round_report(engine::RoundReport&& r, int n) {
  RoundReport out;
  out.weight = std::move(r.weight);
  out.distance = std::move(r.distance);
  out.along = std::move(r.along);
  out.non_finite = std::move(r.non_finite);
  out.accused.assign(n, 0);
  return out;
}

int wrap(int i, int n) {
  return ((i % n) + n) % n;
}

}  // namespace

Mode parse_mode(const std::string& name) {
  return parse_name<Mode>(kModeNames, name, "robust mode", "modes");
}

const char* to_string(Mode mode) {
  return name_of<Mode>(kModeNames, mode);
}

RobustAllReduce::RobustAllReduce(Rule rule, const RuleParams& params, Mode mode)
    : rule_(rule), params_(params), mode_(mode) {
  if (mode == Mode::allreduce && rule != Rule::mean)
    throw ConfigError(
        std::string("[robust] mode = \"allreduce\" only sums (rule \"mean\"); rule \"") +
        to_string(rule) + "\" needs mode \"replicated\" or \"sharded\"");
  if (params.f < 0) throw ConfigError("[robust] f = " + std::to_string(params.f) + " must be >= 0");
}

int RobustAllReduce::holders(int n) const {
  return std::min(n, std::max(2, params_.f + 1));
}

void RobustAllReduce::check_group(int n, int excluded, const std::string& group_name) const {
  check_requirement(rule_, n - excluded, params_.f, group_name);
  check_params(rule_, n - excluded, params_);
}

RoundReport RobustAllReduce::reduce(std::span<float> values, const parallel::Communicator& group,
                                    const RoundOptions& options) const {
  const int n = group.size();
  if (mode_ == Mode::allreduce) {
    if (n > 1) {
      group.allreduce_sum(values.data(), values.size());
      const float scale = 1.0f / float(n);
      for (float& v : values) v *= scale;
    }
    return {};
  }
  const std::vector<char> active = active_mask(options.excluded, n);
  // With as many holders as members every rank would compute every chunk anyway: replicated
  // mode does that without the cross-checks, and gives the same bits.
  if (mode_ == Mode::replicated || holders(n) >= n)
    return reduce_replicated(values, group, active, options.report_rows);
  return reduce_sharded(values, group, active, options);
}

RoundReport RobustAllReduce::reduce_replicated(std::span<float> values,
                                               const parallel::Communicator& group,
                                               std::span<const char> active,
                                               bool report_rows) const {
  const int n = group.size();
  const std::size_t d = values.size();
  received_.resize(1);
  std::vector<float>& rows = received_[0];
  rows.resize(d * std::size_t(n));
  const int count = parallel::mpi_count(d, "robust all-reduce: one contribution");
  DAA_MPI_CHECK(
      MPI_Allgather(values.data(), count, MPI_FLOAT, rows.data(), count, MPI_FLOAT, group.comm()));
  // The same n chunks as sharded mode, so both modes give the same bits.
  return to_round_report(engine::run_local<float, float>(rule_, params_, rows, n, d, n, active,
                                                         values.data(), report_rows),
                         n);
}

namespace {

// One sharded round's state on this rank: the chunks it holds and the rows of them it received.
struct ShardedRound {
  int n = 0, h = 0, me = 0;
  engine::Chunking chunking;
  std::vector<int> order;  // engine order of the members (active first)
  int n_active = 0;
  // slot k holds chunk (me - k) mod n: rows[k] is n x size(chunk), source-major.
  std::vector<std::vector<float>>& rows;
  explicit ShardedRound(std::vector<std::vector<float>>& buffers) : rows(buffers) {}
  // chunks every rank recomputed from an all-gather (disputed ones), with all rows of them.
  std::vector<std::vector<float>> replicated;  // per chunk, empty unless replicated

  int chunk_of_slot(int k) const { return wrap(me - k, n); }
  int holder(int c, int k) const { return wrap(c + k, n); }
  // Engine views of chunk c from `data` (n x len, source-major).
  engine::ChunkRows<float> view(const std::vector<float>& data, int c, int count) const {
    engine::ChunkRows<float> v;
    v.len = chunking.size(c);
    for (int k = 0; k < count; ++k) v.rows.push_back(data.data() + std::size_t(order[k]) * v.len);
    return v;
  }
  const std::vector<float>& rows_of(int c) const {
    if (!replicated[c].empty()) return replicated[c];
    for (int k = 0; k < h; ++k)
      if (chunk_of_slot(k) == c) return rows[k];
    throw Error("robust all-reduce: chunk " + std::to_string(c) + " is not held here");
  }
};

// Every rank contributes chunk c of its own contribution for each c in `chunks` (ascending; the
// same list on every rank); afterwards every rank holds all rows of those chunks.
void fetch_replicated(ShardedRound& s, std::span<const float> values,
                      const std::vector<int>& chunks, const parallel::Communicator& group) {
  std::size_t total = 0;
  for (int c : chunks) total += s.chunking.size(c);
  std::vector<float> mine, all(total * std::size_t(s.n));
  mine.reserve(total);
  for (int c : chunks)
    mine.insert(mine.end(), values.begin() + std::ptrdiff_t(s.chunking.begin(c)),
                values.begin() + std::ptrdiff_t(s.chunking.begin(c) + s.chunking.size(c)));
  const int count = parallel::mpi_count(total, "robust all-reduce: replicated chunks");
  DAA_MPI_CHECK(
      MPI_Allgather(mine.data(), count, MPI_FLOAT, all.data(), count, MPI_FLOAT, group.comm()));
  std::size_t offset = 0;
  for (int c : chunks) {
    const std::size_t len = s.chunking.size(c);
    std::vector<float>& rows = s.replicated[c];
    rows.resize(len * std::size_t(s.n));
    for (int src = 0; src < s.n; ++src)
      std::copy_n(all.data() + std::size_t(src) * total + offset, len,
                  rows.data() + std::size_t(src) * len);
    offset += len;
  }
}

// A phase's summaries: each holder publishes its h chunk summaries (size `size` each); chunks whose
// holders disagree are recomputed by everyone with `compute(c, out)`, and holders whose summary
// differs from the recomputation are accused. Returns the chunk-ordered sum.
template <class Compute>
std::vector<double> agree_on_summaries(ShardedRound& s, std::size_t size,
                                       std::span<const float> values,
                                       const parallel::Communicator& group,
                                       std::vector<char>& accused, int& disputed_count,
                                       Compute compute) {
  std::vector<double> mine(size * std::size_t(s.h)), all(mine.size() * std::size_t(s.n));
  for (int k = 0; k < s.h; ++k) {
    const int c = s.chunk_of_slot(k);
    if (s.replicated[c].empty()) compute(c, mine.data() + std::size_t(k) * size);
  }
  const int count = parallel::mpi_count(mine.size(), "robust all-reduce: chunk summaries");
  DAA_MPI_CHECK(
      MPI_Allgather(mine.data(), count, MPI_DOUBLE, all.data(), count, MPI_DOUBLE, group.comm()));
  auto copy = [&](int c, int k) {
    return all.data() + std::size_t(s.holder(c, k)) * mine.size() + std::size_t(k) * size;
  };
  std::vector<int> disputed;
  for (int c = 0; c < s.n; ++c) {
    if (!s.replicated[c].empty()) continue;
    for (int k = 1; k < s.h; ++k)
      if (std::memcmp(copy(c, 0), copy(c, k), size * sizeof(double)) != 0) {
        disputed.push_back(c);
        break;
      }
  }
  if (!disputed.empty()) fetch_replicated(s, values, disputed, group);
  disputed_count += int(disputed.size());
  std::vector<double> total(size, 0.0), own(size);
  for (int c = 0; c < s.n; ++c) {
    const bool recompute = !s.replicated[c].empty();
    if (recompute) compute(c, own.data());
    if (std::find(disputed.begin(), disputed.end(), c) != disputed.end())
      for (int k = 0; k < s.h; ++k)
        if (std::memcmp(copy(c, k), own.data(), size * sizeof(double)) != 0)
          accused[s.holder(c, k)] = 1;
    engine::accumulate(total, recompute ? std::span<const double>(own)
                                        : std::span<const double>(copy(c, 0), size));
  }
  return total;
}

}  // namespace

RoundReport RobustAllReduce::reduce_sharded(std::span<float> values,
                                            const parallel::Communicator& group,
                                            std::span<const char> active,
                                            const RoundOptions& options) const {
  const bool lie = options.lie_as_owner;
  ShardedRound s(received_);
  s.n = group.size();
  s.h = holders(s.n);
  s.me = group.rank();
  s.chunking = {values.size(), s.n};
  s.order = engine::engine_order(active, s.n, &s.n_active);
  s.rows.resize(s.h);
  s.replicated.resize(s.n);
  const int n = s.n, n_act = s.n_active;

  // Scatter: in slot k every rank sends chunk (q - k) to rank q, so rank q receives, from every
  // source, the chunk it holds in slot k, already source-major.
  std::vector<int> send_counts(n), send_displs(n), recv_counts(n), recv_displs(n);
  for (int k = 0; k < s.h; ++k) {
    const int mine = s.chunk_of_slot(k);
    const std::size_t len = s.chunking.size(mine);
    for (int q = 0; q < n; ++q) {
      const int c = wrap(q - k, n);
      send_counts[q] = parallel::mpi_count(s.chunking.size(c), "robust all-reduce: chunk");
      send_displs[q] =
          parallel::mpi_count(s.chunking.begin(c), "robust all-reduce: chunk displacement");
      recv_counts[q] = parallel::mpi_count(len, "robust all-reduce: chunk");
      recv_displs[q] =
          parallel::mpi_count(std::size_t(q) * len, "robust all-reduce: received chunk offset");
    }
    s.rows[k].resize(std::size_t(len) * std::size_t(n));
    DAA_MPI_CHECK(MPI_Alltoallv(values.data(), send_counts.data(), send_displs.data(), MPI_FLOAT,
                                s.rows[k].data(), recv_counts.data(), recv_displs.data(), MPI_FLOAT,
                                group.comm()));
  }

  RoundReport report;
  report.accused.assign(n, 0);
  // Phase 1 (and 2): small summaries, agreed across holders; coordinate-wise rules have none.
  std::vector<double> total;
  if (engine::phase1_size(rule_, params_.nnm, n_act) > 0)
    total = agree_on_summaries(s, engine::phase1_size(rule_, params_.nnm, n_act), values, group,
                               report.accused, report.disputed_chunks, [&](int c, double* out) {
                                 engine::phase1(s.view(s.rows_of(c), c, n_act), rule_, params_.nnm,
                                                out);
                               });
  engine::Plan plan = engine::plan_after_phase1(rule_, params_, n_act, total);
  std::vector<std::vector<double>> centers(n);
  // NNM's mixtures per chunk, computed once per round for phase 2 and the final phase (keyed by
  // the rows they came from: a disputed chunk is mixed again from its replicated rows).
  mixed_.resize(std::size_t(n));
  mixed_source_.assign(std::size_t(n), nullptr);
  auto rule_rows = [&](int c, const engine::ChunkRows<float>& x) {
    const float* source = s.rows_of(c).data();
    const bool already = mixed_source_[std::size_t(c)] == source;
    mixed_source_[std::size_t(c)] = source;
    return engine::rule_rows(plan, x, mixed_[std::size_t(c)], already);
  };
  if (engine::needs_center(rule_)) {
    total = agree_on_summaries(s, engine::phase2_size(n_act), values, group, report.accused,
                               report.disputed_chunks, [&](int c, double* out) {
                                 const engine::ChunkRows<float> x = s.view(s.rows_of(c), c, n_act);
                                 engine::phase2(plan, rule_rows(c, x), centers[c], out);
                               });
    engine::plan_after_phase2(plan, total);
  }

  // Final phase: each holder computes its chunks' results (and, for a ledger, summaries); the
  // primary holder of each chunk publishes them, and every other holder compares what it computed
  // with the published bytes and publishes its verdict. Comparing bytes leaves a lying primary
  // nothing to forge (a hash of the result could be matched by a forged result), and costs a
  // memcmp per held chunk instead of hashing every chunk on every rank. Layout per chunk: summary
  // doubles, then results.
  const bool report_rows = options.report_rows;
  const std::size_t summary_size = report_rows ? engine::final_size(n_act, n) : 0;
  auto chunk_bytes = [&](int c) {
    return summary_size * sizeof(double) + s.chunking.size(c) * sizeof(float);
  };
  std::vector<double> summary(summary_size);
  auto compute_final = [&](int c, std::vector<unsigned char>& out) {
    out.resize(chunk_bytes(c));
    // The result goes straight into `out` after the summary (a multiple of 8 bytes in).
    float* result = reinterpret_cast<float*>(out.data() + summary_size * sizeof(double));
    const std::vector<float>& rows = s.rows_of(c);
    const engine::ChunkRows<float> x = s.view(rows, c, n_act);
    if (engine::needs_center(rule_) && centers[c].size() != x.len) {
      // A chunk first replicated in this phase: its center was computed by its holders only.
      std::vector<double> unused(engine::phase2_size(n_act));
      engine::phase2(plan, rule_rows(c, x), centers[c], unused.data());
    }
    engine::finish_chunk(plan, rule_rows(c, x), centers[c], s.view(rows, c, n), result,
                         report_rows ? summary.data() : nullptr);
    if (report_rows) std::memcpy(out.data(), summary.data(), summary_size * sizeof(double));
  };
  std::vector<std::vector<unsigned char>>& held = held_;
  held.resize(s.h);
  for (int k = 0; k < s.h; ++k) {
    const int c = s.chunk_of_slot(k);
    if (!s.replicated[c].empty()) continue;  // everyone computes it
    compute_final(c, held[k]);
    if (lie) {  // simulated lying holder: flip the sign of every result it holds
      auto* result = reinterpret_cast<float*>(held[k].data() + summary_size * sizeof(double));
      for (std::size_t j = 0; j < s.chunking.size(c); ++j) result[j] = -result[j] - 1.0f;
    }
  }
  // Published per rank: its primary chunk's bytes (slot 0 holds chunk `me`).
  std::vector<int> counts(n), displs(n);
  std::size_t offset = 0;
  for (int r = 0; r < n; ++r) {
    const std::size_t bytes = s.replicated[r].empty() ? chunk_bytes(r) : 0;
    counts[r] = parallel::mpi_count(bytes, "robust all-reduce: published results", "bytes");
    displs[r] = parallel::mpi_count(offset, "robust all-reduce: published offset", "bytes");
    offset += bytes;
  }
  std::vector<unsigned char>& published = published_;
  published.resize(offset);
  DAA_MPI_CHECK(MPI_Allgatherv(held[0].data(), counts[s.me], MPI_BYTE, published.data(),
                               counts.data(), displs.data(), MPI_BYTE, group.comm()));
  auto primary_bytes = [&](int c) { return published.data() + displs[c]; };
  auto differs = [&](int c, const std::vector<unsigned char>& bytes) {
    return std::memcmp(primary_bytes(c), bytes.data(), chunk_bytes(c)) != 0;
  };
  // Verdicts: rank r's entry k - 1 says whether its result for the chunk of its slot k differed
  // from the primary's bytes.
  const int verifiers = s.h - 1;
  std::vector<char> verdict(std::size_t(std::max(verifiers, 1)), 0);
  for (int k = 1; k < s.h; ++k) {
    const int c = s.chunk_of_slot(k);
    if (s.replicated[c].empty()) verdict[k - 1] = differs(c, held[k]) ? 1 : 0;
  }
  std::vector<char> verdicts(verdict.size() * std::size_t(n));
  DAA_MPI_CHECK(MPI_Allgather(verdict.data(), int(verdict.size()), MPI_CHAR, verdicts.data(),
                              int(verdict.size()), MPI_CHAR, group.comm()));
  auto objected = [&](int c, int k) {  // holder (c + k), k >= 1, found chunk c's result wrong
    return verdicts[std::size_t(s.holder(c, k)) * verdict.size() + std::size_t(k - 1)] != 0;
  };
  std::vector<int> disputed;
  for (int c = 0; c < n; ++c) {
    if (!s.replicated[c].empty()) continue;
    for (int k = 1; k < s.h; ++k)
      if (objected(c, k)) {
        disputed.push_back(c);
        break;
      }
  }
  if (!disputed.empty()) fetch_replicated(s, values, disputed, group);
  report.disputed_chunks += int(disputed.size());

  std::vector<double> final_total(summary_size, 0.0);
  std::vector<unsigned char> own;
  for (int c = 0; c < n; ++c) {
    const unsigned char* bytes;
    if (!s.replicated[c].empty()) {
      compute_final(c, own);
      bytes = own.data();
      if (std::find(disputed.begin(), disputed.end(), c) != disputed.end()) {
        // The recomputation decides: a wrong primary and every holder whose verdict it refutes.
        const bool primary_wrong = differs(c, own);
        if (primary_wrong) report.accused[s.holder(c, 0)] = 1;
        for (int k = 1; k < s.h; ++k)
          if (objected(c, k) != primary_wrong) report.accused[s.holder(c, k)] = 1;
      }
    } else {
      bytes = primary_bytes(c);
    }
    if (report_rows) {
      std::memcpy(summary.data(), bytes, summary_size * sizeof(double));
      engine::accumulate(final_total, summary);
    }
    std::memcpy(values.data() + s.chunking.begin(c), bytes + summary_size * sizeof(double),
                s.chunking.size(c) * sizeof(float));
  }
  if (!report_rows) return report;
  RuleOutcome outcome;
  const engine::RowPositions positions =
      engine::finish_outcome(plan, final_total, values.size(), n, outcome);
  engine::RoundReport r = engine::to_report(s.order, n_act, outcome, positions);
  report.weight = std::move(r.weight);
  report.distance = std::move(r.distance);
  report.along = std::move(r.along);
  report.non_finite = std::move(r.non_finite);
  return report;
}

}  // namespace daa::robust
