// Control-message exchange (daa/parallel/exchange.hpp): structs with strings, vectors and numbers
// of a different size on every rank all-gather and broadcast intact, and bytes that do not decode
// (garbled, truncated, overlong, or sent by a rank whose serialize() lies) raise a daa::Error that
// names the communicator and the type on every rank, instead of crashing or hanging.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <boost/serialization/split_member.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "daa/core/error.hpp"
#include "daa/parallel/exchange.hpp"

namespace {

using daa::parallel::all_gather_object;
using daa::parallel::broadcast_object;
using daa::parallel::Communicator;
using daa::parallel::from_bytes;
using daa::parallel::to_bytes;
using testing::HasSubstr;

struct Message {
  int rank = -1;
  std::string name;
  std::vector<double> values;
  std::vector<std::string> words;
  std::map<int, std::string> notes;
  std::int64_t big = 0;
  bool flag = false;

  template <class Archive>
  void serialize(Archive& ar, unsigned /*version*/) {
    ar& rank& name& values& words& notes& big& flag;
  }
};

// Rank r's message: every part sized by r (rank 0's vectors are empty), a NUL inside a string.
Message message_of(int r) {
  Message m;
  m.rank = r;
  m.name = std::string(std::size_t(37 * r + 1), char('a' + r % 26));
  m.name += std::string("\0tail", 5);
  for (int i = 0; i < 3 * r; ++i) m.values.push_back(0.1 * i - r);
  for (int i = 0; i <= r; ++i) m.words.push_back(std::string(std::size_t(i), 'w') + "\n");
  for (int i = 0; i < r; ++i) m.notes[-i] = "note " + std::to_string(i);
  m.big = (std::int64_t(1) << 40) + r;
  m.flag = r % 2 == 1;
  return m;
}

void expect_message(const Message& got, int r) {
  const Message want = message_of(r);
  EXPECT_EQ(got.rank, want.rank);
  EXPECT_EQ(got.name, want.name) << "rank " << r;
  EXPECT_EQ(got.values, want.values) << "rank " << r;
  EXPECT_EQ(got.words, want.words) << "rank " << r;
  EXPECT_EQ(got.notes, want.notes) << "rank " << r;
  EXPECT_EQ(got.big, want.big) << "rank " << r;
  EXPECT_EQ(got.flag, want.flag) << "rank " << r;
}

// Writes `written` items after claiming `claimed` (a sender with a bug, or a lying rank); reads
// as many as it claims.
struct Liar {
  int claimed = 0;
  int written = 0;

  template <class Archive>
  void save(Archive& ar, unsigned /*version*/) const {
    ar << claimed;
    for (int i = 0; i < written; ++i) {
      const int item = i;
      ar << item;
    }
  }
  template <class Archive>
  void load(Archive& ar, unsigned /*version*/) {
    ar >> claimed;
    for (int i = 0, x = 0; i < claimed; ++i) ar >> x;
    written = claimed;
  }
  BOOST_SERIALIZATION_SPLIT_MEMBER()
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const daa::Error& e) {
    return e.what();
  }
  return "(no daa::Error)";
}

TEST(Exchange, AllGatherOfDifferentSizes) {
  const Communicator world(MPI_COMM_WORLD, "world");
  const std::vector<Message> all = all_gather_object(world, message_of(world.rank()));
  ASSERT_EQ(all.size(), std::size_t(world.size()));
  for (int r = 0; r < world.size(); ++r) expect_message(all[std::size_t(r)], r);
}

TEST(Exchange, AllGatherOfPlainValues) {
  const Communicator world(MPI_COMM_WORLD, "world");
  const int r = world.rank();
  // Rank 0 contributes an empty list: zero elements still make a message.
  const std::vector<std::vector<std::string>> all =
      all_gather_object(world, std::vector<std::string>(std::size_t(r), "x"));
  for (int q = 0; q < world.size(); ++q)
    EXPECT_EQ(all[std::size_t(q)], std::vector<std::string>(std::size_t(q), "x"));
  const std::vector<std::int64_t> ranks = all_gather_object(world, std::int64_t(r) * 1000);
  for (int q = 0; q < world.size(); ++q) EXPECT_EQ(ranks[std::size_t(q)], std::int64_t(q) * 1000);
}

