// oneDNN's bf16 matmul as the peer of bench_linalg's bf16 products (onednn_peer.hpp), built by
// the host compiler without Kokkos (tests/bench/CMakeLists.txt), so that the CUDA build, whose
// nvcc cannot compile dnnl.hpp, still builds bench_linalg.
#include "onednn_peer.hpp"

#if defined(DAA_HAVE_ONEDNN)
#include <cstdlib>
#include <cstring>
#include <dnnl.hpp>
#include <string>
#endif

namespace daa::bench {

#if defined(DAA_HAVE_ONEDNN)
void run_onednn_bf16(benchmark::State& state, const PeerShape& s, bool convert) {
  using dnnl::memory;
  // Debian's oneDNN runs on OpenMP, which takes every core unless told otherwise before it loads.
  const char* threads = std::getenv("OMP_NUM_THREADS");
  if (threads == nullptr || std::string(threads) != "1")
    return state.SkipWithError("run with OMP_NUM_THREADS=1: oneDNN would use every core");
  const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  const auto m = memory::dim(s.m), n = memory::dim(s.n), k = memory::dim(s.k);
  const auto a_strides = !s.trans_a ? memory::dims{k, 1} : memory::dims{1, m};
  const auto b_strides = !s.trans_b ? memory::dims{n, 1} : memory::dims{1, k};
  const memory::desc a_f32({m, k}, memory::data_type::f32, a_strides),
      b_f32({k, n}, memory::data_type::f32, b_strides),
      a_bf16({m, k}, memory::data_type::bf16, a_strides),
      b_bf16({k, n}, memory::data_type::bf16, b_strides),
      c_f32({m, n}, memory::data_type::f32, memory::dims{n, 1});
  dnnl::primitive_attr attr;
  if (s.beta != 0.0f) {
    dnnl::post_ops sum;
    sum.append_sum(s.beta);
    attr.set_post_ops(sum);
  }
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_bf16, b_bf16, c_f32), attr, engine);
  const dnnl::matmul matmul(pd);
  memory a32(a_f32, engine), b32(b_f32, engine), a16(a_bf16, engine), b16(b_bf16, engine),
      c(c_f32, engine);
  auto fill = [](memory& x, std::size_t count, float scale) {
    auto* p = static_cast<float*>(x.get_data_handle());
    for (std::size_t i = 0; i < count; ++i) p[i] = float(i % 7) * scale - 0.375f;
  };
  fill(a32, s.m * s.k, 0.125f);
  fill(b32, s.k * s.n, 0.25f);
  std::memset(c.get_data_handle(), 0, s.m * s.n * sizeof(float));
  const dnnl::reorder to_a16(a32, a16), to_b16(b32, b16);
  to_a16.execute(stream, a32, a16);
  to_b16.execute(stream, b32, b16);
  for (auto _ : state) {
    if (convert) {
      to_a16.execute(stream, a32, a16);
      to_b16.execute(stream, b32, b16);
    }
    matmul.execute(stream, {{DNNL_ARG_SRC, a16}, {DNNL_ARG_WEIGHTS, b16}, {DNNL_ARG_DST, c}});
    stream.wait();
    benchmark::ClobberMemory();
  }
  state.SetLabel(pd.impl_info_str());
  state.counters["GFLOPS"] = benchmark::Counter(2.0 * double(s.m * s.n * s.k) * 1e-9,
                                                benchmark::Counter::kIsIterationInvariantRate);
}
#else
void run_onednn_bf16(benchmark::State& state, const PeerShape&, bool) {
  state.SkipWithError("built without oneDNN (libdnnl-dev; scripts/setup-debian installs it)");
}
#endif

}  // namespace daa::bench
