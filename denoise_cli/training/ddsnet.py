"""DDS-Net stage 2: progressive channel tailoring of the trained super network.

Starting from the full configuration, each round tries taking CHANNEL_STEP channels off
every layer group (the residual stream, or one block's inside), keeps the cut that loses
the least PSNR per MAC saved on held-out training crops, and records the configuration
each time the network first falls under a target share of the full MACs. One pass gives
every sub-network, cheapest first; they replace the super network's uniform widths.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from ..metrics import psnr
from ..models.ddsnet import CHANNEL_STEP, noise_sigma, pick_width
from .degrade import add_gaussian_noise
from .objectives import cheapest_good, config_psnr

log = logging.getLogger("denoise.train")

MAC_SHARES = (0.25, 0.5, 0.75)
"""The sub-networks tailoring keeps, as shares of the full network's MACs (plus the full one)."""
GATE_CONFIDENCES = (0.2, 0.25, 0.3, 0.35, 0.4, 0.5)
"""The confidences the tool scores the gate at, to calibrate models.ddsnet.GATE_CONFIDENCE."""
TAILOR_SIGMAS = (5.0, 15.0, 25.0, 35.0, 50.0)
"""Noise levels of the tailoring batch: each crop gets every level, so cuts are judged on easy and hard inputs."""


