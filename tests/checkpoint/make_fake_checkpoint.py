#!/usr/bin/python3
"""make_fake_checkpoint.py: writes a small daa-swarm checkpoint (format version 1, the layout of
docs/checkpoint-format.md) for developing and testing readers such as scripts/plot-run, without
running the trainer. A test fixture: the same options always give the same dataset contents.

The fake run: 6 ranks (1 pipeline stage, data-parallel 6, expert-parallel 2, so expert-data-parallel
groups of 3), 2 MoE layers of 4 experts, top-2 routing, d_model 8, d_ff 16, 10 classes, a global
batch of 48 (96 token-slots per step and layer, none dropped), 20 steps per epoch with an
evaluation after each, log windows every 10 steps, consensus rounds every 5 steps. Experts start
unevenly loaded and drift towards balance; each expert prefers a few classes. With a ledger
(the default) [robust] mode is "replicated" with rule "median", f = 1, and rank 3 flips signs:
most of its rounds are rejected, its reputation stays low, and it is the one suspect. The ledger's
notes are empty, stored as a single NUL byte as the C++ writer does. Without a ledger mode is
"allreduce" and there is no /ledger or /history/reputation; everything else is identical.

Usage: make_fake_checkpoint.py OUT [--steps S] [--ledger | --no-ledger] [--momentum]
                                   [--model-kind KIND [--categories NAMES]] [--run-dir]
                                   [--corrupt DATASET]
  OUT              the .h5 file to write; with --run-dir, a run directory: the file goes to
                   OUT/checkpoints/step-<S, 8 digits>.h5 and OUT/checkpoints/latest names it
  --steps S        steps done (default 60: 3 epochs, 3 evaluations, 6 log windows)
  --momentum       worker momentum 0.9: adds /robust/momentum/... and /robust/momentum_steps
  --model-kind K   writes /meta/model_kind = K and /specialization/categories, as checkpoints
                   since the language model do (without it, neither: an older checkpoint).
                   classifier: "class 0".."class 9"; language-model: the 10 columns are read as
                   5 domains (prose, code, math, law, chat) then the 5 token kinds. Only these
                   two datasets change; the rest stays the classifier's fake run.
  --categories N   with --model-kind: these comma-separated names instead (to test refusals)
  --corrupt PATH   after writing, flip one byte of that dataset's data (e.g. /history/steps/loss)
                   and keep its old crc32 attribute, so a verifying reader must refuse the file
Dataset values are drawn from numpy generators seeded by a fixed seed and a name per part (per
step for the step history), so the history of a run with fewer steps is a prefix of a longer one.
"""
import argparse
import os
import sys
import zlib

import h5py
import numpy as np

SEED = 1234
LAYERS, EXPERTS, CLASSES, D_MODEL, D_FF, PIXELS = 2, 4, 10, 8, 16, 784
RANKS, DATA_PARALLEL, EXPERT_PARALLEL = 6, 6, 2
EXPERT_DATA_PARALLEL = DATA_PARALLEL // EXPERT_PARALLEL
GLOBAL_BATCH, TOP_K = 48, 2
STEPS_PER_EPOCH, LOG_EVERY, CONSENSUS_EVERY = 20, 10, 5
FAULTY_RANK = 3
HOSTS = ["node0", "node0", "node0", "node1", "node1", "node1"]
# Rounds per rank and step: one dense (data-parallel) round and one expert-data-parallel round.
ROUNDS_PER_STEP = 2
CREATED_UTC = "2024-01-01T00:00:00Z"  # fixed, so that files do not depend on the clock

