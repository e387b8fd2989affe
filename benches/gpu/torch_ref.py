"""PyTorch reference for benches/gpu/run.sh: the same model, data, batch size and
optimizer as greentrain's configs/gpu/*.toml, in fp32 (TF32 off, set explicitly and
reported) or with torch.autocast(float16) + GradScaler, with energy from NVML's
total-energy counter and a 20 Hz integrated-power cross-check (pynvml).
The first epoch is warm-up (cuDNN autotune, allocator) and is excluded."""
import argparse, gzip, json, os, struct, sys, threading, time

try:
    import torch
    import torch.nn as nn
except ImportError:
    print("torch is not installed: PyTorch reference skipped", file=sys.stderr)
    sys.exit(3)

def idx(path):
    """An IDX file (gzipped or not): u8 (type 0x08) or big-endian f32 (0x0D)."""
    raw = (gzip.open if path.endswith(".gz") else open)(path, "rb").read()
    kind, nd = raw[2], raw[3]
    dims = struct.unpack(">" + "I" * nd, raw[4:4 + 4 * nd])
    body = bytearray(raw[4 + 4 * nd:])
    if kind == 0x0D:
        import numpy as np  # PyTorch's own dependency
        return torch.from_numpy(np.frombuffer(body, dtype=">f4").astype(np.float32)).reshape(dims)
    return torch.frombuffer(body, dtype=torch.uint8).reshape(dims)

def modular(p, train_fraction, seed):
    """All pairs (a, b) with label (a + b) mod p, inputs [a, b, =] as tokens; a seeded split
    (not greentrain's shuffle: the same sizes, other pairs)."""
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    x = torch.stack([a.flatten(), b.flatten(), torch.full((p * p,), p)], 1)
    y = (a.flatten() + b.flatten()) % p
    perm = torch.randperm(p * p, generator=torch.Generator().manual_seed(seed))
    n = round(p * p * train_fraction)
    return x[perm[:n]], y[perm[:n]], x[perm[n:]], y[perm[n:]]

def data(root, name, seed):
    if name == "modular_transformer":
        return modular(113, 0.5, seed)
    if name == "mnist1d_cnn":
        g = lambda n: idx(os.path.join(root, "mnist1d", n))
        return (g("train-x-idx2-f32"), g("train-y-idx1-ubyte").long(),
                g("test-x-idx2-f32"), g("test-y-idx1-ubyte").long())
    f = lambda n: os.path.join(root, "mnist", n)
    xs = (idx(f("train-images-idx3-ubyte.gz")).float() / 255 - 0.1307) / 0.3081
    ys = idx(f("train-labels-idx1-ubyte.gz")).long()
    xt = (idx(f("t10k-images-idx3-ubyte.gz")).float() / 255 - 0.1307) / 0.3081
    yt = idx(f("t10k-labels-idx1-ubyte.gz")).long()
    return xs.reshape(-1, 784), ys, xt.reshape(-1, 784), yt

class Mnist1dCnn(nn.Module):
    """configs/mnist1d_cnn.toml (Greydanus & Kobak): three Conv1d (k 5/3/3, stride 2, padding 1)
    with ReLU at 25 channels, then Linear(25 x 5, 10), for signals of 40."""
    def __init__(self, c=25, length=40):
        super().__init__()
        self.convs = nn.Sequential(nn.Unflatten(1, (1, length)), nn.Conv1d(1, c, 5, 2, 1), nn.ReLU(),
                                   nn.Conv1d(c, c, 3, 2, 1), nn.ReLU(), nn.Conv1d(c, c, 3, 2, 1), nn.ReLU(),
                                   nn.Flatten())
        self.linear = nn.Linear(self.convs(torch.zeros(1, length)).shape[1], 10)
    def forward(self, x):
        return self.linear(self.convs(x))

