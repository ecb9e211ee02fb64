// Token dispatcher on hand-made routings: every row carries (source rank, source row, expert) as
// its values, so each rank can check that exactly the right rows arrive, in the documented expert
// order, and that to_sources(to_experts(x)) == x bit for bit, on both dispatch paths (fused and
// permute), which must also agree with each other bit for bit. Run with 1, 2 and 4 ranks; with 4
// ranks every routing also runs on two EP groups of 2 consecutive ranks.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "daa/core/error.hpp"
#include "daa/core/rng.hpp"
#include "daa/parallel/token_dispatcher.hpp"

namespace {

using daa::kernels::Matrix;
using daa::parallel::Communicator;
using daa::parallel::DispatchPath;
using daa::parallel::DispatchPlan;
using daa::parallel::TokenDispatcher;

// routing[s][e]: rows group rank s packs for global expert e. Every rank knows the whole table,
// so it can predict what it must receive.
using Routing = std::vector<std::vector<std::size_t>>;
using CountFn = std::function<std::size_t(int source, std::size_t expert)>;

Routing make_routing(int ep, std::size_t experts, const CountFn& rows) {
  Routing routing(static_cast<std::size_t>(ep), std::vector<std::size_t>(experts));
  for (int s = 0; s < ep; ++s)
    for (std::size_t e = 0; e < experts; ++e) routing[s][e] = rows(s, e);
  return routing;
}

// Deterministic pseudo-random routing: each of `rows` rows of each source picks an expert
// uniformly from counter_uniform(seed, test, salt*64 + source, row).
Routing random_routing(int ep, std::size_t experts, std::size_t rows, std::uint64_t salt) {
  Routing routing(static_cast<std::size_t>(ep), std::vector<std::size_t>(experts, 0));
  for (int s = 0; s < ep; ++s)
    for (std::size_t i = 0; i < rows; ++i) {
      const double u =
          daa::core::counter_uniform(2024, daa::core::RngPurpose::test, salt * 64 + s, i);
      ++routing[s][std::size_t(u * double(experts))];
    }
  return routing;
}

std::vector<std::size_t> prefix(const std::vector<std::size_t>& counts) {
  std::vector<std::size_t> offset(counts.size() + 1, 0);
  for (std::size_t e = 0; e < counts.size(); ++e) offset[e + 1] = offset[e] + counts[e];
  return offset;
}

// Value of column c of packed row i (global expert e) on source s: distinct for every (s, i, e,
// c) of these tests and an exact integer in float (below 2^24), so comparisons are exact.
template <class T>
T code(int s, std::size_t i, std::size_t e, std::size_t c, std::size_t width) {
  return T(((double(s) * 4096 + double(i)) * 64 + double(e)) * double(width) + double(c));
}

// A broken shape would leave this rank's later collectives unmatched and the others waiting until
// the ctest timeout; end the whole job at once instead.
void require(bool ok, const std::string& what) {
  if (ok) return;
  std::fprintf(stderr, "test_token_dispatcher: %s\n", what.c_str());
  MPI_Abort(MPI_COMM_WORLD, 1);
}

template <class T>
bool same_bits(const T* a, const T* b, std::size_t n) {
  return n == 0 || std::memcmp(a, b, n * sizeof(T)) == 0;
}

const char* path_name(DispatchPath path) {
  return path == DispatchPath::fused ? "fused" : "permute";
}

// Runs every check on one routing over one EP group, on one dispatch path.
template <class T>
void check_routing_on(const Communicator& group, const Routing& routing, std::size_t width,
                      DispatchPath path) {
  const int ep = group.size();
  const int me = group.rank();
  require(routing.size() == std::size_t(ep), "routing table does not match the group size");
  const std::size_t E = routing[0].size();
  const std::size_t L = E / std::size_t(ep);
  const std::string where = group.name() + " rank " + std::to_string(me) +
                            ", E=" + std::to_string(E) + ", width " + std::to_string(width) + ", " +
                            path_name(path) + " path";
  SCOPED_TRACE(where);

  const DispatchPlan plan = DispatchPlan::build(group, routing[me]);
  const std::vector<std::size_t> my_offset = prefix(routing[me]);
  const std::size_t P = my_offset[E];
  EXPECT_EQ(plan.experts(), E);
  EXPECT_EQ(plan.local_experts(), L);
  EXPECT_EQ(plan.send_rows(), P);
  EXPECT_EQ(plan.identity_permutation(), ep == 1 || L == 1);

  // Expected receive side, straight from the table.
  std::size_t R = 0;
  std::vector<std::size_t> expected_offset(L + 1, 0);
  for (std::size_t j = 0; j < L; ++j) {
    for (int s = 0; s < ep; ++s) {
      EXPECT_EQ(plan.rows_from(s, j), routing[s][me * L + j]);
      expected_offset[j + 1] += routing[s][me * L + j];
    }
    expected_offset[j + 1] += expected_offset[j];
  }
  R = expected_offset[L];
  EXPECT_EQ(plan.recv_rows(), R);
  EXPECT_EQ(std::vector<std::size_t>(plan.local_expert_offset().begin(),
                                     plan.local_expert_offset().end()),
            expected_offset);
  for (int p = 0; p < ep; ++p) {
    EXPECT_EQ(plan.send_counts()[p], my_offset[(p + 1) * L] - my_offset[p * L]);
    EXPECT_EQ(plan.send_displs()[p], my_offset[p * L]);
  }

  // The two permutations are inverse bijections.
  auto r_of_e =
      Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), plan.received_of_expert_row());
  auto e_of_r =
      Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), plan.expert_row_of_received());
  require(r_of_e.extent(0) == R && e_of_r.extent(0) == R, where + ": permutation sizes");
  std::size_t bad_perm = 0;
  for (std::size_t q = 0; q < R; ++q)
    if (r_of_e(q) < 0 || std::size_t(r_of_e(q)) >= R || std::size_t(e_of_r(r_of_e(q))) != q)
      ++bad_perm;
  EXPECT_EQ(bad_perm, 0u);

  // Packed rows carry their own identity.
  Matrix<T> packed("packed", P, width);
  auto packed_h = Kokkos::create_mirror_view(packed);
  for (std::size_t e = 0; e < E; ++e)
    for (std::size_t i = my_offset[e]; i < my_offset[e + 1]; ++i)
      for (std::size_t c = 0; c < width; ++c) packed_h(i, c) = code<T>(me, i, e, c, width);
  Kokkos::deep_copy(packed, packed_h);

  TokenDispatcher dispatcher(daa::parallel::TransportMode::direct, path);
  Matrix<T> expert_rows("expert_rows", 0, 0);
  dispatcher.to_experts(plan, packed, expert_rows);
  require(expert_rows.extent(0) == R && expert_rows.extent(1) == width,
          where + ": to_experts result shape");

  // Expert order: local expert j, then source rank, then the source's packed order.
  auto got = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), expert_rows);
  std::size_t q = 0, mismatches = 0;
  std::string first_mismatch;
  std::vector<std::size_t> expert_of_row(R);
  for (std::size_t j = 0; j < L; ++j) {
    EXPECT_EQ(q, expected_offset[j]);
    const std::size_t e = me * L + j;
    for (int s = 0; s < ep; ++s) {
      const std::vector<std::size_t> offset = prefix(routing[s]);
      for (std::size_t i = offset[e]; i < offset[e + 1]; ++i, ++q) {
        expert_of_row[q] = e;
        for (std::size_t c = 0; c < width; ++c)
          if (got(q, c) != code<T>(s, i, e, c, width) && mismatches++ == 0)
            first_mismatch = "expert row " + std::to_string(q) + " col " + std::to_string(c) +
                             ": got " + std::to_string(double(got(q, c))) + ", want source " +
                             std::to_string(s) + " row " + std::to_string(i) + " expert " +
                             std::to_string(e);
      }
    }
  }
  EXPECT_EQ(q, R);
  EXPECT_EQ(mismatches, 0u) << first_mismatch;

  // Statistics: rows that stay on this rank are local, the rest travel.
  const std::size_t self_rows = my_offset[(me + 1) * L] - my_offset[me * L];
  const std::size_t row_bytes = width * sizeof(T);
  EXPECT_EQ(dispatcher.last_stats().bytes_local, self_rows * row_bytes);
  EXPECT_EQ(dispatcher.last_stats().bytes_sent, (P - self_rows) * row_bytes);
  EXPECT_EQ(dispatcher.last_stats().bytes_received, (R - self_rows) * row_bytes);
  EXPECT_GE(dispatcher.last_stats().mpi_seconds, 0.0);

  // Exact inverse: to_sources(to_experts(x)) == x, bit for bit.
  Matrix<T> back("back", 0, 0);
  dispatcher.to_sources(plan, expert_rows, back);
  require(back.extent(0) == P && back.extent(1) == width, where + ": to_sources result shape");
  auto back_h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), back);
  EXPECT_TRUE(same_bits(back_h.data(), packed_h.data(), P * width)) << "round trip changed rows";
  EXPECT_EQ(dispatcher.last_stats().bytes_sent, (R - self_rows) * row_bytes);
  EXPECT_EQ(dispatcher.last_stats().bytes_received, (P - self_rows) * row_bytes);

  // An "expert" that transforms its rows (y = 2x + e): each result comes home to the row that
  // went out, which is what the forward pass's combine relies on.
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t c = 0; c < width; ++c) got(r, c) = T(2) * got(r, c) + T(expert_of_row[r]);
  Kokkos::deep_copy(expert_rows, got);
  dispatcher.to_sources(plan, expert_rows, back);
  Kokkos::deep_copy(back_h, back);
  mismatches = 0;
  for (std::size_t e = 0; e < E; ++e)
    for (std::size_t i = my_offset[e]; i < my_offset[e + 1]; ++i)
      for (std::size_t c = 0; c < width; ++c)
        if (back_h(i, c) != T(2) * packed_h(i, c) + T(e)) ++mismatches;
  EXPECT_EQ(mismatches, 0u) << "expert outputs returned to the wrong rows";

  // Arbitrary (non-integer) values round-trip bit for bit too, and the staging buffer is reused:
  // a second round of the same plan allocates nothing.
  for (std::size_t i = 0; i < P; ++i)
    for (std::size_t c = 0; c < width; ++c)
      packed_h(i, c) = T(daa::core::counter_normal(7, daa::core::RngPurpose::test, std::size_t(me),
                                                   i * width + c));
  Kokkos::deep_copy(packed, packed_h);
  const std::size_t staging_before = dispatcher.staging_bytes();
  for (int round = 0; round < 2; ++round) {
    dispatcher.to_experts(plan, packed, expert_rows);
    dispatcher.to_sources(plan, expert_rows, back);
  }
  EXPECT_EQ(dispatcher.staging_bytes(), staging_before);
  Kokkos::deep_copy(back_h, back);
  EXPECT_TRUE(same_bits(back_h.data(), packed_h.data(), P * width))
      << "round trip of random values changed bits";
  // Totals add up every call: 3 x to_experts and 4 x to_sources, each sending and receiving
  // everything but the local rows.
  const std::size_t per_call = (P - self_rows + R - self_rows) * row_bytes;
  EXPECT_EQ(dispatcher.total_stats().bytes_sent + dispatcher.total_stats().bytes_received,
            7 * per_call);
  EXPECT_EQ(dispatcher.total_stats().bytes_local, 7 * self_rows * row_bytes);
}

