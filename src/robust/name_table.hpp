// Enum <-> name tables of the robust module (rules, modes, attacks), private to it: one lookup
// that throws daa::ConfigError listing the known names, so the three cannot drift apart.
#pragma once

#include <span>
#include <string>

#include "daa/core/error.hpp"

namespace daa::robust {

template <class E>
struct NameOf {
  E value;
  const char* name;
};

// `what` and `plural` name the kind in the error ("robust rule", "rules").
template <class E>
E parse_name(std::span<const NameOf<E>> table, const std::string& name, const std::string& what,
             const std::string& plural) {
  std::string known;
  for (const NameOf<E>& entry : table) {
    if (name == entry.name) return entry.value;
    known += known.empty() ? "" : ", ";
    known += entry.name;
  }
  throw ConfigError("unknown " + what + " '" + name + "'; known " + plural + ": " + known);
}

template <class E>
const char* name_of(std::span<const NameOf<E>> table, E value) {
  for (const NameOf<E>& entry : table)
    if (entry.value == value) return entry.name;
  return "unknown";
}

}  // namespace daa::robust