def tailoring_batch(clean: torch.Tensor, seed: int = 4321) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out crops at every TAILOR_SIGMAS level, fixed noise."""
    generator = torch.Generator().manual_seed(seed)
    noisy = [add_gaussian_noise(clean, (s, s), generator)[0] for s in TAILOR_SIGMAS]
    return torch.cat(noisy), clean.repeat(len(TAILOR_SIGMAS), 1, 1, 1)


@torch.no_grad()
def tailor(
    model: nn.Module,
    noisy: torch.Tensor,
    clean: torch.Tensor,
    targets: tuple[float, ...],
    start: list[int] | None = None,
    floor: list[int] | None = None,
) -> list[list[int]]:
    """Configurations at (at most) each target share of the full MACs, found by greedy narrowing
    from ``start`` (default: the full network), no layer group narrower than ``floor`` (default:
    the narrowest width the sandwich rule trained)."""
    model.eval()
    config = list(start) if start is not None else [model.channels] * model.configs.shape[1]
    floor = floor or [int(model.configs[0].min())] * len(config)

    def score(candidate: list[int]) -> float:
        return psnr(model(noisy, config=candidate).float().clamp(0, 1), clean)

    current = score(config)
    found: dict[float, list[int]] = {}
    pending = sorted(targets, reverse=True)
    while pending:
        best: tuple[float, list[int], float] | None = None
        for group in range(len(config)):
            if config[group] - CHANNEL_STEP < floor[group]:
                continue
            trial = list(config)
            trial[group] -= CHANNEL_STEP
            value = score(trial)
            saved = model.width_of(config) - model.width_of(trial)
            cost = (current - value) / saved
            if best is None or cost < best[0]:
                best = (cost, trial, value)
        if best is None:  # every group at the floor: the remaining targets get the narrowest network
            for target in pending:
                found[target] = list(config)
            break
        _, config, current = best
        while pending and model.width_of(config) <= pending[0]:
            target = pending.pop(0)
            found[target] = list(config)
            log.info("tailored %.2f of the MACs: %s, %.2f dB", model.width_of(config), config, current)
    return [found[t] for t in sorted(found)]


def tailor_configs(net: nn.Module, crops: torch.Tensor) -> None:
    """Replace ``net.configs`` with sub-networks tailored on the 64 px centres of ``crops``
    (held-out training crops; the centres keep the search to minutes), plus the full one."""
    noisy, clean = tailoring_batch(crops[..., 32:96, 32:96])
    configs = tailor(net, noisy, clean, MAC_SHARES)
    configs.append([net.channels] * net.configs.shape[1])
    net.configs.copy_(torch.tensor(configs, dtype=torch.int64))


def insert_config(net: nn.Module, crops: torch.Tensor, share: float) -> None:
    """Tailor one more sub-network at ``share`` of the MACs between the two it falls between
    (narrowed from the wider, never below the narrower) and drop the cheapest, so the gate
    keeps its number of choices. For a sub-network fine-tune (``--objective tailored``) to
    train, where a perfect gate shows a gap between the tailored ones."""
    noisy, clean = tailoring_batch(crops[..., 32:96, 32:96])
    configs = [[int(v) for v in c] for c in net.configs]
    wider = next(i for i, c in enumerate(configs) if net.width_of(c) > share)
    if wider == 0:
        raise ValueError(f"{share} is below the cheapest sub-network ({net.width_of(configs[0]):.2f} of the MACs)")
    (new,) = tailor(net, noisy, clean, (share,), start=configs[wider], floor=configs[wider - 1])
    configs.insert(wider, new)
    net.configs.copy_(torch.tensor(configs[1:], dtype=torch.int64))


def tailor_trainer(trainer: Any) -> None:
    """The recipe's finish step: tailor the EMA and raw weights' configurations in place.

    Stage 2 runs once: a fine-tuned super network keeps the configurations it was tailored
    to, since the sandwich rule has since trained its smallest one as such (re-tailoring
    after a log-MSE fine-tune cost the narrow sub-networks 0.2-0.5 dB; ``--retailor`` of
    ``python -m denoise_cli.training.ddsnet`` still does it on request).
    """
    if not torch.equal(trainer.model.configs.cpu(), trainer.model.uniform_configs()):
        log.info("sub-networks already tailored (%s of the MACs): kept", [round(s, 2) for s in trainer.model.shares()])
        return
    if trainer.monitor_clean is None:
        raise ValueError("channel tailoring needs held-out crops (recipe.holdout > 0)")
    for net in (trainer.ema, trainer.model):
        tailor_configs(net, trainer.monitor_clean)


def fixed_noise(clean: torch.Tensor, sigma: float) -> torch.Tensor:
    """``clean`` with AWGN at ``sigma``, one fixed seed per level (the tools' scoring batch)."""
    return add_gaussian_noise(clean, (sigma, sigma), torch.Generator().manual_seed(int(sigma)))[0]


@torch.no_grad()
def subnetwork_scores(model: nn.Module, clean: torch.Tensor, sigmas: tuple[float, ...]) -> dict[float, torch.Tensor]:
    """PSNR of every crop (rows) under every sub-network (columns, cheapest first) at each
    noise level (fixed seeds)."""
    model.eval()
    return {sigma: config_psnr(model, fixed_noise(clean, sigma), clean) for sigma in sigmas}


@torch.no_grad()
def gate_choices(model: nn.Module, clean: torch.Tensor, sigmas: tuple[float, ...], confidence: float) -> torch.Tensor:
    """The sub-network the gate picks for each crop at each level (rows: the levels' crops in
    turn, as ``torch.cat`` of ``subnetwork_scores``), taking the cheapest whose chance of being
    good enough is at least ``confidence``."""
    model.eval()
    picks = []
    for sigma in sigmas:
        for crop in fixed_noise(clean, sigma).split(1):
            level = noise_sigma(crop) if model.noise_map else None
            picks.append(pick_width(model.gate(crop, level), confidence))
    return torch.tensor(picks)


def gate_cost(scores: torch.Tensor, shares: list[float], choice: torch.Tensor) -> tuple[float, float]:
    """Mean share of the full MACs and mean dB lost against the largest sub-network when
    crop i runs sub-network ``choice[i]`` (``scores``: PSNR per crop and sub-network)."""
    picked = scores.gather(1, choice[:, None])[:, 0]
    return float(torch.tensor(shares)[choice].mean()), float((scores[:, -1] - picked).mean())


def subnetwork_psnr(model: nn.Module, clean: torch.Tensor, sigmas: tuple[float, ...]) -> dict[float, list[float]]:
    """Mean PSNR of every sub-network (cheapest first) on ``clean`` crops at each noise level."""
    return {sigma: scores.mean(dim=0).tolist() for sigma, scores in subnetwork_scores(model, clean, sigmas).items()}


def oracle_choice(scores: torch.Tensor, shares: list[float], tolerance: float) -> tuple[float, float]:
    """What a perfect gate would get from these per-crop scores (N, choices): each crop runs
    the cheapest sub-network within ``tolerance`` dB of the largest. Returns the mean share
    of the full MACs and the mean PSNR lost against always running the largest."""
    return gate_cost(scores, shares, cheapest_good(scores, tolerance))


def main() -> None:
    """``python -m denoise_cli.training.ddsnet WEIGHTS``: the sub-networks' PSNR on the held-out training
    crops, what a perfect gate would get from them, and what the trained gate gets at each confidence."""
    import argparse
    from pathlib import Path

    from .. import registry, weights
    from ..evaluate import MIXED_SIGMAS
    from .data import monitor_crops, training_split
    from .recipes import RECIPES, SHARED_DATA

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("weights", type=Path)
    parser.add_argument("--retailor", action="store_true", help="first run stage 2 again (e.g. after a fine-tune)")
    parser.add_argument(
        "--insert",
        type=float,
        metavar="SHARE",
        help="first tailor a sub-network at SHARE of the MACs between its neighbours, dropping the cheapest",
    )
    parser.add_argument("--out", type=Path, help="where --retailor or --insert saves the weights")
    args = parser.parse_args()
    if (args.retailor or args.insert) and not args.out:
        parser.error("--retailor and --insert need --out")
    recipe = RECIPES["ddsnet-super"]
    card = weights.read_card(args.weights)
    model = registry.build(recipe.arch, **card.get("arch_args", recipe.arch_args))
    weights.load_into(model, args.weights)
    _, held = training_split(SHARED_DATA, recipe.train_dirs, recipe.holdout)
    clean = monitor_crops(held)
    if args.retailor or args.insert:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        before = [round(share, 2) for share in model.shares()]
        if args.insert:
            insert_config(model, clean, args.insert)
            how = f"a sub-network tailored at {args.insert:g} of the MACs in place of the cheapest"
        else:
            tailor_configs(model, clean)
            how = "stage 2 re-run on these weights"
        note = f"{how}: sub-networks at {before} -> {[round(x, 2) for x in model.shares()]}"
        card["history"] = [*card.get("history", []), note]
        weights.save(model, args.out, card, torch.float32)
    print("| sigma | " + " | ".join(f"{s:.2f} of the MACs" for s in model.shares()) + " |")
    print("|---" * (model.choices + 1) + "|")
    table = subnetwork_scores(model, clean, (0.0, 5.0, 15.0, 25.0, 50.0))
    for sigma, scores in table.items():
        print(f"| {sigma:g} | " + " | ".join(f"{v:.2f}" for v in scores.mean(dim=0).tolist()) + " |")
    mixed = torch.cat([table[s] for s in MIXED_SIGMAS])
    levels = "/".join(f"{s:g}" for s in MIXED_SIGMAS)
    for tolerance in (0.05, 0.1, 0.2):
        share, lost = oracle_choice(mixed, model.shares(), tolerance)
        print(
            f"perfect gate, cheapest within {tolerance:g} dB per crop, sigma {levels}:"
            f" {share:.3f} of the MACs, {lost:.3f} dB below full width"
        )
    for confidence in GATE_CONFIDENCES:  # calibrates GATE_CONFIDENCE (an untrained gate's figures mean nothing)
        share, lost = gate_cost(mixed, model.shares(), gate_choices(model, clean, MIXED_SIGMAS, confidence))
        print(f"gate at confidence {confidence:g}: {share:.3f} of the MACs, {lost:.3f} dB below full width")


if __name__ == "__main__":
    main()