CONFIG_TEMPLATE = """\
[run]
name = "fake"
output_dir = "runs"
seed = {seed}

[data]
dataset = "fashion-mnist"
dir = "/usr/share/datasets/fashion-mnist"
train_limit = {train_limit}
test_limit = 480

[model]
d_model = {d_model}
moe_layers = {layers}
norm = "rmsnorm"
init_std = 0.0

[moe]
experts = {experts}
top_k = {top_k}
d_ff = {d_ff}
normalize_gates = true
aux_loss_coef = 0.01
z_loss_coef = 0.0
token_mode = "dropless"
capacity_factor = 1.25
expert_groups = 0
max_groups_per_token = 0

[train]
epochs = {epochs}
max_steps = {steps}
global_batch = {global_batch}
lr = 0.002
min_lr = 2e-05
warmup_steps = 10
weight_decay = 0.01
beta1 = {beta1}
beta2 = 0.999
eps = 1e-08
grad_clip = 1.0
eval_each_epoch = true

[parallel]
pipeline_stages = 1
stage_blocks = ""
expert_parallel = {expert_parallel}
micro_batches = 1

[robust]
rule = "{rule}"
mode = "{mode}"
f = {f}
nnm = false
multi_krum_m = 0
clip_tau = 1.0
clip_iterations = 3
weiszfeld_iterations = 100
momentum = {momentum}

[byzantine]
ranks = "{byzantine_ranks}"
attack = "{attack}"
sign_flip_scale = 1.0
epsilon = 10.0
z = 0.0
sigma = 10.0
bitflip_rate = 0.001
lie_as_owner = false

[consensus]
every_steps = {consensus_every}
rule = "median"
bias_rate = 0.001

[ledger]
distance_ratio = 3.0
forgetting = 1.0
suspicion_threshold = 0.5
min_rounds = 10
reward_per_sample = 0.001
quality_bonus = 1.0
quarantine = false

[checkpoint]
every_steps = 20
keep = 3

[log]
every_steps = {log_every}

[runtime]
blas_threads = 1
"""


def rng(*name):
    """A generator of its own per part, so that options that add parts leave the others alone."""
    return np.random.default_rng([SEED] + [zlib.crc32(str(n).encode()) for n in name])


class Checkpoint:
    """Collects datasets as numpy values and writes them with their crc32 attributes."""

    def __init__(self):
        self.datasets = {}

    def array(self, path, values, dtype):
        # np.array, not np.ascontiguousarray: the latter turns scalars into shape [1].
        self.datasets[path] = np.array(values, dtype=np.dtype(dtype).newbyteorder("<"), order="C")

    def scalar(self, path, value, dtype="i8"):
        self.array(path, np.array(value), dtype)

    def text(self, path, text):
        data = text.encode()
        # HDF5 has no zero-length strings: the empty text is one NUL byte, as the C++ writer does.
        self.datasets[path] = np.array(data, dtype="S%d" % max(len(data), 1))

    def write(self, path):
        with h5py.File(path, "w") as f:
            for name, values in self.datasets.items():
                ds = f.create_dataset(name, data=values, track_times=False)
                # The checksum covers the stored bytes: the NUL padding of text included.
                ds.attrs.create("crc32", zlib.crc32(values.tobytes()), dtype="<u4")


def learning_rate(step, total):
    warmup, lr, min_lr = 10, 0.002, 2e-5
    if step <= warmup:
        return lr * step / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return min_lr + 0.5 * (lr - min_lr) * (1 + np.cos(np.pi * min(progress, 1.0)))


def expert_preference(layer):
    """Routing probabilities over experts: skewed at first, balanced as training goes on."""
    logits = rng("preference", layer).normal(0.0, 1.5, EXPERTS)

    def probabilities(step):
        weights = np.exp(logits / (1 + step / 15))
        return weights / weights.sum()
    return probabilities


