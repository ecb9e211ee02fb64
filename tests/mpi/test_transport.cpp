// parallel::Transport with 1, 2 and 4 ranks: uneven (and zero) all-to-all of contiguous and of
// scattered row blocks, point to point and all-reduce, each in direct and in forced host_staged
// mode; results must agree bit for bit, the rows must land where they were sent, and the staging
// figures must count exactly what was copied.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "daa/core/config.hpp"
#include "daa/core/error.hpp"
#include "daa/core/rng.hpp"
#include "daa/parallel/pipeline.hpp"
#include "daa/parallel/topology.hpp"
#include "daa/parallel/transport.hpp"

namespace {

using daa::kernels::Matrix;
using daa::parallel::Communicator;
using daa::parallel::Transport;
using daa::parallel::TransportMode;
using daa::parallel::TransportStats;

template <class T>
std::vector<T> host_copy(const Matrix<T>& m) {
  auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), m);
  return std::vector<T>(h.data(), h.data() + h.size());
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

// Rows rank s sends to rank p: uneven, zero for some pairs (and for every pair with one rank
// when s = p = 0: (0 + 0) % 3 = 0).
std::size_t rows_between(int s, int p) {
  return std::size_t(s + 2 * p) % 3;
}

// Column c of row i of the block s sends to p: an exact integer, distinct for each (s, p, i, c).
template <class T>
T code(int s, int p, std::size_t i, std::size_t c) {
  return T(((s * 16 + p) * 16 + int(i)) * 8 + int(c));
}

constexpr double kUntouched = -1.5;  // fills receive rows MPI must not write

struct AllToAllResult {
  std::vector<std::size_t> recv_counts, recv_displs;
  std::vector<double> got;  // the receive matrix, as doubles
  TransportStats stats;
};

// One all-to-all of `width`-wide rows in `mode`; with skip_self this rank's own block is left out.
template <class T>
AllToAllResult all_to_all(const Communicator& comm, TransportMode mode, std::size_t width,
                          bool skip_self) {
  const int n = comm.size(), me = comm.rank();
  std::vector<std::size_t> sc(n), sd(n), rc(n), rd(n);
  for (int p = 0; p < n; ++p) {
    sc[p] = rows_between(me, p);
    rc[p] = rows_between(p, me);
  }
  for (int p = 1; p < n; ++p) {
    sd[p] = sd[p - 1] + sc[p - 1];
    rd[p] = rd[p - 1] + rc[p - 1];
  }
  const std::size_t P = sd[n - 1] + sc[n - 1], R = rd[n - 1] + rc[n - 1];
  Matrix<T> send("send", P, width), recv("recv", R, width);
  auto send_h = Kokkos::create_mirror_view(send);
  for (int p = 0; p < n; ++p)
    for (std::size_t i = 0; i < sc[p]; ++i)
      for (std::size_t c = 0; c < width; ++c) send_h(sd[p] + i, c) = code<T>(me, p, i, c);
  Kokkos::deep_copy(send, send_h);
  Kokkos::deep_copy(recv, T(kUntouched));
  Transport<> transport(comm, mode);
  AllToAllResult out;
  out.stats = transport.all_to_all_rows<T>(send, sc, sd, recv, rc, rd, skip_self);
  out.recv_counts = rc;
  out.recv_displs = rd;
  for (const T v : host_copy(recv)) out.got.push_back(double(v));
  EXPECT_EQ(transport.total_stats().bytes_to_host, out.stats.bytes_to_host);
  return out;
}

