// The replay tool (see replay.hpp). Everything it shows comes from datasets of one checkpoint, so
// the text, the CSV tables and the JSON document agree with what h5py reads from the same file.
#include "daa/io/replay.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <numeric>
#include <sstream>

#include "daa/core/config.hpp"
#include "daa/io/checkpoint.hpp"
#include "daa/io/tokenizer.hpp"

namespace daa::io {
namespace {

namespace fs = std::filesystem;
// Keys keep the order written here (ordered_json).
using Json = nlohmann::ordered_json;
using I64s = std::vector<std::int64_t>;
using F64s = std::vector<double>;

// Every dataset of one verified checkpoint, by path.
class Story {
 public:
  Story(const parallel::Communicator& self, const std::string& file) : file_(file) {
    CheckpointReader reader(self, file);
    std::vector<ReadRequest> requests;
    for (const DatasetInfo& d : reader.datasets()) {
      requests.push_back({d.path, 0, ReadRequest::kAllRows, false, {}});
      dims_[d.path] = d.dims;
    }
    reader.read(requests);
    for (ReadRequest& r : requests) data_[r.path] = std::move(r.out);
  }
  const std::string& file() const { return file_; }
  bool has(const std::string& path) const { return data_.count(path) > 0; }
  const DatasetValues& at(const std::string& path) const {
    const auto it = data_.find(path);
    if (it == data_.end()) throw CheckpointError("'" + file_ + "' has no dataset '" + path + "'");
    return it->second;
  }
  I64s ints(const std::string& path) const { return at(path).as<std::int64_t>(); }
  F64s floats(const std::string& path) const { return at(path).as<double>(); }
  F64s singles(const std::string& path) const {
    const std::vector<float> v = at(path).as<float>();
    return F64s(v.begin(), v.end());
  }
  std::int64_t scalar(const std::string& path) const { return ints(path).at(0); }
  std::string text(const std::string& path) const { return at(path).text(); }
  const std::vector<std::uint64_t>& dims(const std::string& path) const {
    at(path);  // names the file and path when it is missing
    return dims_.at(path);
  }

