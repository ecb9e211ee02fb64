// The MoE layer's device routing bookkeeping (RoutingBookkeeping) against a plain host counting
// sort, the one the layer ran before (with its sums in the kernels' fixed chunk order): random
// choices over several n, k, E and capacity factors, with drops, experts that get no tokens and
// slot counts spanning several chunks; every figure must match bit for bit, on every enabled
// execution space (exec_spaces.hpp).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "daa/kernels/views.hpp"
#include "daa/model/routing_bookkeeping.hpp"
#include "daa/model/routing_bookkeeping_impl.hpp"
#include "exec_spaces.hpp"

namespace daa::model::test {
namespace {

using daa::test::ExecSpaces;
using daa::test::ExecSpaceTest;

struct Reference {
  std::vector<int> slot_pos, token_of, observed;
  RoutingCounts counts;
};

// Slot-major counting sort on the host: all first choices in token order, then all second
// choices, ...; an expert keeps its first `capacity` slots in that order.
template <class T>
Reference host_reference(const std::vector<int>& choice, const std::vector<T>& gate,
                         const std::vector<T>& probs, std::size_t n, std::size_t k, std::size_t E,
                         std::size_t capacity) {
  Reference ref;
  RoutingCounts& c = ref.counts;
  std::vector<std::size_t> kept(E, 0);
  std::vector<int> rank(n * k, -1);
  c.routed.assign(E, 0.0);
  c.prob_sum.assign(E, 0.0);
  c.gate_sum.assign(E, 0.0);
  for (std::size_t s = 0; s < k; ++s)
    for (std::size_t t = 0; t < n; ++t) {
      const int e = choice[t * k + s];
      c.routed[std::size_t(e)] += 1;
      if (kept[std::size_t(e)] < capacity) rank[t * k + s] = int(kept[std::size_t(e)]++);
    }
  // Probability sums: partial sums over chunks of kChunk tokens, then over the chunks in order.
  const std::size_t C = std::size_t(RoutingBookkeeping::kChunk);
  for (std::size_t t0 = 0; t0 < n; t0 += C)
    for (std::size_t e = 0; e < E; ++e) {
      double part = 0;
      for (std::size_t t = t0; t < std::min(n, t0 + C); ++t) part += double(probs[t * E + e]);
      c.prob_sum[e] += part;
    }
  c.expert_offset.assign(E + 1, 0);
  for (std::size_t e = 0; e < E; ++e) c.expert_offset[e + 1] = c.expert_offset[e] + kept[e];
  c.kept.assign(kept.begin(), kept.end());
  ref.slot_pos.assign(n * k, -1);
  ref.observed.assign(n * k, -1);
  ref.token_of.assign(c.expert_offset[E], -1);
  for (std::size_t t = 0; t < n; ++t)
    for (std::size_t s = 0; s < k; ++s) {
      const int r = rank[t * k + s];
      const int e = choice[t * k + s];
      if (r < 0) {
        ++c.dropped;
        continue;
      }
      const std::size_t pos = c.expert_offset[std::size_t(e)] + std::size_t(r);
      ref.slot_pos[t * k + s] = int(pos);
      ref.observed[t * k + s] = e;
      ref.token_of[pos] = int(t);
    }
  // Gate sums: partial sums of the kept gates over chunks of kChunk slots in slot-major order,
  // then over the chunks in order.
  for (std::size_t j0 = 0; j0 < n * k; j0 += C) {
    std::vector<double> part(E, 0.0);
    for (std::size_t j = j0; j < std::min(n * k, j0 + C); ++j) {
      const std::size_t s = j / n, t = j % n;
      if (rank[t * k + s] >= 0) part[std::size_t(choice[t * k + s])] += double(gate[t * k + s]);
    }
    for (std::size_t e = 0; e < E; ++e) c.gate_sum[e] += part[e];
  }
  return ref;
}

template <class T, class Space>
void check_case(BasicRoutingBookkeeping<Space>& book, std::size_t n, std::size_t k, std::size_t E,
                std::size_t used_experts, bool capacity_mode, double factor, unsigned seed) {
  SCOPED_TRACE("n=" + std::to_string(n) + " k=" + std::to_string(k) + " E=" + std::to_string(E) +
               " used=" + std::to_string(used_experts) + " factor=" + std::to_string(factor) +
               (capacity_mode ? " capacity" : " dropless"));
  std::mt19937 rng(seed);
  // Each token picks k distinct experts among the first used_experts (the rest get no tokens),
  // skewed towards low indices so that capacity drops happen.
  std::vector<int> choice(n * k);
  std::vector<T> gate(n * k), probs(n * E);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (std::size_t t = 0; t < n; ++t) {
    std::vector<int> pool;
    for (std::size_t e = 0; e < used_experts; ++e) pool.push_back(int(e));
    for (std::size_t s = 0; s < k; ++s) {
      const double u = unit(rng);
      const std::size_t pick = std::size_t(u * u * double(pool.size()));
      choice[t * k + s] = pool[pick];
      pool.erase(pool.begin() + std::ptrdiff_t(pick));
      gate[t * k + s] = T(unit(rng));
    }
    for (std::size_t e = 0; e < E; ++e) probs[t * E + e] = T(unit(rng));
  }
  const std::size_t capacity = expert_capacity(capacity_mode, factor, n, k, E);
  const Reference ref = host_reference(choice, gate, probs, n, k, E, capacity);

  using Book = BasicRoutingBookkeeping<Space>;
  typename Book::IntMatrix choice_d("choice", n, k);
  typename Book::template Matrix<T> gate_d("gate", n, k), probs_d("probs", n, E);
  {
    auto c = Kokkos::create_mirror_view(choice_d);
    auto g = Kokkos::create_mirror_view(gate_d);
    auto p = Kokkos::create_mirror_view(probs_d);
    for (std::size_t t = 0; t < n; ++t) {
      for (std::size_t s = 0; s < k; ++s) {
        c(t, s) = choice[t * k + s];
        g(t, s) = gate[t * k + s];
      }
      for (std::size_t e = 0; e < E; ++e) p(t, e) = probs[t * E + e];
    }
    Kokkos::deep_copy(choice_d, c);
    Kokkos::deep_copy(gate_d, g);
    Kokkos::deep_copy(probs_d, p);
  }
  typename Book::IntMatrix slot_pos("slot_pos", 0, 0);
  typename Book::IntVector token_of("token_of", 0);
  std::vector<int> observed;
  const RoutingCounts got =
      book.run(choice_d, gate_d, probs_d, capacity, slot_pos, token_of, &observed);

  EXPECT_EQ(got.expert_offset, ref.counts.expert_offset);
  EXPECT_EQ(got.kept, ref.counts.kept);
  EXPECT_EQ(got.routed, ref.counts.routed);
  EXPECT_EQ(got.gate_sum, ref.counts.gate_sum);  // exact: the same order of double additions
  EXPECT_EQ(got.prob_sum, ref.counts.prob_sum);
  EXPECT_EQ(got.dropped, ref.counts.dropped);
  EXPECT_EQ(observed, ref.observed);
  ASSERT_EQ(slot_pos.extent(0), n);
  ASSERT_EQ(slot_pos.extent(1), k);
  ASSERT_EQ(token_of.extent(0), ref.token_of.size());
  auto slot_pos_h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), slot_pos);
  auto token_of_h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), token_of);
  std::vector<int> slot_pos_v(n * k), token_of_v(token_of_h.extent(0));
  for (std::size_t t = 0; t < n; ++t)
    for (std::size_t s = 0; s < k; ++s) slot_pos_v[t * k + s] = slot_pos_h(t, s);
  for (std::size_t r = 0; r < token_of_v.size(); ++r) token_of_v[r] = token_of_h(r);
  EXPECT_EQ(slot_pos_v, ref.slot_pos);
  EXPECT_EQ(token_of_v, ref.token_of);
}