template <class T>
void check_routing(const Communicator& group, const Routing& routing, std::size_t width) {
  for (const DispatchPath path : {DispatchPath::fused, DispatchPath::permute})
    check_routing_on<T>(group, routing, width, path);
}

// The EP groups a routing runs on: the world, and with 4 ranks also two groups of 2 consecutive
// ranks (as the topology will build them).
class Groups {
 public:
  Groups() {
    groups_.emplace_back(MPI_COMM_WORLD, "world");
    int size = 0, rank = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (size == 4) {
      MPI_Comm_split(MPI_COMM_WORLD, rank / 2, rank, &pair_);
      groups_.emplace_back(pair_, "ep-pair-" + std::to_string(rank / 2));
    }
  }
  ~Groups() {
    if (pair_ != MPI_COMM_NULL) MPI_Comm_free(&pair_);
  }
  Groups(const Groups&) = delete;
  Groups& operator=(const Groups&) = delete;
  const std::vector<Communicator>& all() const { return groups_; }

 private:
  MPI_Comm pair_ = MPI_COMM_NULL;
  std::vector<Communicator> groups_;
};

// Mixed counts with zero rows for some experts (and some (source, expert) pairs).
std::size_t mixed(int s, std::size_t e) {
  return (std::size_t(s) + 2 * e) % 3;
}

