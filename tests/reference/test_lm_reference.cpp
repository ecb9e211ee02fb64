// The language model checked against PyTorch (issue 12), as llm.c checks its GPT-2: lm_reference.h5
// holds small models (parameters by name, a batch, routing biases) and what lm_reference.py's
// PyTorch model computed from them; the test rebuilds each model in double and compares logits,
// losses, routing and every gradient. `test_lm_reference --write-inputs FILE` writes the inputs.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <Kokkos_Core.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "../unit/gradient_check.hpp"
#include "daa/core/error.hpp"
#include "daa/core/rng.hpp"
#include "daa/model/language_model.hpp"

namespace daa::model::test {
namespace {

using kernels::Matrix;

#ifndef DAA_LM_REFERENCE_FILE
#error "DAA_LM_REFERENCE_FILE must name the committed tests/reference/lm_reference.h5"
#endif

// norms.cpp's epsilon, written into the file so that PyTorch uses the same.
constexpr double kRmsEps = 1e-5;
// PyTorch and this model agree to ~1e-13 in double; a real difference in the math shows up as
// 1e-3 or more, so this bound separates the two by orders of magnitude either way.
constexpr double kTolerance = 1e-5;

// The cases in the file: the model (tied head, SwiGLU, dense and MoE blocks), and one
// with an untied head, GELU experts with biases, unnormalized top-3 gates and two MoE layers.
LanguageModelShape case_shape(const std::string& name) {
  LanguageModelShape s;
  s.d_model = 16;
  s.seq_len = 8;
  s.init_std = 0.2;  // routing far from uniform, so top-k choices are clear-cut
  if (name == "tied_swiglu") {
    s.vocab = 50;
    s.layers = 3;  // dense, MoE, dense
    s.heads = 2;
    s.attention_block = 3;  // three key blocks per sequence: the online softmax rescales
    s.moe_every = 2;
    s.d_ff_dense = 24;
    s.tie_embeddings = true;
    s.seed = 11;
    s.moe = MoeShape{.d_model = 16,
                     .experts = 4,
                     .top_k = 2,
                     .d_ff = 16,
                     .ffn = ExpertFfn::swiglu,
                     .normalize_gates = true,
                     .aux_loss_coef = 0.1,
                     .z_loss_coef = 0.01};
  } else if (name == "untied_gelu") {
    s.vocab = 40;
    s.layers = 2;  // MoE, MoE
    s.heads = 4;
    s.attention_block = 8;
    s.moe_every = 1;
    s.d_ff_dense = 8;  // no dense block
    s.tie_embeddings = false;
    s.seed = 12;
    s.moe = MoeShape{.d_model = 16,
                     .experts = 4,
                     .top_k = 3,
                     .d_ff = 16,
                     .ffn = ExpertFfn::gelu,
                     .normalize_gates = false,
                     .aux_loss_coef = 0.05,
                     .z_loss_coef = 0.02};
  } else {
    throw Error("test_lm_reference: no case '" + name + "'");
  }
  return s;
}
const std::vector<std::string> kCases = {"tied_swiglu", "untied_gelu"};

// Counted here, not by LanguageModelShape::moe_layers(), which returns -1 when the last block is
// dense (MoeLayerCountOfTheShape below).
int moe_layer_count(const LanguageModelShape& s) {
  int count = 0;
  for (int b = 0; b < s.layers; ++b) count += s.is_moe_block(b) ? 1 : 0;
  return count;
}
constexpr int kSequences = 2;

// ---- HDF5, through its C API --------------------------------------------------------------------

// One HDF5 identifier, closed on scope exit; a negative id becomes a DataError naming `what`.
class H5Id {
 public:
  H5Id(hid_t id, herr_t (*close)(hid_t), const std::string& what) : id_(id), close_(close) {
    if (id < 0) throw DataError(what);
  }
  ~H5Id() { close_(id_); }
  H5Id(const H5Id&) = delete;
  H5Id& operator=(const H5Id&) = delete;
  operator hid_t() const { return id_; }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

void check(herr_t status, const std::string& what) {
  if (status < 0) throw DataError(what);
}

class H5File {
 public:
  // Opens `path` read-only, or creates it (truncating) with `create`.
  H5File(const std::string& path, bool create)
      : path_(path), file_(open(path, create), H5Fclose, path) {}

