"""The teacher phase: the live model made depth-aware in place and trained with cross-entropy on RGB-D, and the
two building blocks it is made of that own training loops can use too: depth dropout and the frozen snapshot."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from depthdistill.convert import convert_to_depth_aware, convert_to_plain, list_depth_aware
from depthdistill.distill.settings import DistillSettings
from depthdistill.engine.distributed import get_rank, get_world_size
from depthdistill.engine.settings import check_count
from depthdistill.errors import ConfigError
from depthdistill.nn import depth_context

if TYPE_CHECKING:
    from depthdistill.distill.distiller import Data, Distiller

__all__ = ["train_teacher", "convert_teacher", "as_teacher", "drop_depth", "frozen_copy", "shared_schedule"]


def frozen_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with no gradients: the teacher that gives a student its soft targets.

    Depth-aware layers stay depth-aware with their α and depth resize, so the copy runs as the teacher did.

    Examples:
        >>> import torch
        >>> teacher = frozen_copy(torch.nn.Conv2d(3, 2, 1))
        >>> teacher.training, any(p.requires_grad for p in teacher.parameters())
        (False, False)
    """
    teacher = copy.deepcopy(model)
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def drop_depth(depth: torch.Tensor, probability: float) -> torch.Tensor:
    """Depth dropout: each sample's depth map is replaced, with ``probability``, by a constant map.

    A constant map gives ``H = exp(0) = 1`` at every tap, so for those samples each D-Conv computes exactly the
    plain convolution, and the shared weights learn to work with and without depth. Draws come from torch's
    global generator. Under DDP every rank draws the whole global batch and keeps its own share: ranks drop
    independently, and N processes of b samples draw what one process of N·b would.

    Args:
        depth: ``(B, 1, H, W)`` (or ``(B, H, W)``) depth of one batch.
        probability: In ``[0, 1]``; 0 returns ``depth`` itself.

    Returns:
        The batch's depth with the dropped samples' maps set to 1.

    Raises:
        ConfigError: If ``probability`` is not in ``[0, 1]``.

    Examples:
        >>> depth = torch.rand(4, 1, 2, 2) + 1
        >>> torch.equal(drop_depth(depth, 1.0), torch.ones_like(depth)), drop_depth(depth, 0.0) is depth
        (True, True)
    """
    if isinstance(probability, bool) or not isinstance(probability, (int, float)) or not 0.0 <= probability <= 1.0:
        raise ConfigError(f"depth dropout probability must be in [0, 1], got {probability!r}")
    if probability == 0.0:
        return depth
    size, rank = depth.shape[0], get_rank()
    draws = torch.rand(size * get_world_size(), device=depth.device)[rank * size:(rank + 1) * size]
    dropped = draws < probability
    return torch.where(dropped.view(-1, *([1] * (depth.dim() - 1))), torch.ones_like(depth), depth)


def shared_schedule(schedule: str, teacher_epochs: int, student_epochs: int | None, *,
                    where: str) -> tuple[int, int] | None:
    """``(teacher_epochs, student_epochs)`` of the one learning-rate schedule a teacher phase begins with
    ``schedule="one"``; ``None`` with ``"per_phase"`` (each phase decays over its own epochs).

    Raises:
        ConfigError: With ``"one"`` and no ``student_epochs`` (or not an integer >= 1).

    Examples:
        >>> shared_schedule("one", 3, 2, where="tn"), shared_schedule("per_phase", 3, None, where="tn")
        ((3, 2), None)
    """
    if schedule == "per_phase":
        return None
    if student_epochs is None:
        raise ConfigError(f"{where}: schedule='one' decays the learning rate once over the teacher's and the "
                          "student's epochs, so the teacher phase needs the student's: pass student_epochs= "
                          "(Distiller.train and run_experiment do)")
    check_count(student_epochs, "student_epochs", 1, where=where)
    return teacher_epochs, student_epochs


