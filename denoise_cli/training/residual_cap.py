"""Choose a VDN model's residual cap (``VDN.cap``) on the synthetic held-out crops, never real/.

``python -m denoise_cli.training.residual_cap RECIPE WEIGHTS`` scores the trained weights
uncapped and at caps 1.0, 1.1, ... 2.0 times the image's noise level on the recipe's first
monitored degradation (the camera-noise synthesis), takes the tightest cap that costs at most
TOLERANCE dB there, and writes it into the card's ``arch_args``. A tight cap protects fine
texture that S-Net mistakes for noise; the tolerance keeps it from leaving synthetic noise in.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from .. import registry, weights
from ..models.vdn import VDN
from .loop import Trainer
from .recipes import RECIPES

CAPS = tuple(round(1.0 + 0.1 * i, 1) for i in range(11))
TOLERANCE = 0.02
"""dB the cap may cost on the held-out synthesis."""


def held_out_psnr(trainer: Trainer, model: VDN, cap: float) -> float:
    model.residual_cap = cap
    return next(iter(trainer.monitor(model).values()))


def choose_cap(trainer: Trainer, model: VDN) -> tuple[float, dict[float, float]]:
    """The tightest cap within TOLERANCE of the uncapped PSNR, and every score measured."""
    scores = {0.0: held_out_psnr(trainer, model, 0.0)}
    for cap in CAPS:
        scores[cap] = held_out_psnr(trainer, model, cap)
        if scores[cap] >= scores[0.0] - TOLERANCE:
            return cap, scores
    return 0.0, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", choices=sorted(r for r in RECIPES if RECIPES[r].arch == "vdn"))
    parser.add_argument("weights", type=Path)
    args = parser.parse_args()
    trainer = Trainer(RECIPES[args.recipe], Path(tempfile.mkdtemp()))
    model = registry.build(trainer.recipe.arch, **trainer.recipe.arch_args)
    weights.load_into(model, args.weights)
    cap, scores = choose_cap(trainer, model)
    name = next(iter(trainer.recipe.monitor))
    measured = ", ".join(f"{k:g}: {v:.3f}" for k, v in scores.items())
    print(f"held-out '{name}' PSNR by cap (0 = none): {measured}\nchosen: {cap:g}")
    card = weights.read_card(args.weights)
    card["arch_args"]["residual_cap"] = cap
    note = f"residual cap {cap:g} chosen on the held-out '{name}' synthesis (within {TOLERANCE} dB): {measured}"
    card["history"] = [*card.get("history", []), note]
    weights.write_card(args.weights, card)


if __name__ == "__main__":
    main()
