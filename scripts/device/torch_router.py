"""PyTorch version of the router math (docs/router.md), the baseline of docs/performance.md.

  python3 torch_router.py make-h32 OUT.safetensors        random H = 32 weights in the model-file layout
  python3 torch_router.py bench W16 W32 OUTDIR [steps]    timings (JSON lines on stdout) and check files

Same math as the native kernels: h = relu(x·W1 + b1); stats; four signals; z = clip(s, ±15)/T; softmax; argmax;
expert output of the chosen expert (computed for all four experts and gathered, as one writes it in PyTorch).
float32 throughout, matmuls at full float32 precision (no TF32), like the CUDA kernels.
"""
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

NAMES = ["W1", "b1", "Wc", "bc", "Wv", "Bv", "Wr", "Br", "Ws", "Bs", "gates", "We", "be"]
DECAY = {"W1", "Wc", "Wv", "Wr", "Ws", "We"}


def shapes(H):
    Fh, D = 2 * H, 4
    return {"W1": [H, Fh], "b1": [Fh], "Wc": [Fh, D], "bc": [D], "Wv": [8, D], "Bv": [8, D], "Wr": [8, D],
            "Br": [8, D], "Ws": [3, 12, D], "Bs": [12, D], "gates": [4], "We": [D, Fh, H], "be": [D, H]}


def make_h32(out):
    g = torch.Generator().manual_seed(32)
    t = {}
    for name, shape in shapes(32).items():
        scale = math.sqrt(2.0 / shape[-2]) if name in DECAY else 0.1
        t[name] = (torch.randn(shape, generator=g) * scale).float().contiguous()
    t["gates"] = torch.tensor([1.2, 1.0, 0.8, 0.6])
    save_file(t, out, metadata={"format_version": "1", "hidden": "32", "note": "random weights for benchmarks"})


def load(path, device):
    t = load_file(path)
    return {k: t[k].to(device).float() for k in NAMES}


def logits(p, x, vol, risk, invT):
    h = torch.relu(x @ p["W1"] + p["b1"])
    stats = torch.stack([x.mean(1), x.var(1, unbiased=False), x.abs().mean(1)], 1)
    base = h @ p["Wc"] + p["bc"]
    volS = torch.relu(vol[:, None, None] * p["Wv"] + p["Bv"]).mean(1)
    riskS = torch.relu(risk[:, None, None] * p["Wr"] + p["Br"]).mean(1)
    statS = torch.relu(torch.einsum("ns,sjd->njd", stats, p["Ws"]) + p["Bs"]).mean(1)
    g = p["gates"]
    s = g[0] * base + g[1] * volS + g[2] * riskS + g[3] * statS
    return h, s.clamp(-15.0, 15.0) * invT


def expert_out(p, h, a):
    D, Fh, H = p["We"].shape
    y_all = (h @ p["We"].permute(1, 0, 2).reshape(Fh, D * H)).view(-1, D, H) + p["be"]
    y = y_all.gather(1, a[:, None, None].expand(-1, 1, H)).squeeze(1)
    sel = a[:, None]
    return torch.where(sel == 3, torch.tanh(y), torch.where(sel == 1, 0.8 * y, torch.relu(y)))


def forward(p, x, vol, risk, invT):
    h, z = logits(p, x, vol, risk, invT)
    a = z.argmax(1)
    return torch.softmax(z, 1), a, expert_out(p, h, a)