def add_history_steps(ck, steps):
    slots = GLOBAL_BATCH * TOP_K
    preferences = [expert_preference(l) for l in range(LAYERS)]
    load = np.zeros((steps, LAYERS, EXPERTS), dtype=np.int64)
    loss, accuracy, speed = (np.zeros(steps) for _ in range(3))
    for i in range(steps):
        step = i + 1
        r = rng("step", step)
        for l in range(LAYERS):
            load[i, l] = r.multinomial(slots, preferences[l](step))
        loss[i] = 0.35 + 1.95 * np.exp(-step / 25) + r.normal(0, 0.03)
        accuracy[i] = np.clip(0.1 + 0.75 * (1 - np.exp(-step / 20)) + r.normal(0, 0.02), 0, 1)
        speed[i] = 5200 + r.normal(0, 150)
    step_numbers = np.arange(1, steps + 1)
    ck.array("/history/steps/step", step_numbers, "i8")
    ck.array("/history/steps/loss", loss, "f8")
    ck.array("/history/steps/train_accuracy", accuracy, "f8")
    ck.array("/history/steps/learning_rate", [learning_rate(s, steps) for s in step_numbers], "f8")
    ck.array("/history/steps/samples_per_s", speed, "f8")
    mean_load = slots / EXPERTS
    ck.array("/history/steps/imbalance", load.max(axis=2).max(axis=1) / mean_load, "f8")
    ck.array("/history/steps/dropped_tokens", np.zeros(steps), "i8")
    ck.array("/history/steps/expert_load", load, "i8")
    return load, accuracy


def add_history_eval(ck, steps):
    evals = steps // STEPS_PER_EPOCH
    epochs = np.arange(1, evals + 1)
    r = rng("eval")
    ck.array("/history/eval/step", epochs * STEPS_PER_EPOCH, "i8")
    ck.array("/history/eval/epoch", epochs, "i8")
    test_loss = 0.45 + 0.6 * np.exp(-epochs / 1.5) + r.normal(0, 0.01, evals)
    test_accuracy = 0.84 - 0.2 * np.exp(-epochs / 1.5) + r.normal(0, 0.005, evals)
    ck.array("/history/eval/test_loss", test_loss, "f8")
    ck.array("/history/eval/test_accuracy", test_accuracy, "f8")


def window_steps(steps):
    ends = list(range(LOG_EVERY, steps + 1, LOG_EVERY))
    if not ends or ends[-1] != steps:
        ends.append(steps)  # the run stopped inside a window: its last window ends there
    return np.array(ends, dtype=np.int64)


def routing_bias(load, upto):
    """Consensus bias after the rounds up to step `upto`: a sign step towards balance per round."""
    bias = np.zeros((LAYERS, EXPERTS), dtype=np.float32)
    for round_end in range(CONSENSUS_EVERY, upto + 1, CONSENSUS_EVERY):
        share = load[round_end - CONSENSUS_EVERY:round_end].sum(axis=0)
        over = np.sign(share - share.mean(axis=1, keepdims=True)).astype(np.float32)
        bias -= np.float32(0.001) * over
    return bias


def add_history_windows(ck, steps, load):
    ends = window_steps(steps)
    ck.array("/history/windows/step", ends, "i8")
    ck.array("/history/windows/routing_bias", [routing_bias(load, s) for s in ends], "f4")


def add_model(ck, momentum):
    """Parameters, AdamW moments and (with momentum) worker momentum rows, all f32."""
    params = {"input/w": (PIXELS, D_MODEL), "input/b": (D_MODEL,)}
    for l in range(LAYERS):
        params["layer%d/norm/gain" % l] = (D_MODEL,)
        params["layer%d/router/w" % l] = (D_MODEL, EXPERTS)
        for e in range(EXPERTS):
            prefix = "layer%d/expert%d/" % (l, e)
            params.update({prefix + "w1": (D_MODEL, D_FF), prefix + "b1": (D_FF,),
                           prefix + "w2": (D_FF, D_MODEL), prefix + "b2": (D_MODEL,)})
    params.update({"classifier/w": (D_MODEL, CLASSES), "classifier/b": (CLASSES,)})
    for name, shape in params.items():
        r = rng("param", name)
        scale = 1 / np.sqrt(shape[0]) if len(shape) == 2 else 0.05
        values = r.normal(0, scale, shape)
        if name.endswith("norm/gain"):
            values += 1.0
        ck.array("/model/" + name, values, "f4")
        ck.array("/optimizer/m/" + name, r.normal(0, 1e-3, shape), "f4")
        ck.array("/optimizer/v/" + name, r.normal(0, 1e-3, shape) ** 2, "f4")
        if momentum:
            replicas = EXPERT_DATA_PARALLEL if "/expert" in name else DATA_PARALLEL
            ck.array("/robust/momentum/" + name, r.normal(0, 1e-3, (replicas,) + shape), "f4")


