#!/usr/bin/env python3
"""PyTorch eager reference for btd's candle trainer (benchmark only; never used by tests or CI).

Same architecture and hyperparameters as `trainer/src/{model,config,train,eval}.rs`:
byte-level GPT (vocab 256), learned token + position embeddings, pre-norm blocks with a
hand-written RMSNorm (eps 1e-5, learned gain), separate q/k/v projections and causal attention
written out (q·kᵀ/√d + mask → softmax → ·v, no fused SDPA), ReLU² MLP (4×), untied LM head, no biases;
init N(0, 0.02) with residual projections scaled by 1/√(2·n_layer); AdamW (β 0.9/0.99, eps 1e-8,
decay 0.1 on matrices only), linear warm-up over 5% then linear decay to 10%, global-norm
clipping at 1.0; val_bpb on the same fixed split (last 10%) and windows as btd.

Batches are drawn from torch's RNG, not btd's ChaCha stream, so losses match in distribution, not
bit for bit.

    python bench/torch_ref.py --data FILE --preset tiny --steps 900 --threads 1
"""

import argparse
import hashlib
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {
    #        layers heads d_model block batch lr
    "tiny": (2, 4, 64, 64, 16, 3e-3),
    "small": (4, 4, 128, 128, 32, 2e-3),
    "base": (6, 6, 384, 256, 64, 1e-3),
}
MIN_LR_FRAC, WARMUP_FRAC, WEIGHT_DECAY, BETAS, EPS, CLIP = 0.1, 0.05, 0.1, (0.9, 0.99), 1e-8, 1.0
EVAL_BATCH = 16


class RMSNorm(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * self.weight


class Block(nn.Module):
    def __init__(self, d, h, block):
        super().__init__()
        self.h = h
        self.ln1, self.ln2 = RMSNorm(d), RMSNorm(d)
        self.q = nn.Linear(d, d, bias=False)
        self.k = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d, bias=False)
        self.attn_proj = nn.Linear(d, d, bias=False)
        self.fc = nn.Linear(d, 4 * d, bias=False)
        self.mlp_proj = nn.Linear(4 * d, d, bias=False)
        mask = torch.full((block, block), float("-inf")).triu(1)
        self.register_buffer("mask", mask, persistent=False)

    def attn(self, x):
        b, t, d = x.shape
        hd = d // self.h
        q, k, v = (p(x).view(b, t, self.h, hd).transpose(1, 2) for p in (self.q, self.k, self.v))
        att = (q * (1.0 / math.sqrt(hd))) @ k.transpose(-2, -1) + self.mask[:t, :t]
        y = F.softmax(att, dim=-1) @ v
        return self.attn_proj(y.transpose(1, 2).reshape(b, t, d))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp_proj(F.relu(self.fc(self.ln2(x))).square())


class Gpt(nn.Module):
    def __init__(self, n_layer, n_head, d, block):
        super().__init__()
        self.tok = nn.Embedding(256, d)
        self.pos = nn.Embedding(block, d)
        self.blocks = nn.ModuleList(Block(d, n_head, block) for _ in range(n_layer))
        self.ln_f = RMSNorm(d)
        self.head = nn.Linear(d, 256, bias=False)
        proj_std = 0.02 / math.sqrt(2 * n_layer)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = proj_std if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx):
        t = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(t))
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln_f(x))


def lr_at(lr, p):
    p = min(max(p, 0.0), 1.0)
    if p < WARMUP_FRAC:
        return lr * p / WARMUP_FRAC
    decay = (p - WARMUP_FRAC) / (1.0 - WARMUP_FRAC)
    return lr * (1.0 - decay * (1.0 - MIN_LR_FRAC))


@torch.no_grad()
def val_bpb(model, val, block, eval_tokens):
    windows = (len(val) - 1) // block
    tokens = min(eval_tokens, windows * block)
    needed = -(-tokens // block)
    losses = []
    for first in range(0, needed, EVAL_BATCH):
        n = min(EVAL_BATCH, needed - first)
        starts = [w * block for w in range(first, first + n)]
        x = torch.stack([val[s : s + block] for s in starts])
        y = torch.stack([val[s + 1 : s + block + 1] for s in starts])
        logp = F.log_softmax(model(x), dim=-1)
        losses.append(-logp.gather(-1, y.unsqueeze(-1)).flatten().double())
    nats = torch.cat(losses)[:tokens]
    return nats.sum().item() / (math.log(2) * tokens), tokens


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--preset", default="tiny", choices=PRESETS)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-tokens", type=int, default=32768)
    ap.add_argument("--warmup-steps", type=int, default=10, help="steps excluded from steady tokens/s")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    raw = open(args.data, "rb").read()
    data = torch.tensor(list(raw), dtype=torch.long)
    split = len(data) - len(data) // 10
    train, val = data[:split], data[split:]
    n_layer, n_head, d, block, batch, lr = PRESETS[args.preset]
    model = Gpt(n_layer, n_head, d, block)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    plain = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": plain, "weight_decay": 0.0}],
        lr=lr, betas=BETAS, eps=EPS, foreach=True,
    )
    params = sum(p.numel() for p in model.parameters())

    start = time.perf_counter()
    steady_start = start
    cpu_start = time.process_time()
    losses = []
    for step in range(args.steps):
        if step == args.warmup_steps:
            steady_start = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(lr, (step + 1) / args.steps)
        ix = torch.randint(len(train) - block - 1, (batch,))
        x = torch.stack([train[i : i + block] for i in ix])
        y = torch.stack([train[i + 1 : i + block + 1] for i in ix])
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, 256), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        losses.append(loss.item())
    end = time.perf_counter()
    cpu_secs = time.process_time() - cpu_start
    tokens_per_step = batch * block
    steady_steps = max(args.steps - args.warmup_steps, 1)
    bpb, scored = val_bpb(model, val, block, args.eval_tokens)
    tail = max(len(losses) // 10, 1)
    print(json.dumps({
        "impl": "torch-eager",
        "torch": torch.__version__,
        "preset": args.preset,
        "data_sha256": hashlib.sha256(raw).hexdigest(),
        "threads": args.threads,
        "params": params,
        "steps": args.steps,
        "train_secs": end - start,
        "tokens_per_sec": args.steps * tokens_per_step / (end - start),
        "steady_tokens_per_sec": steady_steps * tokens_per_step / (end - steady_start),
        "tokens_per_cpu_sec": args.steps * tokens_per_step / cpu_secs,
        "final_train_loss": sum(losses[-tail:]) / tail,
        "val_bpb": bpb,
        "eval_tokens": scored,
    }))


if __name__ == "__main__":
    main()
