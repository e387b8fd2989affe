"""PyTorch's matrix-product rate at the size greentrain's `matmul` command
measures, with the same chained product (c = c @ b), one JSON line per dtype.
fp32 with TF32 off, so fp32 means fp32."""
import argparse, json, sys, time

try:
    import torch
except ImportError:
    print("torch is not installed: PyTorch matmul skipped", file=sys.stderr)
    sys.exit(3)

a = argparse.ArgumentParser()
a.add_argument("--size", type=int, default=4096)
a.add_argument("--seconds", type=float, default=5.0)
args = a.parse_args()
torch.backends.cuda.matmul.allow_tf32 = False
n = args.size
for name, dt in [("f32", torch.float32), ("f16", torch.float16), ("bf16", torch.bfloat16)]:
    b = (torch.randn(n, n, device="cuda") / n ** 0.5).to(dt)
    c = torch.randn(n, n, device="cuda").to(dt)
    t = time.time()
    for _ in range(3):
        c = c @ b
    torch.cuda.synchronize()
    warm = time.time() - t
    products, t = 0, time.time()
    while True:
        for _ in range(10):
            c = c @ b
        products += 10
        torch.cuda.synchronize()
        if time.time() - t >= args.seconds:
            break
    secs = time.time() - t
    print(json.dumps({"framework": "pytorch " + torch.__version__, "dtype": name, "size": n, "products": products,
                      "seconds": secs, "tflops": 2 * n ** 3 * products / secs / 1e12, "warmup_s": warm}))