def add_registry(ck, load):
    tokens = load.sum(axis=0)
    gate = rng("gate").uniform(0.45, 0.55, tokens.shape)
    ck.array("/registry/tokens", tokens, "i8")
    ck.array("/registry/gate_sum", tokens * gate, "f8")
    # Each expert's whole-run tokens spread over the classes it prefers.
    special = np.zeros((LAYERS, EXPERTS, CLASSES), dtype=np.int64)
    for l in range(LAYERS):
        for e in range(EXPERTS):
            r = rng("specialization", l, e)
            liking = r.dirichlet(np.full(CLASSES, 0.4))
            special[l, e] = r.multinomial(tokens[l, e], liking)
    ck.array("/specialization/tokens", special, "i8")


def add_consensus(ck, steps, load):
    # Tokens since the last round, split over the data-parallel indices.
    since = load[steps - steps % CONSENSUS_EVERY:steps].sum(axis=0)
    for l in range(LAYERS):
        counts = np.zeros((DATA_PARALLEL, EXPERTS))
        for e in range(EXPERTS):
            even = np.full(DATA_PARALLEL, 1 / DATA_PARALLEL)
            counts[:, e] = rng("pending", l, e).multinomial(since[l, e], even)
        ck.array("/consensus/pending_counts/layer%d" % l, counts, "f8")


def ledger_rows(upto):
    """Per rank after `upto` steps: rounds, accepted, reputation (Beta), reward."""
    rounds = np.full(RANKS, ROUNDS_PER_STEP * upto, dtype=np.int64)
    accept_rate = np.where(np.arange(RANKS) == FAULTY_RANK, 0.1, 0.98)
    # Counted step by step, so that the counts only grow from one window to the next.
    accepted = sum(rng("ledger", step).binomial(ROUNDS_PER_STEP, accept_rate)
                   for step in range(1, upto + 1)).astype(np.int64)
    reputation = (accepted + 1) / (rounds + 2)
    samples = upto * GLOBAL_BATCH / RANKS * np.ones(RANKS)
    reward = 0.001 * samples * reputation + 1.0 * accepted / ROUNDS_PER_STEP
    return rounds, accepted, reputation, reward, samples


