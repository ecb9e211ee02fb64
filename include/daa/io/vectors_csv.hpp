// Vectors as CSV: one vector per row, numbers separated by commas, every row the same length.
// Read by `daa-swarm aggregate` (saved gradients, known-answer checks); errors name the file,
// the line and the column.
#pragma once

#include <string>
#include <vector>

namespace daa::io {

struct VectorTable {
  int rows = 0;
  int columns = 0;
  std::vector<double> values;  // row-major
};

// Blank lines and lines starting with '#' are skipped; "nan", "inf" and "-inf" are accepted (a
// Byzantine contribution may hold them). Throws InputError on anything else.
VectorTable read_vectors_csv(const std::string& path);

// One row, shortest round-trip formatting.
std::string format_csv_row(const std::vector<double>& values);

}  // namespace daa::io
