"""Training objectives: what one batch costs, given the model and its training-only companion.

``restore`` is the plain image-to-image loss. ``dual_regression`` is DRN's: the primal
network's output at every scale against the target resized to that scale, plus 0.1 times
the dual networks' mapping of each output back down one 2x step (Guo et al., CVPR 2020);
``distill_dual_regression`` adds distillation from the full DRN when fine-tuning a pruned one (DRC).
``sandwich`` trains a slimmable super network (DDS-Net stage 1), ``sandwich_distill`` the same
with in-place distillation; ``width_gate`` trains its
gate to pick the cheapest sub-network that is as good as the largest (stage 3).
``variational`` is VDN's negative evidence lower bound (Yue et al., NeurIPS 2019).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..models.ddsnet import CHANNEL_STEP
from ..models.vdn import VDN_WINDOW, local_variance
from .degrade import imresize

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Objective = Callable[[nn.Module, nn.Module | None, torch.Tensor, torch.Tensor, Loss, torch.Generator], torch.Tensor]

DUAL_WEIGHT = 0.1  # lambda in L_P + lambda * L_D (DRN and DRC code, --dual_weight)


def pixel_loss(name: str) -> Loss:
    if name == "l1":
        return F.l1_loss
    if name == "l2":
        return F.mse_loss
    if name == "charbonnier":
        return lambda out, target: torch.sqrt((out - target) ** 2 + 1e-6).mean()
    if name == "log-mse":
        return log_mse
    raise ValueError(f"unknown loss {name!r}")


def log_mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The mean over images of ln(MSE): minus their mean PSNR up to a constant factor.

    Every image counts in decibels, so a light-noise patch, whose errors are small in
    absolute terms, weighs as much as a heavy-noise one (an L1 or L2 mean is dominated by the
    heavy ones). DDS-Net's gate judges sub-networks in dB, so its super network trains so.
    """
    return torch.log(_image_mse(out, target) + 1e-10).mean()


def _image_mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((out - target) ** 2).flatten(1).mean(dim=1)


def restore(
    model: nn.Module,
    companion: nn.Module | None,
    inputs: torch.Tensor,
    target: torch.Tensor,
    loss: Loss,
    generator: torch.Generator,
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
    model: nn.Module,
    dual: nn.Module | None,
    inputs: torch.Tensor,
    target: torch.Tensor,
    loss: Loss,
    generator: torch.Generator,
) -> torch.Tensor:
    if dual is None:
        raise ValueError("the dual_regression objective needs the recipe's dual networks as companion")
    outputs = [o.float() for o in model.forward_all(inputs)]
    return dual_regression_of(outputs, dual, inputs, target, loss)


def dual_regression_of(
    outputs: list[torch.Tensor], dual: nn.Module, inputs: torch.Tensor, target: torch.Tensor, loss: Loss
) -> torch.Tensor:
    """L_P + 0.1 L_D for the primal outputs at every scale (shared by the plain and the distilling objective)."""
    targets = scale_pyramid(inputs, target, len(outputs))
    primal = sum(loss(o, t) for o, t in zip(outputs, targets, strict=True))
    downs = [d.float() for d in dual(outputs)]
    dual_term = sum(loss(d, t) for d, t in zip(downs, targets[:-1], strict=True))
    return primal + DUAL_WEIGHT * dual_term


def distill_dual_regression(
    model: nn.Module,
    companion: nn.Module | None,
    inputs: torch.Tensor,
    target: torch.Tensor,
    loss: Loss,
    generator: torch.Generator,
) -> torch.Tensor:
    """DRC fine-tuning of a pruned DRN: the dual regression loss plus ``kd_weight`` times the L1
    distance of its SR output to the frozen full DRN's (the companion holds the duals and that teacher)."""
    if companion is None or not hasattr(companion, "teacher"):
        raise ValueError("distill_dual_regression needs a companion with dual nets and a teacher (drc-companion)")
    outputs = [o.float() for o in model.forward_all(inputs)]
    with torch.no_grad():
        taught = companion.teacher(inputs).float()
    distill = F.l1_loss(outputs[-1], taught)
    return dual_regression_of(outputs, companion.dual, inputs, target, loss) + companion.kd_weight * distill


