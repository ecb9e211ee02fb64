// bench_robust_allreduce: one RobustAllReduce::reduce round per (rule, mode) against a plain
// MPI_Allreduce (sum, then 1/n: what the mean path does) of the same d floats, timed interleaved in
// the same run. Run under mpirun (see scripts/bench-robust); plain std::chrono timing.
#include <mpi.h>

#include <Kokkos_Core.hpp>
#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "daa/core/error.hpp"
#include "daa/core/rng.hpp"
#include "daa/kernels/kokkos_compat.hpp"
#include "daa/robust/allreduce.hpp"
#include "daa/robust/rules.hpp"
#include "mpi_timing.hpp"

namespace {

using daa::parallel::Communicator;
using daa::robust::Mode;
using daa::robust::Rule;
using daa::robust::RuleParams;

struct Options {
  int iterations = 30;
  int warmup = 5;
  std::size_t size = 0;  // floats per rank; 0: the default sizes
};

// One benchmarked case (every case gets the same iterations: the slowest, bulyan at 4 ranks and
// 2^20 floats, takes ~0.15 s a round on 2 cores, so the whole run stays near a minute).
struct Case {
  Rule rule;
  Mode mode;
  bool nnm = false;
  bool max_f = false;  // f = the largest the world size allows (trimmed mean), else 1 or 0
  bool ledger = true;  // report per-row weights, distances and flags, as training with a ledger
};

const Case kCases[] = {
    {Rule::mean, Mode::replicated},
    {Rule::mean, Mode::sharded},
    {Rule::median, Mode::replicated},
    {Rule::median, Mode::sharded},
    {Rule::trimmed_mean, Mode::sharded, false, true},
    {Rule::krum, Mode::sharded},
    {Rule::multi_krum, Mode::sharded},
    {Rule::geometric_median, Mode::sharded},
    {Rule::centered_clipping, Mode::sharded},
    {Rule::bulyan, Mode::sharded},
    {Rule::median, Mode::sharded, true},
    // Training without a ledger (and the consensus round) skips the rows' distance pass.
    {Rule::median, Mode::sharded, false, false, false},
    {Rule::trimmed_mean, Mode::sharded, false, true, false},
    {Rule::krum, Mode::sharded, false, false, false},
};

using daa::bench::median;
using daa::bench::timed;

bool allowed(Rule rule, int n, int f) {
  try {
    daa::robust::check_requirement(rule, n, f, "world");
    return true;
  } catch (const daa::ConfigError&) {
    return false;
  }
}

std::string label(const Case& c) {
  return std::string(daa::robust::to_string(c.rule)) + (c.nnm ? "+nnm" : "") +
         (c.ledger ? "" : ", no ledger");
}

// Order-independent fingerprint of the bits of `v`, to check that every rank got the same result.
std::uint64_t fingerprint(const std::vector<float>& v) {
  std::uint64_t h = 0;
  for (std::size_t i = 0; i < v.size(); ++i)
    h += daa::core::mix64(std::uint64_t(std::bit_cast<std::uint32_t>(v[i])) ^ (i << 32));
  return h;
}

void print_header(const Communicator& world) {
  if (!world.is_root()) return;
  std::printf("%5s %8s %-24s %-10s %2s %12s %11s %9s %12s %10s\n", "ranks", "d", "rule", "mode",
              "f", "allreduce ms", "robust ms", "ratio", "robust GB/s", "move ms");
}

void run_case(const Communicator& world, std::size_t d, const Case& c, const Options& options) {
  const int n = world.size();
  if (!allowed(c.rule, n, 0)) {
    if (world.is_root())
      std::printf("%5d %8zu %-24s %-10s skipped: rule needs more than %d ranks even with f = 0\n",
                  n, d, label(c).c_str(), daa::robust::to_string(c.mode), n);
    return;
  }
  RuleParams params;
  params.nnm = c.nnm;
  if (c.max_f) {
    while (allowed(c.rule, n, params.f + 1)) ++params.f;
  } else {
    params.f = allowed(c.rule, n, 1) ? 1 : 0;
  }
  const daa::robust::RobustAllReduce reducer(c.rule, params, c.mode);
  reducer.check_group(n, 0, "world");

  // This rank's contribution: deterministic, different on every rank.
  std::vector<float> input(d);
  for (std::size_t i = 0; i < d; ++i)
    input[i] = float(
        daa::core::counter_normal(7, daa::core::RngPurpose::test, std::uint64_t(world.rank()), i));
  std::vector<float> base(d), robust(d);

  const float scale = 1.0f / float(n);
  const int count = daa::parallel::mpi_count(d, "bench contribution");
  const auto allreduce_round = [&] {
    DAA_MPI_CHECK(
        MPI_Allreduce(MPI_IN_PLACE, base.data(), count, MPI_FLOAT, MPI_SUM, world.comm()));
    for (float& v : base) v *= scale;
  };
  daa::robust::RoundOptions round_options;
  round_options.report_rows = c.ledger;
  const auto robust_round = [&] { reducer.reduce(robust, world, round_options); };

  // The data movement the mode needs at the least, with no rule and no verification: replicated,
  // an all-gather of every contribution; sharded, one all-to-all per holder slot (as the round's
  // scatter). The robust time minus this is roughly the rule plus the agreement traffic.
  const int h = c.mode == Mode::sharded ? reducer.holders(n) : 0;
  std::vector<float> gathered(c.mode == Mode::replicated ? d * std::size_t(n) : 0);
  std::vector<std::vector<float>> slots(static_cast<std::size_t>(h));
  std::vector<int> sc(n), sd(n), rc(n), rd(n);
  const auto chunk_begin = [&](int k) {
    return d / std::size_t(n) * std::size_t(k) + std::min<std::size_t>(k, d % std::size_t(n));
  };
  const auto move_round = [&] {
    if (c.mode == Mode::replicated) {
      DAA_MPI_CHECK(MPI_Allgather(input.data(), count, MPI_FLOAT, gathered.data(), count, MPI_FLOAT,
                                  world.comm()));
      return;
    }
    const int me = world.rank();
    for (int k = 0; k < h; ++k) {
      const int mine = ((me - k) % n + n) % n;
      const int len = daa::parallel::mpi_count(chunk_begin(mine + 1) - chunk_begin(mine), "chunk");
      for (int q = 0; q < n; ++q) {
        const int chunk = ((q - k) % n + n) % n;
        sc[q] = daa::parallel::mpi_count(chunk_begin(chunk + 1) - chunk_begin(chunk), "chunk");
        sd[q] = daa::parallel::mpi_count(chunk_begin(chunk), "chunk displacement");
        rc[q] = len;
        rd[q] = daa::parallel::mpi_count(std::size_t(q) * std::size_t(len), "chunk offset");
      }
      slots[k].resize(std::size_t(len) * std::size_t(n));
      DAA_MPI_CHECK(MPI_Alltoallv(input.data(), sc.data(), sd.data(), MPI_FLOAT, slots[k].data(),
                                  rc.data(), rd.data(), MPI_FLOAT, world.comm()));
    }
  };

  std::vector<double> t_base, t_robust, t_move;
  for (int i = -options.warmup; i < options.iterations; ++i) {
    // Fresh inputs, copied outside the timed region.
    std::copy(input.begin(), input.end(), base.begin());
    std::copy(input.begin(), input.end(), robust.begin());
    double tb, tr;
    // Alternate which goes first, so neither always runs on a cache warmed by the other.
    if (i % 2 == 0) {
      tr = timed(world, robust_round);
      tb = timed(world, allreduce_round);
    } else {
      tb = timed(world, allreduce_round);
      tr = timed(world, robust_round);
    }
    const double tm = timed(world, move_round);
    if (i < 0) continue;
    t_base.push_back(tb);
    t_robust.push_back(tr);
    t_move.push_back(tm);
  }

  // Every rank must hold the same aggregate, bit for bit.
  const std::uint64_t mine = fingerprint(robust);
  std::uint64_t lo = mine, hi = mine;
  DAA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UINT64_T, MPI_MIN, world.comm()));
  DAA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UINT64_T, MPI_MAX, world.comm()));
  if (lo != hi)
    throw daa::Error("bench_robust_allreduce: " + label(c) + "/" + daa::robust::to_string(c.mode) +
                     ": ranks disagree on the aggregate");

  const double mb = median(t_base), mr = median(t_robust), mm = median(t_move);
  if (world.is_root())
    std::printf("%5d %8zu %-24s %-10s %2d %12.3f %11.3f %9.2f %12.3f %10.3f\n", n, d,
                label(c).c_str(), daa::robust::to_string(c.mode), params.f, mb * 1e3, mr * 1e3,
                mr / mb, double(d) * sizeof(float) / mr * 1e-9, mm * 1e3);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  daa::parallel::init_error_handling();
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--quick") {
      options.iterations = 3;
      options.warmup = 1;
    } else if (arg.rfind("--iterations=", 0) == 0) {
      options.iterations = std::max(1, std::atoi(arg.c_str() + 13));
    } else if (arg.rfind("--size=", 0) == 0) {
      const long long size = std::atoll(arg.c_str() + 7);
      if (size < 1 || size > (1LL << 28)) {
        std::fprintf(stderr, "bench_robust_allreduce: --size=%s must be in [1, 2^28] floats\n",
                     arg.c_str() + 7);
        MPI_Abort(MPI_COMM_WORLD, 2);
      }
      options.size = std::size_t(size);
    } else {
      std::fprintf(stderr,
                   "bench_robust_allreduce: unknown argument '%s' (--quick, --iterations=N, "
                   "--size=FLOATS)\n",
                   arg.c_str());
      MPI_Abort(MPI_COMM_WORLD, 2);
    }
  }
  daa::kernels::initialize_kokkos();  // Kokkos warnings off (KokkosOptions)
  try {
    const Communicator world(MPI_COMM_WORLD, "world");
    // 1 MiB and 4 MiB of floats per rank, unless --size says otherwise.
    std::vector<std::size_t> sizes{std::size_t(1) << 18, std::size_t(1) << 20};
    if (options.size != 0) sizes = {options.size};
    if (world.is_root())
      std::printf(
          "# %d iterations after %d warm-up; times: median, slowest rank; move: the bare "
          "all-gather (replicated) or scatter (sharded) of the round\n",
          options.iterations, options.warmup);
    print_header(world);
    for (std::size_t d : sizes)
      for (const Case& c : kCases) run_case(world, d, c, options);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_robust_allreduce: error: %s\n", e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  Kokkos::finalize();
  MPI_Finalize();
  return 0;
}
