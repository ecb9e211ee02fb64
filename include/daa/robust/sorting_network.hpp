// The sorting network the coordinate-wise rules sort each coordinate's n values with, shared by
// the host engine (src/robust/round_engine.hpp) and the device kernels (device_rules.hpp): the
// same compare-exchange sequence on both sides is what makes their results bit-identical.
#pragma once

#include <algorithm>
#include <utility>
#include <vector>

namespace daa::robust {

// Batcher's odd-even merge sort, padded to a power of two, for n values: the compare-exchange
// pairs (a, b), a < b, in the order they are applied (min to a, max to b). Applied to a block of
// coordinates at a time, min/max over arrays vectorize across coordinates.
inline std::vector<std::pair<int, int>> sorting_network(int n) {
  int size = 1;
  while (size < n) size *= 2;
  std::vector<std::pair<int, int>> pairs;
  for (int p = 1; p < size; p *= 2)
    for (int k = p; k >= 1; k /= 2)
      for (int j = k % p; j + k < size; j += 2 * k)
        for (int i = 0; i < std::min(k, size - j - k); ++i)
          if ((i + j) / (2 * p) == (i + j + k) / (2 * p) && i + j + k < n)
            pairs.emplace_back(i + j, i + j + k);
  return pairs;
}

}  // namespace daa::robust