def model(name):
    if name == "mnist_mlp":
        return nn.Sequential(nn.Linear(784, 800), nn.ReLU(), nn.Linear(800, 10))
    if name == "mnist1d_cnn":
        return Mnist1dCnn()
    if name == "mnist_wide_mlp":
        return nn.Sequential(nn.Linear(784, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 10))
    if name == "mnist_lenet5":
        return nn.Sequential(nn.Unflatten(1, (1, 28, 28)), nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
    if name == "mnist_resnet20":
        return resnet(20, 16)
    if name == "modular_transformer":
        return Transformer(vocab=114, classes=113, d=512, heads=8, d_mlp=2048, layers=2)
    raise SystemExit(f"unknown model {name}")

class Block(nn.Module):
    """configs/gpu/mnist_resnet20.toml's basic block: 3x3 convolutions without bias, batch
    norm, a 1x1 convolution on the shortcut where the shape changes."""
    def __init__(self, cin, c, stride):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False), nn.BatchNorm2d(c)
        self.c2, self.b2 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
        self.sc = (nn.Sequential(nn.Conv2d(cin, c, 1, stride, bias=False), nn.BatchNorm2d(c))
                   if stride != 1 or cin != c else nn.Identity())
    def forward(self, x):
        h = torch.relu(self.b1(self.c1(x)))
        return torch.relu(self.b2(self.c2(h)) + self.sc(x))

def resnet(depth, width):
    n, c, layers = (depth - 2) // 6, width, [nn.Unflatten(1, (1, 28, 28)), nn.Conv2d(1, width, 3, 1, 1, bias=False),
                                             nn.BatchNorm2d(width), nn.ReLU()]
    for mult, stride in [(1, 1), (2, 2), (4, 2)]:
        for i in range(n):
            layers.append(Block(c, width * mult, stride if i == 0 else 1))
            c = width * mult
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10))

class Transformer(nn.Module):
    """configs/gpu/modular_transformer.toml: token and learned position embeddings, pre-norm
    causal blocks (PyTorch's own layer: fused attention), a final LayerNorm, the last
    position's logits from a separate unembedding."""
    def __init__(self, vocab, classes, d, heads, d_mlp, layers, context=3):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(context, d) * 0.02)
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(d, heads, d_mlp, dropout=0.0, batch_first=True,
                                                               norm_first=True) for _ in range(layers))
        self.ln, self.out = nn.LayerNorm(d), nn.Linear(d, classes)
    def forward(self, x):
        h = self.embed(x) + self.pos[: x.shape[1]]
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1], device=x.device)
        for b in self.blocks:
            h = b(h, src_mask=mask, is_causal=True)
        return self.out(self.ln(h[:, -1]))

def optimizer(name, params):
    """The optimizer of each greentrain config."""
    if name == "mnist_resnet20":
        return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)
    if name == "modular_transformer":
        return torch.optim.AdamW(params, lr=3e-4, weight_decay=0.1, eps=1e-8)
    lr = {"mnist_wide_mlp": 1e-3, "mnist_lenet5": 2e-3, "mnist_mlp": 1e-3, "mnist1d_cnn": 1e-2}[name]
    return torch.optim.Adam(params, lr=lr, eps=1e-8)

class Nvml:
    """NVML total-energy counter plus sampled power integrated at 20 Hz."""
    def __init__(self, index):
        try:
            import pynvml
            pynvml.nvmlInit()
            self.nv = pynvml
            self.h = pynvml.nvmlDeviceGetHandleByIndex(index)
            self.name = pynvml.nvmlDeviceGetName(self.h)
        except Exception as e:  # no GPU, no library
            print(f"NVML unavailable: {e}", file=sys.stderr)
            self.nv = None
            return
        self.integrated = 0.0
        self.stop = False
        self.t = threading.Thread(target=self.sample, daemon=True)
        self.last = None
        self.t.start()
    def counter_j(self):
        return self.nv.nvmlDeviceGetTotalEnergyConsumption(self.h) / 1000.0 if self.nv else None
    def sample(self):
        while not self.stop:
            p = self.nv.nvmlDeviceGetPowerUsage(self.h) / 1000.0
            now = time.time()
            if self.last:
                self.integrated += 0.5 * (p + self.last[1]) * (now - self.last[0])
            self.last = (now, p)
            time.sleep(0.05)
    def close(self):
        if self.nv:
            self.stop = True
            self.t.join()