def convert_teacher(model: nn.Module, settings: DistillSettings | str = "default") -> nn.Module:
    """Makes ``model`` depth-aware in place as the Distiller's teacher phase does: the layers the settings pick
    (:meth:`~depthdistill.distill.settings.DistillSettings.layer_filter`), their α and depth resize.

    For a training loop of your own that should build the same teacher as the Distiller.

    Args:
        model: The plain segmenter.
        settings: A :class:`~depthdistill.distill.settings.DistillSettings` or a preset's name.

    Returns:
        ``model`` itself, converted.

    Examples:
        >>> from depthdistill import list_depth_aware
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 4, 3))
        >>> net.depth_aware_layers = ["0"]
        >>> list_depth_aware(convert_teacher(net)), net[0].depth_resize
        (['0'], 'avgpool')
    """
    s = DistillSettings.from_preset(settings) if isinstance(settings, str) else settings
    return convert_to_depth_aware(model, alpha=s.alpha, depth_resize=s.depth_resize, include=s.layer_filter(model),
                                  exclude=s.exclude)


@contextmanager
def as_teacher(model: nn.Module, settings: DistillSettings,
               layers: list[str] | None = None) -> Iterator[nn.Module]:
    """``model`` depth-aware as the teacher inside the block (:func:`convert_teacher`, or exactly the named
    ``layers``, with the settings' α and depth resize); plain again after it. The Parameters are the same objects
    (only the layers' classes change), so outside the block the model, its checkpoints and its validation are the
    plain one: the live teacher of ``teacher_source="live"`` and the consistency method's depth pass.

    Examples:
        >>> from depthdistill import list_depth_aware
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 4, 3))
        >>> with as_teacher(net, DistillSettings(layers="all")):
        ...     inside = list_depth_aware(net)
        >>> inside, list_depth_aware(net)
        (['0', '1'], [])
    """
    if layers is None:
        convert_teacher(model, settings)
    else:
        convert_to_depth_aware(model, alpha=settings.alpha, depth_resize=settings.depth_resize, include=list(layers))
    try:
        yield model
    finally:
        convert_to_plain(model)


def train_teacher(distiller: Distiller, train_data: Data, epochs: int, val_data: Data | None, *,
                  name: str, student_epochs: int | None = None) -> nn.Module:
    """Converts the distiller's live model to depth-aware in place (its settings' layers, α and depth resize) and
    trains it with CE on RGB-D, with depth dropout; keeps a :func:`frozen_copy` as ``distiller.teacher``.

    With ``schedule="one"`` the learning rate decays over ``epochs + student_epochs`` (the student phase goes on
    with it: ``distiller.shared_schedule``).

    Returns:
        The live model, now the teacher.

    Raises:
        ConfigError: With ``schedule="one"`` and no ``student_epochs``.
    """
    s, model = distiller.settings, distiller.model
    schedule = shared_schedule(s.schedule, epochs, student_epochs, where=name)
    convert_teacher(model, s)
    distiller.depth_aware_layers = list_depth_aware(model)
    distiller.check_data(train_data, needs_depth=True, where=f"{name} training data")
    # Which layers the include rule picked is easy to get wrong and invisible in the results: say it.
    layers = distiller.depth_aware_layers
    distiller.log.write({"phase": name, "event": "teacher_start", "preset": s.preset, "depth_aware_layers": layers,
                         "depth_resize": s.depth_resize, "depth_dropout": s.depth_dropout})
    distiller.log.say(name, f"{len(layers)} depth-aware layers ({', '.join(layers)}), depth resized by "
                            f"{s.depth_resize}, depth dropout {s.depth_dropout:g} (preset {s.preset!r})")

    def loss_fn(model: nn.Module, batch: dict, epoch: int) -> dict[str, torch.Tensor]:
        with depth_context(drop_depth(batch["depth"], s.depth_dropout)):
            logits = distiller.forward(model, batch)
        return {"loss": F.cross_entropy(logits.float(), batch["label"], ignore_index=distiller.ignore_index)}

    result = distiller.fit_phase(name, model, loss_fn, train_data, epochs, val_data, needs_depth=True,
                                 keep_optimizer_state=s.carries_optimizer_state,
                                 **({} if schedule is None else {"schedule_epochs": sum(schedule)}))
    distiller.teacher_optimizer_state = result.optimizer_state
    distiller.shared_schedule = schedule
    distiller.teacher = frozen_copy(model)
    return model
