"""``python -m denoise_cli.training RECIPE``: train (or resume) one recipe in the background.

Checkpoints go to ``--out`` every few minutes; rerunning the same command resumes. The EMA
weights and their card are exported beside the checkpoint; copy them to weights/ to ship.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from .recipes import RECIPES, SHARED_DATA


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m denoise_cli.training", description=__doc__)
    parser.add_argument("recipe", choices=sorted(RECIPES))
    parser.add_argument("--out", type=Path, default=None, help="run folder (default runs/RECIPE)")
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="shared data root (its train/ is used)")
    parser.add_argument("--minutes", type=float, default=None, help="stop (resumably) after this long")
    parser.add_argument("--steps", type=int, default=None, help="override the recipe's total steps")
    parser.add_argument("--init", type=Path, default=None, help="start from shipped .safetensors weights")
    parser.add_argument(
        "--finetune",
        action="store_true",
        help="with --init: a new schedule from step 0 (e.g. a short L2 phase) instead of continuing the old one",
    )
    parser.add_argument(
        "--init-matching",
        action="store_true",
        help="with --init: load only the tensors whose names and shapes fit this recipe's network (an x4"
        " network from its x2 sibling, as EDSR); the rest start afresh, on a new schedule",
    )
    parser.add_argument("--lr", type=float, default=None, help="override the recipe's peak learning rate")
    parser.add_argument(
        "--fresh-lr-scale",
        type=float,
        default=None,
        help="with --init-matching: learning-rate factor for the tensors that start afresh (e.g. 10 for an"
        " attention block added to a trained trunk)",
    )
    parser.add_argument(
        "--loss", choices=["l1", "l2", "charbonnier", "log-mse"], default=None, help="override the recipe's loss"
    )
    parser.add_argument("--warmup", type=int, default=None, help="override the recipe's warm-up steps")
    parser.add_argument(
        "--objective",
        choices=["sandwich", "sandwich_distill", "tailored"],
        default=None,
        help="override the recipe's objective (a slimmable network: the sandwich rule with or without in-place"
        " distillation, or its tailored sub-networks)",
    )
    parser.add_argument("--patch", type=int, default=None, help="override the recipe's patch side (target pixels)")
    parser.add_argument("--batch", type=int, default=None, help="override the recipe's batch size")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--export-only", action="store_true", help="export the checkpoint's best weights and stop")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    from .loop import Trainer

    recipe = RECIPES[args.recipe]
    out_dir = args.out or Path("runs") / args.recipe
    shape_from = None if args.init_matching else args.init  # another network's card must not set the shape
    recipe.arch_args = architecture_of(recipe.model, recipe.arch, recipe.arch_args, out_dir, shape_from)
    for name in ("steps", "lr", "fresh_lr_scale", "loss", "warmup", "patch", "batch", "objective"):
        if getattr(args, name) is not None:
            setattr(recipe, name, getattr(args, name))
    trainer = Trainer(recipe, out_dir, args.data, args.seed)
    if args.precision != "auto":
        trainer.precision = args.precision  # a checkpoint that records its precision overrides this
    if not trainer.resume() and args.init:
        trainer.init_from(args.init, continue_schedule=not args.finetune, matching_only=args.init_matching)
    if args.export_only:
        trainer.export(trainer.out_dir / f"{recipe.model}.safetensors")
        return 0
    trainer.pick_precision(args.precision)
    trainer.run(max_minutes=args.minutes)
    return 0


def architecture_of(
    model: str, arch: str, recipe_args: dict[str, Any], out_dir: Path, init: Path | None
) -> dict[str, Any]:
    """The network's arguments: those of the run's own exported card (resuming), else of the
    --init weights' card when it is the same architecture (e.g. a pruned DRN's widths), else
    the recipe's."""
    from .. import weights

    for card_path in (out_dir / f"{model}.json", init.with_suffix(".json") if init else None):
        if card_path is not None and card_path.is_file():
            card = weights.read_card(card_path.with_suffix(".safetensors"))
            if card.get("arch", arch) == arch and card.get("arch_args"):
                return {**recipe_args, **card["arch_args"]}
    return recipe_args


if __name__ == "__main__":
    sys.exit(main())
