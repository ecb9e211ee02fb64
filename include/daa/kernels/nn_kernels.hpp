// Element-wise and row-wise neural-network kernels (bias, GELU, RMSNorm, softmax, top-k routing,
// gather/combine, cross-entropy, AdamW). Written once as Kokkos lambdas over views so the same
// source runs on the host backends and on CUDA. Every kernel is deterministic: reductions over a
// row run over one team (views.hpp: in column order on the host), over a column sequentially
// inside one thread, each in a fixed order.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "daa/kernels/fast_exp.hpp"
#include "daa/kernels/kokkos_compat.hpp"
#include "daa/kernels/views.hpp"

namespace daa::kernels {

// One team per row (RowPolicy): `rows` teams of the size Kokkos picks for the backend.
inline RowPolicy row_policy(std::size_t rows) {
  return RowPolicy(int(rows), Kokkos::AUTO);
}
// The same on a given execution-space instance (the kernels' space overloads, run per enabled
// space by the unit tests).
template <class Space>
Kokkos::TeamPolicy<Space> row_policy(const Space& space, std::size_t rows) {
  return Kokkos::TeamPolicy<Space>(space, int(rows), Kokkos::AUTO);
}
template <class Space>
Kokkos::RangePolicy<Space> range_policy(const Space& space, std::size_t n) {
  return Kokkos::RangePolicy<Space>(space, 0, n);
}

// Sum over the row's columns of term(j), reduced over the team (every member gets the sum).
template <class T, class Member, class Term>
KOKKOS_INLINE_FUNCTION T row_sum(const Member& team, int cols, const Term& term) {
  T sum = 0;
  Kokkos::parallel_reduce(
      Kokkos::TeamThreadRange(team, cols), [&](const int j, T& acc) { acc += term(j); }, sum);
  return sum;
}

// fn(j) for each column of the row, spread over the team.
template <class Member, class Fn>
KOKKOS_INLINE_FUNCTION void row_for(const Member& team, int cols, const Fn& fn) {
  Kokkos::parallel_for(Kokkos::TeamThreadRange(team, cols), fn);
}

// erf as a branch-free rational function on [-4, 4] (|error| < 1e-7 there; beyond, erf is +-1
// to float precision). Free of exp and of library calls, so element loops over it vectorize.
template <class T>
KOKKOS_INLINE_FUNCTION T erf_rational(T x) {
  x = x < T(-4) ? T(-4) : (x > T(4) ? T(4) : x);
  const T x2 = x * x;
  T p = T(-2.72614225801306e-10);
  p = p * x2 + T(2.77068142495902e-08);
  p = p * x2 + T(-2.10102402082508e-06);
  p = p * x2 + T(-5.69250639462346e-05);
  p = p * x2 + T(-7.34990630326855e-04);
  p = p * x2 + T(-2.95459980854025e-03);
  p = p * x2 + T(-1.60960333262415e-02);
  T q = T(-1.45660718464996e-05);
  q = q * x2 + T(-2.13374055278905e-04);
  q = q * x2 + T(-1.68282697438203e-03);
  q = q * x2 + T(-7.37332916720468e-03);
  q = q * x2 + T(-1.42647390514189e-02);
  return x * p / q;
}

// Exact derivative of erf_rational (0 where it is clamped), so backward matches forward.
// Written as straight-line Horner steps: loops or branches here stop vectorization.
template <class T>
KOKKOS_INLINE_FUNCTION T erf_rational_derivative(T x) {
  const T inside = (x >= T(-4) && x <= T(4)) ? T(1) : T(0);
  const T u = x * x;
  // p(u) and p'(u) together (Horner with derivative), coefficients as in erf_rational.
  T p = T(-2.72614225801306e-10), dp = T(0);
  dp = dp * u + p, p = p * u + T(2.77068142495902e-08);
  dp = dp * u + p, p = p * u + T(-2.10102402082508e-06);
  dp = dp * u + p, p = p * u + T(-5.69250639462346e-05);
  dp = dp * u + p, p = p * u + T(-7.34990630326855e-04);
  dp = dp * u + p, p = p * u + T(-2.95459980854025e-03);
  dp = dp * u + p, p = p * u + T(-1.60960333262415e-02);
  T q = T(-1.45660718464996e-05), dq = T(0);
  dq = dq * u + q, q = q * u + T(-2.13374055278905e-04);
  dq = dq * u + q, q = q * u + T(-1.68282697438203e-03);
  dq = dq * u + q, q = q * u + T(-7.37332916720468e-03);
  dq = dq * u + q, q = q * u + T(-1.42647390514189e-02);
  // d/dx [x p(u) / q(u)] with u = x^2
  return inside * ((p + T(2) * u * dp) * q - T(2) * u * p * dq) / (q * q);
}

// GELU, erf form: x * Phi(x). Float uses the rational erf (fast, vectorizable); double uses the
// library erf (kmath::erf) so that gradient checks run against the exact function.
template <class T>
KOKKOS_INLINE_FUNCTION T gelu(T x) {
  constexpr T inv_sqrt2 = T(0.70710678118654752440);
  if constexpr (std::is_same_v<T, float>)
    return T(0.5) * x * (T(1) + erf_rational(x * inv_sqrt2));
  else
    return T(0.5) * x * (T(1) + kmath::erf(x * inv_sqrt2));
}
// d/dx [x * Phi(x)] = Phi(x) + x * phi(x)
template <class T>
KOKKOS_INLINE_FUNCTION T gelu_derivative(T x) {
  constexpr T inv_sqrt2 = T(0.70710678118654752440);
  if constexpr (std::is_same_v<T, float>) {
    return T(0.5) * (T(1) + erf_rational(x * inv_sqrt2)) +
           T(0.5) * x * inv_sqrt2 * erf_rational_derivative(x * inv_sqrt2);
  } else {
    const T cdf = T(0.5) * (T(1) + kmath::erf(x * inv_sqrt2));
    const T pdf = T(0.39894228040143267794) * kmath::exp(T(-0.5) * x * x);
    return cdf + x * pdf;
  }
}

// to = a + b over [rows, cols] (the residual connections); `to` may alias a or b. Runs on
// `space`, whose memory the views must be in; without a space, on ExecSpace.
template <class Space, class To, class A, class B>
requires Kokkos::is_execution_space<Space>::value void residual_add(const Space& space,
                                                                    const To& to, const A& a,
                                                                    const B& b) {
  const std::size_t cols = to.extent(1);
  Kokkos::parallel_for(
      "residual_add", range_policy(space, to.extent(0)), KOKKOS_LAMBDA(const int t) {
        for (std::size_t j = 0; j < cols; ++j) to(t, j) = a(t, j) + b(t, j);
      });
}
template <class T>
void residual_add(const Matrix<T>& to, const Matrix<T>& a, const Matrix<T>& b) {
  residual_add(ExecSpace(), to, a, b);
}

// y[i,:] += bias
template <class T, class Y>
void add_bias(const Y& y, const VectorRef<T>& bias) {
  const int cols = y.extent(1);
  Kokkos::parallel_for(
      "add_bias", Range(0, y.extent(0)), KOKKOS_LAMBDA(const int i) {
        for (int j = 0; j < cols; ++j) y(i, j) += bias(j);
      });
}

// grad_bias[j] += sum_i dy[i,j]. Each thread owns a block of columns and walks the rows in order
// (deterministic; contiguous inner loop on the host, coalesced-enough on a GPU).
template <class T, class DY>
void accumulate_bias_grad(const DY& dy, const VectorRef<T>& grad_bias) {
  constexpr int block = 16;
  const int rows = dy.extent(0);
  const int cols = dy.extent(1);
  Kokkos::parallel_for(
      "bias_grad", Range(0, (cols + block - 1) / block), KOKKOS_LAMBDA(const int b) {
        const int j0 = b * block;
        const int width = cols - j0 < block ? cols - j0 : block;
        T acc[block] = {};
        for (int i = 0; i < rows; ++i)
          for (int jj = 0; jj < width; ++jj) acc[jj] += dy(i, j0 + jj);
        for (int jj = 0; jj < width; ++jj) grad_bias(j0 + jj) += acc[jj];
      });
}

// out = gelu(pre), element-wise; out may alias nothing.
template <class In, class Out>
void gelu_forward(const In& pre, const Out& out) {
  const int cols = pre.extent(1);
  Kokkos::parallel_for(
      "gelu_forward", Range(0, pre.extent(0)), KOKKOS_LAMBDA(const int i) {
        // Row pointers (rows are contiguous in LayoutRight) let the compiler vectorize.
        const auto* in_row = &pre(i, 0);
        auto* out_row = &out(i, 0);
        for (int j = 0; j < cols; ++j) out_row[j] = gelu(in_row[j]);
      });
}

// grad (in place): grad *= gelu'(pre)
template <class Pre, class Grad>
void gelu_backward(const Pre& pre, const Grad& grad) {
  const int cols = pre.extent(1);
  Kokkos::parallel_for(
      "gelu_backward", Range(0, pre.extent(0)), KOKKOS_LAMBDA(const int i) {
        const auto* pre_row = &pre(i, 0);
        auto* grad_row = &grad(i, 0);
        for (int j = 0; j < cols; ++j) grad_row[j] *= gelu_derivative(pre_row[j]);
      });
}

// RMSNorm: y = x / rms(x) * gain, rms = sqrt(mean(x^2) + eps); inv_rms saved for backward.
// The row kernels run on `space` (views in its memory); without a space, on ExecSpace.
template <class Space, class X, class G, class Y, class V>
requires Kokkos::is_execution_space<Space>::value void rmsnorm_forward(
    const Space& space, const X& x, const G& gain, typename Y::non_const_value_type eps, const Y& y,
    const V& inv_rms) {
  using T = typename Y::non_const_value_type;
  using Member = typename Kokkos::TeamPolicy<Space>::member_type;
  const int cols = x.extent(1);
  Kokkos::parallel_for(
      "rmsnorm_forward", row_policy(space, x.extent(0)), KOKKOS_LAMBDA(const Member& team) {
        const int i = team.league_rank();
        const T ss = row_sum<T>(team, cols, [&](const int j) { return x(i, j) * x(i, j); });
        const T inv = T(1) / kmath::sqrt(ss / cols + eps);
        Kokkos::single(Kokkos::PerTeam(team), [&]() { inv_rms(i) = inv; });
        row_for(team, cols, [&](const int j) { y(i, j) = x(i, j) * inv * gain(j); });
      });
}
template <class T>
void rmsnorm_forward(const Matrix<T>& x, const VectorRef<T>& gain, T eps, const Matrix<T>& y,
                     const Vector<T>& inv_rms) {
  rmsnorm_forward(ExecSpace(), x, gain, eps, y, inv_rms);
}

// dx += (g*dy)*inv - x * inv^3 * mean(x * g*dy); grad_gain[j] += sum_i dy*x*inv.
template <class Space, class X, class G, class V, class DY, class DX, class GG>
requires Kokkos::is_execution_space<Space>::value void rmsnorm_backward(const Space& space,
                                                                        const X& x, const G& gain,
                                                                        const V& inv_rms,
                                                                        const DY& dy, const DX& dx,
                                                                        const GG& grad_gain) {
  using T = typename DX::non_const_value_type;
  using Member = typename Kokkos::TeamPolicy<Space>::member_type;
  const int rows = x.extent(0);
  const int cols = x.extent(1);
  Kokkos::parallel_for(
      "rmsnorm_backward_x", row_policy(space, rows), KOKKOS_LAMBDA(const Member& team) {
        const int i = team.league_rank();
        const T inv = inv_rms(i);
        const T dot =
            row_sum<T>(team, cols, [&](const int j) { return x(i, j) * gain(j) * dy(i, j); });
        const T coef = inv * inv * inv * dot / cols;
        row_for(team, cols,
                [&](const int j) { dx(i, j) += gain(j) * dy(i, j) * inv - x(i, j) * coef; });
      });
  Kokkos::parallel_for(
      "rmsnorm_backward_gain", range_policy(space, cols), KOKKOS_LAMBDA(const int j) {
        T sum = 0;
        for (int i = 0; i < rows; ++i) sum += dy(i, j) * x(i, j) * inv_rms(i);
        grad_gain(j) += sum;
      });
}
template <class T>
void rmsnorm_backward(const Matrix<T>& x, const VectorRef<T>& gain, const Vector<T>& inv_rms,
                      const Matrix<T>& dy, const Matrix<T>& dx, const VectorRef<T>& grad_gain) {
  rmsnorm_backward(ExecSpace(), x, gain, inv_rms, dy, dx, grad_gain);
}

// Row softmax in place; log-sum-exp of each row's logits saved (router z-loss uses it).
template <class Space, class Z, class L>
requires Kokkos::is_execution_space<Space>::value void softmax_rows(const Space& space,
                                                                    const Z& logits_to_probs,
                                                                    const L& lse) {
  using T = typename Z::non_const_value_type;
  using Member = typename Kokkos::TeamPolicy<Space>::member_type;
  const int cols = logits_to_probs.extent(1);
  const Z& z = logits_to_probs;
  Kokkos::parallel_for(
      "softmax_rows", row_policy(space, z.extent(0)), KOKKOS_LAMBDA(const Member& team) {
        const int i = team.league_rank();
        T mx;
        Kokkos::parallel_reduce(
            Kokkos::TeamThreadRange(team, cols),
            [&](const int j, T& m) { m = z(i, j) > m ? z(i, j) : m; }, Kokkos::Max<T>(mx));
        const T sum = row_sum<T>(team, cols, [&](const int j) {
          const T e = kmath::exp(z(i, j) - mx);
          z(i, j) = e;
          return e;
        });
        row_for(team, cols, [&](const int j) { z(i, j) /= sum; });
        Kokkos::single(Kokkos::PerTeam(team), [&]() { lse(i) = mx + kmath::log(sum); });
      });
}
template <class T>
void softmax_rows(const Matrix<T>& logits_to_probs, const Vector<T>& lse) {
  softmax_rows(ExecSpace(), logits_to_probs, lse);
}

// Top-k routing of each token on score = prob + bias (bias moves selection only). Ties break
// toward the lower expert index. Gates are the chosen probs, renormalized if asked.
// Group-limited routing: with 0 < max_groups < groups, the experts form `groups` contiguous
// groups (at most 64), each token first keeps the `max_groups` groups with the best single
// score (ties toward the lower group), and picks its k experts inside them only.
template <class T>
void top_k_route(const Matrix<T>& probs, const VectorRef<T>& bias, int k, bool normalize,
                 const Kokkos::View<int**, Kokkos::LayoutRight, MemSpace>& choice,
                 const Matrix<T>& gate, int groups = 1, int max_groups = 0) {
  const int experts = probs.extent(1);
  const bool limited = max_groups > 0 && max_groups < groups;
  const int group_size = experts / (groups > 0 ? groups : 1);
  Kokkos::parallel_for(
      "top_k_route", Range(0, probs.extent(0)), KOKKOS_LAMBDA(const int t) {
        std::uint64_t allowed = ~std::uint64_t(0);
        if (limited) {
          allowed = 0;
          for (int m = 0; m < max_groups; ++m) {
            int best_group = -1;
            T best_group_score = 0;
            for (int g = 0; g < groups; ++g) {
              if (allowed >> g & 1) continue;
              T group_score = probs(t, g * group_size) + bias(g * group_size);
              for (int e = g * group_size + 1; e < (g + 1) * group_size; ++e)
                group_score =
                    probs(t, e) + bias(e) > group_score ? probs(t, e) + bias(e) : group_score;
              if (best_group < 0 || group_score > best_group_score) {
                best_group = g;
                best_group_score = group_score;
              }
            }
            allowed |= std::uint64_t(1) << best_group;
          }
        }
        T total = 0;
        for (int slot = 0; slot < k; ++slot) {
          int best = -1;
          T best_score = 0;
          for (int e = 0; e < experts; ++e) {
            if (limited && !(allowed >> (e / group_size) & 1)) continue;
            bool taken = false;
            for (int s = 0; s < slot; ++s) taken = taken || choice(t, s) == e;
            if (taken) continue;
            const T score = probs(t, e) + bias(e);
            if (best < 0 || score > best_score) {
              best = e;
              best_score = score;
            }
          }
          choice(t, slot) = best;
          gate(t, slot) = probs(t, best);
          total += probs(t, best);
        }
        if (normalize)
          for (int slot = 0; slot < k; ++slot) gate(t, slot) /= total;
      });
}

// packed[p,:] = x[token_of[p],:]
template <class T>
void gather_rows(const Matrix<T>& x, const Kokkos::View<int*, MemSpace>& token_of,
                 const Matrix<T>& packed) {
  const int cols = x.extent(1);
  Kokkos::parallel_for(
      "gather_rows", Range(0, packed.extent(0)), KOKKOS_LAMBDA(const int p) {
        const int t = token_of(p);
        for (int j = 0; j < cols; ++j) packed(p, j) = x(t, j);
      });
}

// out[t,:] = sum_s gate[t,s] * y[slot_pos[t,s],:] over kept slots (slot_pos < 0: dropped).
template <class T>
void combine_rows(const Matrix<T>& y,
                  const Kokkos::View<int**, Kokkos::LayoutRight, MemSpace>& slot_pos,
                  const Matrix<T>& gate, const Matrix<T>& out) {
  const int cols = out.extent(1);
  const int k = gate.extent(1);
  Kokkos::parallel_for(
      "combine_rows", Range(0, out.extent(0)), KOKKOS_LAMBDA(const int t) {
        for (int j = 0; j < cols; ++j) out(t, j) = 0;
        for (int s = 0; s < k; ++s) {
          const int p = slot_pos(t, s);
          if (p < 0) continue;
          const T g = gate(t, s);
          for (int j = 0; j < cols; ++j) out(t, j) += g * y(p, j);
        }
      });
}

// Backward of combine_rows: dy[p,:] = gate * dout[t,:], dgate[t,s] = <dout[t,:], y[p,:]>.
template <class T>
void combine_rows_backward(const Matrix<T>& y,
                           const Kokkos::View<int**, Kokkos::LayoutRight, MemSpace>& slot_pos,
                           const Matrix<T>& gate, const Matrix<T>& dout, const Matrix<T>& dy,
                           const Matrix<T>& dgate) {
  const int cols = dout.extent(1);
  const int k = gate.extent(1);
  Kokkos::parallel_for(
      "combine_rows_backward", Range(0, dout.extent(0)), KOKKOS_LAMBDA(const int t) {
        for (int s = 0; s < k; ++s) {
          const int p = slot_pos(t, s);
          T dot = 0;
          if (p >= 0) {
            const T g = gate(t, s);
            for (int j = 0; j < cols; ++j) {
              dy(p, j) = g * dout(t, j);
              dot += dout(t, j) * y(p, j);
            }
          }
          dgate(t, s) = dot;
        }
      });
}

// dx[t,:] += sum_s dpacked[slot_pos[t,s],:] (the transpose of gather_rows), per token.
template <class T>
void scatter_add_rows(const Matrix<T>& dpacked,
                      const Kokkos::View<int**, Kokkos::LayoutRight, MemSpace>& slot_pos,
                      const Matrix<T>& dx) {
  const int cols = dx.extent(1);
  const int k = slot_pos.extent(1);
  Kokkos::parallel_for(
      "scatter_add_rows", Range(0, dx.extent(0)), KOKKOS_LAMBDA(const int t) {
        for (int s = 0; s < k; ++s) {
          const int p = slot_pos(t, s);
          if (p < 0) continue;
          for (int j = 0; j < cols; ++j) dx(t, j) += dpacked(p, j);
        }
      });
}

// Softmax cross-entropy per row: loss_sum += -log softmax(logits)[label]; dlogits (if given)
// = (softmax - onehot) * scale; correct counts argmax hits (ties toward the lower class).
template <class T>
void cross_entropy(const Matrix<T>& logits, const Kokkos::View<int*, MemSpace>& labels,
                   T grad_scale, const Matrix<T>& dlogits, const Vector<T>& row_loss,
                   const Kokkos::View<int*, MemSpace>& row_correct) {
  const int classes = logits.extent(1);
  const bool want_grad = dlogits.extent(0) == logits.extent(0);
  Kokkos::parallel_for(
      "cross_entropy", Range(0, logits.extent(0)), KOKKOS_LAMBDA(const int i) {
        int arg = 0;
        T mx = logits(i, 0);
        for (int c = 1; c < classes; ++c)
          if (logits(i, c) > mx) {
            mx = logits(i, c);
            arg = c;
          }
        T sum = 0;
        for (int c = 0; c < classes; ++c) sum += kmath::exp(logits(i, c) - mx);
        const T lse = mx + kmath::log(sum);
        const int y = labels(i);
        row_loss(i) = lse - logits(i, y);
        row_correct(i) = arg == y ? 1 : 0;
        if (want_grad)
          for (int c = 0; c < classes; ++c)
            dlogits(i, c) = (kmath::exp(logits(i, c) - lse) - (c == y ? T(1) : T(0))) * grad_scale;
      });
}

// ---------------------------------------------------------------------------------------------
// Layers of the language model (issue 12): LayerNorm, embedding gather/scatter, fused vocabulary
// cross-entropy.

// LayerNorm: y = (x - mean) * inv_std * gain + bias, inv_std = 1 / sqrt(var + eps) with the
// biased variance; mean and inv_std saved for backward. Two passes over the row (mean, then
// squared deviations) so large offsets do not cancel the variance away.
template <class Space, class X, class G, class B, class Y, class M, class S>
requires Kokkos::is_execution_space<Space>::value void layernorm_forward(
    const Space& space, const X& x, const G& gain, const B& bias,
    typename Y::non_const_value_type eps, const Y& y, const M& mean, const S& inv_std) {
  using T = typename Y::non_const_value_type;
  using Member = typename Kokkos::TeamPolicy<Space>::member_type;
  const int cols = x.extent(1);
  Kokkos::parallel_for(
      "layernorm_forward", row_policy(space, x.extent(0)), KOKKOS_LAMBDA(const Member& team) {
        const int i = team.league_rank();
        const T mu = row_sum<T>(team, cols, [&](const int j) { return x(i, j); }) / cols;
        const T ss =
            row_sum<T>(team, cols, [&](const int j) { return (x(i, j) - mu) * (x(i, j) - mu); });
        const T inv = T(1) / kmath::sqrt(ss / cols + eps);
        Kokkos::single(Kokkos::PerTeam(team), [&]() {
          mean(i) = mu;
          inv_std(i) = inv;
        });
        row_for(team, cols,
                [&](const int j) { y(i, j) = (x(i, j) - mu) * inv * gain(j) + bias(j); });
      });
}
template <class T, class X, class Y>
void layernorm_forward(const X& x, const VectorRef<T>& gain, const VectorRef<T>& bias, T eps,
                       const Y& y, const Vector<T>& mean, const Vector<T>& inv_std) {
  layernorm_forward(ExecSpace(), x, gain, bias, eps, y, mean, inv_std);
}

// With xhat = (x - mean) * inv_std and g = gain * dy:
// dx += inv_std * (g - mean(g) - xhat * mean(g * xhat)) (skipped when dx has no rows);
// grad_gain[j] += sum_i dy * xhat, grad_bias[j] += sum_i dy (columns, rows in order).
template <class Space, class X, class G, class M, class S, class DY, class DX, class GG, class GB>
requires Kokkos::is_execution_space<Space>::value void layernorm_backward(
    const Space& space, const X& x, const G& gain, const M& mean, const S& inv_std, const DY& dy,
    const DX& dx, const GG& grad_gain, const GB& grad_bias) {
  using T = typename GG::non_const_value_type;
  using Member = typename Kokkos::TeamPolicy<Space>::member_type;
  const int rows = x.extent(0);
  const int cols = x.extent(1);
  if (dx.extent(0) == x.extent(0))
    Kokkos::parallel_for(
        "layernorm_backward_x", row_policy(space, rows), KOKKOS_LAMBDA(const Member& team) {
          const int i = team.league_rank();
          const T mu = mean(i), inv = inv_std(i);
          const T g_sum = row_sum<T>(team, cols, [&](const int j) { return gain(j) * dy(i, j); });
          const T gx_sum = row_sum<T>(
              team, cols, [&](const int j) { return gain(j) * dy(i, j) * (x(i, j) - mu) * inv; });
          const T g_mean = g_sum / cols, gx_mean = gx_sum / cols;
          row_for(team, cols, [&](const int j) {
            dx(i, j) += inv * (gain(j) * dy(i, j) - g_mean - (x(i, j) - mu) * inv * gx_mean);
          });
        });
  Kokkos::parallel_for(
      "layernorm_backward_params", range_policy(space, cols), KOKKOS_LAMBDA(const int j) {
        T sum_gain = 0, sum_bias = 0;
        for (int i = 0; i < rows; ++i) {
          sum_gain += dy(i, j) * (x(i, j) - mean(i)) * inv_std(i);
          sum_bias += dy(i, j);
        }
        grad_gain(j) += sum_gain;
        grad_bias(j) += sum_bias;
      });
}
template <class T, class X, class DY, class DX>
void layernorm_backward(const X& x, const VectorRef<T>& gain, const Vector<T>& mean,
                        const Vector<T>& inv_std, const DY& dy, const DX& dx,
                        const VectorRef<T>& grad_gain, const VectorRef<T>& grad_bias) {
  layernorm_backward(ExecSpace(), x, gain, mean, inv_std, dy, dx, grad_gain, grad_bias);
}

// y[i,:] = table[tokens[i],:]. Tokens must lie in [0, rows of table): the caller validates.
template <class Table, class Tokens, class Y>
void embedding_gather(const Table& table, const Tokens& tokens, const Y& y) {
  const int cols = y.extent(1);
  Kokkos::parallel_for(
      "embedding_gather", Range(0, y.extent(0)), KOKKOS_LAMBDA(const int i) {
        const int t = tokens(i);
        for (int j = 0; j < cols; ++j) y(i, j) = table(t, j);
      });
}

// grad_table[tokens[i],:] += dy[i,:]. Repeated tokens collide, so instead of atomics each thread
// owns one column and walks the rows in order: deterministic, and coalesced across threads on a
// GPU.
template <class DY, class Tokens, class Grad>
void embedding_scatter_add(const DY& dy, const Tokens& tokens, const Grad& grad_table) {
  const int rows = dy.extent(0);
  Kokkos::parallel_for(
      "embedding_scatter_add", Range(0, dy.extent(1)), KOKKOS_LAMBDA(const int j) {
        for (int i = 0; i < rows; ++i) grad_table(tokens(i), j) += dy(i, j);
      });
}

// Index of the first token outside [0, vocab), or tokens.extent(0) if there is none (an integer
// min-reduction: deterministic).
template <class Tokens>
int first_token_outside(const Tokens& tokens, int vocab) {
  const int n = tokens.extent(0);
  int first = n;
  Kokkos::parallel_reduce(
      "first_token_outside", Range(0, n),
      KOKKOS_LAMBDA(const int i, int& acc) {
        const int t = tokens(i);
        if ((t < 0 || t >= vocab) && i < acc) acc = i;
      },
      Kokkos::Min<int>(first));
  return first;
}

// Fused softmax cross-entropy over a vocabulary, in place, so a [tokens, vocab] gradient buffer
// is never allocated next to the logits: row_loss(i) = logsumexp(logits_i) - logits_i[target_i];
// with want_grad the logits are overwritten by (softmax - onehot) * grad_scale. target < 0: the
// row is ignored (loss 0, gradient 0, not correct). row_correct(i) = argmax hit (ties toward the
// lower index). Validates nothing on the device: the caller checks targets < vocab on the host.
// The row max and the sum of exponentials run in kLanes interleaved partial results (combined
// in a fixed order, so still deterministic): without reassociation an in-order float reduction
// does not vectorize, and this loop over the vocabulary is most of the head's non-GEMM time.
template <class T>
void softmax_cross_entropy_in_place(const Matrix<T>& logits,
                                    const Kokkos::View<const int*, MemSpace>& targets, T grad_scale,
                                    bool want_grad, const Vector<T>& row_loss,
                                    const Kokkos::View<int*, MemSpace>& row_correct) {
  const int vocab = logits.extent(1);
  constexpr int kLanes = 16;
  Kokkos::parallel_for(
      "softmax_cross_entropy_in_place", Range(0, logits.extent(0)), KOKKOS_LAMBDA(const int i) {
        const int y = targets(i);
        if (y < 0) {
          row_loss(i) = 0;
          row_correct(i) = 0;
          if (want_grad)
            for (int c = 0; c < vocab; ++c) logits(i, c) = 0;
          return;
        }
        const int whole = vocab - vocab % kLanes;
        T part[kLanes];
        for (int w = 0; w < kLanes; ++w) part[w] = logits(i, 0);
        for (int c = 0; c < whole; c += kLanes)
          for (int w = 0; w < kLanes; ++w)
            part[w] = logits(i, c + w) > part[w] ? logits(i, c + w) : part[w];
        T mx = part[0];
        for (int w = 1; w < kLanes; ++w) mx = part[w] > mx ? part[w] : mx;
        for (int c = whole; c < vocab; ++c) mx = logits(i, c) > mx ? logits(i, c) : mx;
        int arg = 0;  // the first index holding the max
        while (arg < vocab - 1 && !(logits(i, arg) == mx)) ++arg;
        for (int w = 0; w < kLanes; ++w) part[w] = 0;
        for (int c = 0; c < whole; c += kLanes)
          for (int w = 0; w < kLanes; ++w) part[w] += exp_vectorizable(logits(i, c + w) - mx);
        T sum = 0;
        for (int w = 0; w < kLanes; ++w) sum += part[w];
        for (int c = whole; c < vocab; ++c) sum += exp_vectorizable(logits(i, c) - mx);
        const T lse = mx + kmath::log(sum);
        row_loss(i) = lse - logits(i, y);
        row_correct(i) = arg == y ? 1 : 0;
        if (want_grad) {
          for (int c = 0; c < vocab; ++c)
            logits(i, c) = exp_vectorizable(logits(i, c) - lse) * grad_scale;
          logits(i, y) -= grad_scale;
        }
      });
}

}  // namespace daa::kernels
