"""Planting speed, measured side by side in one run: our package against the obvious implementation.

    python -m planting_core.bench [--quick] [--device cpu|cuda]

Prints one line per comparison (a-e) with both figures and their ratio, the peak memory of one of our
planting rounds on the data used, (f) one planting round with its candidates trained together vs one at a time
(fused into one batched computation; on a CPU also concurrently, one thread each), (g) fit's throughput per width
with static steps (replayed from a CUDA graph on CUDA) vs eager steps, (h, CUDA only) the bare graph replay vs fit
with graph steps, each width's training also as GFLOP/s and as a fraction of the float32 matmul peak measured in the
same run (`peak_fraction_w8=<x>` for width 8); last `planting_round_speedup=<x>` for (d) and
`fused_round_speedup=<y>` for (f): the round with its candidates together as planting trains them by default on
this device (fused on CUDA, concurrently on a CPU) against one at a time.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler, Subset
from torchvision import datasets, transforms

import planting_core as pc
from planting_core.speed.graphstep import StaticStep, optimizer_momenta

CHANNELS = 4
GPU_FIT_STEPS = 1000  # (g, h) on CUDA: batches per timed fit (128,000 images; a third of a second at 340,000 img/s)


# ------------------------------------------------------------------ the naive reference implementation
class EpochOrder(Sampler):
    """Visit the training images in the same order as planting_core for a given seed and epoch."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
                    .tolist())

    def __len__(self) -> int:
        return self.n


def torchvision_split(data: pc.Data, split: str, root: Path) -> Subset:
    """The same images as data.<split>, read per sample by torchvision with ToTensor + Normalize."""
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(data.mean, data.std)])
    ds = datasets.FashionMNIST(str(root), train=split != "test", transform=tf)
    return Subset(ds, getattr(data, split).index.tolist())


class MaskedNet:
    """Full-width network trained with gradient masks: the obvious way to freeze old weights."""

    def __init__(self, planted: pc.PlainCNN, layer: int):
        self.net = pc.merge(planted)  # NCHW, every weight a parameter
        self.masks = {}
        old_out = planted.convs[layer].old_weight.shape[0]
        nxt = self.net.convs[layer + 1] if layer < 4 else self.net.fc1
        old_in = (planted.convs[layer + 1] if layer < 4 else planted.fc1).old_weight.shape[1]
        for p in self.net.parameters():
            self.masks[p] = torch.zeros_like(p)
        self.masks[self.net.convs[layer].weight][old_out:] = 1
        self.masks[self.net.convs[layer].bias][old_out:] = 1
        self.masks[nxt.weight][:, old_in:] = 1

    def step_grads(self, weight_decay: float) -> None:
        """Weight decay added by hand, then masked, so that old weights stay exactly where they were."""
        for p, m in self.masks.items():
            p.grad.add_(p.detach(), alpha=weight_decay).mul_(m)


def naive_fit(masked: MaskedNet, teacher: torch.nn.Module, train: Subset, cfg: pc.TrainConfig, steps: int | None = None):
    """DataLoader batches, live teacher, masked full weights, NCHW: one candidate's training."""
    net = masked.net.train()
    dev = next(net.parameters()).device
    sampler = EpochOrder(len(train), cfg.seed)
    loader = DataLoader(train, batch_size=cfg.batch_size, sampler=sampler)
    per_epoch = math.ceil(len(train) / cfg.batch_size)
    n_steps, warm = per_epoch * cfg.epochs, min(cfg.warmup * per_epoch, per_epoch * cfg.epochs)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=0.0)
    # the same schedule as planting_core: linear warm-up, then cosine to 0
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warm if s < warm else
                                              0.5 * (1 + math.cos(math.pi * (s - warm) / max(n_steps - warm, 1))))
    done = 0
    for epoch in range(cfg.epochs):
        sampler.epoch = epoch
        for x, y in loader:
            x, y = x.to(dev), y.to(dev)  # a DataLoader yields CPU batches: moved to the network's device each step
            with torch.no_grad():
                t = teacher(x)
            loss = pc.kd_loss(net(x), t, cfg.T)
            opt.zero_grad()
            loss.backward()
            masked.step_grads(cfg.weight_decay)
            opt.step()
            sched.step()
            done += 1
            if steps is not None and done >= steps:
                return


@torch.no_grad()
def naive_eval(net: torch.nn.Module, val: Subset) -> float:
    net.eval()
    total, n = 0.0, 0
    dev = next(net.parameters()).device
    for x, y in DataLoader(val, batch_size=1024):
        x, y = x.to(dev), y.to(dev)
        total += F.cross_entropy(net(x), y, reduction="sum").item()
        n += len(y)
    net.train()
    return total / n


