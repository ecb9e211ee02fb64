// The dispatch between the host engine and the device kernels of daa/robust/device_rules.hpp:
// host-accessible rows run the host engine in place (today's CPU bits and speed, no copy), rows in
// device memory run the Kokkos kernels, which give the same bits.
#include "daa/robust/device_rules.hpp"

#include <fmt/format.h>

#include "daa/core/error.hpp"
#include "round_engine.hpp"

namespace daa::robust::device {

void check_coordinate_rule(Rule rule, int n, const std::string& what) {
  if (rule != Rule::median && rule != Rule::trimmed_mean)
    throw ConfigError(fmt::format("{}: rule {} is not coordinate-wise (median, trimmed-mean)", what,
                                  to_string(rule)));
  if (n < 1 || n > kMaxRows)
    throw ConfigError(fmt::format("{}: {} rows, the kernels take 1 to {}", what, n, kMaxRows));
}

namespace {

constexpr bool kHostAccessible =
    Kokkos::SpaceAccessibility<Kokkos::HostSpace, kernels::MemSpace>::accessible;

// The rows of a row-major view as the host engine's row pointers.
template <class R>
engine::ChunkRows<R> host_rows(const kernels::MatrixRef<const R>& rows) {
  engine::ChunkRows<R> x;
  x.len = rows.extent(1);
  for (std::size_t i = 0; i < rows.extent(0); ++i)
    x.rows.push_back(rows.data() + i * rows.stride(0));
  return x;
}

template <class R>
void coordinate_rule_impl(Rule rule, int f, const kernels::MatrixRef<const R>& rows,
                          const kernels::VectorRef<R>& out,
                          const kernels::VectorRef<std::int64_t>& counts) {
  const int n = int(rows.extent(0));
  check_coordinate_rule(rule, n, "robust::device::coordinate_rule");
  if (out.extent(0) != rows.extent(1))
    throw ConfigError(fmt::format("robust::device::coordinate_rule: {} outputs for {} coordinates",
                                  out.extent(0), rows.extent(1)));
  if constexpr (kHostAccessible) {
    Kokkos::fence();  // the rows may come from a kernel still running
    std::vector<double> c(counts.extent(0) == std::size_t(n) ? n : 0);
    engine::coordinate_rule(host_rows(rows), rule, f, out.data(), c.empty() ? nullptr : c.data());
    for (std::size_t i = 0; i < c.size(); ++i) counts(i) = std::int64_t(c[i]);
  } else {
    coordinate_rule(kernels::ExecSpace(), rule, f, rows, out, counts);
    Kokkos::fence();
  }
}

template <class R>
void gram_matrix_impl(const kernels::MatrixRef<const R>& rows,
                      const kernels::MatrixRef<double>& gram) {
  const int n = int(rows.extent(0));
  if (gram.extent(0) != std::size_t(n) || gram.extent(1) != std::size_t(n))
    throw ConfigError(fmt::format("robust::device::gram_matrix: a {} x {} matrix for {} rows",
                                  gram.extent(0), gram.extent(1), n));
  if constexpr (kHostAccessible) {
    Kokkos::fence();
    const engine::ChunkRows<R> x = host_rows(rows);
    for (int a = 0; a < n; ++a)
      for (int b = a; b < n; ++b)
        gram(a, b) = gram(b, a) = engine::dot(x.rows[a], x.rows[b], x.len);
  } else {
    gram_matrix(kernels::ExecSpace(), rows, gram);
    Kokkos::fence();
  }
}

}  // namespace

void coordinate_rule(Rule rule, int f, kernels::MatrixRef<const float> rows,
                     kernels::VectorRef<float> out, kernels::VectorRef<std::int64_t> counts) {
  coordinate_rule_impl(rule, f, rows, out, counts);
}
void coordinate_rule(Rule rule, int f, kernels::MatrixRef<const double> rows,
                     kernels::VectorRef<double> out, kernels::VectorRef<std::int64_t> counts) {
  coordinate_rule_impl(rule, f, rows, out, counts);
}
void gram_matrix(kernels::MatrixRef<const float> rows, kernels::MatrixRef<double> gram) {
  gram_matrix_impl(rows, gram);
}
void gram_matrix(kernels::MatrixRef<const double> rows, kernels::MatrixRef<double> gram) {
  gram_matrix_impl(rows, gram);
}

}  // namespace daa::robust::device