TEST(TokenDispatcher, MixedCountsWidth3Float) {
  Groups groups;
  for (const auto& g : groups.all())
    check_routing<float>(g, make_routing(g.size(), 4 * g.size(), mixed), 3);
}

TEST(TokenDispatcher, MixedCountsWidth1Double) {
  Groups groups;
  for (const auto& g : groups.all())
    check_routing<double>(g, make_routing(g.size(), 4 * g.size(), mixed), 1);
}

TEST(TokenDispatcher, MixedCountsWidth1Float) {
  Groups groups;
  for (const auto& g : groups.all())
    check_routing<float>(g, make_routing(g.size(), 4 * g.size(), mixed), 1);
}

TEST(TokenDispatcher, OneExpertPerRank) {
  Groups groups;
  const auto rows = [](int s, std::size_t e) { return (std::size_t(s) + e) % 4 + 1; };
  for (const auto& g : groups.all()) {
    check_routing<float>(g, make_routing(g.size(), g.size(), rows), 3);
    check_routing<double>(g, make_routing(g.size(), g.size(), rows), 1);
  }
}

TEST(TokenDispatcher, AllRowsToOneExpert) {
  Groups groups;
  for (const auto& g : groups.all()) {
    const std::size_t E = 4 * g.size();
    const auto rows = [E](int s, std::size_t e) { return e == E - 1 ? 5 + std::size_t(s) : 0; };
    check_routing<float>(g, make_routing(g.size(), E, rows), 3);
    // E = ep: every rank but the last receives nothing.
    const auto last = [&g](int s, std::size_t e) {
      return e == std::size_t(g.size()) - 1 ? 3 + std::size_t(s) : 0;
    };
    check_routing<double>(g, make_routing(g.size(), g.size(), last), 3);
  }
}