template <class T>
void check_all_to_all(std::size_t width, bool skip_self) {
  const Communicator world(MPI_COMM_WORLD, "world");
  const int n = world.size(), me = world.rank();
  SCOPED_TRACE("rank " + std::to_string(me) + ", width " + std::to_string(width) +
               (skip_self ? ", skip_self" : ""));
  const AllToAllResult direct = all_to_all<T>(world, TransportMode::direct, width, skip_self);
  const AllToAllResult staged = all_to_all<T>(world, TransportMode::host_staged, width, skip_self);
  EXPECT_TRUE(same_bits(direct.got, staged.got)) << "host_staged differs from direct";

  // Every block where its sender put it; this rank's own block untouched under skip_self.
  std::size_t mismatches = 0;
  for (int s = 0; s < n; ++s)
    for (std::size_t i = 0; i < direct.recv_counts[s]; ++i)
      for (std::size_t c = 0; c < width; ++c) {
        const double want = skip_self && s == me ? kUntouched : double(code<T>(s, me, i, c));
        if (direct.got[(direct.recv_displs[s] + i) * width + c] != want) ++mismatches;
      }
  EXPECT_EQ(mismatches, 0u);

  // Direct mode stages nothing; host_staged stages exactly the rows MPI moves.
  EXPECT_EQ(direct.stats.bytes_to_host + direct.stats.bytes_from_host, 0u);
  EXPECT_EQ(direct.stats.staging_copies, 0u);
  EXPECT_EQ(direct.stats.staging_seconds, 0.0);
  std::size_t sent = 0, received = 0;
  for (int p = 0; p < n; ++p) {
    if (skip_self && p == me) continue;
    sent += rows_between(me, p);
    received += rows_between(p, me);
  }
  EXPECT_EQ(staged.stats.bytes_to_host, sent * width * sizeof(T));
  EXPECT_EQ(staged.stats.bytes_from_host, received * width * sizeof(T));
  // The moved rows are contiguous but for this rank's own block: one range per side, or two
  // where skip_self cuts one in the middle; none where nothing moves.
  EXPECT_GE(staged.stats.staging_copies, std::size_t(sent > 0) + std::size_t(received > 0));
  EXPECT_LE(staged.stats.staging_copies, 2 * (std::size_t(sent > 0) + std::size_t(received > 0)));
  EXPECT_GE(staged.stats.mpi_seconds, 0.0);
}

TEST(Transport, AllToAllUnevenFloat) {
  check_all_to_all<float>(3, false);
}
TEST(Transport, AllToAllUnevenDouble) {
  check_all_to_all<double>(1, false);
}
TEST(Transport, AllToAllSkipSelf) {
  check_all_to_all<float>(2, true);
  check_all_to_all<double>(5, true);
}

TEST(Transport, AllToAllNothingToMove) {
  const Communicator world(MPI_COMM_WORLD, "world");
  const std::vector<std::size_t> zeros(std::size_t(world.size()), 0);
  Matrix<float> empty("empty", 0, 4);
  for (const TransportMode mode : {TransportMode::direct, TransportMode::host_staged}) {
    Transport<> transport(world, mode);
    const TransportStats stats =
        transport.all_to_all_rows<float>(empty, zeros, zeros, empty, zeros, zeros, false);
    EXPECT_EQ(stats.bytes_to_host + stats.bytes_from_host + stats.staging_copies, 0u);
  }
}

TEST(Transport, AllToAllRefusesWrongCountEntries) {
  const Communicator world(MPI_COMM_WORLD, "world");
  const std::vector<std::size_t> zeros(std::size_t(world.size()), 0), extra(zeros.size() + 1, 0);
  Matrix<float> empty("empty", 0, 1);
  Transport<> transport(world, TransportMode::direct);
  try {
    transport.all_to_all_rows<float>(empty, extra, zeros, empty, zeros, zeros, false);
    ADD_FAILURE() << "no error";
  } catch (const daa::Error& e) {
    EXPECT_EQ(std::string(e.what()), "parallel::Transport over 'world': send_counts has " +
                                         std::to_string(extra.size()) + " entries for " +
                                         std::to_string(world.size()) + " ranks");
  }
}