 private:
  std::string file_;
  std::map<std::string, DatasetValues> data_;
  std::map<std::string, std::vector<std::uint64_t>> dims_;
};

// The newest valid checkpoint of a run directory (or of its checkpoints/ directory), or the file.
// `listing` gets the steps of the directory's checkpoints.
Story open_story(const parallel::Communicator& self, const std::string& path,
                 std::string& listing) {
  std::error_code ec;
  if (!fs::is_directory(path, ec)) return Story(self, path);
  const std::string dir = fs::is_directory(fs::path(path) / "checkpoints", ec)
                              ? (fs::path(path) / "checkpoints").string()
                              : path;
  std::vector<std::string> notes;
  const std::vector<CheckpointCandidate> candidates = restart_candidates(dir, notes);
  for (const std::string& note : notes) std::cerr << "replay: " << note << '\n';
  std::vector<std::int64_t> steps;
  for (const CheckpointCandidate& c : candidates) steps.push_back(c.step);
  std::sort(steps.begin(), steps.end());
  for (std::int64_t s : steps) listing += fmt::format("{}{}", listing.empty() ? "" : ", ", s);
  for (const CheckpointCandidate& c : candidates) {
    try {
      return Story(self, c.path);
    } catch (const CheckpointError& e) {
      std::cerr << "daa-swarm: warning: " << e.what() << "; trying the next older checkpoint\n";
    }
  }
  throw CheckpointError("no valid checkpoint in '" + dir + "'");
}

// At most `count` row indices spread evenly over [0, n), always including the last.
std::vector<std::size_t> sample_rows(std::size_t n, std::size_t count) {
  std::vector<std::size_t> rows;
  if (n == 0) return rows;
  const std::size_t k = std::min(n, count);
  for (std::size_t i = 0; i < k; ++i) rows.push_back(k == 1 ? n - 1 : i * (n - 1) / (k - 1));
  rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  return rows;
}

const char* const kFashionClasses[] = {"T-shirt", "Trouser", "Pullover", "Dress", "Coat",
                                       "Sandal",  "Shirt",   "Sneaker",  "Bag",   "Boot"};

// Columns of /specialization/tokens whose shares are taken together. Each routed token-slot counts
// once in every set: the classifier has one (its classes), the language model two (the domain of
// the token's document, and the kind of the token itself), so shares are per expert and set.
struct CategorySet {
  std::string name;    // "class", "domain", "token kind"
  std::string plural;  // "classes", "domains", "token kinds"
  std::size_t first = 0, count = 0;
};

struct Shape {
  std::size_t layers = 0, experts = 0, classes = 0, steps = 0;  // classes: every category column
  std::string model_kind;                                       // "classifier" or "language-model"
  std::vector<std::string> categories;                          // the stored column names
  std::vector<std::string> labels;  // as shown: Fashion-MNIST's class names where they apply
  std::vector<CategorySet> sets;
  bool language_model() const { return model_kind == "language-model"; }
};

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// Checkpoints written before the language model have neither /meta/model_kind nor
// /specialization/categories: they are the classifier's, with columns "class 0".."class C-1".
Shape shape_of(const Story& s) {
  Shape shape;
  const core::Config config =
      core::parse_config(s.text("/config/input"), s.file() + ":/config/input");
  const std::vector<std::uint64_t>& dims = s.dims("/specialization/tokens");
  if (dims.size() != 3)
    throw CheckpointError(
        fmt::format("'{}': dataset '/specialization/tokens' has {} dimensions, "
                    "not 3 [layers, experts, categories]",
                    s.file(), dims.size()));
  shape.layers = std::size_t(dims[0]);
  shape.experts = std::size_t(dims[1]);
  shape.classes = std::size_t(dims[2]);
  shape.steps = s.ints("/history/steps/step").size();
  const auto expect_size = [&](const std::string& path, std::size_t size, std::size_t rows) {
    if (size != rows * shape.layers * shape.experts)
      throw CheckpointError(
          fmt::format("'{}': dataset '{}' holds {} values, not {} rows x {} "
                      "layers x {} experts as /specialization/tokens says",
                      s.file(), path, size, rows, shape.layers, shape.experts));
  };
  expect_size("/history/steps/expert_load", s.ints("/history/steps/expert_load").size(),
              shape.steps);
  expect_size("/history/windows/routing_bias", s.singles("/history/windows/routing_bias").size(),
              s.ints("/history/windows/step").size());

  shape.model_kind = s.has("/meta/model_kind") ? s.text("/meta/model_kind") : "classifier";
  if (shape.model_kind != "classifier" && shape.model_kind != "language-model")
    throw CheckpointError(
        fmt::format("'{}': /meta/model_kind is '{}'; known kinds are classifier, "
                    "language-model",
                    s.file(), shape.model_kind));
  if (s.has("/specialization/categories")) {
    shape.categories = split_lines(s.text("/specialization/categories"));
  } else if (shape.language_model()) {
    throw CheckpointError("'" + s.file() +
                          "': a language-model checkpoint has no /specialization/categories");
  } else {
    for (std::size_t c = 0; c < shape.classes; ++c)
      shape.categories.push_back(fmt::format("class {}", c));
  }
  if (shape.categories.size() != shape.classes)
    throw CheckpointError(
        fmt::format("'{}': /specialization/categories names {} columns, "
                    "/specialization/tokens has {}",
                    s.file(), shape.categories.size(), shape.classes));
  if (shape.language_model()) {
    // The columns are the domains, then the token kinds in TokenKind order.
    const auto kinds = std::size_t(kTokenKinds);
    bool fits = shape.classes > kinds;
    for (std::size_t k = 0; fits && k < kinds; ++k)
      fits = shape.categories[shape.classes - kinds + k] == to_string(TokenKind(k));
    if (!fits)
      throw CheckpointError(
          fmt::format("'{}': /specialization/categories of a language model must "
                      "be its domains followed by the {} token kinds",
                      s.file(), kinds));
    shape.sets = {{"domain", "domains", 0, shape.classes - kinds},
                  {"token kind", "token kinds", shape.classes - kinds, kinds}};
  } else {
    shape.sets = {{"class", "classes", 0, shape.classes}};
  }
  shape.labels = shape.categories;
  // Only the input tells Fashion-MNIST from other 10-class data sets.
  if (!shape.language_model() && shape.classes == 10 && config.data.dataset == "fashion-mnist")
    shape.labels.assign(std::begin(kFashionClasses), std::end(kFashionClasses));
  return shape;
}

// One expert x category-set table of a layer: shares within the set, each expert's top category
// and how much more of it the expert gets than its layer does ("lift"), and the mutual information
// between expert and category, which docs/checkpoint-format.md defines.
struct SetTable {
  std::vector<std::int64_t> totals;  // [E] token-slots counted in this set
  std::vector<double> shares;        // [E][count] percent of the expert's token-slots in the set
  std::vector<std::size_t> top;      // [E] column (within the set) with the largest share
  std::vector<double> lift;          // [E] the top column's share over the layer's share of it
  double mutual_information = 0;     // bits
  double entropy = 0;                // bits, of the category over the layer's token-slots
};

SetTable set_table(const I64s& spec, const Shape& sh, std::size_t layer, const CategorySet& set) {
  SetTable t;
  const std::size_t E = sh.experts, K = set.count;
  std::vector<double> column(K, 0.0);
  const auto count = [&](std::size_t e, std::size_t k) {
    return double(spec[(layer * E + e) * sh.classes + set.first + k]);
  };
  double all = 0;
  for (std::size_t e = 0; e < E; ++e) {
    std::int64_t total = 0;
    for (std::size_t k = 0; k < K; ++k) {
      total += spec[(layer * E + e) * sh.classes + set.first + k];
      column[k] += count(e, k);
    }
    t.totals.push_back(total);
    all += double(total);
  }
  for (std::size_t e = 0; e < E; ++e) {
    std::size_t best = 0;
    for (std::size_t k = 0; k < K; ++k) {
      t.shares.push_back(t.totals[e] > 0 ? 100 * count(e, k) / double(t.totals[e]) : 0.0);
      if (count(e, k) > count(e, best)) best = k;
    }
    t.top.push_back(best);
    const double layer_share = all > 0 ? column[best] / all : 0.0;
    t.lift.push_back(layer_share > 0 && t.totals[e] > 0
                         ? count(e, best) / double(t.totals[e]) / layer_share
                         : 0.0);
  }
  // I(expert; category) = sum p(e,c) log2(p(e,c) / (p(e) p(c))) over the layer's token-slots.
  for (std::size_t k = 0; k < K && all > 0; ++k)
    if (column[k] > 0) t.entropy -= column[k] / all * std::log2(column[k] / all);
  for (std::size_t e = 0; e < E && all > 0; ++e)
    for (std::size_t k = 0; k < K; ++k)
      if (count(e, k) > 0)
        t.mutual_information +=
            count(e, k) / all * std::log2(count(e, k) * all / (double(t.totals[e]) * column[k]));
  t.mutual_information = std::max(0.0, t.mutual_information);  // rounding only
  return t;
}

// The per-step history table.
struct StepHistory {
  I64s step, dropped, load;
  F64s loss, accuracy, lr, speed, imbalance;
  explicit StepHistory(const Story& s)
      : step(s.ints("/history/steps/step")),
        dropped(s.ints("/history/steps/dropped_tokens")),
        load(s.ints("/history/steps/expert_load")),
        loss(s.floats("/history/steps/loss")),
        accuracy(s.floats("/history/steps/train_accuracy")),
        lr(s.floats("/history/steps/learning_rate")),
        speed(s.floats("/history/steps/samples_per_s")),
        imbalance(s.floats("/history/steps/imbalance")) {}
};

// Per-rank ledger rows, or none when the run kept no ledger.
struct LedgerView {
  I64s rank, rounds, accepted, rejected, accusations, non_finite, quarantined, suspects;
  F64s reputation, reward;
  std::vector<std::string> hosts;
  explicit LedgerView(const Story& s) {
    if (!s.has("/ledger/rank")) return;
    rank = s.ints("/ledger/rank");
    rounds = s.ints("/ledger/rounds");
    accepted = s.ints("/ledger/accepted");
    rejected = s.ints("/ledger/rejected");
    accusations = s.ints("/ledger/accusations");
    non_finite = s.ints("/ledger/non_finite");
    quarantined = s.ints("/ledger/quarantined");
    suspects = s.ints("/ledger/suspects");
    reputation = s.floats("/ledger/reputation");
    reward = s.floats("/ledger/reward");
    std::istringstream lines(s.text("/ledger/host"));
    for (std::string line; std::getline(lines, line);) hosts.push_back(line);
    hosts.resize(rank.size());
  }
  bool suspect(std::int64_t r) const {
    return std::find(suspects.begin(), suspects.end(), r) != suspects.end();
  }
};

// One table per MoE layer and category set: each expert's share of its token-slots per category,
// its top category (for the language model's domains, its "specialty", with the lift over the
// layer's share of that domain), and per layer the mutual information between expert and category.
void print_specialization(const I64s& spec, const Shape& sh, std::ostream& out) {
  for (const CategorySet& set : sh.sets) {
    const bool specialty = sh.language_model() && set.name == "domain";
    out << fmt::format(
        "\nexpert specialization by {} (share of each expert's token-slots among the {}, %):\n",
        set.name, set.plural);
    std::size_t width = 8;
    for (std::size_t k = 0; k < set.count; ++k)
      width = std::max(width, sh.labels[set.first + k].size());
    for (std::size_t l = 0; l < sh.layers; ++l) {
      const SetTable t = set_table(spec, sh, l, set);
      std::string head = fmt::format("  layer {} | expert |", l);
      for (std::size_t k = 0; k < set.count; ++k)
        head += fmt::format(" {:>{}}", sh.labels[set.first + k], width);
      out << head << (specialty ? " | specialty (x layer share)\n" : " | top " + set.name + "\n");
      for (std::size_t e = 0; e < sh.experts; ++e) {
        std::string line = fmt::format("          | {:>6} |", e);
        for (std::size_t k = 0; k < set.count; ++k)
          line += fmt::format(" {:{}.1f}", t.shares[e * set.count + k], width);
        const std::string& top = sh.labels[set.first + t.top[e]];
        out << line
            << (t.totals[e] == 0 ? std::string(" | none\n")
                : specialty      ? fmt::format(" | {} (x{:.2f})\n", top, t.lift[e])
                                 : fmt::format(" | {}\n", top));
      }
      out << fmt::format(
          "  layer {}: mutual information between expert and {} {:.4f} bits (of H({}) = {:.4f} "
          "bits)\n",
          l, set.name, t.mutual_information, set.name, t.entropy);
    }
  }
}

void print_text(const Story& s, const std::string& listing, std::ostream& out) {
  const Shape sh = shape_of(s);
  const core::Config config = core::parse_config(s.text("/config/input"), s.file());
  out << fmt::format("replay: {} (format {}, daa-swarm {}, written {})\n", s.file(),
                     s.scalar("/meta/format_version"), s.text("/meta/program_version"),
                     s.text("/meta/created_utc"));
  if (!listing.empty()) out << fmt::format("checkpoints in the directory: steps {}\n", listing);
  out << fmt::format("run: {}, step {} of {} ({:.2f} epochs of {} steps), seed {}\n",
                     config.run.name, s.scalar("/state/step"), s.scalar("/state/total_steps"),
                     double(s.scalar("/state/step")) / double(s.scalar("/state/steps_per_epoch")),
                     s.scalar("/state/steps_per_epoch"), s.scalar("/state/seed"));
  out << fmt::format(
      "layout: {} ranks = {} pipeline stage(s) x {} data-parallel, expert parallelism {}, {} "
      "micro-batch(es)\n",
      s.scalar("/layout/ranks"), s.scalar("/layout/pipeline_stages"),
      s.scalar("/layout/data_parallel"), s.scalar("/layout/expert_parallel"),
      s.scalar("/layout/micro_batches"));
  if (sh.language_model())
    out << fmt::format(
        "model: language model, d_model {}, {} blocks ({} heads, sequences of {} tokens), {} MoE "
        "layers x {} experts (top-{}), d_ff {}; robust rule {} ({}, f = {}), consensus every {} "
        "steps\n",
        config.model.d_model, config.model.layers, config.model.heads, config.model.seq_len,
        sh.layers, sh.experts, config.moe.top_k, config.moe.d_ff, config.robust.rule,
        config.robust.mode, config.robust.f, config.consensus.every_steps);
  else
    out << fmt::format(
        "model: classifier, d_model {}, {} MoE layers x {} experts (top-{}), d_ff {}, {} classes; "
        "robust rule {} ({}, f = {}), consensus every {} steps\n",
        config.model.d_model, sh.layers, sh.experts, config.moe.top_k, config.moe.d_ff, sh.classes,
        config.robust.rule, config.robust.mode, config.robust.f, config.consensus.every_steps);

  const StepHistory h(s);
  const I64s& step = h.step;
  out << "\nhistory (sampled steps):\n";
  out << "   step |   loss | train acc |       lr | samples/s | max/mean load | dropped\n";
  for (std::size_t i : sample_rows(sh.steps, 12))
    out << fmt::format("{:>7} | {:.4f} | {:8.2f}% | {:.2e} | {:9.0f} | {:13.2f} | {:7}\n", step[i],
                       h.loss[i], 100 * h.accuracy[i], h.lr[i], h.speed[i], h.imbalance[i],
                       h.dropped[i]);
  const I64s eval_step = s.ints("/history/eval/step"), eval_epoch = s.ints("/history/eval/epoch");
  const F64s test_loss = s.floats("/history/eval/test_loss"),
             test_acc = s.floats("/history/eval/test_accuracy");
  out << "\nevaluations:\n";
  for (std::size_t i = 0; i < eval_step.size(); ++i)
    if (sh.language_model())
      out << fmt::format(
          "  step {} (epoch {}): validation loss {:.4f} (perplexity {:.2f}), next-token accuracy "
          "{:.2f}%\n",
          eval_step[i], eval_epoch[i], test_loss[i], std::exp(test_loss[i]), 100 * test_acc[i]);
    else
      out << fmt::format("  step {} (epoch {}): test loss {:.4f}, test accuracy {:.2f}%\n",
                         eval_step[i], eval_epoch[i], test_loss[i], 100 * test_acc[i]);

  // Expert load shares per stretch of steps between the sampled rows.
  out << "\nexpert load (share of each layer's token-slots per stretch of steps):\n";
  const std::vector<std::size_t> rows = sample_rows(sh.steps, 8);
  for (std::size_t l = 0; l < sh.layers; ++l) {
    out << fmt::format("  layer {}:\n", l);
    std::size_t from = 0;
    for (std::size_t r : rows) {
      std::vector<double> sum(sh.experts, 0.0);
      for (std::size_t i = from; i <= r; ++i)
        for (std::size_t e = 0; e < sh.experts; ++e)
          sum[e] += double(h.load[(i * sh.layers + l) * sh.experts + e]);
      const double total = std::accumulate(sum.begin(), sum.end(), 0.0);
      std::string shares;
      for (double x : sum) shares += fmt::format(" {:.3f}", total > 0 ? x / total : 0.0);
      const double peak = *std::max_element(sum.begin(), sum.end());
      out << fmt::format("    steps {:>5}-{:<5}:{} | max/mean {:.2f}\n", step[from], step[r],
                         shares, total > 0 ? peak * double(sh.experts) / total : 0.0);
      from = r + 1;
    }
    const F64s bias = s.singles(fmt::format("/model/layer{}/routing_bias", l));
    std::string text;
    for (double b : bias) text += fmt::format(" {:+.4f}", b);
    out << fmt::format("    routing bias now:{}\n", text);
  }

  print_specialization(s.ints("/specialization/tokens"), sh, out);

  const LedgerView ledger(s);
  if (ledger.rank.empty()) {
    out << "\nledger: none ([robust] mode = \"allreduce\")\n";
    return;
  }
  out << "\nledger:\n";
  for (std::size_t r = 0; r < ledger.rank.size(); ++r)
    out << fmt::format(
        "  rank {} ({}): reputation {:.3f}, accepted {} of {} rounds, rejected {} (non-finite {}, "
        "accused {}), reward {:.2f}{}\n",
        ledger.rank[r], ledger.hosts[r], ledger.reputation[r], ledger.accepted[r], ledger.rounds[r],
        ledger.rejected[r], ledger.non_finite[r], ledger.accusations[r], ledger.reward[r],
        ledger.quarantined[r] ? ", quarantined" : "");
  std::string suspects;
  for (std::int64_t r : ledger.suspects)
    suspects += fmt::format("{}rank {} ({})", suspects.empty() ? "" : ", ", r,
                            ledger.hosts[std::size_t(r)]);
  out << "suspects: " << (suspects.empty() ? "none" : suspects) << '\n';
}

class CsvFile {
 public:
  CsvFile(const fs::path& path, const std::string& header) : path_(path), out_(path) {
    if (!out_) throw InputError("replay: cannot write '" + path.string() + "'");
    out_ << header << '\n';
  }
  template <class... Args>
  void row(fmt::format_string<Args...> format, Args&&... args) {
    out_ << fmt::format(format, std::forward<Args>(args)...) << '\n';
  }
  ~CsvFile() = default;

