"""fit's training step replayed from a CUDA graph: forward, loss, backward and SGD update on fixed-shape batches,
captured once and replayed for every full batch, so that a small network no longer waits on Python and kernel
launches (on an H100 the eager step of a [8]*5 network is launch-bound: issue 11's measurements).

The update is torch.optim.SGD's (weight decay, then momentum without dampening), written with the learning rate
as a 0-dim device tensor so that one captured graph serves every step of the schedule; its momentum buffers are
the optimiser's own, so checkpoints and the eager steps (a short last batch) share them. Off CUDA, mode "on" runs
the same static step eagerly: that is how the CPU tests check it against the eager path.
"""
from __future__ import annotations

import warnings
from typing import Callable, Sequence

import torch
from torch import nn

MODES = ("auto", "on", "off")
WARMUP_STEPS = 3  # eager steps on a side stream before the capture, as CUDA graph capture requires
MIN_GRAPH_STEPS = 100  # "auto" captures only a fit with at least this many full batches (capture costs time)

# (inputs, labels, teacher logits or None) -> (what the step differentiates, the batch's loss to log), both 0-dim
StepLoss = Callable[[Sequence[torch.Tensor], torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]]


def use_graph(mode: str, device: torch.device, full_batches: int) -> bool:
    """Whether fit takes the static step: "on" always; "auto" on CUDA for fits of MIN_GRAPH_STEPS full batches."""
    return mode == "on" or (mode == "auto" and device.type == "cuda" and full_batches >= MIN_GRAPH_STEPS)


@torch.no_grad()
def sgd_update(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], momenta: Sequence[torch.Tensor],
               lr: float | torch.Tensor, momentum: float, weight_decay: float,
               masks: Sequence[torch.Tensor] | None = None) -> None:
    """torch.optim.SGD's update, in place: g = grad + weight_decay * p (times the mask: only masked-in weights
    move), buf = momentum * buf + g, p -= lr * buf. A zero buffer gives torch's first step (buf = g); `lr` may be
    a 0-dim device tensor, which a CUDA graph replays with whatever value it holds."""
    for i, (p, grad, buf) in enumerate(zip(params, grads, momenta)):
        g = grad.add(p, alpha=weight_decay)
        if masks is not None:
            g.mul_(masks[i])
        buf.mul_(momentum).add_(g)
        if isinstance(lr, torch.Tensor):
            p.addcmul_(buf, lr, value=-1)
        else:
            p.add_(buf, alpha=-lr)


def optimizer_momenta(opt: torch.optim.SGD) -> list[torch.Tensor]:
    """The optimiser's momentum buffers (zeros where it has none yet), so eager and static steps share them."""
    bufs = []
    for p in opt.param_groups[0]["params"]:
        state = opt.state[p]
        if state.get("momentum_buffer") is None:
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        bufs.append(state["momentum_buffer"])
    return bufs


class StaticStep:
    """One SGD step per call on fixed-shape batches: eager, or (capture=True, CUDA) captured in a CUDA graph after
    WARMUP_STEPS eager steps and replayed from then on; the batch is copied into static buffers first."""

    def __init__(self, loss_of: StepLoss, params: list[nn.Parameter], momenta: list[torch.Tensor], momentum: float,
                 weight_decay: float, capture: bool, masks: list[torch.Tensor] | None = None):
        self.loss_of, self.params, self.momenta, self.masks = loss_of, params, momenta, masks  # masks: sgd_update
        self.momentum, self.weight_decay, self.capture = momentum, weight_decay, capture
        self.lr: torch.Tensor | None = None  # 0-dim, on the device: the schedule writes it before every step
        self.static: tuple | None = None  # (inputs, labels, teacher logits): the graph reads these buffers
        self.graph: torch.cuda.CUDAGraph | None = None
        self.loss: torch.Tensor | None = None  # the captured step's loss (overwritten by every replay)
        self.eager_steps = 0

    def run(self, inputs: Sequence[torch.Tensor], y: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        """The step itself, eagerly (what the graph records): returns the batch's loss (any shape), detached."""
        for p in self.params:
            p.grad = None
        objective, loss = self.loss_of(inputs, y, t)
        objective.backward()
        sgd_update(self.params, [p.grad for p in self.params], self.momenta, self.lr, self.momentum,
                   self.weight_decay, self.masks)
        return loss.detach()

    def __call__(self, inputs: Sequence[torch.Tensor], y: torch.Tensor, t: torch.Tensor | None,
                 lr: float) -> torch.Tensor:
        """One step on this batch at learning rate `lr`; its loss stays on the device."""
        if self.lr is None:
            self.lr = torch.zeros((), device=y.device)
        self.lr.fill_(lr)
        if not self.capture:
            return self.run(inputs, y, t)
        try:
            return self.graph_step(inputs, y, t)
        except RuntimeError as err:  # capture or replay failed on this device: eager steps from here on, same update
            warnings.warn(f"CUDA graph step failed ({str(err).splitlines()[0]}); training goes on with eager steps",
                          stacklevel=2)
            self.capture, self.graph, self.static = False, None, None
            return self.run(inputs, y, t)

    def graph_step(self, inputs: Sequence[torch.Tensor], y: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        """The step through the CUDA graph: warm-up steps on a side stream, then capture once, then replays."""
        if self.static is None:
            self.static = (tuple(x.clone() for x in inputs), y.clone(), None if t is None else t.clone())
        for buf, new in zip((*self.static[0], self.static[1], self.static[2]), (*inputs, y, t)):
            if buf is not None:
                buf.copy_(new)
        if self.graph is None and self.eager_steps < WARMUP_STEPS:
            self.eager_steps += 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                loss = self.run(*self.static)
            torch.cuda.current_stream().wait_stream(side)
            return loss
        if self.graph is None:
            for p in self.params:
                p.grad = None  # the captured backward writes fresh gradient buffers (no accumulation on replay)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.loss = self.run(*self.static)
        self.graph.replay()
        return self.loss.clone()  # the next replay overwrites self.loss