// all_to_all_blocks on scattered rows: rank s's rows for peer p (rows_between(s, p), coded by
// their position k in s's sequence for p) leave from two blocks with a gap row before each, and
// arrive in two blocks split the other way, stored second block first, peers in descending
// order, again with gap rows. MPI must follow the block order, not the row order, and write
// nothing else; host_staged must give the same bits and stage exactly the moved rows.
template <class T>
void check_all_to_all_blocks(std::size_t width, bool skip_self) {
  using daa::parallel::RowBlocks;
  const Communicator world(MPI_COMM_WORLD, "world");
  const int n = world.size(), me = world.rank();
  SCOPED_TRACE("rank " + std::to_string(me) + ", width " + std::to_string(width) +
               (skip_self ? ", skip_self" : ""));
  RowBlocks sb{{0}, {}, {}}, rb{{0}, {}, {}};
  std::size_t send_rows = 0;
  for (int p = 0; p < n; ++p) {
    const std::size_t rows = rows_between(me, p), a = rows / 2;
    sb.displ.push_back(send_rows + 1);
    sb.count.push_back(a);
    sb.displ.push_back(send_rows + 2 + a);
    sb.count.push_back(rows - a);
    sb.first.push_back(sb.displ.size());
    send_rows += rows + 2;
  }
  std::vector<std::size_t> first_at(static_cast<std::size_t>(n)),
      second_at(static_cast<std::size_t>(n));
  std::size_t recv_rows = 0;
  for (int s = n - 1; s >= 0; --s) {  // memory order; the blocks are listed in peer order below
    const std::size_t rows = rows_between(s, me);
    second_at[s] = recv_rows + 1;
    first_at[s] = recv_rows + 2 + rows / 2;
    recv_rows += rows + 2;
  }
  for (int s = 0; s < n; ++s) {
    const std::size_t rows = rows_between(s, me);
    rb.displ.push_back(first_at[s]);
    rb.count.push_back(rows - rows / 2);
    rb.displ.push_back(second_at[s]);
    rb.count.push_back(rows / 2);
    rb.first.push_back(rb.displ.size());
  }

  Matrix<T> send("send", send_rows, width);
  auto send_h = Kokkos::create_mirror_view(send);
  Kokkos::deep_copy(send_h, T(kUntouched));
  for (int p = 0; p < n; ++p) {
    std::size_t k = 0;
    for (std::size_t b = sb.first[p]; b < sb.first[p + 1]; ++b)
      for (std::size_t i = 0; i < sb.count[b]; ++i, ++k)
        for (std::size_t c = 0; c < width; ++c) send_h(sb.displ[b] + i, c) = code<T>(me, p, k, c);
  }
  Kokkos::deep_copy(send, send_h);

  std::vector<std::vector<double>> got;
  std::vector<TransportStats> stats;
  for (const TransportMode mode : {TransportMode::direct, TransportMode::host_staged}) {
    Matrix<T> recv("recv", recv_rows, width);
    Kokkos::deep_copy(recv, T(kUntouched));
    Transport<> transport(world, mode);
    stats.push_back(transport.all_to_all_blocks<T>(send, sb, recv, rb, skip_self));
    got.emplace_back();
    for (const T v : host_copy(recv)) got.back().push_back(double(v));
  }
  EXPECT_TRUE(same_bits(got[0], got[1])) << "host_staged differs from direct";

  std::vector<double> want(recv_rows * width, kUntouched);
  std::size_t sent = 0, received = 0;
  for (int s = 0; s < n; ++s) {
    if (skip_self && s == me) continue;
    sent += rows_between(me, s);
    received += rows_between(s, me);
    std::size_t k = 0;
    for (std::size_t b = rb.first[s]; b < rb.first[s + 1]; ++b)
      for (std::size_t i = 0; i < rb.count[b]; ++i, ++k)
        for (std::size_t c = 0; c < width; ++c)
          want[(rb.displ[b] + i) * width + c] = double(code<T>(s, me, k, c));
  }
  EXPECT_TRUE(same_bits(got[0], want)) << "rows landed in the wrong places";
  EXPECT_EQ(stats[0].bytes_to_host + stats[0].bytes_from_host + stats[0].staging_copies, 0u);
  EXPECT_EQ(stats[1].bytes_to_host, sent * width * sizeof(T));
  EXPECT_EQ(stats[1].bytes_from_host, received * width * sizeof(T));
}

