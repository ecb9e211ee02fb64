// The few JSON pieces daa-swarm writes by hand (run summaries, replay documents): strings with
// escapes and numbers that stay valid JSON when they are not finite.
#pragma once

#include <fmt/format.h>

#include <cmath>
#include <string>

namespace daa::core {

inline std::string json_string(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\')
      out += '\\', out += c;
    else if (static_cast<unsigned char>(c) < 0x20)
      out += fmt::format("\\u{:04x}", int(c));
    else
      out += c;
  }
  return out + "\"";
}

// JSON has no NaN/Inf; such a figure is written as null.
inline std::string json_number(double v) {
  return std::isfinite(v) ? fmt::format("{}", v) : "null";
}

}  // namespace daa::core