TEST(Exchange, BroadcastFromEveryRoot) {
  const Communicator world(MPI_COMM_WORLD, "world");
  for (int root = 0; root < world.size(); ++root) {
    // Non-roots pass a different value, which must be ignored.
    const Message got = broadcast_object(world, message_of(world.rank()), root);
    expect_message(got, root);
  }
  EXPECT_EQ(broadcast_object(world, world.rank() == 0 ? 4711 : -1), 4711);
}

TEST(Exchange, SubCommunicatorRanks) {
  const Communicator world(MPI_COMM_WORLD, "world");
  MPI_Comm halves = MPI_COMM_NULL;
  ASSERT_EQ(MPI_Comm_split(MPI_COMM_WORLD, world.rank() % 2, world.rank(), &halves), MPI_SUCCESS);
  {
    const Communicator half(halves, "halves");
    const std::vector<Message> all = all_gather_object(half, message_of(world.rank()));
    ASSERT_EQ(all.size(), std::size_t(half.size()));
    for (int q = 0; q < half.size(); ++q)
      expect_message(all[std::size_t(q)], 2 * q + world.rank() % 2);
    const int last = half.size() - 1;
    expect_message(broadcast_object(half, message_of(world.rank()), last),
                   2 * last + world.rank() % 2);
  }
  MPI_Comm_free(&halves);
}

TEST(Exchange, BadBytesNameTheContextAndType) {
  using Messages = std::vector<Message>;
  const std::string bytes = to_bytes(Messages{message_of(2), message_of(3)});
  EXPECT_EQ(from_bytes<Messages>(bytes, "test").size(), 2u);
  for (const std::string& bad :
       {std::string("this is not a batch of messages"), std::string(),
        bytes.substr(0, bytes.size() / 2), bytes.substr(0, bytes.size() - 1)}) {
    const std::string error = error_of([&] { from_bytes<Messages>(bad, "test input"); });
    EXPECT_THAT(error, HasSubstr("test input: cannot decode " + std::to_string(bad.size()) +
                                 " bytes as std::vector<(anonymous namespace)::Message>: "));
  }
  EXPECT_THAT(error_of([&] { from_bytes<Messages>(bytes + "x", "test input"); }),
              HasSubstr("as std::vector<(anonymous namespace)::Message>: trailing bytes"));
  // Default template arguments are left out of the name.
  EXPECT_THAT(error_of([] { from_bytes<std::map<int, std::string>>("x", "test input"); }),
              HasSubstr("cannot decode 1 bytes as std::map<int, std::string>: "));
}

TEST(Exchange, MalformedMessageFailsOnEveryRank) {
  const Communicator world(MPI_COMM_WORLD, "world");
  const int liar = world.size() - 1;
  // The liar claims 5 items and sends 2: its message is truncated for everybody.
  const Liar short_message{5, world.rank() == liar ? 2 : 5};
  const std::string gathered = error_of([&] { all_gather_object(world, short_message); });
  EXPECT_THAT(gathered, HasSubstr("parallel::all_gather_object over communicator 'world' (rank " +
                                  std::to_string(liar) + "'s message): cannot decode"));
  EXPECT_THAT(gathered, HasSubstr("as (anonymous namespace)::Liar: "));
  // Claims 1 item and sends 3: the decoded prefix leaves bytes over.
  const Liar long_message{1, world.rank() == liar ? 3 : 1};
  EXPECT_THAT(error_of([&] { all_gather_object(world, long_message); }),
              HasSubstr("'s message): cannot decode"));
  EXPECT_THAT(error_of([&] { all_gather_object(world, long_message); }),
              HasSubstr("trailing bytes"));
  // A broadcast fails on the root as well as everywhere else.
  const std::string broadcast = error_of([&] { broadcast_object(world, Liar{4, 1}, liar); });
  EXPECT_THAT(broadcast,
              HasSubstr("parallel::broadcast_object over communicator 'world' (from rank " +
                        std::to_string(liar) + "): cannot decode"));
  EXPECT_THAT(broadcast, HasSubstr("as (anonymous namespace)::Liar: "));
  // The communicator is still usable afterwards: nobody was left inside a collective.
  EXPECT_EQ(all_gather_object(world, world.rank()).size(), std::size_t(world.size()));
}

}  // namespace