  void group(const std::string& name) {
    H5Id(H5Gcreate2(file_, name.c_str(), H5P_DEFAULT, untimed(H5P_GROUP_CREATE), H5P_DEFAULT),
         H5Gclose, where(name) + ": cannot create the group");
  }
  void write_f64(const std::string& name, const std::vector<double>& values,
                 const std::vector<hsize_t>& dims) {
    write(name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, values.data(), dims);
  }
  void write_i64(const std::string& name, const std::vector<std::int64_t>& values,
                 const std::vector<hsize_t>& dims) {
    write(name, H5T_STD_I64LE, H5T_NATIVE_INT64, values.data(), dims);
  }
  void attr_i64(const std::string& object, const std::string& name, std::int64_t value) {
    write_attr(object, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value);
  }
  void attr_f64(const std::string& object, const std::string& name, double value) {
    write_attr(object, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value);
  }
  void attr_text(const std::string& object, const std::string& name, const std::string& value) {
    H5Id type(H5Tcopy(H5T_C_S1), H5Tclose, where(object) + ": string type");
    check(H5Tset_size(type, value.size()), where(object) + ": string type");
    write_attr(object, name, type, type, value.data());
  }

  // A dataset's values converted to double (or int64), with its dimensions.
  std::vector<double> read_f64(const std::string& name, std::vector<hsize_t>* dims = nullptr) {
    std::vector<double> values;
    read(name, H5T_NATIVE_DOUBLE, values, dims);
    return values;
  }
  std::vector<std::int64_t> read_i64(const std::string& name,
                                     std::vector<hsize_t>* dims = nullptr) {
    std::vector<std::int64_t> values;
    read(name, H5T_NATIVE_INT64, values, dims);
    return values;
  }
  std::int64_t read_attr_i64(const std::string& object, const std::string& name) {
    std::int64_t value = 0;
    read_attr(object, name, H5T_NATIVE_INT64, &value);
    return value;
  }
  double read_attr_f64(const std::string& object, const std::string& name) {
    double value = 0;
    read_attr(object, name, H5T_NATIVE_DOUBLE, &value);
    return value;
  }
  std::string read_attr_text(const std::string& object, const std::string& name) {
    H5Id attr(H5Aopen_by_name(file_, object.c_str(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT),
              H5Aclose, where(object) + ": no attribute '" + name + "'");
    H5Id type(H5Aget_type(attr), H5Tclose, where(object) + ": attribute '" + name + "'");
    if (H5Tget_class(type) != H5T_STRING || H5Tis_variable_str(type) > 0)
      throw DataError(where(object) + ": attribute '" + name + "' is not a fixed-length string");
    std::string value(H5Tget_size(type), '\0');
    check(H5Aread(attr, type, value.data()), where(object) + ": attribute '" + name + "'");
    return value.substr(0, value.find('\0'));
  }
  // Names of the links in a group, in name order.
  std::vector<std::string> list(const std::string& group) {
    H5Id g(H5Gopen2(file_, group.c_str(), H5P_DEFAULT), H5Gclose, where(group) + ": no group");
    H5G_info_t info;
    check(H5Gget_info(g, &info), where(group) + ": cannot list");
    std::vector<std::string> names;
    for (hsize_t i = 0; i < info.nlinks; ++i) {
      const ssize_t size =
          H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
      if (size < 0) throw DataError(where(group) + ": cannot list");
      std::string name(std::size_t(size) + 1, '\0');
      if (H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), name.size(),
                             H5P_DEFAULT) < 0)
        throw DataError(where(group) + ": cannot list");
      name.resize(std::size_t(size));
      names.push_back(name);
    }
    return names;
  }

 private:
  static hid_t open(const std::string& path, bool create) {
    // Our messages name the file and dataset; HDF5's own stack printout would only add noise.
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    if (!create && !std::filesystem::exists(path))
      throw DataError(path +
                      ": the reference file is missing (tests/reference/refresh.sh makes it)");
    const hid_t id = create ? H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT)
                            : H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    if (id < 0) throw DataError(path + ": cannot " + (create ? "create" : "open") + " as HDF5");
    return id;
  }
  std::string where(const std::string& name) const { return path_ + ":" + name; }
  // Creation properties without modification times, so that a refresh of unchanged inputs
  // rewrites the committed file byte for byte.
  hid_t untimed(hid_t kind) {
    const hid_t list = kind == H5P_GROUP_CREATE ? group_props_ : dataset_props_;
    check(H5Pset_obj_track_times(list, 0), path_ + ": creation properties");
    return list;
  }