def sized_steps(window, step, order, sync):
    """Steps that last about `window` seconds, from the timed steps given, after the warm-up epoch (so that a
    fast model's window is not too short to measure, nor a slow one's too long for a short lease)."""
    sync()
    t0 = time.time()
    for ids in order:
        step(ids)
    sync()
    per_step = (time.time() - t0) / len(order)
    return max(20, int(window / per_step))


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--model", required=True)
    a.add_argument("--mode", choices=["fp32", "amp"], required=True)
    a.add_argument("--device", default="cuda")
    a.add_argument("--epochs", type=int, default=4)
    a.add_argument("--seed", type=int, default=42)
    a.add_argument("--batch", type=int, default=1024)
    a.add_argument("--steps", type=int, default=0, help="batches per epoch (0: one pass); more passes are reshuffled")
    a.add_argument("--profile", default="", help="write the top CUDA kernels of 20 profiled steps to this file")
    a.add_argument("--window", type=float, default=0.0,
                   help="seconds: after epoch 1, re-size the later epochs to last about this long")
    a.add_argument("--threads", type=int, default=0, help="CPU threads (torch.set_num_threads; 0: PyTorch's default)")
    a.add_argument("--out", required=True)
    args = a.parse_args()
    dev = torch.device("cuda" if args.device.startswith("cuda") else "cpu")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    # TF32 off: fp32 means fp32 (PyTorch's matmul default is already off; cuDNN's is on).
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    xs, ys, xt, yt = data(os.environ.get("GREENTRAIN_DATASETS", "datasets"), args.model, args.seed)
    if dev.type == "cuda":
        xs, ys = xs.pin_memory(), ys.pin_memory()
    net = model(args.model).to(dev)
    opt = optimizer(args.model, net.parameters())
    scaler = torch.amp.GradScaler("cuda", enabled=(args.mode == "amp" and dev.type == "cuda"))
    loss_fn = nn.CrossEntropyLoss()
    meter = Nvml(0) if dev.type == "cuda" else Nvml.__new__(Nvml)
    if dev.type != "cuda":
        meter.nv = None
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    epochs, skipped = [], 0
    n = xs.shape[0]
    def batches(ep):
        """One pass, or exactly --steps batches from as many reshuffled passes as needed."""
        passes = 1 if args.steps == 0 else -(-args.steps // -(-n // args.batch))
        out = []
        for p in range(passes):
            g = torch.Generator().manual_seed(args.seed * 1000 + ep * passes + p)
            perm = torch.randperm(n, generator=g)
            out += [perm[s:s + args.batch] for s in range(0, n, args.batch)]
        return out[:args.steps] if args.steps else out
    amp = args.mode == "amp" and dev.type == "cuda"
    def step(ids):
        x = xs[ids].to(dev, non_blocking=True)
        y = ys[ids].to(dev, non_blocking=True)
        with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=amp):
            loss = loss_fn(net(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    total_steps = 0
    for ep in range(args.epochs):
        if ep == 1 and args.window > 0:
            timed = batches(args.epochs + 1)[:20]
            args.steps = sized_steps(args.window, step, timed, sync)
            total_steps += len(timed)
        order = batches(ep)
        sync()
        t0, e0, i0 = time.time(), meter.counter_j(), getattr(meter, "integrated", None)
        samples = 0
        for ids in order:
            step(ids)
            samples += len(ids)
            total_steps += 1
        sync()
        t1, e1, i1 = time.time(), meter.counter_j(), getattr(meter, "integrated", None)
        epochs.append({"epoch": ep + 1, "wall_s": t1 - t0, "samples": samples,
                       "energy_j": (e1 - e0) if e0 is not None else None,
                       "integrated_j": (i1 - i0) if i0 is not None else None})
    # Skipped steps without a per-step read: Adam counts only the steps it took.
    # SGD keeps no step count: its skipped steps are not known (None).
    first = next(iter(net.parameters()))
    state = opt.state.get(first, {})
    skipped = total_steps - int(state["step"]) if "step" in state else (None if state else total_steps)
    if args.profile and dev.type == "cuda":
        from torch.profiler import profile, ProfilerActivity
        order = batches(args.epochs)[:20]
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for ids in order:
                step(ids)
            sync()
        with open(args.profile, "w") as f:
            f.write(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=70))
    net.train(False)
    with torch.no_grad(), torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=(args.mode == "amp" and dev.type == "cuda")):
        pred = torch.cat([net(xt[s:s + 10000].to(dev)).argmax(1).cpu() for s in range(0, xt.shape[0], 10000)])
    acc = (pred == yt).float().mean().item()
    meter.close() if meter.nv else None
    json.dump({"framework": "pytorch " + torch.__version__, "model": args.model, "mode": args.mode,
               "threads": torch.get_num_threads(),
               "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu",
               "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
               "test_accuracy": acc, "skipped_steps": skipped, "epochs": epochs}, open(args.out, "w"), indent=1)
    print(f"pytorch {args.model} {args.mode}: accuracy {acc:.4f}")

main()