def median_ms(fn, reps):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        ts.append(s.elapsed_time(e))
    ts.sort()
    return ts[len(ts) // 2]


def emit(obj):
    print(json.dumps(obj), flush=True)


def bench(w16, w32, outdir, steps):
    dev = torch.device("cuda")
    emit({"kind": "torch", "version": torch.__version__, "device": torch.cuda.get_device_name(0)})
    gen = torch.Generator(device=dev).manual_seed(5)
    for path in (w16, w32):
        p = load(path, dev)
        H = p["W1"].shape[0]
        # TORCH_ONLY=train: the training rows only (no check file, no forward rows); =forward: no training rows.
        train_only = os.environ.get("TORCH_ONLY") == "train"
        forward_only = os.environ.get("TORCH_ONLY") == "forward"
        # Check file: inputs and PyTorch outputs for 4096 tokens; the Node script runs the CUDA router on the
        # same inputs and compares (same weights file, same math).
        n = 4096
        x = torch.randn(n, H, device=dev, generator=gen)
        vol = torch.rand(n, device=dev, generator=gen) * 0.05
        risk = torch.randn(n, device=dev, generator=gen)
        probs, a, out = forward(p, x, vol, risk, 1.0)
        with open(os.path.join(outdir, f"torch_check_h{H}.bin" if not train_only else os.devnull), "wb") as f:
            for t in (x, vol, risk, probs, out):
                f.write(t.float().contiguous().cpu().numpy().tobytes())
            f.write(a.to(torch.uint8).cpu().numpy().tobytes())

        for n in () if train_only else (10_000, 1_000_000, 10_000_000):
            x = torch.randn(n, H, device=dev, generator=gen)
            vol = torch.rand(n, device=dev, generator=gen) * 0.05
            risk = torch.randn(n, device=dev, generator=gen)
            reps = 10 if n >= 10_000_000 else 30
            ms = median_ms(lambda: forward(p, x, vol, risk, 1.0), reps)
            emit({"kind": "torch-forward", "mode": "eager", "H": H, "tokens": n, "ms": ms, "tokensPerSec": n / ms * 1e3})
            compiled = torch.compile(forward, dynamic=False)
            t0 = time.time()
            compiled(p, x, vol, risk, 1.0)
            torch.cuda.synchronize()
            compile_s = time.time() - t0
            ms = median_ms(lambda: compiled(p, x, vol, risk, 1.0), reps)
            emit({"kind": "torch-forward", "mode": "compile", "H": H, "tokens": n, "ms": ms, "tokensPerSec": n / ms * 1e3,
                  "compileSeconds": round(compile_s, 1)})
            del x, vol, risk
            torch.cuda.empty_cache()

        # Training steps: the loss of docs/router.md (label smoothing 0.05, reconstruction 0.1), backward, global-norm
        # clip 1, AdamW (decay 0.01 on matrices only), on one batch already on the GPU.
        for n in () if forward_only else (4096, 65536):
            params = {k: v.clone().requires_grad_(True) for k, v in p.items()}
            opt = torch.optim.AdamW([
                {"params": [params[k] for k in NAMES if k in DECAY], "weight_decay": 0.01},
                {"params": [params[k] for k in NAMES if k not in DECAY], "weight_decay": 0.0},
            ], lr=5e-3, betas=(0.9, 0.999), eps=1e-8)
            x = torch.randn(n, H, device=dev, generator=gen)
            vol = torch.rand(n, device=dev, generator=gen) * 0.05
            risk = torch.randn(n, device=dev, generator=gen)
            labels = torch.randint(0, 4, (n,), device=dev, generator=gen)
            sw = torch.ones(n, device=dev)
            losses = []

            def step():
                opt.zero_grad(set_to_none=True)
                h, z = logits(params, x, vol, risk, 1.0)
                a = z.detach().argmax(1)
                out = expert_out(params, h, a)
                ce = F.cross_entropy(z, labels, label_smoothing=0.05, reduction="none")
                loss = (sw * ce).mean() + 0.1 * ((out - x) ** 2).mean(1).mean()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
                opt.step()
                losses.append(loss)

            for _ in range(5):
                step()
            torch.cuda.synchronize()
            t0 = time.time()
            for _ in range(steps):
                step()
            torch.cuda.synchronize()
            ms = (time.time() - t0) * 1e3 / steps
            emit({"kind": "torch-train", "mode": "eager", "H": H, "batch": n, "steps": steps, "msPerStep": ms,
                  "lossFirst": float(losses[0]), "lossLast": float(losses[-1])})


if __name__ == "__main__":
    if sys.argv[1] == "make-h32":
        make_h32(sys.argv[2])
    elif sys.argv[1] == "bench":
        bench(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]) if len(sys.argv) > 5 else 200)
    else:
        sys.exit("usage: torch_router.py make-h32 OUT | bench W16 W32 OUTDIR [steps]")