  void write(const std::string& name, hid_t file_type, hid_t memory_type, const void* data,
             const std::vector<hsize_t>& dims) {
    H5Id space(dims.empty() ? H5Screate(H5S_SCALAR)
                            : H5Screate_simple(int(dims.size()), dims.data(), nullptr),
               H5Sclose, where(name) + ": dataspace");
    H5Id set(H5Dcreate2(file_, name.c_str(), file_type, space, H5P_DEFAULT,
                        untimed(H5P_DATASET_CREATE), H5P_DEFAULT),
             H5Dclose, where(name) + ": cannot create the dataset");
    check(H5Dwrite(set, memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data),
          where(name) + ": cannot write");
  }
  void write_attr(const std::string& object, const std::string& name, hid_t file_type,
                  hid_t memory_type, const void* value) {
    H5Id space(H5Screate(H5S_SCALAR), H5Sclose, where(object) + ": dataspace");
    H5Id attr(H5Acreate_by_name(file_, object.c_str(), name.c_str(), file_type, space, H5P_DEFAULT,
                                H5P_DEFAULT, H5P_DEFAULT),
              H5Aclose, where(object) + ": cannot create attribute '" + name + "'");
    check(H5Awrite(attr, memory_type, value),
          where(object) + ": cannot write attribute '" + name + "'");
  }
  template <class V>
  void read(const std::string& name, hid_t memory_type, std::vector<V>& values,
            std::vector<hsize_t>* dims) {
    H5Id set(H5Dopen2(file_, name.c_str(), H5P_DEFAULT), H5Dclose,
             where(name) + ": no such dataset");
    H5Id space(H5Dget_space(set), H5Sclose, where(name) + ": dataspace");
    const int rank = H5Sget_simple_extent_ndims(space);
    std::vector<hsize_t> extent(std::size_t(std::max(rank, 0)));
    check(H5Sget_simple_extent_dims(space, extent.data(), nullptr), where(name) + ": dataspace");
    hsize_t count = 1;
    for (const hsize_t e : extent) count *= e;
    values.resize(std::size_t(count));
    check(H5Dread(set, memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()),
          where(name) + ": cannot read");
    if (dims) *dims = extent;
  }
  void read_attr(const std::string& object, const std::string& name, hid_t memory_type,
                 void* value) {
    H5Id attr(H5Aopen_by_name(file_, object.c_str(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT),
              H5Aclose, where(object) + ": no attribute '" + name + "'");
    check(H5Aread(attr, memory_type, value), where(object) + ": attribute '" + name + "'");
  }

  std::string path_;
  H5Id file_;
  H5Id group_props_{H5Pcreate(H5P_GROUP_CREATE), H5Pclose, "HDF5 group creation properties"};
  H5Id dataset_props_{H5Pcreate(H5P_DATASET_CREATE), H5Pclose, "HDF5 dataset creation properties"};
};

// ---- the model's inputs -------------------------------------------------------------------------

struct Batch {
  std::vector<int> tokens, targets;
};

void write_shape(H5File& file, const std::string& at, const LanguageModelShape& s) {
  file.attr_i64(at, "vocab", s.vocab);
  file.attr_i64(at, "d_model", s.d_model);
  file.attr_i64(at, "layers", s.layers);
  file.attr_i64(at, "heads", s.heads);
  file.attr_i64(at, "seq_len", s.seq_len);
  file.attr_i64(at, "sequences", kSequences);
  file.attr_f64(at, "rope_base", s.rope_base);
  file.attr_i64(at, "attention_block", s.attention_block);
  file.attr_i64(at, "moe_every", s.moe_every);
  file.attr_i64(at, "d_ff_dense", s.d_ff_dense);
  file.attr_i64(at, "tie_embeddings", s.tie_embeddings ? 1 : 0);
  file.attr_f64(at, "init_std", s.init_std);
  file.attr_i64(at, "seed", std::int64_t(s.seed));
  file.attr_f64(at, "rms_eps", kRmsEps);
  file.attr_i64(at, "experts", s.moe.experts);
  file.attr_i64(at, "top_k", s.moe.top_k);
  file.attr_i64(at, "d_ff", s.moe.d_ff);
  file.attr_text(at, "ffn", s.moe.ffn == ExpertFfn::swiglu ? "swiglu" : "gelu");
  file.attr_i64(at, "normalize_gates", s.moe.normalize_gates ? 1 : 0);
  file.attr_f64(at, "aux_loss_coef", s.moe.aux_loss_coef);
  file.attr_f64(at, "z_loss_coef", s.moe.z_loss_coef);
}

LanguageModelShape read_shape(H5File& file, const std::string& at) {
  LanguageModelShape s;
  s.vocab = int(file.read_attr_i64(at, "vocab"));
  s.d_model = int(file.read_attr_i64(at, "d_model"));
  s.layers = int(file.read_attr_i64(at, "layers"));
  s.heads = int(file.read_attr_i64(at, "heads"));
  s.seq_len = int(file.read_attr_i64(at, "seq_len"));
  s.rope_base = file.read_attr_f64(at, "rope_base");
  s.attention_block = int(file.read_attr_i64(at, "attention_block"));
  s.moe_every = int(file.read_attr_i64(at, "moe_every"));
  s.d_ff_dense = int(file.read_attr_i64(at, "d_ff_dense"));
  s.tie_embeddings = file.read_attr_i64(at, "tie_embeddings") != 0;
  s.init_std = file.read_attr_f64(at, "init_std");
  s.seed = std::uint64_t(file.read_attr_i64(at, "seed"));
  const std::string ffn = file.read_attr_text(at, "ffn");
  if (ffn != "swiglu" && ffn != "gelu") throw DataError(at + ": ffn '" + ffn + "' is unknown");
  s.moe = MoeShape{.d_model = s.d_model,
                   .experts = int(file.read_attr_i64(at, "experts")),
                   .top_k = int(file.read_attr_i64(at, "top_k")),
                   .d_ff = int(file.read_attr_i64(at, "d_ff")),
                   .ffn = ffn == "swiglu" ? ExpertFfn::swiglu : ExpertFfn::gelu,
                   .normalize_gates = file.read_attr_i64(at, "normalize_gates") != 0,
                   .aux_loss_coef = file.read_attr_f64(at, "aux_loss_coef"),
                   .z_loss_coef = file.read_attr_f64(at, "z_loss_coef")};
  return s;
}

// Writes case `name`'s inputs: the model's initial parameters with its gains and biases moved off
// 1 and 0 (else a gain applied in the wrong place, or a bias added twice, would go unseen), a
// batch, and routing biases large enough to change some top-k choices.
void write_case_inputs(H5File& file, const std::string& name) {
  const LanguageModelShape shape = case_shape(name);
  LanguageModel<double> model(shape);
  const std::uint64_t seed = shape.seed;
  auto values = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), model.params().values());
  for (const ParamInfo& p : model.params().infos()) {
    if (p.init == ParamInit::normal) continue;
    const double base = p.init == ParamInit::ones ? 1.0 : 0.0;
    for (std::size_t i = 0; i < p.size(); ++i)
      values(p.offset + i) = base + 0.2 * core::counter_normal(seed, core::RngPurpose::test,
                                                               core::name_hash(p.name.c_str()), i);
  }