 private:
  fs::path path_;
  std::ofstream out_;
};

// RFC 4180: a field with a comma, quote or line break goes in quotes, its quotes doubled.
std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\r\n") == std::string::npos) return text;
  std::string quoted = "\"";
  for (char c : text) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
  return quoted + "\"";
}

void write_csv(const Story& s, const std::string& dir, std::ostream& out) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw InputError("replay: cannot create '" + dir + "': " + ec.message());
  const Shape sh = shape_of(s);
  const fs::path d(dir);
  const StepHistory h(s);
  const I64s& step = h.step;
  {
    CsvFile f(d / "steps.csv",
              "step,loss,train_accuracy,learning_rate,samples_per_s,imbalance,dropped_tokens");
    for (std::size_t i = 0; i < step.size(); ++i)
      f.row("{},{},{},{},{},{},{}", step[i], h.loss[i], h.accuracy[i], h.lr[i], h.speed[i],
            h.imbalance[i], h.dropped[i]);
  }
  {
    CsvFile f(d / "eval.csv", "step,epoch,test_loss,test_accuracy");
    const I64s es = s.ints("/history/eval/step"), ee = s.ints("/history/eval/epoch");
    const F64s tl = s.floats("/history/eval/test_loss"),
               ta = s.floats("/history/eval/test_accuracy");
    for (std::size_t i = 0; i < es.size(); ++i) f.row("{},{},{},{}", es[i], ee[i], tl[i], ta[i]);
  }
  {
    CsvFile f(d / "expert_load.csv", "step,layer,expert,tokens");
    const I64s& load = h.load;
    for (std::size_t i = 0; i < step.size(); ++i)
      for (std::size_t l = 0; l < sh.layers; ++l)
        for (std::size_t e = 0; e < sh.experts; ++e)
          f.row("{},{},{},{}", step[i], l, e, load[(i * sh.layers + l) * sh.experts + e]);
  }
  {
    // `class` is the column index, as before categories had names; `share` is the fraction of
    // the expert's token-slots in the category's set (classes; domains or token kinds).
    CsvFile f(d / "specialization.csv", "layer,expert,class,tokens,category,category_set,share");
    const I64s spec = s.ints("/specialization/tokens");
    for (std::size_t l = 0; l < sh.layers; ++l) {
      std::vector<SetTable> tables;
      for (const CategorySet& set : sh.sets) tables.push_back(set_table(spec, sh, l, set));
      for (std::size_t e = 0; e < sh.experts; ++e)
        for (std::size_t i = 0; i < sh.sets.size(); ++i)
          for (std::size_t k = 0; k < sh.sets[i].count; ++k) {
            const std::size_t c = sh.sets[i].first + k;
            f.row("{},{},{},{},{},{},{}", l, e, c, spec[(l * sh.experts + e) * sh.classes + c],
                  csv_field(sh.categories[c]), csv_field(sh.sets[i].name),
                  tables[i].shares[e * sh.sets[i].count + k] / 100);
          }
    }
  }
  {
    CsvFile f(d / "routing_bias.csv", "step,layer,expert,bias");
    const I64s ws = s.ints("/history/windows/step");
    const F64s bias = s.singles("/history/windows/routing_bias");
    for (std::size_t w = 0; w < ws.size(); ++w)
      for (std::size_t l = 0; l < sh.layers; ++l)
        for (std::size_t e = 0; e < sh.experts; ++e)
          f.row("{},{},{},{}", ws[w], l, e, bias[(w * sh.layers + l) * sh.experts + e]);
  }
  int tables = 5;
  const LedgerView ledger(s);
  if (!ledger.rank.empty()) {
    CsvFile f(d / "ledger.csv",
              "rank,host,reputation,rounds,accepted,rejected,accusations,non_finite,reward,"
              "quarantined,suspect");
    for (std::size_t r = 0; r < ledger.rank.size(); ++r)
      f.row("{},{},{},{},{},{},{},{},{},{},{}", ledger.rank[r], ledger.hosts[r],
            ledger.reputation[r], ledger.rounds[r], ledger.accepted[r], ledger.rejected[r],
            ledger.accusations[r], ledger.non_finite[r], ledger.reward[r], ledger.quarantined[r],
            int(ledger.suspect(ledger.rank[r])));
    CsvFile g(d / "reputation.csv", "step,rank,reputation,rounds,accepted,reward");
    const I64s rs = s.ints("/history/reputation/step"), rr = s.ints("/history/reputation/rank"),
               rn = s.ints("/history/reputation/rounds"),
               ra = s.ints("/history/reputation/accepted");
    const F64s rp = s.floats("/history/reputation/reputation"),
               rw = s.floats("/history/reputation/reward");
    for (std::size_t i = 0; i < rs.size(); ++i)
      g.row("{},{},{},{},{},{}", rs[i], rr[i], rp[i], rn[i], ra[i], rw[i]);
    tables += 2;
  }
  std::cerr << fmt::format("replay: wrote {} tables to {}\n", tables, dir);
  (void)out;
}

