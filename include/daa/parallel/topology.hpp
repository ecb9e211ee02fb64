// The rank layout of DESIGN.md §3 and its communicators: world = PP stages x DP ranks, rank r is
// stage r / DP with data-parallel index r % DP; expert parallelism (EP) groups EP consecutive
// data-parallel ranks of a stage, each holding experts/EP experts of the stage's MoE layers; the
// ranks of a stage holding the same experts form the expert-data-parallel (EDP) group.
#pragma once

#include <mpi.h>

#include <string>
#include <utility>
#include <vector>

#include "daa/core/config.hpp"
#include "daa/parallel/communicator.hpp"

namespace daa::parallel {

// Where one rank sits in the layout; a pure function of (config, ranks, rank).
struct RankPlace {
  int rank = 0;
  int stage = 0;
  int first_block = 0;  // blocks [first_block, last_block) live on this stage
  int last_block = 0;
  int first_moe_layer = 0;  // and with them the MoE layers [first_moe_layer, last_moe_layer)
  int last_moe_layer = 0;
  int dp_index = 0;      // index in the data-parallel group
  int ep_rank = 0;       // index in its expert-parallel group
  int edp_index = 0;     // index in its expert-data-parallel group
  int first_expert = 0;  // global id of its first local expert
  int local_experts = 0;
};

struct Layout {
  int ranks = 1;
  int pipeline_stages = 1;
  int blocks = 0;               // the model's blocks, split over the stages
  std::vector<int> moe_blocks;  // the block of each MoE layer, ascending
  int moe_layers() const { return int(moe_blocks.size()); }
  bool language_model = false;  // names the stages' parts in describe()
  int data_parallel = 1;
  int expert_parallel = 1;
  int experts = 1;
  std::vector<int> blocks_per_stage;  // blocks of each stage, in order
  RankPlace place(int rank) const;
  // Blocks [first, last) of stage s.
  std::pair<int, int> stage_blocks(int stage) const;
  int expert_data_parallel() const { return data_parallel / expert_parallel; }
  // Human-readable lines: the groups and, per rank, which experts it holds.
  std::vector<std::string> describe() const;
};

// What the model's parts cost (parameters: memory, and a proxy for time), supplied by the model
// for the split over pipeline stages: each block, and what only the first stage (input layer,
// embedding) or the last (classifier, head) holds.
struct StageCosts {
  std::vector<double> blocks;
  double first = 0;
  double last = 0;
};

// Checks the config against `ranks` (core::validate_layout) and returns the layout. Without
// [parallel] stage_blocks, the blocks are split over the stages to minimize the largest stage's
// cost. `costs` must have one entry per block of the config's model.
Layout make_layout(const core::Config& config, int ranks, const StageCosts& costs);

// The ranks that share this rank's node (MPI_COMM_TYPE_SHARED): which one this is, and how many.
struct NodeRanks {
  int local_rank = 0;
  int local_ranks = 1;
};
NodeRanks node_ranks(const Communicator& world);  // collective over world

// The GPU a rank drives on a CUDA build: one GPU per rank, the node's i-th rank takes GPU i. A
// node with more ranks than visible GPUs is refused with an InputError naming both figures
// (several ranks on one GPU would share its memory and serialize its kernels unnoticed).
int device_for_rank(NodeRanks node, int visible_devices);

// The communicators of one rank, built once (collective over `world`) and freed on destruction.
class Topology {
 public:
  Topology(const Communicator& world, const core::Config& config, const StageCosts& costs);
  ~Topology();
  Topology(const Topology&) = delete;
  Topology& operator=(const Topology&) = delete;

  const Layout& layout() const { return layout_; }
  const RankPlace& place() const { return place_; }
  const Communicator& world() const { return world_; }
  const Communicator& data_parallel() const { return data_parallel_; }
  const Communicator& expert_parallel() const { return expert_parallel_; }
  const Communicator& expert_data_parallel() const { return expert_data_parallel_; }
  // With two or more stages: the first and the last stage's ranks of this data-parallel index
  // (the first is member 0), which share the language model's tied embedding table. Not a member
  // (MPI_COMM_NULL) with one stage or on a middle stage.
  const Communicator& end_stages() const { return end_stages_; }
  // World ranks of the same data-parallel index on the neighbouring stages, or -1.
  int previous_stage_rank() const;
  int next_stage_rank() const;

 private:
  static MPI_Comm split(const Communicator& world, int color, int key);
  Layout layout_;
  RankPlace place_;
  Communicator world_;
  Communicator data_parallel_;
  Communicator expert_parallel_;
  Communicator expert_data_parallel_;
  Communicator end_stages_;
};

}  // namespace daa::parallel