  const std::string inputs = "/" + name + "/inputs";
  file.group("/" + name);
  file.group(inputs);
  file.group(inputs + "/params");
  write_shape(file, inputs, shape);
  for (const ParamInfo& p : model.params().infos()) {
    std::vector<double> v(values.data() + p.offset, values.data() + p.offset + p.size());
    file.write_f64(inputs + "/params/" + p.name, v, {p.rows, p.cols});
  }

  // Each sequence is a window of seq_len + 1 random tokens: inputs and next-token targets. Some
  // targets are -1 (no target), as at the end of a document.
  const auto n = std::size_t(kSequences * shape.seq_len);
  std::vector<std::int64_t> tokens(n), targets(n);
  std::uint64_t draw = 0;
  const auto random_token = [&] {
    return std::int64_t(core::counter_uniform(seed, core::RngPurpose::test, 1, draw++) *
                        shape.vocab);
  };
  for (int b = 0; b < kSequences; ++b) {
    std::int64_t current = random_token();
    for (int i = 0; i < shape.seq_len; ++i) {
      const std::size_t t = std::size_t(b * shape.seq_len + i);
      tokens[t] = current;
      current = random_token();
      targets[t] = current;
    }
  }
  targets[n - 1] = -1;
  if (!shape.tie_embeddings) targets[3] = targets[n / 2 + 2] = -1;
  file.write_i64(inputs + "/tokens", tokens, {n});
  file.write_i64(inputs + "/targets", targets, {n});

