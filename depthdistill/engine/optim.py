"""Default optimiser and learning-rate schedule: SGD with momentum and DeepLab's "poly" decay.

The paper gives the learning rate (2.5e-4) only; momentum 0.9, weight decay 5e-4 and the poly schedule with power
0.9 are DeepLab's conventions, which the paper's DeepLab-VGG16 was trained with. Any other optimiser or schedule
can be passed as a factory with the same signatures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from depthdistill.errors import ConfigError

__all__ = ["DEFAULT_LR", "DEFAULT_MOMENTUM", "DEFAULT_POLY_POWER", "DEFAULT_WEIGHT_DECAY", "OptimizerFactory",
           "SchedulerFactory", "sgd", "poly_schedule"]

#: ``factory(parameters) -> Optimizer``.
OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], Optimizer]
#: ``factory(optimizer, total_steps) -> LRScheduler``, stepped once per optimiser step.
SchedulerFactory = Callable[[Optimizer, int], LRScheduler]


#: The paper's learning rate.
DEFAULT_LR = 2.5e-4
#: DeepLab's SGD momentum, weight decay and poly power (the paper is silent on them).
DEFAULT_MOMENTUM = 0.9
DEFAULT_WEIGHT_DECAY = 5e-4
DEFAULT_POLY_POWER = 0.9


def sgd(
    lr: float = DEFAULT_LR, momentum: float = DEFAULT_MOMENTUM, weight_decay: float = DEFAULT_WEIGHT_DECAY
) -> OptimizerFactory:
    """An SGD factory with the given hyper-parameters.

    Examples:
        >>> opt = sgd(lr=0.1)([torch.nn.Parameter(torch.zeros(1))])
        >>> opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]
        (0.1, 0.9)
    """
    if lr <= 0:
        raise ConfigError(f"lr must be > 0, got {lr}")
    return lambda params: torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def poly_schedule(power: float = DEFAULT_POLY_POWER) -> SchedulerFactory:
    """A factory of the poly schedule ``lr_t = lr · (1 − t / total_steps) ** power``.

    ``t`` counts optimiser steps from 0, so the first step uses the full learning rate and the last one a small
    positive rate.

    Examples:
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        >>> sched = poly_schedule(1.0)(opt, 4)
        >>> [round(sched.get_last_lr()[0], 2) for _ in range(3) if not opt.step() and not sched.step()]
        [0.75, 0.5, 0.25]
    """

    def factory(optimizer: Optimizer, total_steps: int) -> LRScheduler:
        total = max(int(total_steps), 1)
        return LambdaLR(optimizer, lambda step: max(1.0 - step / total, 0.0) ** power)

    return factory
