"""Losses (KD and CE) and teacher logits computed once per split."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .device import to_device
from .fields import FIELDS


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = FIELDS["T"].default,
            labels: torch.Tensor | None = None, alpha: float = 0.0) -> torch.Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), batch mean; with alpha > 0, mixed with alpha * CE(labels).

    student_logits, teacher_logits: (B, K); labels: (B,) class indices, needed only when alpha > 0.
    """
    s = student_logits.float() / T
    t = teacher_logits.float() / T
    kl = F.kl_div(F.log_softmax(s, 1), F.log_softmax(t, 1), reduction="batchmean", log_target=True) * (T * T)
    if alpha == 0:
        return kl
    if labels is None:
        raise ValueError("kd_loss with alpha > 0 mixes in cross-entropy and needs labels")
    return (1 - alpha) * kl + alpha * F.cross_entropy(student_logits.float(), labels)


def kd_losses(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = FIELDS["T"].default,
              labels: torch.Tensor | None = None, alpha: float = 0.0) -> torch.Tensor:
    """kd_loss of C independent batches at once: logits (C, B, K), labels (C, B) -> (C,) losses."""
    c, b, k = student_logits.shape
    s = F.log_softmax(student_logits.float() / T, -1)
    t = F.log_softmax(teacher_logits.float() / T, -1)
    kl = F.kl_div(s, t, reduction="none", log_target=True).sum(-1).mean(-1) * (T * T)  # (C,)
    if alpha == 0:
        return kl
    if labels is None:
        raise ValueError("kd_losses with alpha > 0 mixes in cross-entropy and needs labels")
    ce = F.cross_entropy(student_logits.float().reshape(c * b, k), labels.reshape(-1), reduction="none")
    return (1 - alpha) * kl + alpha * ce.view(c, b).mean(-1)


def ce_loss(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Plain cross-entropy on labels (the baselines' loss), batch mean."""
    return F.cross_entropy(student_logits.float(), labels)


@torch.no_grad()
def teacher_logits(teacher: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The teacher's logits for every image of x (N, C, H, W) -> (N, K) float32, in eval mode, computed once.

    Valid as a cache only without random augmentation: with augmentation the teacher must see the same
    augmented view as the student, so training then runs the teacher live on each batch.
    """
    was_training = teacher.training
    to_device(teacher, x.device).eval()  # match the data's NHWC layout
    out = torch.cat([teacher(x[i:i + batch_size]).float() for i in range(0, len(x), batch_size)])
    teacher.train(was_training)
    return out
