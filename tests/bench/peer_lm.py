#!/usr/bin/python3
"""PyTorch peer of daa-swarm's causal transformer MoE language model, for scripts/bench-peer-lm.

Builds the model an input file describes (inputs/text-mixture.toml by default) the way PyTorch
code usually is: nanoGPT-shaped blocks (x + attn(norm(x)), x + ffn(norm(x)), causal attention
as q k^T -> mask -> softmax -> v, tied embedding head) and the MoE FFN as a Python loop over
experts that gathers each expert's tokens with index_select and scatters the gated results back
with index_add_ (Mixtral's and Megatron's SequentialMLP). It reads the same HDF5 token file and
trains on the same windows daa-swarm draws (the counter-based starts of src/io/token_batches.cpp),
then scores the same validation windows in bits per byte. It is a reference, not a bit-matched
reimplementation (see CAVEATS).

Model (from the TOML): token embedding [vocab, d] -> layers x [x += attn(rmsnorm(x));
  x += ffn(rmsnorm(x))] -> rmsnorm -> logits = x E^T (tied) or a head Linear.
  attention: x Wqkv (no bias), rotary positions ("rotate half", base rope_base), causal softmax
  with scale 1/sqrt(head_dim), Wo. ffn: every moe_every-th block MoE, the others dense (d_ff_dense);
  both SwiGLU w2(silu(w1 x) * w3 x) without biases, or GELU MLP with biases ([moe] ffn).
  MoE: probs = softmax(x Wr); top-k; gates renormalised (normalize_gates); Switch aux loss
  coef * E * sum_e f_e P_e (+ z-loss coef * mean lse^2). Init: N(0, 0.02) ([model] init_std if
  > 0), wo and w2 scaled 1/sqrt(2 layers), gains 1, biases 0 (GPT-2, as daa-swarm).
Optimiser: AdamW(lr, beta1, beta2, eps), weight decay on matrices only, linear warmup then cosine
  to min_lr over the run's steps, global-norm clip grad_clip.

Run:  /usr/bin/python3 tests/bench/peer_lm.py inputs/text-mixture.toml --steps 200 --threads 1
      /usr/bin/python3 tests/bench/peer_lm.py inputs/text-mixture.toml --seconds 60 --ddp --nproc 2
Options --set section.key=value override the TOML like daa-swarm's. Rank 0 prints exactly one
line on stdout, JSON: {"peer":"pytorch", "ranks", "threads", "steps", "tokens_per_s" (steady:
steps after --warmup-steps), "train_seconds", "final_loss", "val_loss", "val_bits_per_byte",
"val_bits_per_byte_per_domain", ...}. Progress goes to stderr.

CAVEATS: use Debian's /usr/bin/python3 (python3-torch 1.13, python3-h5py); OPENBLAS_NUM_THREADS
and OMP_NUM_THREADS are pinned before torch is imported (torch.set_num_threads does not reach
Debian's OpenBLAS). Weights are drawn by torch's RNG, not daa-swarm's. With DDP each rank's aux
loss uses its own tokens' routing fractions (the usual way); daa-swarm reduces them over the
global batch. Capacity mode and group-limited routing are not modelled (refused).
"""

import math
import sys
import time
import tomllib

import peer_args


def fail(msg, code=2):
    print(f"peer_lm: {msg}", file=sys.stderr)
    sys.exit(code)


def parse_args(argv=None):
    ap = peer_args.parser(__doc__)
    ap.add_argument("input", nargs="?", default="inputs/text-mixture.toml",
                    help="daa-swarm input file (TOML); default inputs/text-mixture.toml")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override one key of the input, as daa-swarm train --set")
    ap.add_argument("--tokens", help="token file (default: the input's [data] tokens)")
    ap.add_argument("--steps", type=int, help="optimiser steps (default: [train] max_steps)")
    ap.add_argument("--seconds", type=float,
                    help="train for at most this many seconds instead: the step count (and so the "
                         "cosine schedule's length) is fixed from the pace of the first steps, and "
                         "the run also stops after the step that crosses the time (as daa-swarm's "
                         "[train] max_seconds)")
    peer_args.add_run_options(
        ap, "leading steps left out of tokens_per_s (default 20, as daa-swarm)")
    ap.add_argument("--no-eval", action="store_true", help="skip the validation pass")
    ap.add_argument("--torch-seed", type=int, default=1234, help="seed of the initial weights")
    a = peer_args.parse(ap, argv)
    if a.steps is not None and a.seconds is not None:
        ap.error("give --steps or --seconds, not both")
    if a.seconds is not None and a.seconds <= 0:
        ap.error("--seconds must be positive")
    return a