def add_ledger(ck, steps):
    rounds, accepted, reputation, reward, samples = ledger_rows(steps)
    rejected = rounds - accepted
    faulty = np.arange(RANKS) == FAULTY_RANK
    r = rng("ledger-sums")
    ck.array("/ledger/rank", np.arange(RANKS), "i8")
    ck.array("/ledger/rounds", rounds, "i8")
    ck.array("/ledger/accepted", accepted, "i8")
    ck.array("/ledger/rejected", rejected, "i8")
    ck.array("/ledger/accusations", np.where(faulty, rejected, 0), "i8")
    ck.array("/ledger/non_finite", np.zeros(RANKS), "i8")
    ck.array("/ledger/duplicates", np.zeros(RANKS), "i8")
    ck.array("/ledger/quarantined", np.zeros(RANKS), "i8")
    ck.array("/ledger/reputation", reputation, "f8")
    ck.array("/ledger/samples", samples, "f8")
    ck.array("/ledger/weight_sum", accepted / 3.0, "f8")
    distance = np.where(faulty, 5.0, 1.0) * r.uniform(0.9, 1.1, RANKS)
    ck.array("/ledger/distance_sum", rounds * distance, "f8")
    ck.array("/ledger/accepted_mass", samples * accepted / rounds, "f8")
    ck.array("/ledger/rejected_mass", samples * rejected / rounds, "f8")
    ck.array("/ledger/reward", reward, "f8")
    # Honest-looking positions (mean closeness about 1, mean pull about 0) for every rank.
    ck.array("/ledger/position_mass", rounds.astype(float), "f8")
    ck.array("/ledger/closeness_sum", rounds * r.uniform(0.9, 1.1, RANKS), "f8")
    ck.array("/ledger/pull_sum", rounds * r.uniform(-0.05, 0.05, RANKS), "f8")
    ck.text("/ledger/host", "".join(host + "\n" for host in HOSTS))  # as the trainer writes it
    min_rounds, threshold = 10, 0.5
    suspects = np.flatnonzero((rounds >= min_rounds) & (reputation < threshold))
    ck.array("/ledger/suspects", suspects, "i8")
    ck.scalar("/ledger/unresolved_rounds", 0)
    ck.text("/ledger/notes", "")
    # One row per rank per log window, windows in order.
    ends = window_steps(steps)
    rows = [ledger_rows(s) for s in ends]
    ck.array("/history/reputation/step", np.repeat(ends, RANKS), "i8")
    ck.array("/history/reputation/rank", np.tile(np.arange(RANKS), len(ends)), "i8")
    ck.array("/history/reputation/rounds", np.concatenate([row[0] for row in rows]), "i8")
    ck.array("/history/reputation/accepted", np.concatenate([row[1] for row in rows]), "i8")
    ck.array("/history/reputation/reputation", np.concatenate([row[2] for row in rows]), "f8")
    ck.array("/history/reputation/reward", np.concatenate([row[3] for row in rows]), "f8")


