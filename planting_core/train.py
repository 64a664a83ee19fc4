"""Training and evaluation loops on device-resident tensors: teachers, students and planted networks."""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import TqdmWarning
from tqdm.auto import tqdm

warnings.filterwarnings("ignore", category=TqdmWarning)  # no ipywidgets: tqdm.auto falls back to text bars

from .speed import distributed
from .checkpoint import atomic_save, safe_load
from .data import Data, Split, augment, batches
from .device import autocast, to_device
from .distill import ce_loss, kd_loss, teacher_logits
from .errors import NonFiniteLossError, PlantingError
from .speed.graphstep import StaticStep, optimizer_momenta, use_graph
from .fields import FIELDS, check_field, default
from .prefix import site_prefix

LOSSES = ("ce", "kd")
# TrainConfig fields that change only how fast it trains (added later): no saved state or setting records them
TRAIN_SPEED_FIELDS = ("cuda_graph",)
NOT_EVALUATED = {"loss": float("nan"), "acc": float("nan")}  # an epoch that was not validated


@dataclass
class TrainConfig:
    """How one network is trained (every choice the paper leaves open); defaults and meanings: planting_core.fields."""
    epochs: int = default("epochs")  # passes over the training split
    batch_size: int = default("batch_size")  # images per SGD step
    lr: float = default("lr")  # peak learning rate, reached after the warm-up, then cosine-annealed to 0
    warmup: float = default("warmup")  # epochs of linear learning-rate warm-up
    momentum: float = default("momentum")  # SGD momentum
    weight_decay: float = default("weight_decay")  # L2 on the trainable weights only
    loss: str = "ce"  # "ce": labels; "kd": distil from the teacher
    T: float = default("T")  # KD temperature
    alpha: float = default("alpha")  # weight of CE mixed into the KD loss (0 = pure KD, as on the poster)
    augment: bool = default("augment")  # random flip + crop on the device (the teacher then runs live)
    flip: bool = default("flip")  # with augment: random horizontal flips
    crop_pad: int = default("crop_pad")  # with augment: zero padding of the random crop, in pixels
    seed: int = 0  # batch order and augmentation; same seed, same run
    eval_batch_size: int = default("eval_batch_size")  # images per forward pass when evaluating
    cache_frozen: bool = default("cache_frozen")  # frozen prefix computed once, not every epoch (no augmentation)
    cache_bytes: int = default("cache_bytes")  # ...if it fits in this many bytes; else recomputed per batch
    cuda_graph: str = default("cuda_graph")  # full batches' steps replayed from a CUDA graph: "auto", "on", "off"
    progress: bool = default("progress")  # tqdm progress bar
    eval_each_epoch: bool = default("eval_each_epoch")  # validate after every epoch (else only after the last)

    def check(self) -> "TrainConfig":
        """Raise a PlantingError naming the first field the parameter table does not allow."""
        if self.loss not in LOSSES:
            raise PlantingError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        for name, value in asdict(self).items():
            if name not in ("loss", "seed"):  # seed: candidates derive their own, larger than a user's
                check_field(name, value)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2 ** 40:
            raise PlantingError(f"seed must be an integer from 0 to 2**40 - 1, got {self.seed!r}")
        return self


@runtime_checkable
class FrozenPrefix(Protocol):
    """A network whose forward pass starts with a part that never trains.

    fit() computes ``frozen_prefix(x)`` without autograd (once for all epochs when the images do not change, i.e.
    without augmentation, and it fits in memory) and trains through ``forward_from_prefix(*prefix)``, which
    returns the logits.
    """
    def frozen_prefix(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]: ...

    def forward_from_prefix(self, *prefix: torch.Tensor) -> torch.Tensor: ...


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch_size: int = 256, targets: torch.Tensor | None = None,
             T: float = FIELDS["T"].default) -> dict[str, float]:
    """Cross-entropy loss and accuracy of `model` on a split; with teacher logits `targets` (N, K) also "kd"."""
    was_training = model.training
    dev = split.x.device
    to_device(model, dev).eval()
    loss_sum, kd_sum = torch.zeros((), device=dev), torch.zeros((), device=dev)
    correct = torch.zeros((), device=dev, dtype=torch.long)
    with autocast(dev):
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