def naive_round(current, teacher, train, val, cfg: pc.TrainConfig) -> list[float]:
    losses = []
    for layer in range(5):
        seed = cfg.seed * 1_000_003 + 1 * 101 + layer  # as planting_core.grow seeds round 1
        torch.manual_seed(seed)
        planted = pc.plant(current, layer, CHANNELS, generator=torch.Generator().manual_seed(seed))
        masked = MaskedNet(planted, layer)
        naive_fit(masked, teacher, train, replace(cfg, seed=seed))
        losses.append(naive_eval(masked.net, val))
    return losses


# ------------------------------------------------------------------ timing helpers
def timed(fn, repeat: int = 1) -> float:
    """Best wall time of `repeat` calls (seconds)."""
    best = math.inf
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def line(key: str, ours: float, theirs: float, unit: str, what: str, higher_is_better: bool = True) -> float:
    ratio = ours / theirs if higher_is_better else theirs / ours
    print(f"{key}: {what}: ours {ours:,.1f} {unit}, reference {theirs:,.1f} {unit}, ratio {ratio:.2f}x", flush=True)
    return ratio


def our_round(data, teacher, initial, cfg, fused: str = "auto", threads: int | None = None) -> tuple[pc.GrowResult, float]:
    """One planting round as planting_core runs it (fused, candidate_threads: as GrowConfig), and its seconds."""
    timed_sync = torch.cuda.synchronize if data.train.x.is_cuda else (lambda: None)
    timed_sync()
    t0 = time.perf_counter()
    res = pc.grow(initial, teacher, data, pc.GrowConfig(channels=CHANNELS, max_rounds=1, stop="fixed-rounds", train=cfg,
                                                       fused=fused, candidate_threads=threads), progress=False)
    timed_sync()
    return res, time.perf_counter() - t0


def fit_throughput(data: pc.Data, width: int, images: int, cuda_graph: str = "off") -> float:
    """Images per second of fit() on [width]*5 at batch 128 (CE), over `images` training images or more (as many
    epochs of the first `images` of the training split as that takes)."""
    net = pc.PlainCNN([width] * 5, **data.model_kwargs())
    n = min(images, len(data.train))
    sub = pc.Data(**{**data.__dict__, "train": pc.Split(data.train.x[:n], data.train.y[:n])})
    epochs = math.ceil(images / n)
    cfg = pc.TrainConfig(epochs=epochs, batch_size=128, progress=False, eval_each_epoch=False, cuda_graph=cuda_graph)
    pc.fit(net, sub, cfg)  # warm-up (allocator, cuDNN autotuning)
    return epochs * n / timed(lambda: pc.fit(net, sub, cfg))