TEST(Transport, AllToAllBlocks) {
  check_all_to_all_blocks<float>(3, false);
  check_all_to_all_blocks<double>(2, false);
  check_all_to_all_blocks<float>(1, true);
}

TEST(Transport, AllToAllBlocksRefusesWrongPeerEntries) {
  const Communicator world(MPI_COMM_WORLD, "world");
  daa::parallel::RowBlocks none, extra;
  none.first.assign(std::size_t(world.size()) + 1, 0);
  extra.first.assign(std::size_t(world.size()) + 2, 0);
  Matrix<float> empty("empty", 0, 1);
  Transport<> transport(world, TransportMode::direct);
  EXPECT_NO_THROW(transport.all_to_all_blocks<float>(empty, none, empty, none, false));
  try {
    transport.all_to_all_blocks<float>(empty, none, empty, extra, false);
    ADD_FAILURE() << "no error";
  } catch (const daa::Error& e) {
    EXPECT_EQ(std::string(e.what()), "parallel::Transport over 'world': recv_blocks has " +
                                         std::to_string(world.size() + 1) + " entries for " +
                                         std::to_string(world.size()) + " ranks");
  }
}

// A ring: each rank sends `rows` rows to the next and receives as many from the previous, twice
// through the same PendingSend (the second waits for the first). Returns what arrived.
std::vector<float> ring(const Communicator& comm, TransportMode mode, std::size_t rows,
                        TransportStats& stats) {
  const int n = comm.size(), me = comm.rank();
  const std::size_t width = 3;
  Transport<> transport(comm, mode);
  Transport<>::PendingSend pending;
  std::vector<float> got;
  for (int round = 0; round < 2; ++round) {
    Matrix<float> out("out", rows, width), in("in", rows, width);
    auto out_h = Kokkos::create_mirror_view(out);
    for (std::size_t i = 0; i < rows; ++i)
      for (std::size_t c = 0; c < width; ++c)
        out_h(i, c) = float(daa::core::counter_normal(11, daa::core::RngPurpose::test,
                                                      std::size_t(me * 2 + round), i * width + c));
    Kokkos::deep_copy(out, out_h);
    stats += transport.isend<float>(out, (me + 1) % n, round, pending);
    stats += transport.recv<float>(in, (me + n - 1) % n, round);
    transport.wait(pending);
    const std::vector<float> round_got = host_copy(in);
    got.insert(got.end(), round_got.begin(), round_got.end());
  }
  return got;
}

TEST(Transport, PointToPoint) {
  const Communicator world(MPI_COMM_WORLD, "world");
  const int n = world.size(), me = world.rank();
  for (const std::size_t rows : {std::size_t(0), std::size_t(5)}) {
    TransportStats direct_stats, staged_stats;
    const std::vector<float> direct = ring(world, TransportMode::direct, rows, direct_stats);
    const std::vector<float> staged = ring(world, TransportMode::host_staged, rows, staged_stats);
    EXPECT_TRUE(same_bits(direct, staged)) << "host_staged differs from direct";
    // The previous rank's values, bit for bit.
    const int from = (me + n - 1) % n;
    std::size_t mismatches = 0;
    for (int round = 0; round < 2; ++round)
      for (std::size_t k = 0; k < rows * 3; ++k) {
        const float want = float(daa::core::counter_normal(11, daa::core::RngPurpose::test,
                                                           std::size_t(from * 2 + round), k));
        if (std::memcmp(&direct[std::size_t(round) * rows * 3 + k], &want, sizeof(float)) != 0)
          ++mismatches;
      }
    EXPECT_EQ(mismatches, 0u);
    EXPECT_EQ(direct_stats.bytes_to_host + direct_stats.bytes_from_host, 0u);
    EXPECT_EQ(staged_stats.bytes_to_host, 2 * rows * 3 * sizeof(float));
    EXPECT_EQ(staged_stats.bytes_from_host, 2 * rows * 3 * sizeof(float));
    EXPECT_EQ(staged_stats.staging_copies, rows > 0 ? 4u : 0u);
  }
}

