"""Turns the outputs of gpu-run.sh (a folder) into the markdown tables of docs/performance.md."""
import json
import os
import re
import sys

out = sys.argv[1]


def lines(name):
    p = os.path.join(out, name)
    if not os.path.exists(p):
        return []
    rows = []
    for line in open(p, encoding="utf8", errors="replace"):
        line = line.strip()
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
    return rows


bench, torch_rows, node = lines("bench.jsonl"), lines("torch.jsonl"), lines("node.jsonl")
g = lambda x: f"{x / 1e9:.3f} G" if x >= 1e8 else f"{x / 1e6:.2f} M"
dev = next((r["device"] for r in bench if r["kind"] == "device"), "?")
copy = next((r for r in bench if r["kind"] == "copy"), None)
print(f"device: {dev}")
if copy:
    print(f"copy: device-to-device {copy['d2dGBs']} GB/s (read + write), pinned H2D {copy['h2dGBs']} GB/s, D2H {copy['d2hGBs']} GB/s")
print()
for r in bench:
    if r["kind"] == "hostregister":
        print(f"cudaHostRegister + cudaHostUnregister of 1 GiB: {r['ms']} ms ({r['GBs']} GB/s)")
    if r["kind"] == "hostcopy":
        print(f"host memcpy, {r['threads']} threads: pageable→pinned {r['toPinnedGBs']} GB/s, pinned→pageable {r['fromPinnedGBs']} GB/s")
print()
print("| kernel | H | tokens | expert | CUDA kernel tokens/s | GB/s | torch eager | torch.compile | × eager | × compile |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in bench:
    if r["kind"] != "kernel":
        continue
    te = next((t for t in torch_rows if t.get("kind") == "torch-forward" and t["mode"] == "eager" and t["H"] == r["H"] and t["tokens"] == r["tokens"]), None)
    tc = next((t for t in torch_rows if t.get("kind") == "torch-forward" and t["mode"] == "compile" and t["H"] == r["H"] and t["tokens"] == r["tokens"]), None)
    te = te if r["expert"] else None
    tc = tc if r["expert"] else None
    label = "v" + str(r.get("version", 1)) + ("" if r.get("precision", "fp32") == "fp32" else " " + r["precision"])
    cells = [label, str(r["H"]), f"{r['tokens']:.0e}", "yes" if r["expert"] else "no", g(r["tokensPerSec"]), str(r["GBs"]),
             g(te["tokensPerSec"]) if te else "-", g(tc["tokensPerSec"]) if tc else "-",
             f"{r['tokensPerSec'] / te['tokensPerSec']:.1f}" if te else "-",
             f"{r['tokensPerSec'] / tc['tokensPerSec']:.1f}" if tc else "-"]
    print("| " + " | ".join(cells) + " |")
print()
print("| host arrays | H | tokens | expert | pipeline (C++, pageable host arrays) tokens/s | Node end-to-end tokens/s | transfer limit ms | Node ms | of limit |")
print("|---|---|---|---|---|---|---|---|---|")
for r in node:
    if r.get("kind") != "node-e2e":
        continue
    pl = next((b for b in bench if b["kind"] == "pipeline" and b["H"] == r["H"] and b["tokens"] == r["tokens"]), None)
    print(f"| {r.get('mode', 'staged')} | {r['H']} | {r['tokens']:.0e} | {'yes' if r['expert'] else 'no'} | {g(pl['tokensPerSec']) if pl and r['expert'] and r.get('mode', 'staged') == 'staged' else '-'} | "
          f"{g(r['tokensPerSec'])} | {r['transferLimitMs']:.1f} | {r['ms']:.1f} | {100 * r['ofTransferLimit']:.0f}% |")
print()
print("| step | H | batch | steps | CUDA ms/step | torch eager ms/step | × eager | loss first → last (CUDA) | (torch) |")
print("|---|---|---|---|---|---|---|---|---|")
for r in bench:
    if r["kind"] == "train-device":
        t = next((t for t in torch_rows if t.get("kind") == "torch-train" and t["H"] == r["H"] and t["batch"] == r["batch"]), None)
        x = f"{t['msPerStep']:.3f} | {t['msPerStep'] / r['msPerStep']:.1f}" if t else "- | -"
        print(f"| kernels, batch on the device (loss-gradient kernel alone {r['msLossGradKernel']:.3f}) | {r['H']} | {r['batch']} | - | {r['msPerStep']:.3f} | {x} | - | - |")
        continue
    if r["kind"] == "train-concurrent":
        print(f"| {r['routers']} routers at once on their own host threads, trainStepsOnSet calls of 16 (card in all; "
              f"{r['speedup']:.2f}× one router) | {r['H']} | {r['batch']} | {r['stepsEach']} each | {r['msPerStep']:.4f} | - | - | - | - |")
        continue
    if r["kind"] not in ("train", "train-fused", "train-set"):
        continue
    what = {"train": "host batches, lossAndGrad + adamwStep", "train-fused": f"host batches, trainSteps calls of {r.get('stepsPerCall', 1)}",
            "train-set": f"set on the device, trainStepsOnSet calls of {r.get('stepsPerCall', 1)}"}[r["kind"]]
    print("| " + what, end=" ")
    t = next((t for t in torch_rows if t.get("kind") == "torch-train" and t["H"] == r["H"] and t["batch"] == r["batch"]), None)
    print(f"| {r['H']} | {r['batch']} | {r['steps']} | {r['msPerStep']:.3f} | {t['msPerStep']:.3f} | {t['msPerStep'] / r['msPerStep']:.1f} | "
          f"{r['lossFirst']:.3f} → {r['lossLast']:.3f} | {t['lossFirst']:.3f} → {t['lossLast']:.3f} |" if t else
          f"| {r['H']} | {r['batch']} | {r['steps']} | {r['msPerStep']:.3f} | - | - | {r['lossFirst']:.3f} → {r['lossLast']:.3f} | - |")
print()
for r in node:
    if r.get("kind") in ("node-backend", "node-check", "node-torch-check"):
        print(json.dumps(r))
for name in ("train-gpu.txt", "train-cpu.txt"):
    p = os.path.join(out, name)
    if os.path.exists(p):
        text = open(p, encoding="utf8", errors="replace").read()
        keep = [l for l in text.splitlines() if re.match(r"(backend|per day:|per ticker|time:|mean confidence)", l.strip())]
        print(f"{name}: " + " | ".join(l.strip() for l in keep))
