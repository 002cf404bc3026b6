"""Variable Temperature Cross Entropy (VTCE), Eq. 9–11 of the paper, its temperature schedule (Eq. 10), and the
student's loss ``CE + VTCE`` (:class:`CEPlusVTCE`, the default :data:`StudentLoss` of the Distiller)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from depthdistill.errors import ConfigError
from depthdistill.labels import VOID

__all__ = ["vtce_temperature", "vtce_loss", "VTCELoss", "CEPlusVTCE", "StudentLoss", "DEFAULT_BETA"]

#: β of Eq. 10 (the paper's choice, Table 4).
DEFAULT_BETA = 0.9

#: The loss of a student learning from its teacher:
#: ``student_loss(student_logits, teacher_logits, labels, epoch) -> {"loss": scalar to minimise, **parts to log}``.
#: Logits are float32 ``(B, C, H, W)`` (the teacher's detached), labels int64 ``(B, H, W)`` with the void label,
#: ``epoch`` the student phase's epoch index from 0.
StudentLoss = Callable[[Tensor, Tensor, Tensor, int], dict[str, Tensor]]


def vtce_temperature(epoch: int, beta: float = DEFAULT_BETA) -> float:
    """Temperature of Eq. 10: ``T = exp(-β (e² − e + 2) / 2)``.

    ``e`` is the epoch index ``⌊λ / N⌋`` (λ the iteration, N the number of training images, so at batch size 1
    it counts epochs; with larger batches count epochs directly). ``T`` is below 1 from the start (0.41 at
    e = 0 and 1 for β = 0.9) and falls quickly. Because Eq. 11 multiplies by ``T`` what ``log softmax(z/T)``
    divides by it, the loss does not vanish as ``T → 0``: it tends to ``max_j z_s,j − z_s,k`` with ``k`` the
    teacher's top class, a margin loss toward the teacher's decision. So VTCE moves from soft targets early to
    the teacher's hard decisions later: "from coarse to fine".

    Args:
        epoch: Epoch index ``e ≥ 0`` (0-based).
        beta: β of Eq. 10.

    Returns:
        The temperature ``T``.

    Examples:
        >>> round(vtce_temperature(0), 4), round(vtce_temperature(2), 4)
        (0.4066, 0.1653)
    """
    if epoch < 0:
        raise ConfigError(f"epoch must be >= 0, got {epoch}")
    return math.exp(-beta * (epoch * epoch - epoch + 2) / 2)


def vtce_loss(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float, mask: Tensor | None = None
) -> Tensor:
    """VTCE of Eq. 11: ``−Σ_i T · q_t,i · log q_s,i`` with ``q = softmax(z / T)``, averaged over valid pixels.

    The teacher side is detached: gradients reach the student only.

    Args:
        student_logits: ``(B, C, H, W)`` (or ``(B, C)``) logits of the student.
        teacher_logits: Logits of the teacher, same shape.
        temperature: ``T`` of Eq. 9–11 (see :func:`vtce_temperature`), ≥ 0; any value works, including those
            Eq. 10 reaches late in training (below float32's range, or 0.0).
        mask: Optional boolean ``(B, H, W)``: pixels to average over (e.g. ``label != 255``). ``None``: all.

    Returns:
        A scalar tensor; 0 (still differentiable) when the mask selects no pixel.

    Examples:
        >>> s, t = torch.randn(2, 5, 4, 4), torch.randn(2, 5, 4, 4)
        >>> vtce_loss(s, t, vtce_temperature(0)).shape
        torch.Size([])
    """
    if student_logits.shape != teacher_logits.shape:
        raise ConfigError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ"
        )
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise ConfigError(f"temperature must be a finite number >= 0, got {temperature!r}")
    # Eq. 11 in a form that stays finite for any T: with m = max_j z_j,
    #   T · log softmax(z/T)_i = (z_i − m) − T · logsumexp((z − m)/T),
    # so no z/T is ever formed. Eq. 10 drives T below float32's range within ~15 epochs (and to 0.0 itself by
    # epoch ~42), where this form tends to its limit: the teacher's arg-max class and the student's logit margin.
    work = torch.float64 if student_logits.dtype == torch.float64 else torch.float32
    z_s = student_logits.to(work)
    z_s = z_s - z_s.amax(dim=1, keepdim=True)
    z_t = teacher_logits.detach().to(work)
    z_t = z_t - z_t.amax(dim=1, keepdim=True)
    if temperature > torch.finfo(work).tiny ** 0.5:
        q_t = F.softmax(z_t / temperature, dim=1)
        t_log_q_s = z_s - temperature * torch.logsumexp(z_s / temperature, dim=1, keepdim=True)
    else:
        top = (z_t == 0).to(work)
        q_t = top / top.sum(dim=1, keepdim=True)
        t_log_q_s = z_s
    per_pixel = -(q_t * t_log_q_s).sum(dim=1)
    if mask is None:
        return per_pixel.mean().to(student_logits.dtype)
    if mask.shape != per_pixel.shape:
        raise ConfigError(f"mask must have shape {tuple(per_pixel.shape)}, got {tuple(mask.shape)}")
    mask = mask.to(torch.bool)
    return ((per_pixel * mask).sum() / mask.sum().clamp_min(1)).to(student_logits.dtype)


class VTCELoss(nn.Module):
    """VTCE with its temperature schedule: ``forward(student, teacher, epoch, mask)``.

    Args:
        beta: β of Eq. 10, used by the default schedule.
        schedule: Optional ``schedule(epoch) -> T`` replacing Eq. 10 (e.g. a constant for classic distillation).

    Examples:
        >>> loss_fn = VTCELoss(beta=0.9)
        >>> s, t = torch.randn(1, 3, 2, 2, requires_grad=True), torch.randn(1, 3, 2, 2)
        >>> loss_fn(s, t, epoch=0).backward()
        >>> loss_fn.temperature(3) == vtce_temperature(3, 0.9)
        True
    """

    def __init__(self, beta: float = DEFAULT_BETA, schedule: Callable[[int], float] | None = None) -> None:
        super().__init__()
        self.beta = float(beta)
        self.schedule = schedule

    def temperature(self, epoch: int) -> float:
        """The temperature used at ``epoch``."""
        return float(self.schedule(epoch)) if self.schedule is not None else vtce_temperature(epoch, self.beta)

    def forward(
        self, student_logits: Tensor, teacher_logits: Tensor, epoch: int, mask: Tensor | None = None
    ) -> Tensor:
        """VTCE at the temperature of ``epoch``; see :func:`vtce_loss`."""
        return vtce_loss(student_logits, teacher_logits, self.temperature(epoch), mask)

    def extra_repr(self) -> str:
        return f"beta={self.beta:g}" if self.schedule is None else f"schedule={self.schedule!r}"


class CEPlusVTCE(nn.Module):
    """The paper's student loss: ``CE(student, labels) + VTCE(student, teacher, T(epoch))`` (Eq. 12).

    Both terms skip void pixels: CE through ``ignore_index``, VTCE by averaging over the non-void pixels only. The
    returned dict holds the total and its parts, and the temperature used, for the training log. It is the
    default ``student_loss`` of :class:`~depthdistill.Distiller`; any callable of the same signature
    (:data:`StudentLoss`) can replace it.

    Args:
        beta: β of Eq. 10, used by the default schedule.
        ignore_index: Void label.
        schedule: Optional ``schedule(epoch) -> T`` replacing Eq. 10.

    Examples:
        >>> loss_fn = CEPlusVTCE(beta=0.9)
        >>> student, teacher = torch.randn(2, 3, 4, 4, requires_grad=True), torch.randn(2, 3, 4, 4)
        >>> labels = torch.randint(0, 3, (2, 4, 4))
        >>> parts = loss_fn(student, teacher, labels, epoch=0)
        >>> sorted(parts)
        ['ce', 'loss', 'temperature', 'vtce']
        >>> parts["loss"].backward()
        >>> round(parts["temperature"].item(), 4) == round(vtce_temperature(0, 0.9), 4)
        True
    """

    def __init__(self, beta: float = DEFAULT_BETA, ignore_index: int = VOID,
                 schedule: Callable[[int], float] | None = None) -> None:
        super().__init__()
        self.vtce = VTCELoss(beta=beta, schedule=schedule)
        self.ignore_index = int(ignore_index)

    @property
    def beta(self) -> float:
        """β of Eq. 10."""
        return self.vtce.beta

    def temperature(self, epoch: int) -> float:
        """The temperature used at ``epoch``."""
        return self.vtce.temperature(epoch)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, labels: Tensor,
                epoch: int) -> dict[str, Tensor]:
        """``{"loss": ce + vtce, "ce": …, "vtce": …, "temperature": T}`` for one batch."""
        ce = F.cross_entropy(student_logits, labels, ignore_index=self.ignore_index)
        vtce = self.vtce(student_logits, teacher_logits, epoch, mask=labels != self.ignore_index)
        return {"loss": ce + vtce, "ce": ce, "vtce": vtce, "temperature": torch.tensor(self.temperature(epoch))}

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}"