template <class T>
std::vector<T> reduced(const Communicator& comm, TransportMode mode, TransportStats& stats) {
  Matrix<T> data("data", 7, 2);
  auto h = Kokkos::create_mirror_view(data);
  for (std::size_t i = 0; i < 7; ++i)
    for (std::size_t c = 0; c < 2; ++c)
      h(i, c) = T(daa::core::counter_normal(5, daa::core::RngPurpose::test,
                                            std::size_t(comm.rank()), i * 2 + c));
  Kokkos::deep_copy(data, h);
  Transport<> transport(comm, mode);
  stats = transport.all_reduce_sum<T>(data);
  return host_copy(data);
}

template <class T>
void check_all_reduce() {
  const Communicator world(MPI_COMM_WORLD, "world");
  TransportStats direct_stats, staged_stats;
  const std::vector<T> direct = reduced<T>(world, TransportMode::direct, direct_stats);
  const std::vector<T> staged = reduced<T>(world, TransportMode::host_staged, staged_stats);
  EXPECT_TRUE(same_bits(direct, staged)) << "host_staged differs from direct";
  // Against MPI itself on a plain host buffer (the same algorithm, so the same bits).
  std::vector<T> mine(14);
  for (std::size_t k = 0; k < mine.size(); ++k)
    mine[k] =
        T(daa::core::counter_normal(5, daa::core::RngPurpose::test, std::size_t(world.rank()), k));
  MPI_Allreduce(MPI_IN_PLACE, mine.data(), int(mine.size()),
                sizeof(T) == 4 ? MPI_FLOAT : MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  EXPECT_TRUE(same_bits(direct, mine));
  EXPECT_EQ(direct_stats.staging_copies, 0u);
  EXPECT_EQ(staged_stats.bytes_to_host, 14 * sizeof(T));
  EXPECT_EQ(staged_stats.bytes_from_host, 14 * sizeof(T));
  EXPECT_EQ(staged_stats.staging_copies, 2u);
}

TEST(Transport, AllReduceSum) {
  check_all_reduce<float>();
  check_all_reduce<double>();
}

TEST(Transport, ModesPerMemorySpace) {
  const Communicator world(MPI_COMM_WORLD, "world");
  EXPECT_EQ(daa::parallel::default_transport_mode(true), TransportMode::direct);
  // Device memory without CUDA: host staging (this build has no NCCL transport).
  EXPECT_EQ(daa::parallel::default_transport_mode(false), TransportMode::host_staged);
  EXPECT_EQ(Transport<>(world).mode(), TransportMode::direct);  // host memory here
  // Direct MPI on memory the host cannot reach is refused before any MPI call.
  try {
    daa::parallel::check_transport_mode(TransportMode::direct, false, "Cuda", world);
    ADD_FAILURE() << "direct mode on device memory was not refused";
  } catch (const daa::Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "parallel::Transport over 'world': direct mode needs host-accessible memory, but "
              "Cuda is not (the MPI here is not CUDA-aware): use host_staged or nccl");
  }
  daa::parallel::check_transport_mode(TransportMode::host_staged, false, "Cuda", world);
  try {
    Transport<> nccl(world, TransportMode::nccl);
    ADD_FAILURE() << "nccl mode was accepted in a build without it";
  } catch (const daa::Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "parallel::Transport over 'world': nccl mode is not built in (needs "
              "DAA_ENABLE_CUDA and a CUDA Kokkos)");
  }
}

