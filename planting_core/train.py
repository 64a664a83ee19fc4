"""Training and evaluation loops on device-resident tensors: teachers, students and planted networks."""
from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import TqdmWarning
from tqdm.auto import tqdm

warnings.filterwarnings("ignore", category=TqdmWarning)  # no ipywidgets: tqdm.auto falls back to text bars

from .checkpoint import atomic_save, safe_load
from .data import Data, Split, augment, batches
from .distill import ce_loss, kd_loss, teacher_logits
from .errors import NonFiniteLossError, PlantingError
from .models import to_device
from .planting import frozen_inputs, is_planted, planted_forward, trainable_parameters

LOSSES = ("ce", "kd")
NOT_EVALUATED = {"loss": float("nan"), "acc": float("nan")}  # an epoch that was not validated


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The device to use: cuda, then mps, then cpu when `device` is None or "auto"; else the one named."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise PlantingError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PlantingError(f"device {device!r} was asked for, but no CUDA GPU is available; use 'auto' or 'cpu'")
    return dev


@dataclass
class TrainConfig:
    """How one network is trained (every choice the paper leaves open, in one place)."""
    epochs: int = 10  # passes over the training split
    batch_size: int = 128  # images per SGD step
    lr: float = 0.05  # peak learning rate, reached after the warm-up, then cosine-annealed to 0
    warmup: float = 1.0  # epochs of linear learning-rate warm-up (keeps plain, BN-free nets from dying early)
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 5e-4  # L2 on the trainable weights only (frozen buffers never see it)
    loss: str = "ce"  # "ce": labels; "kd": distil from the teacher
    T: float = 4.0  # KD temperature
    alpha: float = 0.0  # weight of CE mixed into the KD loss (0 = pure KD, as on the poster)
    augment: bool = False  # random flip + crop on the device (the teacher then runs live)
    flip: bool = True  # with augment: random horizontal flips
    crop_pad: int = 2  # with augment: zero padding of the random crop, in pixels
    seed: int = 0  # batch order and augmentation; same seed, same run
    eval_batch_size: int = 256  # images per forward pass when evaluating (256 is fastest on CPU here)
    cache_frozen: bool = True  # planted nets: compute the frozen part once, not every epoch (no augmentation)
    cache_bytes: int = 2 ** 30  # ...if it fits in this many bytes; else it is recomputed per batch
    progress: bool = True  # tqdm progress bar
    eval_each_epoch: bool = True  # validate after every epoch (else only after the last one)

    def check(self) -> "TrainConfig":
        """Raise a PlantingError naming the first bad field."""
        for name in ("epochs", "batch_size", "eval_batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < (0 if name == "epochs" else 1):
                raise PlantingError(f"{name} must be a {'non-negative' if name == 'epochs' else 'positive'} "
                                    f"integer, got {v!r}")
        if self.loss not in LOSSES:
            raise PlantingError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        for name in ("lr", "T", "momentum", "weight_decay", "alpha", "warmup"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise PlantingError(f"{name} must be a non-negative number, got {v!r}")
        if self.T <= 0 or not 0 <= self.alpha <= 1:
            raise PlantingError(f"need T > 0 and 0 <= alpha <= 1, got T={self.T!r}, alpha={self.alpha!r}")
        return self


def _autocast(device: torch.device):
    """bf16 autocast on CUDA; nothing elsewhere (CPU bf16 is slower for these small convs)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch_size: int = 256, targets: torch.Tensor | None = None,
             T: float = 4.0) -> dict[str, float]:
    """Cross-entropy loss and accuracy of `model` on a split; with teacher logits `targets` (N, K) also "kd"."""
    was_training = model.training
    dev = split.x.device
    to_device(model, dev).eval()
    loss_sum, kd_sum = torch.zeros((), device=dev), torch.zeros((), device=dev)
    correct = torch.zeros((), device=dev, dtype=torch.long)
    with _autocast(dev):
        for i in range(0, len(split), batch_size):
            logits = model(split.x[i:i + batch_size]).float()  # (B, K)
            y = split.y[i:i + batch_size]
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
            if targets is not None:
                kd_sum += kd_loss(logits, targets[i:i + batch_size], T) * len(y)
    model.train(was_training)
    n = max(len(split), 1)
    out = {"loss": loss_sum.item() / n, "acc": correct.item() / n}  # one host sync per evaluation
    if targets is not None:
        out["kd"] = kd_sum.item() / n
    return out


def check_pair(student: nn.Module, teacher: nn.Module) -> None:
    """Raise a PlantingError if teacher and student disagree in classes or input shape."""
    for key in ("num_classes", "in_channels", "image_size"):
        s, t = getattr(student, key, None), getattr(teacher, key, None)
        if s is not None and t is not None and s != t:
            raise PlantingError(f"teacher and student disagree in {key}: teacher {t}, student {s}; "
                                f"distillation needs the same classes and input shape")


def _frozen_cache(model: nn.Module, x: torch.Tensor, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor] | None:
    """frozen_inputs() for the whole training split, or None if it would not fit in cfg.cache_bytes."""
    h, z = frozen_inputs(model, x[:1])
    if (h.numel() + z.numel()) * h.element_size() * len(x) > cfg.cache_bytes:
        return None
    parts = [frozen_inputs(model, x[i:i + cfg.eval_batch_size]) for i in range(0, len(x), cfg.eval_batch_size)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def fit(model: nn.Module, data: Data, cfg: TrainConfig, teacher: nn.Module | None = None,
        targets: torch.Tensor | None = None, checkpoint: str | Path | None = None, desc: str = "train") -> list[dict]:
    """Train the trainable parameters of `model` (all of a plain net, only the new ones of a planted net).

    loss "kd" distils from `teacher`; `targets` may pass its cached train-split logits (N, K). With
    `checkpoint`, the state is written atomically after every epoch and a rerun resumes from it.
    Returns one dict per epoch: epoch, train_loss, val_loss, val_acc, seconds.
    """
    cfg.check()
    dev = data.train.x.device
    to_device(model, dev).train()
    if cfg.loss == "kd":
        if teacher is None and targets is None:
            raise PlantingError("loss 'kd' needs a teacher (or its cached logits as targets)")
        if teacher is not None:
            check_pair(model, teacher)
            to_device(teacher, dev).eval()
        if targets is None and not cfg.augment:
            targets = teacher_logits(teacher, data.train.x, cfg.eval_batch_size)  # (N, K), once per run
    params = trainable_parameters(model)
    if not params:
        raise PlantingError("this network has no trainable parameters")
    steps = math.ceil(len(data.train) / cfg.batch_size)
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    n_steps, warm = steps * cfg.epochs, min(cfg.warmup * steps, steps * cfg.epochs)

    def lr_factor(s: int) -> float:  # linear warm-up, then cosine to 0; stepped once per batch
        if s < warm:
            return (s + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(s - warm, n_steps - warm) / max(n_steps - warm, 1)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    history: list[dict] = []
    first = 0
    if checkpoint is not None and Path(checkpoint).exists():
        state = safe_load(checkpoint, "training state")
        if state.get("config") != asdict(replace(cfg, progress=True)):
            raise PlantingError(f"{checkpoint}: this training state was written with other settings; "
                                f"delete it to start over, or use the settings it was made with")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        history, first = state["history"], state["epoch"] + 1
    # a planted net's frozen part (layers before the planted one, the old channels of it and of the next
    # layer) is computed without autograd: once for all epochs if no augmentation and it fits, else per batch
    planted = is_planted(model) and hasattr(model, "planted_layer")
    cache = _frozen_cache(model, data.train.x, cfg) if planted and cfg.cache_frozen and not cfg.augment else None
    n_train = len(data.train)
    bar = tqdm(total=steps * (cfg.epochs - first), desc=desc, disable=not cfg.progress, leave=False)
    for epoch in range(first, cfg.epochs):
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        total = torch.zeros((), device=dev)
        for idx in batches(n_train, cfg.batch_size, shuffle=True, generator=gen, device=dev):
            xb, yb = data.train.x[idx], data.train.y[idx]
            if cfg.augment:
                xb = augment(xb, gen, cfg.flip, cfg.crop_pad)
            with _autocast(dev):
                if cfg.loss == "kd":
                    if targets is not None:
                        tb = targets[idx]
                    else:
                        with torch.no_grad():
                            tb = teacher(xb)  # live teacher on the same augmented view
                if cache is not None:
                    logits = planted_forward(model, cache[0][idx], cache[1][idx])  # (B, K)
                elif planted:
                    logits = planted_forward(model, *frozen_inputs(model, xb))
                else:
                    logits = model(xb)
                loss = kd_loss(logits, tb, cfg.T, yb, cfg.alpha) if cfg.loss == "kd" else ce_loss(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.detach() * len(idx)  # stays on the device: no host sync per step
            bar.update(1)
        train_loss = total.item() / n_train  # one sync per epoch
        if not math.isfinite(train_loss):
            bar.close()
            raise NonFiniteLossError(f"{desc}: the training loss became {train_loss} in epoch {epoch + 1}; "
                                     f"lower the learning rate (now {cfg.lr})")
        last = epoch + 1 == cfg.epochs
        val = evaluate(model, data.val, cfg.eval_batch_size) if cfg.eval_each_epoch or last else NOT_EVALUATED
        history.append(dict(epoch=epoch + 1, train_loss=train_loss, val_loss=val["loss"], val_acc=val["acc"],
                            seconds=time.perf_counter() - t0))
        bar.set_postfix(loss=f"{train_loss:.3f}", val_acc=f"{val['acc']:.3f}")
        if checkpoint is not None:
            atomic_save({"config": asdict(replace(cfg, progress=True)), "model": model.state_dict(),
                         "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch,
                         "history": history}, checkpoint)
    bar.close()
    return history
