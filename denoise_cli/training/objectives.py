"""Training objectives: what one batch costs, given the model and its training-only companion.

``restore`` is the plain image-to-image loss. ``dual_regression`` is DRN's: the primal
network's output at every scale against the target resized to that scale, plus 0.1 times
the dual networks' mapping of each output back down one 2x step (Guo et al., CVPR 2020).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .degrade import imresize

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Objective = Callable[[nn.Module, nn.Module | None, torch.Tensor, torch.Tensor, Loss], torch.Tensor]

DUAL_WEIGHT = 0.1  # lambda in L_P + lambda * L_D (DRN and DRC code, --dual_weight)


def pixel_loss(name: str) -> Loss:
    if name == "l1":
        return F.l1_loss
    if name == "l2":
        return F.mse_loss
    if name == "charbonnier":
        return lambda out, target: torch.sqrt((out - target) ** 2 + 1e-6).mean()
    raise ValueError(f"unknown loss {name!r}")


def restore(
    model: nn.Module, companion: nn.Module | None, inputs: torch.Tensor, target: torch.Tensor, loss: Loss
) -> torch.Tensor:
    return loss(model(inputs).float(), target)


def scale_pyramid(inputs: torch.Tensor, target: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Targets from the input size up to the target size in 2x steps.

    The smallest is the input itself (it was made from the target by the same bicubic
    resize); the levels between are the target shrunk by MATLAB-style bicubic.
    """
    between = [imresize(target, 2.0 ** -(levels - 1 - k)).float() for k in range(1, levels - 1)]
    return [inputs, *between, target]


def dual_regression(
    model: nn.Module, dual: nn.Module | None, inputs: torch.Tensor, target: torch.Tensor, loss: Loss
) -> torch.Tensor:
    if dual is None:
        raise ValueError("the dual_regression objective needs the recipe's dual networks as companion")
    outputs = [o.float() for o in model.forward_all(inputs)]
    targets = scale_pyramid(inputs, target, len(outputs))
    primal = sum(loss(o, t) for o, t in zip(outputs, targets, strict=True))
    downs = [d.float() for d in dual(outputs)]
    dual_term = sum(loss(d, t) for d, t in zip(downs, targets[:-1], strict=True))
    return primal + DUAL_WEIGHT * dual_term


OBJECTIVES: dict[str, Objective] = {"restore": restore, "dual_regression": dual_regression}