// The pipeline schedule over two stages (with 2 or 4 ranks; one stage alone with 1) in direct and
// forced host_staged mode: a 1F1B step of three micro-batches, then a forward-only pass. Each
// stage's forward adds (stage + 1) to what it received, its backward doubles what came back, so
// every message's values are known; both modes must deliver them bit for bit.
std::vector<float> pipeline_run(TransportMode mode) {
  const Communicator world(MPI_COMM_WORLD, "world");
  const int stages = world.size() == 1 ? 1 : 2;
  const daa::core::Config config =
      daa::core::load_config(std::string(DAA_SOURCE_DIR) + "/inputs/fashion-mnist-ci.toml",
                             {"parallel.pipeline_stages=" + std::to_string(stages)});
  daa::parallel::StageCosts costs;
  costs.blocks.assign(std::size_t(daa::core::model_blocks(config)), 1.0);
  const daa::parallel::Topology topology(world, config, costs);
  const std::size_t rows = 4, width = 5;
  const int stage = topology.place().stage;
  daa::parallel::PipelineSchedule schedule(topology, int(width), mode);
  using M = daa::parallel::PipelineSchedule::Matrix;
  std::vector<M> outputs(3, M("out", rows, width)), grads(3, M("grad", rows, width));
  std::vector<float> seen;  // every received message, in the order of the calls
  const auto record = [&](const M& m) {
    const std::vector<float> h = host_copy(m);
    seen.insert(seen.end(), h.begin(), h.end());
  };
  const auto forward = [&](int micro, int slot, const M& received) {
    auto h = Kokkos::create_mirror_view(outputs[std::size_t(slot)]);
    if (received.extent(0) > 0) {
      record(received);
      Kokkos::deep_copy(h, received);
    } else {
      for (std::size_t i = 0; i < rows; ++i)
        for (std::size_t c = 0; c < width; ++c)
          h(i, c) = float(daa::core::counter_normal(9, daa::core::RngPurpose::test,
                                                    std::size_t(micro), i * width + c));
    }
    for (std::size_t k = 0; k < h.size(); ++k) h.data()[k] += float(stage + 1);
    Kokkos::deep_copy(outputs[std::size_t(slot)], h);
    return outputs[std::size_t(slot)];
  };
  const auto backward = [&](int micro, int slot, const M& received_grad) {
    auto h = Kokkos::create_mirror_view(grads[std::size_t(slot)]);
    if (received_grad.extent(0) > 0) {
      record(received_grad);
      Kokkos::deep_copy(h, received_grad);
    } else {
      for (std::size_t k = 0; k < h.size(); ++k) h.data()[k] = float(micro) - 0.25f * float(k);
    }
    for (std::size_t k = 0; k < h.size(); ++k) h.data()[k] *= 2.0f;
    Kokkos::deep_copy(grads[std::size_t(slot)], h);
    return grads[std::size_t(slot)];
  };
  daa::parallel::PipelineTiming timing;
  schedule.train_step(3, rows, forward, backward, timing);
  schedule.forward_only(rows, forward, timing);
  EXPECT_GE(timing.comm_seconds, 0.0);
  // What the stage must have received: stage 1 the activations (three, then the forward-only
  // one), stage 0 the gradients of its three micro-batches.
  const std::size_t expected = stages == 1 ? 0 : (stage == 1 ? 4u : 3u) * rows * width;
  EXPECT_EQ(seen.size(), expected);
  if (seen.size() != expected) return seen;
  if (stages == 2 && stage == 1) {
    std::size_t bad = 0;
    for (int m = 0; m < 4; ++m)
      for (std::size_t k = 0; k < rows * width; ++k) {
        const int micro = m < 3 ? m : 0;
        const float want = float(daa::core::counter_normal(9, daa::core::RngPurpose::test,
                                                           std::size_t(micro), k)) +
                           1.0f;
        if (seen[std::size_t(m) * rows * width + k] != want) ++bad;
      }
    EXPECT_EQ(bad, 0u);
  }
  if (stages == 2 && stage == 0) {
    std::size_t bad = 0;
    for (int micro = 0; micro < 3; ++micro)
      for (std::size_t k = 0; k < rows * width; ++k)
        if (seen[std::size_t(micro) * rows * width + k] != 2.0f * (float(micro) - 0.25f * float(k)))
          ++bad;
    EXPECT_EQ(bad, 0u);
  }
  return seen;
}

TEST(Transport, PipelineScheduleHostStagedEqualsDirect) {
  const std::vector<float> direct = pipeline_run(TransportMode::direct);
  const std::vector<float> staged = pipeline_run(TransportMode::host_staged);
  EXPECT_TRUE(same_bits(direct, staged)) << "host_staged pipeline differs from direct";
}

}  // namespace