def config_text(steps, ledger, momentum):
    return CONFIG_TEMPLATE.format(
        seed=SEED, train_limit=STEPS_PER_EPOCH * GLOBAL_BATCH, d_model=D_MODEL, layers=LAYERS,
        experts=EXPERTS, top_k=TOP_K, d_ff=D_FF, epochs=-(-steps // STEPS_PER_EPOCH), steps=steps,
        global_batch=GLOBAL_BATCH, expert_parallel=EXPERT_PARALLEL,
        # With worker momentum AdamW's own first moment is off, as the real inputs do.
        beta1=0.0 if momentum else 0.9, momentum=0.9 if momentum else 0.0,
        rule="median" if ledger else "mean", mode="replicated" if ledger else "allreduce",
        f=1 if ledger else 0, byzantine_ranks=str(FAULTY_RANK) if ledger else "",
        attack="sign-flip" if ledger else "none",
        consensus_every=CONSENSUS_EVERY, log_every=LOG_EVERY)


LM_DOMAINS = ["prose", "code", "math", "law", "chat"]
TOKEN_KINDS = ["letters", "digits", "whitespace", "punctuation", "other"]


def build(steps, ledger, momentum, model_kind=None, categories=None):
    ck = Checkpoint()
    if model_kind:
        if categories is None:
            categories = (["class %d" % c for c in range(CLASSES)] if model_kind == "classifier"
                          else LM_DOMAINS + TOKEN_KINDS)
        ck.text("/meta/model_kind", model_kind)
        ck.text("/specialization/categories", "".join(name + "\n" for name in categories))
    ck.text("/meta/format", "daa-swarm checkpoint")
    ck.scalar("/meta/format_version", 1)
    ck.text("/meta/program_version", "0.1.0")
    ck.text("/meta/created_utc", CREATED_UTC)
    ck.text("/config/input", config_text(steps, ledger, momentum))
    for name, value in [("ranks", RANKS), ("pipeline_stages", 1), ("data_parallel", DATA_PARALLEL),
                        ("expert_parallel", EXPERT_PARALLEL), ("micro_batches", 1)]:
        ck.scalar("/layout/" + name, value)
    ck.array("/layout/stage_blocks", [LAYERS], "i8")
    load, accuracy = add_history_steps(ck, steps)
    in_epoch = steps % STEPS_PER_EPOCH
    state = [("step", steps), ("epoch", steps // STEPS_PER_EPOCH), ("batch_in_epoch", in_epoch),
             ("steps_per_epoch", STEPS_PER_EPOCH), ("total_steps", steps), ("seed", SEED)]
    for name, value in state:
        ck.scalar("/state/" + name, value)
    correct = np.round(accuracy[steps - in_epoch:] * GLOBAL_BATCH).sum()
    ck.scalar("/state/epoch_correct", float(correct), "f8")
    ck.scalar("/state/epoch_samples", float(in_epoch * GLOBAL_BATCH), "f8")
    add_model(ck, momentum)
    bias = routing_bias(load, steps)
    for l in range(LAYERS):
        ck.array("/model/layer%d/routing_bias" % l, bias[l], "f4")
    if momentum:
        ck.scalar("/robust/momentum_steps", steps)
    add_consensus(ck, steps, load)
    if ledger:
        add_ledger(ck, steps)
    add_registry(ck, load)
    add_history_eval(ck, steps)
    add_history_windows(ck, steps, load)
    return ck


def corrupt(path, dataset):
    """Flips one byte of the dataset's data in place; its crc32 attribute stays as it was."""
    with h5py.File(path, "r+") as f:
        if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
            sys.exit("make_fake_checkpoint.py: no dataset '%s' to corrupt" % dataset)
        ds = f[dataset]
        raw = bytearray(np.asarray(ds[()]).tobytes())
        if ds.dtype.kind == "S":  # h5py strips the NUL padding of text; put it back
            raw = raw.ljust(ds.dtype.itemsize, b"\0")
        if not raw:
            sys.exit("make_fake_checkpoint.py: dataset '%s' is empty; nothing to corrupt" % dataset)
        raw[len(raw) // 2] ^= 0xFF
        ds[()] = np.frombuffer(bytes(raw), dtype=ds.dtype).reshape(ds.shape)


def main():
    parser = argparse.ArgumentParser(prog="make_fake_checkpoint.py",
                                     description="Write a small, deterministic checkpoint.")
    parser.add_argument("out", help="the .h5 file, or with --run-dir the run directory")
    parser.add_argument("--steps", type=int, default=60, help="steps done (default 60)")
    parser.add_argument("--ledger", action=argparse.BooleanOptionalAction, default=True,
                        help="a robust mode with a ledger (default) or plain allreduce")
    parser.add_argument("--momentum", action="store_true", help="worker momentum 0.9")
    parser.add_argument("--run-dir", action="store_true",
                        help="OUT is a run directory: write checkpoints/step-*.h5 and latest")
    parser.add_argument("--corrupt", metavar="DATASET", help="flip one byte of this dataset")
    parser.add_argument("--model-kind", choices=["classifier", "language-model"],
                        help="write /meta/model_kind and /specialization/categories")
    parser.add_argument("--categories", metavar="NAMES",
                        help="with --model-kind: comma-separated category names to write")
    args = parser.parse_args()
    if args.categories is not None and not args.model_kind:
        parser.error("--categories needs --model-kind")
    if args.steps < 1:
        parser.error("--steps must be at least 1")

    path = args.out
    if args.run_dir:
        directory = os.path.join(args.out, "checkpoints")
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, "step-%08d.h5" % args.steps)
    # Written under a temporary name and renamed, as the trainer does.
    categories = args.categories.split(",") if args.categories is not None else None
    build(args.steps, args.ledger, args.momentum, args.model_kind, categories).write(path + ".tmp")
    if args.corrupt:
        corrupt(path + ".tmp", args.corrupt)
    os.replace(path + ".tmp", path)
    if args.run_dir:
        with open(os.path.join(directory, "latest.tmp"), "w") as f:
            f.write(os.path.basename(path) + "\n")
        os.replace(os.path.join(directory, "latest.tmp"), os.path.join(directory, "latest"))
    print(path)


if __name__ == "__main__":
    main()