def graph_throughput(data: pc.Data, width: int, steps: int) -> float:
    """Images per second of fit's training step (forward, backward, SGD) captured once in a CUDA graph and
    replayed with nothing else around it (no schedule, progress or epoch bookkeeping): the launch-free bound."""
    net = pc.device.to_device(pc.PlainCNN([width] * 5, **data.model_kwargs()), data.train.x.device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def loss_of(inputs, y, t):
        with pc.device.autocast(y.device, cache=False):
            loss = F.cross_entropy(net(*inputs).float(), y)
        return loss, loss
    step = StaticStep(loss_of, list(net.parameters()), optimizer_momenta(opt), 0.9, 5e-4,
                      capture=data.train.x.device.type == "cuda")
    order = torch.randperm(len(data.train), device=data.train.x.device)

    def replay():
        for i in range(steps):
            idx = order[(i * 128) % (len(order) - 128):][:128]
            step((data.train.x[idx],), data.train.y[idx], None, 0.01)
    replay()
    return steps * 128 / timed(replay)


@dataclass
class Setup:
    """What every comparison shares: the arguments, data (also as torchvision datasets), a briefly trained teacher
    and its logits, the initial network, the candidates' training and the number of steps each side times."""
    args: argparse.Namespace
    dev: torch.device
    data: pc.Data
    teacher: pc.PlainCNN
    initial: pc.PlainCNN
    cfg: pc.TrainConfig
    steps: int
    targets: torch.Tensor | None = None
    tv_train: object = None
    tv_val: object = None

    def student(self) -> pc.PlainCNN:
        """A fresh [student_width]*5 network."""
        return pc.PlainCNN([self.args.student_width] * 5, **self.data.model_kwargs())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(prog="python -m planting_core.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small subset, under 2 minutes on 2 CPU cores")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--subset", type=int, default=None, help="training images (default: 2000 quick, 10000 full)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per planting candidate (default 3)")
    ap.add_argument("--teacher-width", type=int, default=64)
    ap.add_argument("--student-width", type=int, default=8)
    ap.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def setup(a: argparse.Namespace) -> Setup:
    """Load the data and train the teacher (briefly: meaningful targets) and the initial network one epoch each."""
    subset = a.subset or (2000 if a.quick else 10_000)
    dev = pc.pick_device(a.device)
    if subset >= 60_000:  # all of it: 54,000 training and 6,000 validation images
        data = pc.load_data("fashion-mnist", val_size=0.1, seed=0, device=dev)
    else:
        data = pc.load_data("fashion-mnist", subset=subset, val_size=0.2, seed=0, device=dev)
    torch.manual_seed(0)
    teacher = pc.PlainCNN([a.teacher_width] * 5, **data.model_kwargs())
    pc.fit(teacher, pc.Data(**{**data.__dict__, "train": pc.Split(data.train.x[:2000], data.train.y[:2000])}),
           pc.TrainConfig(epochs=1, lr=0.02, progress=False))  # a briefly trained teacher: meaningful targets
    teacher.eval()
    initial = pc.PlainCNN([a.student_width] * 5, **data.model_kwargs())
    pc.fit(initial, data, pc.TrainConfig(epochs=1, lr=0.02, progress=False))
    cfg = pc.TrainConfig(epochs=a.epochs, lr=0.01, loss="kd", progress=False)
    return Setup(a, dev, data, teacher, initial, cfg, 20 if a.quick else 60)


def bench_data_path(b: Setup) -> None:
    """(a) data path: device-resident tensor batches vs a torchvision DataLoader, same model and loss."""
    data, steps = b.data, b.steps

    def ours():
        sub = pc.Data(**{**data.__dict__, "train": pc.Split(data.train.x[:steps * 128], data.train.y[:steps * 128])})
        pc.fit(b.student(), sub, pc.TrainConfig(epochs=1, progress=False))

    def ref():
        net = b.student().to(b.dev)
        opt = torch.optim.SGD(net.parameters(), lr=0.02, momentum=0.9, weight_decay=5e-4)
        for i, (x, y) in enumerate(DataLoader(b.tv_train, batch_size=128, shuffle=True)):
            x, y = x.to(b.dev), y.to(b.dev)
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
            if i + 1 == steps:
                break
    n_img = min(steps * 128, len(data.train))  # both sides stop at the end of the training split
    line("a", n_img / timed(ours, 2), n_img / timed(ref, 2), "img/s", "training throughput, tensor batches vs DataLoader")


def batch_indices(b: Setup) -> list[torch.Tensor]:
    """The same `steps` random batches of 128 for both sides of (b) and (c)."""
    return [torch.randint(0, len(b.data.train), (128,), generator=torch.Generator().manual_seed(i))
            for i in range(b.steps)]


def bench_kd_step(b: Setup) -> None:
    """(b) KD step: cached teacher logits vs a live teacher forward."""
    student = pc.device.to_device(b.student(), b.dev)
    opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
    idx = batch_indices(b)

    def kd_steps(live: bool):
        for ib in idx:
            x = b.data.train.x[ib]
            with torch.no_grad():
                t = b.teacher(x) if live else b.targets[ib]
            loss = pc.kd_loss(student(x), t, 4.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
    line("b", b.steps / timed(lambda: kd_steps(False), 2), b.steps / timed(lambda: kd_steps(True), 2), "steps/s",
         "KD step, cached teacher logits vs live teacher")


def bench_planted_step(b: Setup) -> None:
    """(c) planted step: split frozen/trainable tensors vs full weights with gradient masks."""
    layer, idx = 2, batch_indices(b)
    planted = pc.plant(b.initial, layer, CHANNELS).to(memory_format=torch.channels_last)
    masked = MaskedNet(planted, layer)
    masked.net.to(memory_format=torch.channels_last)
    opt_s = torch.optim.SGD(planted.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    opt_m = torch.optim.SGD(masked.net.parameters(), lr=0.01, momentum=0.9, weight_decay=0.0)

    def planted_steps(split: bool):
        net, o = (planted, opt_s) if split else (masked.net, opt_m)
        for ib in idx:
            x = b.data.train.x[ib]
            out = net.forward_from_prefix(*net.frozen_prefix(x)) if split else net(x)  # as fit() runs it
            loss = pc.kd_loss(out, b.targets[ib], 4.0)
            o.zero_grad()
            loss.backward()
            if not split:
                masked.step_grads(5e-4)
            o.step()
    line("c", b.steps / timed(lambda: planted_steps(True), 2), b.steps / timed(lambda: planted_steps(False), 2),
         "steps/s", "planted step (conv3), split frozen/trainable vs masked full weights")


def bench_prefix(b: Setup) -> None:
    """(e) the frozen layers before the planted one: computed once and cached vs recomputed every batch."""
    def prefix_fit(cache: bool, at: int):
        p = pc.plant(b.initial, at, CHANNELS, generator=torch.Generator().manual_seed(0))
        pc.fit(p, b.data, replace(b.cfg, cache_frozen=cache), targets=b.targets)
    for at in (2, 4):
        line(f"e{at + 1}", 1 / timed(lambda: prefix_fit(True, at)), 1 / timed(lambda: prefix_fit(False, at)),
             "fits/s", f"planted conv{at + 1} candidate, frozen part computed once vs every batch")


def bench_round(b: Setup) -> tuple[float, bool, float]:
    """(d) one full planting round: five candidates, same data, epochs and seeds, ours vs the naive reference;
    (speedup, same layer chosen, largest difference of validation losses)."""
    res, t_ours = our_round(b.data, b.teacher, b.initial, b.cfg)
    t0 = time.perf_counter()
    ref_losses = naive_round(b.initial, b.teacher, b.tv_train, b.tv_val, b.cfg)
    t_ref = time.perf_counter() - t0
    ours_losses = res.history[res.history["round"] == 1].sort_values("layer")["val_loss"].tolist()
    same_layer = min(range(5), key=lambda i: ours_losses[i]) == min(range(5), key=lambda i: ref_losses[i])
    diff = max(abs(x - y) for x, y in zip(ours_losses, ref_losses))
    print("d: validation loss per planted layer, ours " + ", ".join(f"{v:.4f}" for v in ours_losses)
          + "; reference " + ", ".join(f"{v:.4f}" for v in ref_losses)
          + f"; max difference {diff:.2e}; same layer chosen: {same_layer}", flush=True)
    return line("d", t_ours, t_ref, "s", "one planting round of 5 candidates", higher_is_better=False), same_layer, diff


def bench_memory(a: argparse.Namespace) -> None:
    """Peak memory of a process running one planting round (a subprocess: its own peak RSS)."""
    mem_subset = (a.subset or 2000) if a.quick else 60_000  # default: the whole training set (54,000 after val)
    mem = subprocess.run([sys.executable, "-m", "planting_core.bench", "--memory-only", "--subset", str(mem_subset),
                          "--device", a.device, "--epochs", str(a.epochs), "--teacher-width", str(a.teacher_width),
                          "--student-width", str(a.student_width)], capture_output=True, text=True, check=True)
    peak = json.loads(mem.stdout.strip().splitlines()[-1])["peak_rss_mib"]
    print(f"memory: peak RSS of a process running one of our planting rounds on "
          f"{'these' if a.quick else 'all 54,000 Fashion-MNIST'} training images: {peak:,.0f} MiB")


def bench_together(b: Setup) -> float:
    """(f) one planting round, the candidates together vs one at a time (every thread on one candidate), same
    device: fused into one batched computation (fused.py), and on a CPU concurrently, one thread each
    (parallel.py). Returns the ratio of this device's default path."""
    variants = {"one at a time": ("off", 1), "fused": ("on", 1)}  # (fused, candidate_threads)
    if b.dev.type == "cpu":
        variants["concurrent"] = ("off", None)
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(3):  # interleaved, the fastest of 3 each: a drift in the machine's speed hits every variant alike
        for name, (fused, threads) in variants.items():
            best[name] = min(best[name], our_round(b.data, b.teacher, b.initial, b.cfg, fused=fused,
                                                   threads=threads)[1])
    together = {"fused": line("f", best["fused"], best["one at a time"], "s", "one planting round, candidates fused "
                              "(one batched computation) vs one at a time", higher_is_better=False)}
    if b.dev.type == "cpu":
        at_once = min(pc.speed.parallel.candidate_threads(None, b.dev), 5)
        together["concurrent"] = line("f-threads", best["concurrent"], best["one at a time"], "s", f"one planting "
                                      f"round, candidates {at_once} at once (one thread each) vs one at a time",
                                      higher_is_better=False)
    default_path = "fused" if b.dev.type == "cuda" else "concurrent"
    print(f"f: planting's default here is {default_path}: fused_round_speedup is its ratio", flush=True)
    return together[default_path]


def train_step_flops(data: pc.Data, width: int, batch: int = 128) -> float:
    """Floating-point operations of one training step (forward and backward, cross-entropy) of [width]*5 at
    `batch`, as torch.utils.flop_counter counts them."""
    from torch.utils.flop_counter import FlopCounterMode
    net = pc.device.to_device(pc.PlainCNN([width] * 5, **data.model_kwargs()), data.train.x.device)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(net(data.train.x[:batch]), data.train.y[:batch]).backward()
    return float(counter.get_total_flops())


def training_dtype(device: torch.device) -> torch.dtype:
    """The precision fit's matrix work runs in on `device`: bf16 under CUDA's autocast, else float32."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def matmul_peak(device: torch.device, n: int = 2048) -> float:
    """This machine's matrix-multiply rate in FLOP/s (n x n, torch.utils.benchmark's median, all threads), in the
    precision training computes in there (bf16 under CUDA's autocast, else float32): the limit the training
    figures are read against."""
    from torch.utils import benchmark
    a, b = (torch.randn(n, n, device=device, dtype=training_dtype(device)) for _ in range(2))
    timer = benchmark.Timer("a @ b", globals={"a": a, "b": b}, num_threads=torch.get_num_threads())
    return 2 * n ** 3 / timer.blocked_autorange(min_run_time=1.0).median


def bench_fit(b: Setup) -> float:
    """(g) fit's throughput at batch 128 per width: eager steps vs static steps (replayed from a CUDA graph on
    CUDA; the same step run eagerly elsewhere), each read as GFLOP/s and as a fraction of this machine's matmul
    peak measured in the same run; and (h) on CUDA the bare replay of that graph (launch-free bound). Returns
    width 8's fraction of the peak."""
    fit_steps = GPU_FIT_STEPS if b.dev.type == "cuda" else b.steps  # on CUDA: enough batches for the steady state
    peak = matmul_peak(b.dev)
    precision = str(training_dtype(b.dev)).removeprefix("torch.")
    print(f"peak: {precision} 2048x2048 matmul on {b.dev}: {peak / 1e9:,.1f} GFLOP/s", flush=True)
    fractions = {}
    for width in (8, 16, 32, 64, 128):
        eager = fit_throughput(b.data, width, fit_steps * 128, "off")
        static = fit_throughput(b.data, width, fit_steps * 128, "on")
        kind = "replayed from a CUDA graph" if b.dev.type == "cuda" else "static, run eagerly (no CUDA)"
        line(f"g{width}", static, eager, "img/s", f"fit at batch 128, [{width}]*5, steps {kind} vs eager steps")
        achieved = max(static, eager) / 128 * train_step_flops(b.data, width)  # FLOP/s of the faster path
        fractions[width] = achieved / peak
        print(f"g{width}-peak: fit at batch 128, [{width}]*5: {achieved / 1e9:,.1f} GFLOP/s, "
              f"{fractions[width]:.0%} of the matmul peak", flush=True)
        if b.dev.type == "cuda":
            line(f"h{width}", graph_throughput(b.data, width, fit_steps), static, "img/s",
                 f"the bare graph replay (launch-free bound) vs fit with graph steps, [{width}]*5")
    return fractions[8]


def main(argv: list[str] | None = None) -> None:
    """Run every comparison and print one line each; the last lines are planting_round_speedup=<x> and
    fused_round_speedup=<x>."""
    a = parse_args(argv)
    b = setup(a)
    if a.memory_only:
        our_round(b.data, b.teacher, b.initial, b.cfg)
        print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
        return
    print(f"machine: {platform.machine()}, {platform.processor() or platform.platform()}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, device {b.dev}; Fashion-MNIST train {len(b.data.train)}, "
          f"val {len(b.data.val)}; teacher [{a.teacher_width}]*5, student [{a.student_width}]*5, {CHANNELS} channels "
          f"per step, {a.epochs} epoch(s) per candidate", flush=True)
    root = pc.data.default_root()
    b.tv_train, b.tv_val = torchvision_split(b.data, "train", root), torchvision_split(b.data, "val", root)
    b.targets = pc.teacher_logits(b.teacher, b.data.train.x)
    bench_data_path(b)
    bench_kd_step(b)
    bench_planted_step(b)
    bench_prefix(b)
    speedup, same_layer, diff = bench_round(b)
    bench_memory(a)
    fused_speedup = bench_together(b)
    peak_fraction = bench_fit(b)
    print(f"peak_fraction_w8={peak_fraction:.3f}")
    print(f"planting_round_speedup={speedup:.2f}")
    print(f"fused_round_speedup={fused_speedup:.2f}")
    if not same_layer or diff > 0.02:
        sys.exit("ERROR: the reference and planting_core disagree beyond tolerance (0.02): a bug in one of them")


if __name__ == "__main__":
    main()