  const auto layers = std::size_t(moe_layer_count(shape)), E = std::size_t(shape.moe.experts);
  std::vector<double> bias(layers * E);
  for (std::size_t i = 0; i < bias.size(); ++i)
    bias[i] = 0.05 * core::counter_normal(seed, core::RngPurpose::test, 2, i);
  file.write_f64(inputs + "/routing_bias", bias, {layers, E});
}

void write_inputs(const std::string& path) {
  H5File file(path, /*create=*/true);
  file.attr_text("/", "what",
                 "daa-swarm language model vs PyTorch: <case>/inputs from test_lm_reference "
                 "--write-inputs, <case>/expected from lm_reference.py");
  for (const std::string& name : kCases) write_case_inputs(file, name);
}

// ---- the comparison -----------------------------------------------------------------------------

// max |a - b| / max |b| over a tensor: relative to the reference tensor b's scale, so entries
// near zero do not dominate (gradient_check.hpp's relative_error also scales by a).
double error_against(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return INFINITY;
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return scale > 0 ? diff / scale : diff;
}

// One case of the file loaded into a fresh model.
class Reference {
 public:
  explicit Reference(const std::string& name)
      : file_(DAA_LM_REFERENCE_FILE, /*create=*/false),
        inputs_("/" + name + "/inputs"),
        expected_("/" + name + "/expected"),
        shape_(read_shape(file_, inputs_)),
        model_(shape_) {
    model_.keep_logits(true);  // the reference compares logits
    const std::vector<std::string> in_file = file_.list(inputs_ + "/params");
    std::vector<std::string> in_model;
    auto values = Kokkos::create_mirror_view(model_.params().values());
    for (const ParamInfo& p : model_.params().infos()) {
      in_model.push_back(p.name);
      std::vector<hsize_t> dims;
      const std::vector<double> v = file_.read_f64(inputs_ + "/params/" + p.name, &dims);
      if (dims != std::vector<hsize_t>{p.rows, p.cols})
        throw DataError(inputs_ + "/params/" + p.name + " has another shape than the model's");
      std::copy(v.begin(), v.end(), values.data() + p.offset);
    }
    std::sort(in_model.begin(), in_model.end());
    if (in_model != in_file)
      throw DataError(inputs_ + "/params names other parameters than the model declares");
    Kokkos::deep_copy(model_.params().values(), values);
    set_routing_bias(file_.read_f64(inputs_ + "/routing_bias"));

    const auto to_int = [](const std::vector<std::int64_t>& v) {
      return std::vector<int>(v.begin(), v.end());
    };
    batch_.tokens = to_int(file_.read_i64(inputs_ + "/tokens"));
    batch_.targets = to_int(file_.read_i64(inputs_ + "/targets"));
  }

  void set_routing_bias(const std::vector<double>& bias) {
    const auto E = std::size_t(shape_.moe.experts);
    if (bias.size() != std::size_t(moe_layer_count(shape_)) * E)
      throw DataError(inputs_ + "/routing_bias is not [moe layers, experts]");
    for (int l = 0; l < moe_layer_count(shape_); ++l) {
      const kernels::Vector<double> view = model_.routing_bias(l);
      auto host = Kokkos::create_mirror_view(view);
      for (std::size_t e = 0; e < E; ++e) host(e) = bias[std::size_t(l) * E + e];
      Kokkos::deep_copy(view, host);
    }
  }

  struct Run {
    LmStats stats;
    std::vector<std::vector<int>> choice;  // per MoE layer: [tokens * top_k]
  };
  Run forward(bool train) {
    Run run;
    run.choice.resize(std::size_t(moe_layer_count(shape_)));
    run.stats =
        model_.forward(0, shape_.seq_len, token_view(batch_.tokens), Matrix<double>("none", 0, 0),
                       token_view(batch_.targets), train, {}, [&](const RoutingEvent& e) {
                         run.choice[std::size_t(e.layer)].assign(e.choice.begin(), e.choice.end());
                       });
    return run;
  }

