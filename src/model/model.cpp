// The two models behind the Model interface (see model.hpp), and the factory that builds the one
// an input describes for a rank's place in the layout.
#include "daa/model/model.hpp"

#include <fmt/format.h>

#include <cctype>
#include <climits>

#include "daa/core/error.hpp"
#include "daa/model/embedding.hpp"
#include "daa/model/language_model.hpp"
#include "daa/model/moe_model.hpp"

namespace daa::model {
namespace {

using kernels::Matrix;

void add_costs(StepStats& to, const BatchStats& from) {
  to.expert_seconds += from.expert_seconds;
  to.expert_flops += from.expert_flops;
  to.dispatch_seconds += from.dispatch_seconds;
}

class Classifier final : public Model {
 public:
  Classifier(const ModelShape& shape, const parallel::Communicator* expert_group)
      : model_(shape, expert_group) {}
  const char* kind() const override { return "classifier"; }
  ParamStore<float>& params() override { return model_.params(); }
  int width() const override { return model_.shape().d_model; }
  StepStats forward(int slot, const StageBatch& batch, const Matrix<float>& received, bool train,
                    const StatsReducer& reduce_stats, const RoutingObserver& observer) override {
    const BatchStats b =
        model_.forward(slot, model_.shape().has_input() ? batch.features : received, batch.targets,
                       train, reduce_stats, observer);
    StepStats s;
    s.scored = b.samples;
    s.loss_sum = b.loss_sum;
    s.correct = b.correct;
    s.aux_loss = b.aux_loss;
    s.moe = b.layers;
    add_costs(s, b);
    return s;
  }
  void backward(int slot, const Matrix<float>& grad_output, StepStats& stats) override {
    BatchStats b;
    model_.backward(slot, grad_output, b);
    add_costs(stats, b);
  }
  Matrix<float> output(int slot) const override { return model_.output(slot); }
  Matrix<float> input_grad(int slot) const override { return model_.input_grad(slot); }
  kernels::Vector<float> routing_bias(int moe_layer) const override {
    return model_.routing_bias(moe_layer);
  }
  // "moe0.expert3.w1" -> "layer0/expert3/w1" (docs/checkpoint-format.md).
  std::string checkpoint_path(const ParamInfo& info) const override {
    std::string out;
    for (std::size_t start = 0;;) {
      const std::size_t dot = info.name.find('.', start);
      std::string part = info.name.substr(start, dot == std::string::npos ? dot : dot - start);
      if (part.size() > 3 && part.rfind("moe", 0) == 0 && std::isdigit(part[3]))
        part = "layer" + part.substr(3);
      out += (out.empty() ? "" : "/") + part;
      if (dot == std::string::npos) return out;
      start = dot + 1;
    }
  }

