// Small structured control messages (DESIGN.md §5): any Boost-serializable value to bytes and back
// (to_bytes, from_bytes), all-gathered or broadcast over a Communicator (all_gather_object,
// broadcast_object). The only place in daa-swarm that holds Boost archive code.
#pragma once

#include <boost/archive/binary_iarchive.hpp>
#include <boost/archive/binary_oarchive.hpp>
#include <boost/serialization/map.hpp>
#include <boost/serialization/string.hpp>
#include <boost/serialization/utility.hpp>
#include <boost/serialization/vector.hpp>
#include <exception>
#include <sstream>
#include <streambuf>
#include <string>
#include <string_view>
#include <typeinfo>
#include <vector>

#include "daa/parallel/communicator.hpp"

namespace daa::parallel {

namespace detail {

// Reads a byte string in place: a control message is decoded without copying it first.
class ViewBuffer : public std::streambuf {
 public:
  explicit ViewBuffer(std::string_view bytes) {
    char* begin = const_cast<char*>(bytes.data());  // only ever read: no put area is set
    setg(begin, begin, begin + bytes.size());
  }
  bool at_end() { return sgetc() == traits_type::eof(); }
};

// The type's name without default template arguments, for error messages
// ("std::vector<daa::io::PieceHeader>").
std::string type_name(const std::type_info& type);

// Throws the daa::Error for bytes that did not decode: "<context>: cannot decode <n> bytes as
// <type>: <why>". `error` is the exception the archive threw, or null when `why` says it all.
[[noreturn]] void throw_decode_error(std::string_view context, std::size_t bytes,
                                     const std::type_info& type, std::exception_ptr error,
                                     std::string_view why);

std::string gather_context(const Communicator& comm, int rank);
std::string broadcast_context(const Communicator& comm, int root);

}  // namespace detail

// The value as a binary archive without header: every rank of one job runs the same build, so the
// format needs no portability across machines, and the bytes of equal values are equal (the
// ledger exchange compares reports byte by byte).
template <class T>
std::string to_bytes(const T& value) {
  std::ostringstream out(std::ios::binary);
  {
    boost::archive::binary_oarchive archive(out, boost::archive::no_header);
    archive << value;
  }
  return out.str();
}

// The value that to_bytes wrote. Truncated, garbled or overlong bytes throw daa::Error naming
// `context` (where the bytes came from) and T, never crash.
template <class T>
T from_bytes(std::string_view bytes, std::string_view context) {
  T value{};
  detail::ViewBuffer buffer(bytes);
  try {
    std::istream in(&buffer);
    boost::archive::binary_iarchive archive(in, boost::archive::no_header);
    archive >> value;
  } catch (...) {
    detail::throw_decode_error(context, bytes.size(), typeid(T), std::current_exception(), "");
  }
  // Leftover bytes mean the message was not one T, even if a prefix decoded.
  if (!buffer.at_end())
    detail::throw_decode_error(context, bytes.size(), typeid(T), nullptr, "trailing bytes");
  return value;
}

// Every member's value, by member rank, on every member (collective; sizes may differ by rank).
// Every message is decoded on every rank, this rank's own included, so all ranks hold the same
// values and a message that does not decode fails on every rank alike.
template <class T>
std::vector<T> all_gather_object(const Communicator& comm, const T& mine) {
  const std::vector<std::string> messages = comm.all_gather(to_bytes(mine));
  std::vector<T> out;
  out.reserve(messages.size());
  for (std::size_t r = 0; r < messages.size(); ++r)
    out.push_back(from_bytes<T>(messages[r], detail::gather_context(comm, int(r))));
  return out;
}

// Rank `root`'s value on every member (collective; `value` is read on `root` only). The root
// decodes its own message too: a member that serialize() leaves out then reads alike everywhere,
// and a message that does not decode fails on every rank, not on all but one.
template <class T>
T broadcast_object(const Communicator& comm, const T& value, int root = 0) {
  const std::string message = comm.broadcast(comm.rank() == root ? to_bytes(value) : "", root);
  return from_bytes<T>(message, detail::broadcast_context(comm, root));
}

}  // namespace daa::parallel