  H5File& file() { return file_; }
  const std::string& expected() const { return expected_; }
  const LanguageModelShape& shape() const { return shape_; }
  LanguageModel<double>& model() { return model_; }
  double expected_scalar(const std::string& name) {
    return file_.read_f64(expected_ + "/" + name)[0];
  }

 private:
  H5File file_;
  std::string inputs_, expected_;
  LanguageModelShape shape_;
  LanguageModel<double> model_;
  Batch batch_;
};

double scalar_error(double a, double b) {
  return std::abs(a - b) / std::max(std::abs(b), 1e-300);
}

class LmReference : public ::testing::TestWithParam<std::string> {};

// Forward (train = false): logits, mean cross-entropy, each MoE layer's aux and z losses, top-1
// hits, and the routing itself, choice by choice and as per-expert token counts.
TEST_P(LmReference, ForwardMatchesPyTorch) {
  Reference ref(GetParam());
  const Reference::Run run = ref.forward(false);
  const LmStats& st = run.stats;
  const std::string& at = ref.expected();

  const double logits_error =
      error_against(to_host(ref.model().logits(0)), ref.file().read_f64(at + "/logits"));
  const double loss_error =
      scalar_error(st.loss_sum / double(st.tokens), ref.expected_scalar("loss"));
  const double aux_error = scalar_error(st.aux_loss, ref.expected_scalar("aux_total"));
  EXPECT_LE(logits_error, kTolerance);
  EXPECT_LE(loss_error, kTolerance);
  EXPECT_LE(aux_error, kTolerance);
  EXPECT_EQ(st.correct, ref.file().read_i64(at + "/correct")[0]);

  const std::vector<double> aux = ref.file().read_f64(at + "/aux_loss");
  const std::vector<double> z = ref.file().read_f64(at + "/z_loss");
  const std::vector<std::int64_t> choice = ref.file().read_i64(at + "/choice");
  const std::vector<std::int64_t> counts = ref.file().read_i64(at + "/tokens_per_expert");
  const auto layers = std::size_t(moe_layer_count(ref.shape()));
  const auto E = std::size_t(ref.shape().moe.experts);
  ASSERT_EQ(st.moe.size(), layers);
  ASSERT_EQ(aux.size(), layers);
  ASSERT_EQ(z.size(), layers);
  ASSERT_EQ(counts.size(), layers * E);
  double moe_error = 0;
  for (std::size_t l = 0; l < layers; ++l) {
    moe_error = std::max({moe_error, scalar_error(st.moe[l].aux_loss, aux[l]),
                          scalar_error(st.moe[l].z_loss, z[l])});
    EXPECT_LE(scalar_error(st.moe[l].aux_loss, aux[l]), kTolerance) << "MoE layer " << l;
    EXPECT_LE(scalar_error(st.moe[l].z_loss, z[l]), kTolerance) << "MoE layer " << l;
    for (std::size_t e = 0; e < E; ++e) {
      EXPECT_EQ(st.moe[l].tokens_per_expert[e], counts[l * E + e])
          << "MoE layer " << l << " expert " << e;
      // The fixture must route some tokens to every expert, or its gradients go unchecked.
      EXPECT_GT(counts[l * E + e], 0) << "MoE layer " << l << " expert " << e;
    }
    const std::vector<int>& ours = run.choice[l];
    const std::size_t per_layer = choice.size() / layers;
    ASSERT_EQ(ours.size(), per_layer) << "MoE layer " << l;
    std::size_t different = 0;
    for (std::size_t i = 0; i < per_layer; ++i)
      different += ours[i] != choice[l * per_layer + i] ? 1 : 0;
    EXPECT_EQ(different, 0u) << "MoE layer " << l << ": top-k choices differ from PyTorch's";
  }
  std::printf("[ reference] %s forward: logits %.2e, loss %.2e, aux+z %.2e, per-layer aux/z %.2e\n",
              GetParam().c_str(), logits_error, loss_error, aux_error, moe_error);
}