 private:
  MoeModel<float> model_;
};

class Language final : public Model {
 public:
  // `end_stages` (Topology::end_stages) links the tied table's two holders; it must outlive the
  // model, and is unused unless the shape ties embeddings across stages.
  Language(const LanguageModelShape& shape, const parallel::Communicator* expert_group,
           const parallel::Communicator* end_stages = nullptr)
      : model_(shape, expert_group), end_stages_(end_stages) {
    if (shape.tied_across_stages() &&
        (end_stages == nullptr || end_stages->comm() == MPI_COMM_NULL || end_stages->size() != 2))
      throw Error(
          "model::Language: tied embeddings across pipeline stages need the end-stages "
          "communicator of the first and the last stage");
  }
  const char* kind() const override { return "language-model"; }
  ParamStore<float>& params() override { return model_.params(); }
  int width() const override { return model_.shape().d_model; }
  StepStats forward(int slot, const StageBatch& batch, const Matrix<float>& received, bool train,
                    const StatsReducer& reduce_stats, const RoutingObserver& observer) override {
    LmStats l = model_.forward(slot, batch.seq_len, batch.tokens, received, batch.targets, train,
                               reduce_stats, observer);
    StepStats s;
    s.scored = l.tokens;
    s.loss_sum = l.loss_sum;
    s.correct = l.correct;
    s.aux_loss = l.aux_loss;
    s.expert_seconds = l.expert_seconds;
    s.expert_flops = l.expert_flops;
    s.dispatch_seconds = l.dispatch_seconds;
    s.attention_seconds = l.attention_seconds;
    s.attention_flops = l.attention_flops;
    s.moe = std::move(l.moe);
    s.row_loss = std::move(l.row_loss);
    return s;
  }
  void backward(int slot, const Matrix<float>& grad_output, StepStats& stats) override {
    LmStats l;
    model_.backward(slot, grad_output, l);
    stats.expert_seconds += l.expert_seconds;
    stats.expert_flops += l.expert_flops;
    stats.dispatch_seconds += l.dispatch_seconds;
    stats.attention_seconds += l.attention_seconds;
    stats.attention_flops += l.attention_flops;
  }
  Matrix<float> output(int slot) const override { return model_.output(slot); }
  Matrix<float> input_grad(int slot) const override { return model_.input_grad(slot); }
  kernels::Vector<float> routing_bias(int moe_layer) const override {
    return model_.routing_bias(moe_layer);
  }
  LanguageModel<float>* language_model() override { return &model_; }
  // Stage 0 owns the tied table: it receives the head copy's gradient (an MPI_Reduce over the two
  // ranks, a + b on either order, so deterministic), aggregates, clips and updates it like any of
  // its parameters, and sends the new values back. Why not sum on both stages and let both
  // update: each stage's robust round sees its own whole gradient vector, and a distance-based
  // rule (Krum) may pick other ranks on the two stages, so the copies could drift apart; and the
  // zeroed copy keeps the global gradient norm counting the table once without the optimizer
  // knowing about copies.
  void share_tied_gradients() override {
    if (!model_.shape().tied_across_stages()) return;
    const bool owner = model_.shape().has_embedding();
    const auto grad = model_.params().grad(table_id());
    // Host MPI: the table's gradient staged to host memory (the same memory on host backends).
    auto host = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), grad);
    Kokkos::fence();
    DAA_MPI_CHECK(MPI_Reduce(owner ? MPI_IN_PLACE : host.data(), owner ? host.data() : nullptr,
                             table_count(), MPI_FLOAT, MPI_SUM, 0, end_stages_->comm()));
    if (owner)
      Kokkos::deep_copy(grad, host);
    else
      Kokkos::deep_copy(grad, 0.0f);
  }
  void share_tied_parameters() override {
    if (!model_.shape().tied_across_stages()) return;
    const auto value = model_.params().value(table_id());
    auto host = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), value);
    Kokkos::fence();
    DAA_MPI_CHECK(MPI_Bcast(host.data(), table_count(), MPI_FLOAT, 0, end_stages_->comm()));
    if (!model_.shape().has_embedding()) Kokkos::deep_copy(value, host);
  }
  // "block1.moe.expert3.w1" -> "block1/moe/expert3/w1".
  std::string checkpoint_path(const ParamInfo& info) const override {
    std::string out = info.name;
    for (char& c : out)
      if (c == '.') c = '/';
    return out;
  }

 private:
  int table_id() { return model_.layers().embedding->table_id(); }
  int table_count() {
    return parallel::mpi_count(model_.params().infos()[std::size_t(table_id())].size(),
                               "model::Language: the tied embedding table");
  }
  LanguageModel<float> model_;
  const parallel::Communicator* end_stages_;
};

}  // namespace

std::unique_ptr<Model> make_model(const core::Config& config, const parallel::Topology& topology,
                                  int inputs, int outputs) {
  const parallel::RankPlace& place = topology.place();
  const int ep = topology.layout().expert_parallel;
  if (core::is_language_model(config)) {
    LanguageModelShape shape = language_model_shape_from_config(config, outputs, ep, place.ep_rank);
    shape.first_block = place.first_block;
    shape.last_block = place.last_block;
    return std::make_unique<Language>(shape, &topology.expert_parallel(), &topology.end_stages());
  }
  ModelShape shape = shape_from_config(config, inputs, outputs, ep, place.ep_rank);
  shape.first_block = place.first_block;
  shape.last_block = place.last_block;
  return std::make_unique<Classifier>(shape, &topology.expert_parallel());
}

ParamStore<float> whole_model_params(const core::Config& config, int inputs, int outputs) {
  if (core::is_language_model(config)) {
    const LanguageModel<float> model(language_model_shape_from_config(config, outputs, 1, 0));
    return model.params();
  }
  const MoeModel<float> model(shape_from_config(config, inputs, outputs));
  return model.params();
}

parallel::StageCosts stage_costs(const core::Config& config, int inputs, int outputs) {
  return core::is_language_model(config) ? language_model_stage_costs(config, outputs)
                                         : classifier_stage_costs(config, inputs, outputs);
}

}  // namespace daa::model