# Thread pinning must happen before torch (and its OpenBLAS) is loaded. Parse argv early.
_ARGS = parse_args() if __name__ == "__main__" else None

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import peer_common as common  # noqa: E402


# --------------------------------------------------------------------------------- config ----
def load_config(path, overrides):
    try:
        with open(path, "rb") as f:
            cfg = tomllib.load(f)
    except OSError as e:
        fail(f"{path}: cannot read: {e.strerror}")
    except tomllib.TOMLDecodeError as e:
        fail(f"{path}: not TOML: {e}")
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or not section or not name:
            fail(f"--set '{item}': expected section.key=value")
        try:  # a TOML value (number, bool, quoted string), else the bare text as a string
            parsed = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value
        cfg.setdefault(section, {})[name] = parsed
    return cfg


def get(cfg, path, key, kind):
    section, name = key.split(".")
    try:
        value = cfg[section][name]
    except KeyError:
        fail(f"{path}: [{section}] {name} is missing")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        fail(f"{path}: [{section}] {name} = {value!r} is not a {kind.__name__}")
    return value


class Settings:
    """The keys of the input file the language model and its training use."""

    def __init__(self, cfg, path):
        g = lambda key, kind: get(cfg, path, key, kind)  # noqa: E731
        self.seed = g("run.seed", int)
        self.tokens = g("data.tokens", str)
        self.d_model, self.layers, self.heads = g("model.d_model", int), g("model.layers", int), \
            g("model.heads", int)
        self.seq_len, self.moe_every = g("model.seq_len", int), g("model.moe_every", int)
        self.d_ff_dense, self.tie = g("model.d_ff_dense", int), g("model.tie_embeddings", bool)
        self.rope_base, self.init_std = g("model.rope_base", float), g("model.init_std", float)
        self.norm = g("model.norm", str)
        self.experts, self.top_k, self.d_ff = g("moe.experts", int), g("moe.top_k", int), \
            g("moe.d_ff", int)
        self.ffn, self.normalize_gates = g("moe.ffn", str), g("moe.normalize_gates", bool)
        self.aux_coef, self.z_coef = g("moe.aux_loss_coef", float), g("moe.z_loss_coef", float)
        self.max_steps, self.global_batch = g("train.max_steps", int), g("train.global_batch", int)
        self.lr, self.min_lr = g("train.lr", float), g("train.min_lr", float)
        self.lr_warmup = g("train.warmup_steps", int)
        self.weight_decay = g("train.weight_decay", float)
        self.beta1, self.beta2, self.eps = g("train.beta1", float), g("train.beta2", float), \
            g("train.eps", float)
        self.grad_clip = g("train.grad_clip", float)
        if g("moe.token_mode", str) != "dropless":
            fail(f"{path}: [moe] token_mode = \"{cfg['moe']['token_mode']}\": the peer models "
                 "only \"dropless\"")
        if g("moe.max_groups_per_token", int) != 0:
            fail(f"{path}: [moe] max_groups_per_token: the peer has no group-limited routing")
        if self.ffn not in ("swiglu", "gelu"):
            fail(f"{path}: [moe] ffn = \"{self.ffn}\": expected \"swiglu\" or \"gelu\"")
        if self.norm != "rmsnorm":
            fail(f"{path}: [model] norm = \"{self.norm}\": the language model uses \"rmsnorm\"")
        if self.d_model % self.heads or (self.d_model // self.heads) % 2:
            fail(f"{path}: [model] d_model = {self.d_model} / heads = {self.heads} is not an "
                 "even head width")
        if not 1 <= self.top_k <= self.experts:
            fail(f"{path}: [moe] top_k = {self.top_k} is outside 1..{self.experts}")


# ----------------------------------------------------------------------------------- data ----
M64 = (1 << 64) - 1
TEXT_WINDOWS = 5  # daa::core::RngPurpose::text_windows


def mix64(z):
    """SplitMix64 finalizer, as daa::core::mix64."""
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


class TokenData:
    """The token file's streams, token_bytes and the validation stream's domain per token."""

    def __init__(self, path, seq_len, seed):
        try:
            f = h5py.File(path, "r")
        except OSError as e:
            fail(f"{path}: cannot open the token file: {e}")
        with f:
            try:
                self.train = np.asarray(f["tokens/train"][:], dtype=np.int64)
                self.val = np.asarray(f["tokens/validation"][:], dtype=np.int64)
                self.vocab = int(f["tokenizer/vocab_size"][()])
                self.token_bytes = np.asarray(f["tokenizer/token_bytes"][:], dtype=np.float64)
                self.domains = [d.decode() for d in f["domains/name"][:]]
                docs = f["documents"]
                split, offset = docs["split"][:], docs["offset"][:]
                length, domain = docs["length"][:], docs["domain"][:]
            except KeyError as e:
                fail(f"{path}: not a daa-swarm token file (missing {e})")
        self.val_domain = np.zeros(len(self.val), dtype=np.int64)
        for s, o, n, d in zip(split, offset, length, domain):
            if s == 1:
                self.val_domain[o:o + n] = d
        self.seq_len, self.seed = seq_len, seed
        self.key = mix64(seed ^ mix64(TEXT_WINDOWS))
        self.span = np.arange(seq_len + 1)
        if len(self.train) < seq_len + 1 or len(self.val) < seq_len + 1:
            fail(f"{path}: a split holds fewer than seq_len + 1 = {seq_len + 1} tokens")

    def window_start(self, step, sample):
        """daa::io::TokenBatches::window_start: counter_bits -> multiply-high onto the starts."""
        key = mix64(self.key ^ mix64((step + 0x632BE59BD9B4E019) & M64))
        bits = mix64(key ^ mix64(sample))
        return (bits * (len(self.train) - self.seq_len)) >> 64

    def train_batch(self, step, first, count):
        starts = np.array([self.window_start(step, first + i) for i in range(count)])
        w = torch.from_numpy(self.train[starts[:, None] + self.span])
        return w[:, :-1], w[:, 1:]

    def validation_windows(self):
        return (len(self.val) - 1) // self.seq_len

    def validation(self, first, count):
        lo, hi = first * self.seq_len, (first + count) * self.seq_len
        x = torch.from_numpy(self.val[lo:hi].reshape(count, self.seq_len))
        y = self.val[lo + 1:hi + 1]
        return x, torch.from_numpy(y.reshape(count, self.seq_len)), y, self.val_domain[lo + 1:hi + 1]


# ---------------------------------------------------------------------------------- model ----
class Rotary(nn.Module):
    """GPT-NeoX "rotate half" rotary positions: column i pairs with i + head_dim / 2."""

    def __init__(self, head_dim, seq_len, base):
        super().__init__()
        inv = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        ang = torch.arange(seq_len, dtype=torch.float64)[:, None] * inv[None, :]
        ang = torch.cat([ang, ang], dim=-1)
        self.register_buffer("cos", ang.cos().float(), persistent=False)
        self.register_buffer("sin", ang.sin().float(), persistent=False)

    def forward(self, x):  # x [B, H, T, hd]
        t = x.shape[-2]
        x1, x2 = x.chunk(2, dim=-1)
        return x * self.cos[:t] + torch.cat([-x2, x1], dim=-1) * self.sin[:t]


class CausalSelfAttention(nn.Module):
    def __init__(self, s):
        super().__init__()
        self.heads, self.hd = s.heads, s.d_model // s.heads
        self.c_attn = nn.Linear(s.d_model, 3 * s.d_model, bias=False)
        self.c_proj = nn.Linear(s.d_model, s.d_model, bias=False)
        self.rotary = Rotary(self.hd, s.seq_len, s.rope_base)
        # A plain attribute, not a buffer: gloo cannot broadcast bool tensors, and it is constant.
        self.mask = torch.ones(s.seq_len, s.seq_len, dtype=torch.bool).tril()

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, self.hd).transpose(1, 2) for z in (q, k, v))
        q, k = self.rotary(q), self.rotary(k)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.hd))
        att = att.masked_fill(~self.mask[:t, :t], float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(b, t, c)
        return self.c_proj(y)


class FFN(nn.Module):
    """SwiGLU without biases, or a GELU MLP with biases (daa-swarm's [moe] ffn)."""

    def __init__(self, d, width, swiglu):
        super().__init__()
        self.swiglu = swiglu
        self.w1 = nn.Linear(d, width, bias=not swiglu)
        self.w3 = nn.Linear(d, width, bias=False) if swiglu else None
        self.w2 = nn.Linear(width, d, bias=not swiglu)

    def forward(self, x):
        if self.swiglu:
            return self.w2(F.silu(self.w1(x)) * self.w3(x))
        return self.w2(F.gelu(self.w1(x)))


class MoE(nn.Module):
    def __init__(self, s):
        super().__init__()
        self.router = nn.Linear(s.d_model, s.experts, bias=False)
        self.experts = nn.ModuleList(FFN(s.d_model, s.d_ff, s.ffn == "swiglu")
                                     for _ in range(s.experts))
        self.top_k, self.normalize = s.top_k, s.normalize_gates
        self.aux_coef, self.z_coef = s.aux_coef, s.z_coef

    def forward(self, x):  # x [B, T, d] -> (y, aux)
        shape = x.shape
        u = x.reshape(-1, shape[-1])
        logits = self.router(u)
        out, aux = common.sequential_moe(u, logits, self.experts, self.top_k, self.normalize,
                                         self.aux_coef)
        if self.z_coef > 0:
            aux = aux + self.z_coef * torch.logsumexp(logits, dim=-1).pow(2).mean()
        return out.view(shape), aux


class Block(nn.Module):
    def __init__(self, s, moe):
        super().__init__()
        self.ln_1, self.attn, self.ln_2 = common.RMSNorm(s.d_model), CausalSelfAttention(s), \
            common.RMSNorm(s.d_model)
        self.mlp = MoE(s) if moe else FFN(s.d_model, s.d_ff_dense, s.ffn == "swiglu")

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        if isinstance(self.mlp, MoE):
            y, aux = self.mlp(self.ln_2(x))
            return x + y, aux
        return x + self.mlp(self.ln_2(x)), None


class LanguageModel(nn.Module):
    def __init__(self, s, vocab):
        super().__init__()
        self.wte = nn.Embedding(vocab, s.d_model)
        self.blocks = nn.ModuleList(
            Block(s, s.moe_every > 0 and (b + 1) % s.moe_every == 0) for b in range(s.layers))
        self.ln_f = common.RMSNorm(s.d_model)
        self.head = None if s.tie else nn.Linear(s.d_model, vocab, bias=False)
        std = s.init_std if s.init_std > 0 else 0.02
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                scale = 1 / math.sqrt(2 * s.layers) if name.endswith(("c_proj.weight",
                                                                      "w2.weight")) else 1.0
                nn.init.normal_(p, std=std * scale)
            elif name.endswith(".bias"):  # norm gains keep their ones
                nn.init.zeros_(p)

    def forward(self, idx):  # -> (logits [B, T, V], aux)
        x = self.wte(idx)
        aux_total = x.new_zeros(())
        for block in self.blocks:
            x, aux = block(x)
            if aux is not None:
                aux_total = aux_total + aux
        x = self.ln_f(x)
        logits = x @ self.wte.weight.t() if self.head is None else self.head(x)
        return logits, aux_total


def learning_rate(step, total, s):
    """daa::train::learning_rate: linear warmup, then cosine from lr to min_lr over the run."""
    if step < s.lr_warmup:
        return s.lr * (step + 1) / s.lr_warmup
    if total is None or total <= s.lr_warmup:
        return s.lr
    progress = min(1.0, (step - s.lr_warmup) / (total - s.lr_warmup))
    return s.min_lr + 0.5 * (s.lr - s.min_lr) * (1 + math.cos(math.pi * progress))


# ------------------------------------------------------------------------------- training ----
def evaluate(model, data, rank, world):
    """Bits per byte over the non-overlapping validation windows (LanguageTask::evaluate)."""
    windows = data.validation_windows()
    first, last = windows * rank // world, windows * (rank + 1) // world
    nd = len(data.domains)
    sums = np.zeros(3 * nd + 1)  # per domain: nats, target bytes, targets; then correct
    net = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    net.eval()
    with torch.no_grad():
        for lo in range(first, last, 16):
            count = min(16, last - lo)
            x, y, y_np, dom = data.validation(lo, count)
            logits, _ = net(x)
            nll = F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1),
                                  reduction="none").double().numpy()
            sums[3 * nd] += float((logits.argmax(-1) == y).sum())
            for d in range(nd):
                sel = dom == d
                sums[3 * d] += nll[sel].sum()
                sums[3 * d + 1] += data.token_bytes[y_np[sel]].sum()
                sums[3 * d + 2] += sel.sum()
    net.train()
    if world > 1:
        t = torch.from_numpy(sums)
        dist.all_reduce(t)
        sums = t.numpy()
    nats, nbytes, targets = sums[0:3 * nd:3].sum(), sums[1:3 * nd:3].sum(), sums[2:3 * nd:3].sum()
    ln2 = math.log(2)
    return {"val_loss": nats / targets,
            "val_bits_per_byte": nats / ln2 / nbytes,
            "val_bits_per_byte_per_domain": {
                name: sums[3 * d] / ln2 / sums[3 * d + 1] for d, name in enumerate(data.domains)},
            "val_accuracy": sums[3 * nd] / targets}