template <class Space>
class RoutingBookkeepingOn : public ExecSpaceTest<Space> {};
TYPED_TEST_SUITE(RoutingBookkeepingOn, ExecSpaces, daa::test::SpaceName);

TYPED_TEST(RoutingBookkeepingOn, MatchesTheHostCountingSortWithAndWithoutCapacity) {
  BasicRoutingBookkeeping<TypeParam>
      book;  // reused across shapes: its scratch must resize correctly
  unsigned seed = 1;
  for (const std::size_t n : {1u, 7u, 64u, 301u})
    for (const std::size_t E : {1u, 4u, 8u})
      for (const std::size_t k : {1u, 2u, 4u}) {
        if (k > E) continue;
        for (const std::size_t used : {E, (E + 1) / 2}) {
          if (used < k) continue;
          check_case<float>(book, n, k, E, used, false, 1.0, seed++);
          for (const double factor : {0.25, 0.5, 1.0, 1.25})
            check_case<double>(book, n, k, E, used, true, factor, seed++);
        }
      }
}

TYPED_TEST(RoutingBookkeepingOn, SeveralChunksWithAPartialLastChunk) {
  // n * k spans several kChunk-slot chunks and ends in a partial one; the tokens, too, span
  // several chunks (n > kChunk), and a chunk boundary falls inside the second choices.
  BasicRoutingBookkeeping<TypeParam> book;
  const std::size_t C = std::size_t(BasicRoutingBookkeeping<TypeParam>::kChunk);
  unsigned seed = 100;
  for (const std::size_t n : {C + 1, 3 * C - 7, 2 * C + C / 2 + 3})
    for (const std::size_t k : {1u, 2u, 3u}) {
      ASSERT_NE((n * k) % C, 0u);
      check_case<float>(book, n, k, 8, 8, false, 1.0, seed++);
      check_case<float>(book, n, k, 8, 5, true, 1.0, seed++);
      check_case<double>(book, n, k, 8, 8, true, 0.5, seed++);
    }
}