// Forward + backward (train = true): the gradient of mean cross-entropy + aux + z for every
// parameter, by name.
TEST_P(LmReference, GradientsMatchPyTorch) {
  Reference ref(GetParam());
  ref.model().params().zero_grads();
  Reference::Run run = ref.forward(true);
  ref.model().backward(0, Matrix<double>("none", 0, 0), run.stats);
  EXPECT_LE(scalar_error(run.stats.loss_sum / double(run.stats.tokens) + run.stats.aux_loss,
                         ref.expected_scalar("objective")),
            kTolerance);

  const std::vector<double> grads = to_host(ref.model().params().grads());
  const std::vector<std::string> in_file = ref.file().list(ref.expected() + "/grads");
  ASSERT_EQ(in_file.size(), ref.model().params().infos().size());
  double worst = 0;
  std::string worst_name;
  for (const ParamInfo& p : ref.model().params().infos()) {
    std::vector<hsize_t> dims;
    const std::vector<double> expected =
        ref.file().read_f64(ref.expected() + "/grads/" + p.name, &dims);
    ASSERT_EQ(dims, (std::vector<hsize_t>{p.rows, p.cols})) << p.name;
    const std::vector<double> ours(grads.begin() + std::ptrdiff_t(p.offset),
                                   grads.begin() + std::ptrdiff_t(p.offset + p.size()));
    const double error = error_against(ours, expected);
    EXPECT_LE(error, kTolerance) << p.name;
    double largest = 0;
    for (const double g : expected) largest = std::max(largest, std::abs(g));
    EXPECT_GT(largest, 0.0) << p.name
                            << " has no gradient in the reference: the fixture leaves it unchecked";
    if (error >= worst) {
      worst = error;
      worst_name = p.name;
    }
  }
  std::printf("[ reference] %s gradients: worst relative error %.2e (%s) over %zu tensors\n",
              GetParam().c_str(), worst, worst_name.c_str(), ref.model().params().infos().size());
}

// The comparison has teeth: a change of 1e-3 in one gain, or dropping the routing bias, is seen.
TEST_P(LmReference, SmallChangesAreCaught) {
  Reference ref(GetParam());
  const Reference::Run base = ref.forward(false);
  const std::vector<double> logits = ref.file().read_f64(ref.expected() + "/logits");
  EXPECT_LE(error_against(to_host(ref.model().logits(0)), logits), kTolerance);

  ref.set_routing_bias(std::vector<double>(
      std::size_t(moe_layer_count(ref.shape()) * ref.shape().moe.experts), 0.0));
  const Reference::Run unbiased = ref.forward(false);
  EXPECT_NE(unbiased.choice, base.choice) << "the routing bias moves no top-k choice";

  ref.set_routing_bias(ref.file().read_f64("/" + GetParam() + "/inputs/routing_bias"));
  const ParamInfo& gain =
      *std::find_if(ref.model().params().infos().begin(), ref.model().params().infos().end(),
                    [](const ParamInfo& p) { return p.name == "final_norm.gain"; });
  auto values =
      Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), ref.model().params().values());
  values(gain.offset + 3) += 1e-3;
  Kokkos::deep_copy(ref.model().params().values(), values);
  ref.forward(false);
  EXPECT_GT(error_against(to_host(ref.model().logits(0)), logits), kTolerance);
}

// The shape's own count of MoE layers, which callers size per-layer state by, must agree.
TEST_P(LmReference, MoeLayerCountOfTheShape) {
  const LanguageModelShape shape = case_shape(GetParam());
  EXPECT_EQ(shape.moe_layers(), moe_layer_count(shape));
}

INSTANTIATE_TEST_SUITE_P(Cases, LmReference, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace daa::model::test

// A GoogleTest main that can instead write the reference inputs (tests/reference/refresh.sh).
int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  // Kokkos sees no arguments: --write-inputs is ours.
  int kokkos_argc = 1;
  Kokkos::ScopeGuard kokkos(kokkos_argc, argv);
  if (argc >= 2 && std::string(argv[1]) == "--write-inputs") {
    if (argc != 3) {
      std::fprintf(stderr, "usage: %s --write-inputs FILE\n", argv[0]);
      return 2;
    }
    try {
      daa::model::test::write_inputs(argv[2]);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "test_lm_reference: error: %s\n", e.what());
      return 1;
    }
    return 0;
  }
  return RUN_ALL_TESTS();
}
