#!/usr/bin/env python3
"""The grokking experiment of Nanda et al. 2023 in PyTorch, as the paper's code sets it up.

greentrain's configs/paper/grokking_nanda2023_*.toml approximate the paper's training; this
script is the reference they are compared with: the same model and optimiser written the way
the paper's transformers.py has them (a written-from-scratch equivalent, not a copy), so that
the step at which the model groks can be set beside greentrain's, seed for seed.

What it reproduces: p = 113, modular addition, inputs [a, b, =] with `=` the token p; the pairs
shuffled by Python's random.seed(seed) / random.shuffle and the first int(0.3 x 12,769) = 3,830
training; a 1-layer transformer (d_model 128, 4 heads of 32, causal attention without biases,
MLP 512 with ReLU and zero-initialised biases, no LayerNorm, unembedding over p + 1 tokens),
every weight N(0, 1/d_model) and the unembedding N(0, 1/(p + 1)); the loss on the last
position in float64; AdamW lr 1e-3, weight decay 1.0, betas (0.9, 0.98), the learning rate
ramped as LambdaLR(min(step/10, 1)); full batch. The paper does not seed its initialisation
(torch.randn without a manual seed); here torch.manual_seed(seed) does, so runs repeat.

Measured as greentrain measures: an "epoch" is 100 steps; its training accuracy is the mean
over its steps of the accuracy before each update; test accuracy is evaluated after its last
step. Memorisation is the first epoch whose training accuracy reaches 99%, grokking the first
whose test accuracy does; both are reported as steps (epoch x 100).

    python3 benches/grokking_ref.py --seeds "0 1 2" [--device cpu|cuda] [--max-steps 40000]
        [--threads N] [--csv-dir DIR] [--json FILE]
"""
import argparse
import json
import math
import os
import random
import sys
import time

import torch
import torch.nn.functional as F

P, D_MODEL, HEADS, D_MLP, CTX, FRACTION = 113, 128, 4, 512, 3, 0.3
EPOCH = 100


def split(seed):
    pairs = [(a, b, P) for a in range(P) for b in range(P)]
    random.seed(seed)
    random.shuffle(pairs)
    n = int(FRACTION * len(pairs))
    return pairs[:n], pairs[n:]


def tensors(rows, device):
    x = torch.tensor(rows, device=device)
    y = (x[:, 0] + x[:, 1]) % P
    return x, y


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        vocab, dh = P + 1, D_MODEL // HEADS

        def normal(*shape, var):
            return torch.nn.Parameter(torch.randn(*shape) / math.sqrt(var))

        self.embed = normal(vocab, D_MODEL, var=D_MODEL)
        self.pos = normal(CTX, D_MODEL, var=D_MODEL)
        self.wq = normal(HEADS, D_MODEL, dh, var=D_MODEL)
        self.wk = normal(HEADS, D_MODEL, dh, var=D_MODEL)
        self.wv = normal(HEADS, D_MODEL, dh, var=D_MODEL)
        self.wo = normal(HEADS * dh, D_MODEL, var=D_MODEL)
        self.w_in = normal(D_MODEL, D_MLP, var=D_MODEL)
        self.b_in = torch.nn.Parameter(torch.zeros(D_MLP))
        self.w_out = normal(D_MLP, D_MODEL, var=D_MODEL)
        self.b_out = torch.nn.Parameter(torch.zeros(D_MODEL))
        self.unembed = normal(D_MODEL, vocab, var=vocab)

    def forward(self, x):
        # Only the last position's output is read, and causal attention lets the
        # other positions' outputs feed nothing: the query, the attention output
        # and the MLP are computed at that position alone (the paper computes
        # all three; the logits it reads are the same), a third of the work.
        h = self.embed[x] + self.pos  # [batch, ctx, d]
        q = torch.einsum("bd,ide->bie", h[:, -1], self.wq).unsqueeze(2)  # [b, heads, 1, dh]
        k = torch.einsum("bpd,ide->bipe", h, self.wk)
        v = torch.einsum("bpd,ide->bipe", h, self.wv)
        attn = ((q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])).softmax(-1)
        z = (attn @ v).reshape(x.shape[0], -1)  # heads concatenated, head-major
        h = h[:, -1] + z @ self.wo
        h = h + F.relu(h @ self.w_in + self.b_in) @ self.w_out + self.b_out
        return h @ self.unembed


def run(seed, device, max_steps, csv_path):
    torch.manual_seed(seed)
    train, test = split(seed)
    (xt, yt), (xe, ye) = tensors(train, device), tensors(test, device)
    model = Model().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1.0, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(s / 10, 1))
    rows, memorised, grokked = [], None, None
    start = time.perf_counter()
    for epoch in range(1, max_steps // EPOCH + 1):
        correct = torch.zeros((), dtype=torch.long, device=device)
        for _ in range(EPOCH):
            logits = model(xt)
            loss = F.cross_entropy(logits.double(), yt)
            correct += (logits.argmax(-1) == yt).sum()  # summed on the device: no sync per step
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        with torch.no_grad():
            test_acc = (model(xe).argmax(-1) == ye).float().mean().item()
        train_acc = correct.item() / (EPOCH * len(yt))
        rows.append((epoch, epoch * EPOCH, loss.item(), train_acc, test_acc,
                     time.perf_counter() - start))
        if epoch % 10 == 0:
            print(f"seed {seed} step {epoch * EPOCH}: train {train_acc:.4f} test {test_acc:.4f}",
                  file=sys.stderr, flush=True)
        if memorised is None and train_acc >= 0.99:
            memorised = epoch
        if grokked is None and test_acc >= 0.99:
            grokked = epoch
            break
    if csv_path:
        with open(csv_path, "w") as f:
            f.write("epoch,step,train_loss,train_accuracy,test_accuracy,wall_s\n")
            for r in rows:
                f.write(",".join(repr(v) for v in r) + "\n")
    return {
        "seed": seed, "train_pairs": len(train), "test_pairs": len(test),
        "memorisation_step": memorised and memorised * EPOCH,
        "grokking_step": grokked and grokked * EPOCH,
        "final_test_accuracy": rows[-1][4], "steps": rows[-1][1],
        "wall_s": time.perf_counter() - start,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0 1 2")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-steps", type=int, default=40000)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads; 0 leaves it")
    ap.add_argument("--csv-dir", help="write each seed's epochs to DIR/seedS.csv")
    ap.add_argument("--json", help="write the results to this file as well")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.csv_dir:
        os.makedirs(a.csv_dir, exist_ok=True)
    results = []
    print(f"torch {torch.__version__}, device {a.device}, threads {torch.get_num_threads()}",
          file=sys.stderr)
    print("| seed | memorisation step | grokking step | final test accuracy | seconds |")
    print("|---|---|---|---|---|")
    for s in a.seeds.split():
        csv = a.csv_dir and os.path.join(a.csv_dir, f"seed{s}.csv")
        r = run(int(s), a.device, a.max_steps, csv)
        results.append(r)
        fmt = lambda v: "not reached" if v is None else f"{v:,}"
        print(f"| {s} | {fmt(r['memorisation_step'])} | {fmt(r['grokking_step'])} | "
              f"{r['final_test_accuracy']:.4f} | {r['wall_s']:.0f} |", flush=True)
    if a.json:
        meta = {"torch": torch.__version__, "device": a.device, "threads": torch.get_num_threads()}
        with open(a.json, "w") as f:
            json.dump({"meta": meta, "runs": results}, f, indent=1)


if __name__ == "__main__":
    main()
