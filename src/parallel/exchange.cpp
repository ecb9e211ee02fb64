// Control-message exchange (see exchange.hpp): the parts that need no template, namely the
// readable type names and the one error message for bytes that do not decode.
#include "daa/parallel/exchange.hpp"

#include <fmt/format.h>

#include <boost/core/demangle.hpp>
#include <new>
#include <stdexcept>

#include "daa/core/error.hpp"

namespace daa::parallel::detail {
namespace {

// Builds a new string rather than calling std::string::replace, which GCC 12 misreads as an
// overlapping memcpy at -O2 (-Wrestrict, GCC bug 105329).
void replace_all(std::string& text, std::string_view from, std::string_view to) {
  std::string out;
  std::size_t done = 0;
  for (std::size_t at = text.find(from); at != std::string::npos; at = text.find(from, done)) {
    out.append(text, done, at - done).append(to);
    done = at + from.size();
  }
  text = out.append(text, done);
}

// Removes every template argument that starts with `start` (", std::allocator<"), up to its
// matching '>'.
void remove_arguments(std::string& text, std::string_view start) {
  for (std::size_t at = text.find(start); at != std::string::npos; at = text.find(start, at)) {
    std::size_t end = at + start.size();
    for (int depth = 1; end < text.size() && depth > 0; ++end)
      depth += text[end] == '<' ? 1 : text[end] == '>' ? -1 : 0;
    text.erase(at, end - at);
  }
}

}  // namespace

std::string type_name(const std::type_info& type) {
  std::string name = boost::core::demangle(type.name());
  // Default arguments and library namespaces only lengthen the message.
  replace_all(name,
              "std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >",
              "std::string");
  replace_all(name, "std::basic_string<char, std::char_traits<char>, std::allocator<char> >",
              "std::string");
  replace_all(name, "std::__cxx11::", "std::");
  remove_arguments(name, ", std::allocator<");
  remove_arguments(name, ", std::less<");
  replace_all(name, " >", ">");
  return name;
}

void throw_decode_error(std::string_view context, std::size_t bytes, const std::type_info& type,
                        std::exception_ptr error, std::string_view why) {
  std::string reason(why);
  if (error) {
    try {
      std::rethrow_exception(error);
    } catch (const std::length_error&) {
      // A garbled element count makes a container reserve more than it ever can.
      reason = "an impossible element count";
    } catch (const std::bad_alloc&) {
      reason = "an impossible element count";
    } catch (const std::exception& e) {
      reason = e.what();
    } catch (...) {
      reason = "unknown failure";
    }
  }
  throw Error(
      fmt::format("{}: cannot decode {} bytes as {}: {}", context, bytes, type_name(type), reason));
}

std::string gather_context(const Communicator& comm, int rank) {
  return fmt::format("parallel::all_gather_object over communicator '{}' (rank {}'s message)",
                     comm.name(), rank);
}

std::string broadcast_context(const Communicator& comm, int root) {
  return fmt::format("parallel::broadcast_object over communicator '{}' (from rank {})",
                     comm.name(), root);
}

}  // namespace daa::parallel::detail