TEST(TokenDispatcher, EmptyRank) {
  Groups groups;
  const auto rows = [](int s, std::size_t e) { return s == 1 ? 0 : 1 + e % 3; };
  for (const auto& g : groups.all()) {
    check_routing<float>(g, make_routing(g.size(), 4 * g.size(), rows), 3);
    check_routing<double>(g, make_routing(g.size(), g.size(), rows), 1);
  }
}

TEST(TokenDispatcher, NoRowsAnywhere) {
  Groups groups;
  const auto none = [](int, std::size_t) { return std::size_t(0); };
  for (const auto& g : groups.all()) {
    check_routing<float>(g, make_routing(g.size(), 4 * g.size(), none), 3);
    check_routing<double>(g, make_routing(g.size(), g.size(), none), 1);
  }
}

TEST(TokenDispatcher, RandomRouting1000RowsEightExperts) {
  Groups groups;
  for (const auto& g : groups.all()) {
    const auto salt = std::uint64_t(std::hash<std::string>{}(g.name()) % 1000);
    check_routing<float>(g, random_routing(g.size(), 8, 1000, salt), 3);
    check_routing<double>(g, random_routing(g.size(), 8, 1000, salt + 1), 1);
  }
}

// One plan and one dispatcher carry several widths (activations, then gradients).
TEST(TokenDispatcher, OnePlanManyWidths) {
  const Communicator world(MPI_COMM_WORLD, "world");
  const Routing routing = random_routing(world.size(), 2 * world.size(), 300, 5);
  const DispatchPlan plan = DispatchPlan::build(world, routing[world.rank()]);
  TokenDispatcher dispatcher;
  Matrix<float> rows("rows", 0, 0), back("back", 0, 0);
  for (const std::size_t width : {5, 1, 16, 3}) {
    Matrix<float> packed("packed", plan.send_rows(), width);
    auto fill = Kokkos::create_mirror_view(packed);
    for (std::size_t i = 0; i < plan.send_rows(); ++i)
      for (std::size_t c = 0; c < width; ++c) fill(i, c) = float(i) * 0.5f + float(c);
    Kokkos::deep_copy(packed, fill);
    dispatcher.to_experts(plan, packed, rows);
    EXPECT_EQ(rows.extent(0), plan.recv_rows());
    EXPECT_EQ(rows.extent(1), width);
    dispatcher.to_sources(plan, rows, back);
    auto a = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), packed);
    auto b = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), back);
    require(b.extent(0) == a.extent(0) && b.extent(1) == width, "to_sources result shape");
    EXPECT_TRUE(same_bits(a.data(), b.data(), a.size())) << "width " << width;
  }
}