// values [outer][inner] as nested arrays
template <class T>
Json json_matrix(const std::vector<T>& values, std::size_t inner) {
  Json out = Json::array();
  for (std::size_t i = 0; inner > 0 && i < values.size() / inner; ++i)
    out.push_back(std::vector<T>(values.begin() + std::ptrdiff_t(i * inner),
                                 values.begin() + std::ptrdiff_t((i + 1) * inner)));
  return out;
}

void print_json(const Story& s, std::ostream& out) {
  const Shape sh = shape_of(s);
  const std::size_t le = sh.layers * sh.experts;
  Json doc;
  doc["file"] = s.file();
  doc["format_version"] = s.scalar("/meta/format_version");
  doc["program_version"] = s.text("/meta/program_version");
  doc["created_utc"] = s.text("/meta/created_utc");
  doc["input"] = s.text("/config/input");
  doc["layout"] = {{"ranks", s.scalar("/layout/ranks")},
                   {"pipeline_stages", s.scalar("/layout/pipeline_stages")},
                   {"data_parallel", s.scalar("/layout/data_parallel")},
                   {"expert_parallel", s.scalar("/layout/expert_parallel")},
                   {"micro_batches", s.scalar("/layout/micro_batches")}};
  doc["step"] = s.scalar("/state/step");
  doc["total_steps"] = s.scalar("/state/total_steps");
  doc["model_kind"] = sh.model_kind;
  // "classes" counts every column of the specialization matrix, as before categories had names.
  doc["shape"] = {{"layers", sh.layers}, {"experts", sh.experts}, {"classes", sh.classes}};
  doc["categories"] = sh.categories;
  const StepHistory h(s);
  doc["history"] = {{"step", h.step},
                    {"loss", h.loss},
                    {"train_accuracy", h.accuracy},
                    {"learning_rate", h.lr},
                    {"samples_per_s", h.speed},
                    {"imbalance", h.imbalance},
                    {"dropped_tokens", h.dropped},
                    {"expert_load", json_matrix(h.load, le)}};
  doc["eval"] = {{"step", s.ints("/history/eval/step")},
                 {"epoch", s.ints("/history/eval/epoch")},
                 {"test_loss", s.floats("/history/eval/test_loss")},
                 {"test_accuracy", s.floats("/history/eval/test_accuracy")}};
  F64s bias;
  for (std::size_t l = 0; l < sh.layers; ++l) {
    const F64s b = s.singles(fmt::format("/model/layer{}/routing_bias", l));
    bias.insert(bias.end(), b.begin(), b.end());
  }
  doc["routing_bias"] = {{"now", json_matrix(bias, sh.experts)},
                         {"window_step", s.ints("/history/windows/step")},
                         {"windows", json_matrix(s.singles("/history/windows/routing_bias"), le)}};
  doc["registry_tokens"] = json_matrix(s.ints("/registry/tokens"), sh.experts);
  const I64s spec = s.ints("/specialization/tokens");
  doc["specialization"] = json_matrix(spec, sh.classes);  // [L*E][categories] token-slots
  Json sets = Json::array();
  for (const CategorySet& set : sh.sets) {
    Json shares = Json::array(), top = Json::array(), lift = Json::array(), mi = Json::array(),
         entropy = Json::array();
    for (std::size_t l = 0; l < sh.layers; ++l) {
      const SetTable t = set_table(spec, sh, l, set);
      shares.push_back(json_matrix(t.shares, set.count));
      Json names = Json::array();
      for (std::size_t e = 0; e < sh.experts; ++e)
        names.push_back(t.totals[e] > 0 ? Json(sh.categories[set.first + t.top[e]]) : Json());
      top.push_back(names);
      lift.push_back(t.lift);
      mi.push_back(t.mutual_information);
      entropy.push_back(t.entropy);
    }
    sets.push_back(
        {{"name", set.name},
         {"first", set.first},
         {"count", set.count},
         {"categories",
          std::vector<std::string>(sh.categories.begin() + std::ptrdiff_t(set.first),
                                   sh.categories.begin() + std::ptrdiff_t(set.first + set.count))},
         {"shares_percent", shares},
         {"top", top},
         {"top_lift", lift},
         {"mutual_information_bits", mi},
         {"entropy_bits", entropy}});
  }
  doc["category_sets"] = sets;
  const LedgerView ledger(s);
  Json rows = Json::array();
  for (std::size_t r = 0; r < ledger.rank.size(); ++r)
    rows.push_back({{"rank", ledger.rank[r]},
                    {"host", ledger.hosts[r]},
                    {"reputation", ledger.reputation[r]},
                    {"rounds", ledger.rounds[r]},
                    {"accepted", ledger.accepted[r]},
                    {"rejected", ledger.rejected[r]},
                    {"accusations", ledger.accusations[r]},
                    {"non_finite", ledger.non_finite[r]},
                    {"reward", ledger.reward[r]},
                    {"quarantined", ledger.quarantined[r] != 0},
                    {"suspect", ledger.suspect(ledger.rank[r])}});
  doc["ledger"] = rows;
  doc["suspects"] = ledger.suspects;
  if (s.has("/history/reputation/step"))
    doc["reputation_history"] = {{"step", s.ints("/history/reputation/step")},
                                 {"rank", s.ints("/history/reputation/rank")},
                                 {"reputation", s.floats("/history/reputation/reputation")},
                                 {"reward", s.floats("/history/reputation/reward")}};
  // One top-level key per line, each value compact: the history arrays run to thousands of
  // numbers, which an indented dump would put one per line. Non-finite numbers come out as null,
  // finite ones round-trippable; bytes that are not UTF-8 become U+FFFD.
  out << "{";
  bool first = true;
  for (const auto& [key, value] : doc.items()) {
    out << (first ? "\n  " : ",\n  ") << Json(key).dump() << ": "
        << value.dump(-1, ' ', false, Json::error_handler_t::replace);
    first = false;
  }
  out << "\n}\n";
}

}  // namespace

void replay(const ReplayOptions& options, std::ostream& out) {
  const parallel::Communicator self(MPI_COMM_SELF, "self");
  std::string listing;
  const Story story = open_story(self, options.path, listing);
  if (options.json)
    print_json(story, out);
  else
    print_text(story, listing, out);
  if (!options.csv_dir.empty()) write_csv(story, options.csv_dir, out);
}

}  // namespace daa::io