TYPED_TEST(RoutingBookkeepingOn, ZeroTokens) {
  BasicRoutingBookkeeping<TypeParam> book;
  check_case<float>(book, 0, 2, 4, 4, true, 1.25, 3);
  check_case<double>(book, 0, 1, 1, 1, false, 1.0, 4);
}

TYPED_TEST(RoutingBookkeepingOn, CapacityKeepsFirstChoicesBeforeSecondChoices) {
  // Three tokens all choose expert 0 then expert 1; capacity 2 per expert keeps tokens 0 and 1's
  // first choices and their second choices, and drops token 2 from both.
  using Book = BasicRoutingBookkeeping<TypeParam>;
  Book book;
  typename Book::IntMatrix choice("choice", 3, 2);
  typename Book::template Matrix<float> gate("gate", 3, 2), probs("probs", 3, 2);
  auto c = Kokkos::create_mirror_view(choice);
  for (int t = 0; t < 3; ++t) {
    c(t, 0) = t == 2 ? 1 : 0;
    c(t, 1) = t == 2 ? 0 : 1;
  }
  Kokkos::deep_copy(choice, c);
  Kokkos::deep_copy(gate, 0.5f);
  Kokkos::deep_copy(probs, 0.5f);
  typename Book::IntMatrix slot_pos("slot_pos", 0, 0);
  typename Book::IntVector token_of("token_of", 0);
  std::vector<int> observed;
  const RoutingCounts got = book.run(choice, gate, probs, 2, slot_pos, token_of, &observed);
  // Slot-major: expert 0 sees (t0,s0), (t1,s0), then (t2,s1) -> dropped; expert 1 sees (t2,s0)
  // first, then (t0,s1), then (t1,s1) -> dropped.
  EXPECT_EQ(observed, (std::vector<int>{0, 1, 0, -1, 1, -1}));
  EXPECT_EQ(got.expert_offset, (std::vector<std::size_t>{0, 2, 4}));
  EXPECT_EQ(got.dropped, 2);
  auto p = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), slot_pos);
  EXPECT_EQ(p(2, 0), 2);  // expert 1's first row
  EXPECT_EQ(p(0, 1), 3);
}

}  // namespace
}  // namespace daa::model::test