// Forced host staging (what a device build without NCCL does) moves the same bits as direct MPI,
// on routings with and without the permutation, and counts exactly the bytes it stages: every row
// MPI moves, which is every row but the local ones when the permutation kernel moves those.
template <class T>
void check_staged_equals_direct(const Communicator& group, const Routing& routing,
                                std::size_t width, DispatchPath path) {
  const int me = group.rank();
  SCOPED_TRACE(group.name() + " rank " + std::to_string(me) + ", " + path_name(path) + " path");
  const DispatchPlan plan = DispatchPlan::build(group, routing[me]);
  Matrix<T> packed("packed", plan.send_rows(), width);
  auto fill = Kokkos::create_mirror_view(packed);
  for (std::size_t i = 0; i < plan.send_rows(); ++i)
    for (std::size_t c = 0; c < width; ++c)
      fill(i, c) = T(daa::core::counter_normal(3, daa::core::RngPurpose::test, std::size_t(me),
                                               i * width + c));
  Kokkos::deep_copy(packed, fill);
  TokenDispatcher direct(daa::parallel::TransportMode::direct, path);
  TokenDispatcher staged(daa::parallel::TransportMode::host_staged, path);
  Matrix<T> rows_d("rows_d", 0, 0), rows_s("rows_s", 0, 0), back_d("back_d", 0, 0),
      back_s("back_s", 0, 0);
  direct.to_experts(plan, packed, rows_d);
  staged.to_experts(plan, packed, rows_s);
  const auto forward = staged.last_stats();
  // The experts' outputs: anything, the same on both paths.
  Kokkos::deep_copy(rows_s, rows_d);
  direct.to_sources(plan, rows_d, back_d);
  staged.to_sources(plan, rows_s, back_s);
  const auto backward = staged.last_stats();

  auto a = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), rows_d);
  auto b = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), rows_s);
  require(a.size() == b.size(), "to_experts result sizes");
  EXPECT_TRUE(same_bits(a.data(), b.data(), a.size())) << "to_experts: staged differs";
  auto c = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), back_d);
  auto d = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), back_s);
  require(c.size() == d.size(), "to_sources result sizes");
  EXPECT_TRUE(same_bits(c.data(), d.data(), c.size())) << "to_sources: staged differs";
  EXPECT_TRUE(same_bits(c.data(), fill.data(), c.size())) << "round trip changed bits";

  EXPECT_EQ(direct.total_stats().bytes_staged_to_host + direct.total_stats().staging_copies, 0u);
  // With one rank nothing travels; on the permute path with the identity MPI moves the local rows
  // too (the fused path never hands them to MPI).
  const std::size_t local =
      group.size() == 1 || !plan.identity_permutation() || path == DispatchPath::fused
          ? 0
          : forward.bytes_local;
  const std::size_t to_host = group.size() == 1 ? 0 : forward.bytes_sent + local;
  const std::size_t from_host = group.size() == 1 ? 0 : forward.bytes_received + local;
  EXPECT_EQ(forward.bytes_staged_to_host, to_host);
  EXPECT_EQ(forward.bytes_staged_from_host, from_host);
  EXPECT_EQ(backward.bytes_staged_to_host, from_host);
  EXPECT_EQ(backward.bytes_staged_from_host, to_host);
  EXPECT_EQ(staged.total_stats().bytes_staged_to_host, to_host + from_host);
  EXPECT_EQ(staged.total_stats().staging_copies, forward.staging_copies + backward.staging_copies);
  EXPECT_EQ(forward.staging_copies > 0, to_host + from_host > 0);
}

