#!/usr/bin/python3
"""PyTorch reference of daa-swarm's language model (issue 12), for test_lm_reference.

For every case group of lm_reference.h5 it reads <case>/inputs (the model shape as attributes,
every parameter by daa-swarm name in its [rows, cols] layout with y = x @ W, the tokens, the
targets and the routing bias per MoE layer), builds the same model as ordinary nanoGPT-shaped
PyTorch modules in float64, runs forward and backward of mean cross-entropy + aux + z losses, and
writes <case>/expected. Not run by CI: tests/reference/refresh.sh runs it with Debian's torch 1.13
(/usr/bin/python3), which has no scaled_dot_product_attention, so attention is written out.

usage: lm_reference.py FILE
"""

import math
import sys

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)


class Config:
    def __init__(self, attrs):
        def get(name):
            value = attrs[name]
            return value.decode() if isinstance(value, bytes) else value.item()

        for name in ("vocab", "d_model", "layers", "heads", "seq_len", "sequences", "moe_every",
                     "d_ff_dense", "experts", "top_k", "d_ff"):
            setattr(self, name, int(get(name)))
        for name in ("rope_base", "rms_eps", "aux_loss_coef", "z_loss_coef"):
            setattr(self, name, float(get(name)))
        self.tie_embeddings = bool(get("tie_embeddings"))
        self.normalize_gates = bool(get("normalize_gates"))
        self.ffn = get("ffn")
        if self.ffn not in ("swiglu", "gelu"):
            raise ValueError(f"unknown ffn {self.ffn!r}")

    def is_moe_block(self, block):
        return self.moe_every > 0 and (block + 1) % self.moe_every == 0


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_head = cfg.heads
        self.head_dim = cfg.d_model // cfg.heads
        self.c_attn = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.c_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        # Rotary embedding, "rotate half" pairing: angle(pos, i) = pos * base^(-2i / head_dim).
        inv_freq = cfg.rope_base ** (-torch.arange(0, self.head_dim, 2) / self.head_dim)
        angle = torch.arange(cfg.seq_len)[:, None] * inv_freq[None, :]
        self.register_buffer("cos", torch.cat((angle.cos(), angle.cos()), dim=-1))
        self.register_buffer("sin", torch.cat((angle.sin(), angle.sin()), dim=-1))
        self.register_buffer("mask", torch.tril(torch.ones(cfg.seq_len, cfg.seq_len)))

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = k.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        q = q * self.cos[:T] + rotate_half(q) * self.sin[:T]
        k = k * self.cos[:T] + rotate_half(k) * self.sin[:T]
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
        att = att.masked_fill(self.mask[:T, :T] == 0, float("-inf"))
        att = F.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class SwiGLU(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.w1 = nn.Linear(d, hidden, bias=False)
        self.w3 = nn.Linear(d, hidden, bias=False)
        self.w2 = nn.Linear(hidden, d, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class GeluMLP(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.c_fc = nn.Linear(d, hidden)
        self.c_proj = nn.Linear(hidden, d)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))  # the exact (erf) GELU


def make_ffn(cfg, hidden):
    return SwiGLU(cfg.d_model, hidden) if cfg.ffn == "swiglu" else GeluMLP(cfg.d_model, hidden)


class MoE(nn.Module):
    """Softmax router, top-k on probs + routing bias (ties to the lower expert), gates renormalized
    if asked, the experts as a loop with index_select / index_add_; Switch load-balancing loss with
    the routed fraction held constant, and the router z-loss."""

    def __init__(self, cfg, routing_bias):
        super().__init__()
        self.cfg = cfg
        self.router = nn.Linear(cfg.d_model, cfg.experts, bias=False)
        self.experts = nn.ModuleList(make_ffn(cfg, cfg.d_ff) for _ in range(cfg.experts))
        self.register_buffer("routing_bias", routing_bias)

    def forward(self, x):
        cfg = self.cfg
        n, E, k = x.size(0), cfg.experts, cfg.top_k
        logits = self.router(x)
        probs = F.softmax(logits, dim=-1)
        # A stable descending sort puts the lower index first among equal scores.
        scores = (probs + self.routing_bias).detach()
        choice = torch.sort(scores, dim=-1, descending=True, stable=True).indices[:, :k]
        gates = probs.gather(1, choice)
        if cfg.normalize_gates:
            gates = gates / gates.sum(dim=-1, keepdim=True)
        y = torch.zeros_like(x)
        for e in range(E):
            token, slot = torch.nonzero(choice == e, as_tuple=True)
            if token.numel() == 0:
                continue
            out = self.experts[e](x.index_select(0, token)) * gates[token, slot].unsqueeze(1)
            y.index_add_(0, token, out)
        counts = torch.bincount(choice.flatten(), minlength=E)
        fraction = counts.to(x.dtype) / (n * k)  # a constant in the gradient
        aux = cfg.aux_loss_coef * E * (fraction * probs.mean(dim=0)).sum()
        z = cfg.z_loss_coef * torch.logsumexp(logits, dim=-1).pow(2).mean()
        self.routing = (choice, counts)
        return y, aux, z


class Block(nn.Module):
    def __init__(self, cfg, routing_bias=None):
        super().__init__()
        self.ln_1 = RMSNorm(cfg.d_model, cfg.rms_eps)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = RMSNorm(cfg.d_model, cfg.rms_eps)
        self.moe = routing_bias is not None
        self.mlp = MoE(cfg, routing_bias) if self.moe else make_ffn(cfg, cfg.d_ff_dense)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        h = self.ln_2(x)
        if not self.moe:
            return x + self.mlp(h), []
        B, T, C = h.size()
        y, aux, z = self.mlp(h.reshape(B * T, C))
        return x + y.view(B, T, C), [(aux, z)]


class GPT(nn.Module):
    def __init__(self, cfg, routing_bias):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab, cfg.d_model)
        moe_index = [sum(cfg.is_moe_block(c) for c in range(b)) for b in range(cfg.layers)]
        self.h = nn.ModuleList(
            Block(cfg, routing_bias[moe_index[b]] if cfg.is_moe_block(b) else None)
            for b in range(cfg.layers))
        self.ln_f = RMSNorm(cfg.d_model, cfg.rms_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight

    def forward(self, idx, targets):
        x = self.wte(idx)
        losses = []
        for block in self.h:
            x, block_losses = block(x)
            losses += block_losses
        logits = self.lm_head(self.ln_f(x))
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss, losses

    def daa_names(self):
        """daa-swarm's parameter names -> (tensor, transposed): nn.Linear keeps W^T."""
        cfg = self.cfg
        names = {"embedding.table": (self.wte.weight, False),
                 "final_norm.gain": (self.ln_f.weight, False)}
        if not cfg.tie_embeddings:
            names["head.w"] = (self.lm_head.weight, True)

        def ffn(prefix, m):
            if cfg.ffn == "swiglu":
                names.update({prefix + "w1": (m.w1.weight, True),
                              prefix + "w3": (m.w3.weight, True),
                              prefix + "w2": (m.w2.weight, True)})
            else:
                names.update({prefix + "w1": (m.c_fc.weight, True),
                              prefix + "b1": (m.c_fc.bias, False),
                              prefix + "w2": (m.c_proj.weight, True),
                              prefix + "b2": (m.c_proj.bias, False)})

        for b, block in enumerate(self.h):
            p = f"block{b}."
            names[p + "attn_norm.gain"] = (block.ln_1.weight, False)
            names[p + "attn.wqkv"] = (block.attn.c_attn.weight, True)
            names[p + "attn.wo"] = (block.attn.c_proj.weight, True)
            names[p + "ffn_norm.gain"] = (block.ln_2.weight, False)
            if block.moe:
                names[p + "moe.router.w"] = (block.mlp.router.weight, True)
                for e, expert in enumerate(block.mlp.experts):
                    ffn(f"{p}moe.expert{e}.", expert)
            else:
                ffn(p + "ffn.", block.mlp)
        return names


def run_case(group):
    inputs = group["inputs"]
    cfg = Config(inputs.attrs)
    routing_bias = torch.from_numpy(inputs["routing_bias"][()])
    model = GPT(cfg, routing_bias)
    names = model.daa_names()
    stored = set(inputs["params"].keys())
    if stored != set(names):
        raise ValueError(f"{group.name}: parameters differ: file only "
                         f"{sorted(stored - set(names))}, model only {sorted(set(names) - stored)}")
    with torch.no_grad():
        for name, (tensor, transposed) in names.items():
            value = torch.from_numpy(inputs["params"][name][()])
            value = value.T if transposed else value.reshape(tensor.shape)
            if value.shape != tensor.shape:
                raise ValueError(f"{group.name}/inputs/params/{name}: shape {tuple(value.shape)}")
            tensor.copy_(value)

    B, T = cfg.sequences, cfg.seq_len
    idx = torch.from_numpy(inputs["tokens"][()]).view(B, T)
    targets = torch.from_numpy(inputs["targets"][()]).view(B, T)
    logits, loss, moe_losses = model(idx, targets)
    aux = torch.stack([a for a, _ in moe_losses])
    z = torch.stack([z for _, z in moe_losses])
    objective = loss + aux.sum() + z.sum()
    objective.backward()

    flat_logits = logits.detach().view(B * T, cfg.vocab)
    flat_targets = targets.view(-1)
    targeted = flat_targets >= 0
    correct = int((flat_logits.argmax(dim=-1)[targeted] == flat_targets[targeted]).sum())
    moe_blocks = [block.mlp for block in model.h if block.moe]

    if "expected" in group:
        del group["expected"]
    out = group.create_group("expected")
    out.attrs["generator"] = f"lm_reference.py, torch {torch.__version__}"
    out["loss"] = loss.item()
    out["aux_loss"] = aux.detach().numpy()
    out["z_loss"] = z.detach().numpy()
    out["aux_total"] = (aux.sum() + z.sum()).item()
    out["objective"] = objective.item()
    out["correct"] = np.int64(correct)
    out["logits"] = flat_logits.numpy()
    out["choice"] = np.stack([m.routing[0].numpy() for m in moe_blocks]).astype(np.int64)
    out["tokens_per_expert"] = np.stack([m.routing[1].numpy() for m in moe_blocks]).astype(np.int64)
    grads = out.create_group("grads")
    for name, (tensor, transposed) in names.items():
        grad = tensor.grad.T if transposed else tensor.grad
        grads[name] = grad.reshape(inputs["params"][name].shape).numpy()
    print(f"{group.name}: loss {loss.item():.6f}, aux+z {(aux.sum() + z.sum()).item():.6f}, "
          f"routed per expert {out['tokens_per_expert'][()].tolist()}")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[-1])
    with h5py.File(sys.argv[1], "r+") as f:
        cases = [name for name in f if "inputs" in f[name]]
        if not cases:
            sys.exit(f"lm_reference.py: {sys.argv[1]} has no <case>/inputs group")
        for name in cases:
            run_case(f[name])


if __name__ == "__main__":
    main()