def random_config(model: nn.Module, generator: torch.Generator) -> list[int]:
    """One width per layer group, each drawn uniformly from the allowed channel counts."""
    low, high, step = int(model.configs[0].min()), model.channels, CHANNEL_STEP
    counts = torch.randint(0, (high - low) // step + 1, (model.configs.shape[1],), generator=generator)
    return [low + step * int(c) for c in counts]


def sandwich_configs(model: nn.Module, generator: torch.Generator) -> list[list[int]]:
    """The sandwich rule's configurations for one step: the largest, the smallest, two random."""
    largest = [model.channels] * model.configs.shape[1]
    return [largest, model.configs[0].tolist(), random_config(model, generator), random_config(model, generator)]


def sandwich(
    model: nn.Module,
    companion: nn.Module | None,
    inputs: torch.Tensor,
    target: torch.Tensor,
    loss: Loss,
    generator: torch.Generator,
) -> torch.Tensor:
    """The sandwich rule (US-Nets, DS-Net): the largest, the smallest and two random
    per-layer configurations each step, so every prefix of every layer learns to work."""
    return _mean_loss(model, sandwich_configs(model, generator), inputs, target, loss)


def tailored(
    model: nn.Module,
    companion: nn.Module | None,
    inputs: torch.Tensor,
    target: torch.Tensor,
    loss: Loss,
    generator: torch.Generator,
) -> torch.Tensor:
    """After stage 2: every tailored sub-network (``model.configs``, the full one included)
    each step. The sandwich rule trains the smallest and the full configuration exactly but
    the middle ones only as far as random configurations come near them."""
    return _mean_loss(model, model.configs, inputs, target, loss)


def _mean_loss(
    model: nn.Module,
    configs: Sequence[list[int]] | torch.Tensor,
    inputs: torch.Tensor,
    target: torch.Tensor,
    loss: Loss,
) -> torch.Tensor:
    """The loss averaged over running ``model`` at each of ``configs``."""
    return sum(loss(model(inputs, config=c).float(), target) for c in configs) / len(configs)


def sandwich_distill(
    model: nn.Module,
    companion: nn.Module | None,
    inputs: torch.Tensor,
    target: torch.Tensor,
    loss: Loss,
    generator: torch.Generator,
) -> torch.Tensor:
    """The sandwich rule with in-place distillation (US-Nets): only the largest configuration
    learns from the clean target; the narrower ones learn to match its (detached) output, an
    easier target that pulls every width towards the full network's behaviour.

    With ``log_mse`` a narrow width's term is ln(its MSE to the teacher + the teacher's MSE
    to the target), an estimate of the narrow width's ln(MSE): the logarithm of a distance
    that can reach zero has unbounded gradients. Neither form worked on DDS-Net's log-MSE
    network: full width lost 12 dB in 250 steps with the plain one and 3.9 dB in 300 steps
    with this one (not understood), so the shipped network does not use it.
    """
    largest, *narrower = sandwich_configs(model, generator)
    full = model(inputs, config=largest).float()
    taught = full.detach()
    if loss is log_mse:
        floor = _image_mse(taught, target)

        def distill(out: torch.Tensor) -> torch.Tensor:
            return torch.log(_image_mse(out, taught) + floor + 1e-10).mean()
    else:

        def distill(out: torch.Tensor) -> torch.Tensor:
            return loss(out, taught)

    return (loss(full, target) + sum(distill(model(inputs, config=c).float()) for c in narrower)) / (1 + len(narrower))


GATE_TOLERANCE_DB = 0.2
"""A sub-network is good enough for an image when it is at most this far below the largest.
On held-out training crops (sigma 5/15/25/50) a perfect gate with 0.05 dB would save 5% of
the MACs; with 0.2 dB it saves 19% and loses 0.07 dB on average, inside the 0.1 dB budget."""


def cheapest_good(scores: torch.Tensor, tolerance: float = GATE_TOLERANCE_DB) -> torch.Tensor:
    """Per row of PSNRs (N, choices; cheapest first, the largest last), the index of the
    cheapest choice at most ``tolerance`` dB below the largest."""
    good = scores >= scores[:, -1:] - tolerance
    return good.float().argmax(dim=1)  # the first good one


@torch.no_grad()
def config_psnr(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR of every image (rows) under every tailored configuration (columns, cheapest first)."""
    scores = []
    for config in model.configs:
        out = model(inputs, config=config).float().clamp(0, 1)
        scores.append(-10.0 * torch.log10(_image_mse(out, target).clamp_min(1e-12)))
    return torch.stack(scores, dim=1)


def easy_or_hard_labels(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per image, the cheapest configuration within GATE_TOLERANCE_DB of the largest (online labels)."""
    return cheapest_good(config_psnr(model, inputs, target))


def width_gate(
    model: nn.Module,
    companion: nn.Module | None,
    inputs: torch.Tensor,
    target: torch.Tensor,
    loss: Loss,
    generator: torch.Generator,
) -> torch.Tensor:
    labels = easy_or_hard_labels(model, inputs, target)
    return F.cross_entropy(model.gate(inputs).float(), labels)


VDN_EPS2 = 1e-6
"""eps_0^2: the prior variance of the clean image around the ground truth (VDN's value for real noise)."""


def variational(
    model: nn.Module,
    companion: nn.Module | None,
    inputs: torch.Tensor,
    target: torch.Tensor,
    loss: Loss,
    generator: torch.Generator,
) -> torch.Tensor:
    """VDN's negative ELBO per pixel: -E_q[log p(y | z, sigma^2)] + KL(q(z) || N(x, eps_0^2))
    + KL(IG(alpha, beta) || IG(p^2/2 - 1, p^2 xi / 2)). ``loss`` is not used: the bound is the loss."""
    mean, log_m2, log_alpha, log_beta = (t.float() for t in model.posterior(inputs))
    m2, alpha, beta = log_m2.exp(), log_alpha.exp(), log_beta.exp()
    # Likelihood of the noisy image under the posteriors of the clean image and the noise variance.
    expected_precision = alpha / beta  # E[1 / sigma^2] under IG(alpha, beta)
    nll = 0.5 * (math.log(2 * math.pi) + log_beta - torch.digamma(alpha))
    nll = nll + 0.5 * expected_precision * ((inputs.float() - mean) ** 2 + m2)
    # Clean image: a Gaussian posterior against the ground truth with variance eps_0^2.
    kl_z = ((mean - target) ** 2 + m2) / (2 * VDN_EPS2) - 0.5 * (log_m2 - math.log(VDN_EPS2)) - 0.5
    # Noise variance: inverse-gamma posterior against the prior centred on the local squared noise.
    p2 = VDN_WINDOW**2
    alpha0 = p2 / 2 - 1
    beta0 = p2 / 2 * local_variance(inputs.float() - target).clamp_min(1e-10)
    kl_sigma = (
        (alpha - alpha0) * torch.digamma(alpha)
        + (math.lgamma(alpha0) - torch.lgamma(alpha))
        + alpha0 * (log_beta - beta0.log())
        + alpha * (beta0 / beta - 1)
    )
    return (nll + kl_z + kl_sigma).mean()


OBJECTIVES: dict[str, Objective] = {
    "restore": restore,
    "dual_regression": dual_regression,
    "distill_dual_regression": distill_dual_regression,
    "sandwich": sandwich,
    "sandwich_distill": sandwich_distill,
    "tailored": tailored,
    "width_gate": width_gate,
    "variational": variational,
}