TEST(TokenDispatcher, HostStagedEqualsDirect) {
  Groups groups;
  for (const auto& g : groups.all()) {
    const auto salt = std::uint64_t(std::hash<std::string>{}(g.name()) % 1000);
    // Four local experts per rank (a permutation) and one (the identity), with empty experts,
    // and the identity with rows for every (source, expert) pair, the own ones included.
    const auto every_pair = [](int s, std::size_t e) { return 1 + (std::size_t(s) + e) % 3; };
    for (const DispatchPath path : {DispatchPath::fused, DispatchPath::permute}) {
      check_staged_equals_direct<float>(g, random_routing(g.size(), 4 * g.size(), 200, salt), 3,
                                        path);
      check_staged_equals_direct<double>(g, make_routing(g.size(), g.size(), mixed), 2, path);
      check_staged_equals_direct<float>(g, make_routing(g.size(), 4 * g.size(), mixed), 1, path);
      check_staged_equals_direct<float>(g, make_routing(g.size(), g.size(), every_pair), 2, path);
    }
  }
}

// The fused path (MPI scatters rows straight into expert order) gives exactly the bits of the
// permute path (Alltoallv + permutation kernel, the dispatcher before the fusion), both ways, in
// direct and host_staged mode, on random non-integer values and an "expert" that changes them.
template <class T>
void check_fused_equals_permute(const Communicator& group, const Routing& routing,
                                std::size_t width, daa::parallel::TransportMode mode) {
  const int me = group.rank();
  SCOPED_TRACE(group.name() + " rank " + std::to_string(me) + ", mode " +
               daa::parallel::to_string(mode) + ", width " + std::to_string(width));
  const DispatchPlan plan = DispatchPlan::build(group, routing[me]);
  Matrix<T> packed("packed", plan.send_rows(), width);
  auto fill = Kokkos::create_mirror_view(packed);
  for (std::size_t i = 0; i < plan.send_rows(); ++i)
    for (std::size_t c = 0; c < width; ++c)
      fill(i, c) = T(daa::core::counter_normal(11, daa::core::RngPurpose::test, std::size_t(me),
                                               i * width + c));
  Kokkos::deep_copy(packed, fill);
  TokenDispatcher fused(mode, DispatchPath::fused), permute(mode, DispatchPath::permute);
  EXPECT_EQ(fused.path(), DispatchPath::fused);
  Matrix<T> rows_f("rows_f", 0, 0), rows_p("rows_p", 0, 0), back_f("back_f", 0, 0),
      back_p("back_p", 0, 0);
  fused.to_experts(plan, packed, rows_f);
  permute.to_experts(plan, packed, rows_p);
  auto a = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), rows_f);
  auto b = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), rows_p);
  require(a.size() == b.size() && a.extent(0) == plan.recv_rows(), "to_experts result sizes");
  EXPECT_TRUE(same_bits(a.data(), b.data(), a.size())) << "to_experts: fused differs";
  for (std::size_t r = 0; r < a.extent(0); ++r)
    for (std::size_t c = 0; c < width; ++c) a(r, c) = a(r, c) * T(1.25) + T(r % 7);
  Kokkos::deep_copy(rows_f, a);
  Kokkos::deep_copy(rows_p, a);
  fused.to_sources(plan, rows_f, back_f);
  permute.to_sources(plan, rows_p, back_p);
  auto c = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), back_f);
  auto d = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), back_p);
  require(c.size() == d.size() && c.extent(0) == plan.send_rows(), "to_sources result sizes");
  EXPECT_TRUE(same_bits(c.data(), d.data(), c.size())) << "to_sources: fused differs";
  // The same bytes counted on both paths.
  EXPECT_EQ(fused.total_stats().bytes_sent, permute.total_stats().bytes_sent);
  EXPECT_EQ(fused.total_stats().bytes_received, permute.total_stats().bytes_received);
  EXPECT_EQ(fused.total_stats().bytes_local, permute.total_stats().bytes_local);
  EXPECT_EQ(fused.staging_bytes(), 0u);  // the fused path needs no staging buffer
}

