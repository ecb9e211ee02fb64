// bench_dispatch: the token dispatcher's to_experts + to_sources round trip (fused path, and the
// earlier permute path for comparison) against a raw MPI_Alltoallv of exactly the same bytes there
// and back (same counts, preallocated buffers, no permutation), so the printed ratio is the
// dispatcher's overhead. Run under mpirun (see
// scripts/bench-dispatch); plain std::chrono timing, since Google Benchmark is awkward under MPI.
#include <mpi.h>

#include <Kokkos_Core.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "daa/core/rng.hpp"
#include "daa/kernels/kokkos_compat.hpp"
#include "daa/parallel/token_dispatcher.hpp"
#include "mpi_timing.hpp"

namespace {

using daa::kernels::Matrix;
using daa::parallel::Communicator;
using daa::parallel::DispatchPlan;
using daa::parallel::TokenDispatcher;

constexpr std::size_t kExperts = 8;

struct Options {
  int iterations = 300;
  int warmup = 30;
};

using daa::bench::median;
using daa::bench::timed;

void run_case(const Communicator& world, std::size_t rows, std::size_t width,
              const Options& options) {
  // Uniform random routing over the experts, different on every rank, same on every run.
  std::vector<std::size_t> counts(kExperts, 0);
  for (std::size_t i = 0; i < rows; ++i)
    ++counts[std::size_t(daa::core::counter_uniform(99, daa::core::RngPurpose::test,
                                                    std::uint64_t(world.rank()), i) *
                         double(kExperts))];
  const DispatchPlan plan = DispatchPlan::build(world, counts);
  const std::size_t P = plan.send_rows(), R = plan.recv_rows();

  Matrix<float> packed("packed", P, width), expert_rows("expert_rows", R, width),
      back("back", P, width);
  Kokkos::deep_copy(packed, 1.5f);
  TokenDispatcher dispatcher;  // the default: fused
  TokenDispatcher permuting(dispatcher.mode(), daa::parallel::DispatchPath::permute);
  Matrix<float> permute_rows("permute_rows", R, width), permute_back("permute_back", P, width);

  // The raw baseline: the same element counts in both directions, its own buffers.
  const int ep = world.size();
  std::vector<int> sc(ep), sd(ep), rc(ep), rd(ep);
  for (int p = 0; p < ep; ++p) {
    sc[p] = daa::parallel::mpi_count(plan.send_counts()[p] * width, "raw send count");
    sd[p] = daa::parallel::mpi_count(plan.send_displs()[p] * width, "raw send displacement");
    rc[p] = daa::parallel::mpi_count(plan.recv_counts()[p] * width, "raw receive count");
    rd[p] = daa::parallel::mpi_count(plan.recv_displs()[p] * width, "raw receive displacement");
  }
  std::vector<float> raw_send(P * width + 1, 1.5f), raw_recv(R * width + 1),
      raw_back(P * width + 1);
  const auto raw_round_trip = [&] {
    DAA_MPI_CHECK(MPI_Alltoallv(raw_send.data(), sc.data(), sd.data(), MPI_FLOAT, raw_recv.data(),
                                rc.data(), rd.data(), MPI_FLOAT, world.comm()));
    DAA_MPI_CHECK(MPI_Alltoallv(raw_recv.data(), rc.data(), rd.data(), MPI_FLOAT, raw_back.data(),
                                sc.data(), sd.data(), MPI_FLOAT, world.comm()));
  };
  // Each round trip also records its own split (MPI vs copy kernels) from the dispatcher's
  // statistics, so that the printed split is a median like the times, not a mean that one
  // descheduled iteration can dominate.
  std::vector<double> mpi_split, copy_split;
  const auto dispatch_round_trip = [&] {
    dispatcher.to_experts(plan, packed, expert_rows);
    const auto there = dispatcher.last_stats();
    dispatcher.to_sources(plan, expert_rows, back);
    const auto& back_stats = dispatcher.last_stats();
    mpi_split.push_back(there.mpi_seconds + back_stats.mpi_seconds);
    copy_split.push_back(there.permute_seconds + back_stats.permute_seconds);
  };
  const auto permute_round_trip = [&] {
    permuting.to_experts(plan, packed, permute_rows);
    permuting.to_sources(plan, permute_rows, permute_back);
  };

  for (int i = 0; i < options.warmup; ++i) {
    dispatch_round_trip();
    raw_round_trip();
    permute_round_trip();
  }
  mpi_split.clear();
  copy_split.clear();
  std::vector<double> t_dispatch, t_raw, t_permute;
  for (int i = 0; i < options.iterations; ++i) {
    // Rotate which goes first, so none always runs on a cache warmed by another.
    for (int k = 0; k < 3; ++k) switch ((i + k) % 3) {
        case 0:
          t_dispatch.push_back(timed(world, dispatch_round_trip));
          break;
        case 1:
          t_raw.push_back(timed(world, raw_round_trip));
          break;
        default:
          t_permute.push_back(timed(world, permute_round_trip));
      }
  }

  // Bytes handed to MPI per round trip, summed over ranks: every row goes out and comes back.
  double bytes = double(P + R) * double(width) * sizeof(float);
  DAA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &bytes, 1, MPI_DOUBLE, MPI_SUM, world.comm()));
  // Where the dispatcher's time goes: each rank's median per round trip, averaged over ranks.
  double split[2] = {median(mpi_split), median(copy_split)};
  DAA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, split, 2, MPI_DOUBLE, MPI_SUM, world.comm()));
  const double per_trip = 1e6 / double(ep);

  const double md = median(t_dispatch), mr = median(t_raw), mp = median(t_permute);
  if (world.is_root())
    std::printf(
        "ranks %d  rows/rank %4zu x %zu floats  E %zu | dispatcher %7.1f us %6.2f GB/s "
        "(MPI %6.1f us, own rows %5.1f us) | raw Alltoallv %7.1f us %6.2f GB/s | ratio %.2f | "
        "permute path %7.1f us ratio %.2f\n",
        ep, rows, width, kExperts, md * 1e6, bytes / md * 1e-9, split[0] * per_trip,
        split[1] * per_trip, mr * 1e6, bytes / mr * 1e-9, mr / md, mp * 1e6, mr / mp);
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  daa::parallel::init_error_handling();
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--quick") {
      options.iterations = 40;
      options.warmup = 5;
    } else if (arg.rfind("--iterations=", 0) == 0) {
      options.iterations = std::max(1, std::atoi(arg.c_str() + 13));
    } else {
      std::fprintf(stderr, "bench_dispatch: unknown argument '%s' (--quick, --iterations=N)\n",
                   arg.c_str());
      MPI_Abort(MPI_COMM_WORLD, 2);
    }
  }
  daa::kernels::initialize_kokkos();  // Kokkos warnings off (KokkosOptions)
  int rc = 0;
  try {
    const Communicator world(MPI_COMM_WORLD, "world");
    if (kExperts % std::size_t(world.size()) != 0) {
      if (world.is_root())
        std::fprintf(stderr, "bench_dispatch: %zu experts need a rank count dividing them\n",
                     kExperts);
      rc = 2;
    } else {
      // Top-2 routing of 256 tokens per rank, and a larger batch.
      run_case(world, 256 * 2, 128, options);
      run_case(world, 4096, 128, options);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_dispatch: error: %s\n", e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  Kokkos::finalize();
  MPI_Finalize();
  return rc;
}
