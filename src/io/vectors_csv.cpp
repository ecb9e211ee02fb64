// CSV vectors for `daa-swarm aggregate` (see vectors_csv.hpp).
#include "daa/io/vectors_csv.hpp"

#include <fmt/format.h>

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>

#include "daa/core/error.hpp"
#include "daa/core/text.hpp"

namespace daa::io {
namespace {

double parse_number(const std::string& cell, const std::string& where) {
  if (cell == "nan" || cell == "NaN") return std::numeric_limits<double>::quiet_NaN();
  if (cell == "inf" || cell == "Inf") return std::numeric_limits<double>::infinity();
  if (cell == "-inf" || cell == "-Inf") return -std::numeric_limits<double>::infinity();
  double value = 0;
  const char* begin = cell.data() + (cell.starts_with('+') ? 1 : 0);
  const auto [end, ec] = std::from_chars(begin, cell.data() + cell.size(), value);
  if (cell.empty() || ec != std::errc() || end != cell.data() + cell.size())
    throw InputError(fmt::format("{}: '{}' is not a number", where, cell));
  return value;
}

}  // namespace

VectorTable read_vectors_csv(const std::string& path) {
  std::ifstream in(path);
  if (!in)
    throw InputError(fmt::format("cannot read vectors file '{}': {}", path, std::strerror(errno)));
  VectorTable table;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    const std::string_view text = core::trim(line);
    if (text.empty() || text.starts_with('#')) continue;
    int columns = 0;
    std::size_t start = 0;
    while (true) {
      const std::size_t comma = text.find(',', start);
      // With no comma left, comma - start exceeds the rest and substr stops at the end.
      const std::string cell(core::trim(text.substr(start, comma - start)));
      table.values.push_back(
          parse_number(cell, fmt::format("{}:{}: column {}", path, number, columns + 1)));
      ++columns;
      if (comma == std::string_view::npos) break;
      start = comma + 1;
    }
    if (table.rows > 0 && columns != table.columns)
      throw InputError(fmt::format("{}:{}: row has {} values, earlier rows have {}", path, number,
                                   columns, table.columns));
    table.columns = columns;
    ++table.rows;
  }
  if (table.rows == 0) throw InputError(fmt::format("vectors file '{}' holds no vectors", path));
  return table;
}

std::string format_csv_row(const std::vector<double>& values) {
  std::string out;
  for (std::size_t i = 0; i < values.size(); ++i)
    out += fmt::format("{}{}", i ? "," : "", values[i]);
  return out;
}

}  // namespace daa::io