TEST(TokenDispatcher, FusedEqualsPermute) {
  Groups groups;
  const auto empty_rank = [](int s, std::size_t e) { return s == 1 ? 0 : 1 + e % 3; };
  for (const auto& g : groups.all()) {
    const auto salt = std::uint64_t(std::hash<std::string>{}(g.name()) % 1000);
    for (const auto mode :
         {daa::parallel::TransportMode::direct, daa::parallel::TransportMode::host_staged}) {
      check_fused_equals_permute<float>(g, random_routing(g.size(), 8, 1000, salt), 7, mode);
      check_fused_equals_permute<double>(g, random_routing(g.size(), 4 * g.size(), 300, salt + 1),
                                         3, mode);
      check_fused_equals_permute<float>(g, make_routing(g.size(), 4 * g.size(), empty_rank), 5,
                                        mode);
      check_fused_equals_permute<float>(g, make_routing(g.size(), g.size(), empty_rank), 2, mode);
    }
  }
}

TEST(TokenDispatcher, RefusesExpertsNotDivisibleByGroup) {
  const Communicator world(MPI_COMM_WORLD, "world");
  // Every rank sees the same E and size, so every rank refuses before any MPI call.
  if (world.size() > 1) {
    const std::vector<std::size_t> uneven(std::size_t(world.size()) + 1, 1);
    EXPECT_THROW(DispatchPlan::build(world, uneven), daa::Error);
  }
  const std::vector<std::size_t> no_experts;
  EXPECT_THROW(DispatchPlan::build(world, no_experts), daa::Error);
}

TEST(TokenDispatcher, RefusesWrongShapes) {
  const Communicator world(MPI_COMM_WORLD, "world");
  const std::vector<std::size_t> counts(std::size_t(world.size()), 2);
  const DispatchPlan plan = DispatchPlan::build(world, counts);
  TokenDispatcher dispatcher;
  Matrix<float> packed("packed", plan.send_rows() + 1, 3), rows("rows", 0, 0);
  EXPECT_THROW(dispatcher.to_experts(plan, packed, rows), daa::Error);
  Matrix<float> expert_rows("expert_rows", plan.recv_rows() + 1, 3);
  EXPECT_THROW(dispatcher.to_sources(plan, expert_rows, rows), daa::Error);
}

// 2^21 rows of width 1024 is 2^31 elements: one more than an MPI int count can hold. The rows
// stay on their own rank (nothing is allocated for them); every rank refuses alike.
TEST(TokenDispatcher, RefusesCountsAboveIntMax) {
  const Communicator world(MPI_COMM_WORLD, "world");
  const std::size_t E = std::size_t(world.size());
  std::vector<std::size_t> counts(E, 0);
  counts[std::size_t(world.rank())] = std::size_t(1) << 21;
  const DispatchPlan plan = DispatchPlan::build(world, counts);
  EXPECT_NO_THROW(plan.check_width(1023));
  try {
    plan.check_width(1024);
    ADD_FAILURE() << "check_width(1024) accepted 2^31 elements";
  } catch (const daa::Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("'world'"), std::string::npos) << what;
    EXPECT_NE(what.find("2147483648"), std::string::npos) << what;
  }
  TokenDispatcher dispatcher;
  Matrix<float> packed("packed", 0, 1024), rows("rows", 0, 0);
  EXPECT_THROW(dispatcher.to_experts(plan, packed, rows), daa::Error);
}

}  // namespace
