"""Training and evaluation loops on device-resident tensors: teachers, students and planted networks."""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass
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
from .records import resume_record

LOSSES = ("ce", "kd")
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
    run = TrainingRun(model, data, cfg, teacher, targets, data_parallel, penalty, checkpoint)
    history = run.history  # the epochs a resumed state had trained, then this call's
    bar = tqdm(total=run.steps * (cfg.epochs - run.first), desc=desc, disable=not cfg.progress, leave=False)
    for epoch in range(run.first, cfg.epochs):
        t0 = time.perf_counter()
        train_loss = run.epoch(epoch, bar)
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
            run.save(checkpoint, epoch, history)
    bar.close()
    if history and warn_collapse:
        warn_if_collapsed(history[-1]["val_acc"], data.val, desc, f"lower the learning rate (now {cfg.lr}), "
                          f"lengthen the warm-up (now {cfg.warmup} epochs) or try another seed")
    return history


class TrainingRun:
    """One fit's set-up (checks, teacher targets, optimiser, schedule, the state it resumes from, the forward path)
    and its two kinds of step: eager, or the static step (graphstep.py: full batches replayed from a CUDA graph)."""

    def __init__(self, model: nn.Module, data: Data, cfg: TrainConfig, teacher: nn.Module | None,
                 targets: torch.Tensor | None, data_parallel: bool, penalty: Callable[[nn.Module], torch.Tensor] | None,
                 checkpoint: str | Path | None = None):
        cfg.check()
        self.model, self.data, self.cfg, self.teacher, self.dev = model, data, cfg, teacher, data.train.x.device
        to_device(model, self.dev).train()
        if cfg.loss == "kd":
            if teacher is None and targets is None:
                raise PlantingError("loss 'kd' needs a teacher (or its cached logits as targets)")
            if teacher is not None:
                check_pair(model, teacher)
                to_device(teacher, self.dev).eval()
            if targets is None and not cfg.augment:
                targets = teacher_logits(teacher, data.train.x, cfg.eval_batch_size)  # (N, K), once per run
        self.targets = targets
        check_forward(model, data.train.x[:2])
        self.params = trainable_parameters(model)
        if not self.params:
            raise PlantingError("this network has no trainable parameters")
        self.steps = math.ceil(len(data.train) / cfg.batch_size)
        self.opt = torch.optim.SGD(self.params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_schedule(cfg, self.steps))
        self.data_parallel, self.regularise = data_parallel, penalty or (lambda m: 0.0)
        self.history, self.first = self._resume(checkpoint)  # the epochs done so far, the first one to train
        self._prepare(self.first)

    def _resume(self, checkpoint: str | Path | None) -> tuple[list[dict], int]:
        """The history so far and the first epoch to train: from the training state at `checkpoint`, if any."""
        if checkpoint is None or not Path(checkpoint).exists():
            return [], 0
        state = safe_load(checkpoint, "training state")
        if state.get("config") != resume_record(self.cfg):
            raise PlantingError(f"{checkpoint}: this training state was written with other settings; "
                                f"delete it to start over, or use the settings it was made with")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        return state["history"], state["epoch"] + 1

    def save(self, checkpoint: str | Path, epoch: int, history: list[dict]) -> None:
        """Write the training state after `epoch` (atomically): a rerun resumes from the next one."""
        atomic_save({"config": resume_record(self.cfg), "model": self.model.state_dict(),
                     "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(), "epoch": epoch,
                     "history": history}, checkpoint)

    def _prepare(self, first: int) -> None:
        """The forward path (a frozen prefix, cached if it fits; DDP under torchrun) and the static step, if any."""
        cfg, model = self.cfg, self.model
        # a network with a frozen prefix (e.g. a planted one) computes it without autograd: once for all epochs if
        # no augmentation and it fits, else per batch
        self.frozen = model if isinstance(model, FrozenPrefix) else site_prefix(model)  # planted at a site: traced
        split = self.frozen is not None
        self.cache = (_prefix_cache(self.frozen, self.data.train.x, cfg)
                      if split and cfg.cache_frozen and not cfg.augment else None)
        # under torchrun: each process a shard of every batch; DDP averages the gradients over the processes
        self.parallel = self.data_parallel and distributed.active() and not split
        net = distributed.wrap(model) if self.parallel else model
        self.forward = self.frozen.forward_from_prefix if split else net  # (what inputs_of gives) -> (B, K) logits
        self.static = None
        if not self.parallel and use_graph(cfg.cuda_graph, self.dev, (len(self.data.train) // cfg.batch_size)
                                           * (cfg.epochs - first)):
            self.static = StaticStep(self.loss_of, self.params, optimizer_momenta(self.opt), cfg.momentum,
                                     cfg.weight_decay, capture=self.dev.type == "cuda")

    def inputs_of(self, idx: torch.Tensor, xb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """forward's inputs for a batch: the cached frozen prefix, the prefix computed now, or the images."""
        if self.cache is not None:
            return tuple(c[idx] for c in self.cache)
        return self.frozen.frozen_prefix(xb) if self.frozen is not None else (xb,)

    def batch_loss(self, logits: torch.Tensor, yb: torch.Tensor, tb: torch.Tensor | None) -> torch.Tensor:
        """The batch's mean loss: distillation (to teacher logits tb) or cross-entropy."""
        cfg = self.cfg
        return kd_loss(logits, tb, cfg.T, yb, cfg.alpha) if cfg.loss == "kd" else ce_loss(logits, yb)

    def loss_of(self, inputs: tuple[torch.Tensor, ...], yb: torch.Tensor,
                tb: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The static step's loss on (B, ...) inputs: (objective with the penalty, the batch's loss)."""
        with autocast(self.dev, cache=self.dev.type != "cuda"):
            loss = self.batch_loss(self.forward(*inputs), yb, tb)
        return loss + self.regularise(self.model), loss

    def teacher_targets(self, idx: torch.Tensor, xb: torch.Tensor) -> torch.Tensor | None:
        """The batch's teacher logits (B, K): cached, or the live teacher on the same (augmented) view."""
        if self.cfg.loss != "kd":
            return None
        if self.targets is not None:
            return self.targets[idx]
        with torch.no_grad():
            return self.teacher(xb)

    def epoch(self, epoch: int, bar: tqdm) -> float:
        """Train one epoch (its own seeded batch order and augmentation); the mean training loss."""
        cfg, data, n_train = self.cfg, self.data, len(self.data.train)
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        total = torch.zeros((), device=self.dev)
        for idx in batches(n_train, cfg.batch_size, shuffle=True, generator=gen, device=self.dev):
            xb, yb = data.train.x[idx], data.train.y[idx]  # (B, C, H, W), (B,)
            if cfg.augment:
                xb = augment(xb, gen, cfg.flip, cfg.crop_pad)
            batch = len(idx)
            if self.parallel:  # this process's share: every N-th image from its rank, (B / processes, ...)
                idx, xb, yb = (distributed.my_share(t) for t in (idx, xb, yb))
            with autocast(self.dev):
                tb = self.teacher_targets(idx, xb)
            if self.static is not None and batch == cfg.batch_size:  # a full batch: the static (CUDA graph) step
                total += self.static_step(idx, xb, yb, tb) * batch
            else:
                total += self.eager_step(idx, xb, yb, tb, batch)
            bar.update(1)
        return (distributed.all_sum(total) if self.parallel else total).item() / n_train  # one sync per epoch

    def static_step(self, idx: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor,
                    tb: torch.Tensor | None) -> torch.Tensor:
        """One full batch through the static step; its loss (on the device)."""
        with torch.no_grad(), autocast(self.dev):
            inputs = self.inputs_of(idx, xb)
        loss = self.static(inputs, yb, tb, self.opt.param_groups[0]["lr"])
        with warnings.catch_warnings():  # the static step updates through sgd_update, not opt.step()
            warnings.simplefilter("ignore", UserWarning)
            self.sched.step()
        return loss

    def eager_step(self, idx: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor, tb: torch.Tensor | None,
                   batch: int) -> torch.Tensor:
        """One optimiser step on this process's share of a batch of `batch` images; its summed loss (on the device)."""
        with autocast(self.dev):
            logits = self.forward(*self.inputs_of(idx, xb))  # (B, K)
            if len(idx):
                loss = self.batch_loss(logits, yb, tb)
            else:  # a process with no image of a short last batch still joins the gradient average
                loss = logits.sum() * 0.0
        # DDP averages over processes: scaled so that the step is the one of the whole batch's mean loss
        scale = len(idx) * distributed.world_size() / batch if self.parallel else 1.0
        self.opt.zero_grad(set_to_none=True)
        (loss * scale + self.regularise(self.model)).backward()
        self.opt.step()
        self.sched.step()
        return loss.detach() * len(idx)  # stays on the device: no host sync per step


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