def out_of_time(t_start, a):
    """Whether --seconds of training have passed, on any rank (every rank stops at the same step)."""
    late = torch.tensor([1.0 if time.perf_counter() - t_start >= a.seconds else 0.0])
    if a.ddp:
        dist.all_reduce(late)
    return late.item() > 0


def train(rank, world, a):
    common.setup_process(rank, world, a)
    cfg = load_config(a.input, a.set)
    s = Settings(cfg, a.input)
    if s.global_batch % world:
        fail(f"[train] global_batch = {s.global_batch} is not divisible by {world} ranks")
    data = TokenData(a.tokens or s.tokens, s.seq_len, s.seed)

    torch.manual_seed(a.torch_seed)  # same initial weights on every rank (DDP also broadcasts)
    model = LanguageModel(s, data.vocab)
    params = sum(p.numel() for p in model.parameters())
    if a.ddp:
        model = nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)
    opt = common.adamw(model, s.weight_decay, s.lr, (s.beta1, s.beta2), s.eps)
    local = s.global_batch // world
    log = common.rank0_logger(rank)

    total = a.steps if a.steps is not None else (None if a.seconds is not None else s.max_steps)
    log(f"peer_lm: ranks={world} threads={a.threads} torch={torch.__version__} params={params} "
        f"vocab={data.vocab} steps={total if total is not None else f'~{a.seconds:g} s'} "
        f"(timing leaves out {a.warmup_steps})")
    probe = (3, 13)  # with --seconds: the pace of these steps fixes the step count
    timer = common.SteadyTimer(a.warmup_steps, a.ddp)
    t_probe, loss_val, step = None, float("nan"), 0
    t_start = time.perf_counter()
    while total is None or step < total:
        if a.seconds is not None and step > probe[1] and out_of_time(t_start, a):
            log(f"peer_lm: {a.seconds:g} s reached after {step} of {total} steps")
            break
        timer.at_step(step)
        if a.seconds is not None and total is None and step in probe:
            if step == probe[0]:
                t_probe = time.perf_counter()
            else:  # rank 0's estimate, broadcast so that every rank runs the same steps
                per_step = (time.perf_counter() - t_probe) / (probe[1] - probe[0])
                est = torch.tensor([max(probe[1] + 1, int(a.seconds / per_step))])
                if a.ddp:
                    dist.broadcast(est, 0)
                total = int(est.item())
                log(f"peer_lm: {per_step * 1e3:.1f} ms/step -> {total} steps for {a.seconds:g} s")
        x, y = data.train_batch(step, rank * local, local)
        lr = learning_rate(step, total, s)
        for group in opt.param_groups:
            group["lr"] = lr
        logits, aux = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), y.reshape(-1)) + aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if s.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        opt.step()
        loss_val = loss.item()
        if a.log_every and (step % a.log_every == 0 or step == total - 1):
            log(f"step {step:5d}  loss {loss_val:.4f}  lr {lr:.2e} (rank 0)")
        step += 1
    timed, steady, train_seconds = timer.stop(step)
    final = common.mean_over_ranks(loss_val, a, world)
    result = {"peer": "pytorch", "ranks": world, "threads": a.threads, "steps": step,
              "seq_len": s.seq_len, "global_batch": s.global_batch, "parameters": params,
              "tokens_per_s": round(timed * s.global_batch * s.seq_len / steady, 1),
              "train_seconds": round(train_seconds, 3),
              "final_loss": round(final, 5)}
    if not a.no_eval:
        t = time.perf_counter()
        result.update(evaluate(model, data, rank, world))
        result["eval_seconds"] = round(time.perf_counter() - t, 3)
    common.emit(result, rank, a)


if __name__ == "__main__":
    common.launch(train, _ARGS)