@torch.no_grad()
def check_forward(model: nn.Module, x: torch.Tensor) -> None:
    """Run `model` once on two images (evaluation mode: no statistics change), so that a network that cannot take
    the data fails now with one line, not mid-training with a traceback."""
    was_training = model.training
    try:
        model.eval()(x)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        hint = (" (its forward uses .view() on channels-last images: use .reshape() or torch.flatten(x, 1))"
                if "view size is not compatible" in first else "")
        raise PlantingError(f"{type(model).__name__} cannot take this data's images {tuple(x.shape[1:])}{hint}: "
                            f"{first}") from None
    finally:
        model.train(was_training)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters an optimiser should see (in a planted network: only the new weights)."""
    return [p for p in model.parameters() if p.requires_grad]


def _prefix_cache(model: FrozenPrefix, x: torch.Tensor, cfg: TrainConfig) -> tuple[torch.Tensor, ...] | None:
    """model.frozen_prefix() of the whole training split, or None if it would not fit in cfg.cache_bytes."""
    per_image = sum(t[:1].numel() * t.element_size() for t in model.frozen_prefix(x[:1]))
    if per_image * len(x) > cfg.cache_bytes:
        return None
    parts = [model.frozen_prefix(x[i:i + cfg.eval_batch_size]) for i in range(0, len(x), cfg.eval_batch_size)]
    return tuple(torch.cat(p) for p in zip(*parts))


def resume_record(cfg: TrainConfig) -> dict:
    """The settings a training state is saved with and must match to resume: every field but the speed switches
    (TRAIN_SPEED_FIELDS: states saved before them still resume), progress bars always recorded as on."""
    return {k: v for k, v in asdict(replace(cfg, progress=True)).items() if k not in TRAIN_SPEED_FIELDS}


def lr_schedule(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """The learning rate's factor at step s (0-based, one step per batch): linear warm-up over cfg.warmup
    epochs, then cosine to 0 at the last step."""
    n_steps = steps_per_epoch * cfg.epochs
    warm = min(cfg.warmup * steps_per_epoch, n_steps)

    def factor(s: int) -> float:
        if s < warm:
            return (s + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(s - warm, n_steps - warm) / max(n_steps - warm, 1)))
    return factor


def fit(model: nn.Module, data: Data, cfg: TrainConfig, teacher: nn.Module | None = None,
        targets: torch.Tensor | None = None, checkpoint: str | Path | None = None, desc: str = "train",
        data_parallel: bool = False, penalty: Callable[[nn.Module], torch.Tensor] | None = None,
        warn_collapse: bool = True) -> list[dict]:
    """Train the trainable parameters of `model` (those with requires_grad; a FrozenPrefix trains through its
    own fast path).

    loss "kd" distils from `teacher`; `targets` may pass its cached train-split logits (N, K). With
    `checkpoint`, the state is written atomically after every epoch and a rerun resumes from it. With
    `data_parallel` under torchrun, each process trains on its share of every batch (DistributedDataParallel;
    the global batch stays `batch_size`). `penalty(model)`, if given, is added to every step's loss (e.g.
    pruning's group-sparse regulariser; the logged train loss leaves it out).
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
    check_forward(model, data.train.x[:2])
    params = trainable_parameters(model)
    if not params:
        raise PlantingError("this network has no trainable parameters")
    steps = math.ceil(len(data.train) / cfg.batch_size)
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(cfg, steps))
    history: list[dict] = []
    first = 0
    if checkpoint is not None and Path(checkpoint).exists():
        state = safe_load(checkpoint, "training state")
        if state.get("config") != resume_record(cfg):
            raise PlantingError(f"{checkpoint}: this training state was written with other settings; "
                                f"delete it to start over, or use the settings it was made with")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        history, first = state["history"], state["epoch"] + 1
    # a network with a frozen prefix (e.g. a planted one) computes it without autograd: once for all epochs if
    # no augmentation and it fits, else per batch
    frozen = model if isinstance(model, FrozenPrefix) else site_prefix(model)  # a network planted at a site: traced
    split = frozen is not None
    cache = _prefix_cache(frozen, data.train.x, cfg) if split and cfg.cache_frozen and not cfg.augment else None
    n_train = len(data.train)
    # under torchrun: each process a shard of every batch; DDP averages the gradients over the processes
    parallel = data_parallel and distributed.active() and not split
    net = distributed.wrap(model) if parallel else model
    regularise = penalty or (lambda m: 0.0)
    forward = frozen.forward_from_prefix if split else net  # (what inputs_of gives) -> (B, K) logits

    def inputs_of(idx: torch.Tensor, xb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """forward's inputs for a batch: the cached frozen prefix, the prefix computed now, or the images."""
        if cache is not None:
            return tuple(c[idx] for c in cache)
        return frozen.frozen_prefix(xb) if split else (xb,)

    def batch_loss(logits: torch.Tensor, yb: torch.Tensor, tb: torch.Tensor | None) -> torch.Tensor:
        return kd_loss(logits, tb, cfg.T, yb, cfg.alpha) if cfg.loss == "kd" else ce_loss(logits, yb)
    static = None  # the static step (graphstep.py): full batches replayed from a CUDA graph
    if not parallel and use_graph(cfg.cuda_graph, dev, (n_train // cfg.batch_size) * (cfg.epochs - first)):
        def loss_of(inputs, yb, tb):  # (B, ...) inputs -> (objective with the penalty, the batch's loss)
            with autocast(dev, cache=dev.type != "cuda"):
                loss = batch_loss(forward(*inputs), yb, tb)
            return loss + regularise(model), loss
        static = StaticStep(loss_of, params, optimizer_momenta(opt), cfg.momentum, cfg.weight_decay,
                            capture=dev.type == "cuda")
    bar = tqdm(total=steps * (cfg.epochs - first), desc=desc, disable=not cfg.progress, leave=False)
    for epoch in range(first, cfg.epochs):
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        total = torch.zeros((), device=dev)
        for idx in batches(n_train, cfg.batch_size, shuffle=True, generator=gen, device=dev):
            xb, yb = data.train.x[idx], data.train.y[idx]  # (B, C, H, W), (B,)
            if cfg.augment:
                xb = augment(xb, gen, cfg.flip, cfg.crop_pad)
            batch = len(idx)
            if parallel:  # this process's share: every N-th image from its rank, (B / processes, ...)
                idx, xb, yb = (distributed.my_share(t) for t in (idx, xb, yb))
            with autocast(dev):
                tb = None
                if cfg.loss == "kd":
                    if targets is not None:
                        tb = targets[idx]
                    else:
                        with torch.no_grad():
                            tb = teacher(xb)  # live teacher on the same augmented view
            if static is not None and batch == cfg.batch_size:  # a full batch: the static (CUDA graph) step
                with torch.no_grad(), autocast(dev):
                    inputs = inputs_of(idx, xb)
                total += static(inputs, yb, tb, opt.param_groups[0]["lr"]) * batch
                with warnings.catch_warnings():  # the static step updates through sgd_update, not opt.step()
                    warnings.simplefilter("ignore", UserWarning)
                    sched.step()
                bar.update(1)
                continue
            with autocast(dev):
                logits = forward(*inputs_of(idx, xb))  # (B, K)
                if len(idx):
                    loss = batch_loss(logits, yb, tb)
                else:  # a process with no image of a short last batch still joins the gradient average
                    loss = logits.sum() * 0.0
            # DDP averages over processes: scaled so that the step is the one of the whole batch's mean loss
            scale = len(idx) * distributed.world_size() / batch if parallel else 1.0
            opt.zero_grad(set_to_none=True)
            (loss * scale + regularise(model)).backward()
            opt.step()
            sched.step()
            total += loss.detach() * len(idx)  # stays on the device: no host sync per step
            bar.update(1)
        train_loss = (distributed.all_sum(total) if parallel else total).item() / n_train  # one sync per epoch
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
            atomic_save({"config": resume_record(cfg), "model": model.state_dict(),
                         "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch,
                         "history": history}, checkpoint)
    bar.close()
    if history and warn_collapse:
        warn_if_collapsed(history[-1]["val_acc"], data.val, desc, f"lower the learning rate (now {cfg.lr}), "
                          f"lengthen the warm-up (now {cfg.warmup} epochs) or try another seed")
    return history


def warn_if_collapsed(val_acc: float, val: Split, what: str, advice: str) -> bool:
    """One warning line if a network is no better on validation than always guessing the most common class (a
    collapsed network, e.g. a narrow plain one whose ReLUs all died), with `advice`; returns whether it warned."""
    if not len(val) or val_acc != val_acc:
        return False
    majority = torch.bincount(val.y).max().item() / len(val)
    if val_acc > majority + 1e-9:
        return False
    warnings.warn(f"{what}: validation accuracy {val_acc:.1%} is no better than always guessing one class "
                  f"({majority:.1%}): the network collapsed; {advice}", stacklevel=3)
    return True
