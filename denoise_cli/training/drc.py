"""DRC for DRN: dual-regression channel search, channel pruning and distillation (Guo et al., arXiv 2207.07929).

A trained DRN becomes a lighter one in three steps; only the width between the two convs
of every RCAB (its "inner" channels) is pruned, so the residual stream keeps its width:

1. ``search``: per RCAB, architecture logits over DRC's candidate widths; a soft channel
   mask (channels ranked by the L1 norm of the second conv's weights) is multiplied onto
   the inner activations, and the logits follow the dual regression loss on held-out
   batches, alternating with weight steps on training batches. The argmax is the width.
2. ``prune``: per RCAB keep the channels whose removal costs the dual regression loss most
   (first-order Taylor) and copy their weights into a DRN built with those widths.
3. Fine-tuning is the recipe ``drn-light-x4``: objective ``distill_dual_regression`` with the
   companion below (the dual nets plus the frozen full DRN as teacher).

Simplifications against the paper, each chosen to keep the machinery small on a CPU:
first-order DARTS (no unrolled virtual weight step) with constant learning rates; pruning by
first-order Taylor importance in one pass (DCP's greedy gradient-norm selection with
fine-tuning after every added channel and its feature-reconstruction loss L_M are left out);
distillation on the SR output by L1 (the paper: MSE on features); only the RCABs' inner
widths are searched (not the dual nets, down blocks or the 1x1 convs after the up-samplers);
fine-tuning starts the dual nets afresh (1.7 k parameters; they are not pruned).

``python -m denoise_cli.training.drc search|prune ...`` runs steps 1 and 2 on shared/data/train.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import registry, weights
from ..flops import count_macs
from ..models.drn import DRN, RCAB, DualNet
from .data import PatchSampler, load_rgb, training_split
from .objectives import dual_regression
from .recipes import SHARED_DATA, bicubic_down

log = logging.getLogger("denoise.train")

Pair = tuple[torch.Tensor, torch.Tensor]
"""(LR inputs, HR target)."""

SEARCH_FRACTIONS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
"""Candidate widths are these shares of ``channels * (1 - rate)`` (DRC)."""
CHANNEL_MULTIPLE = 4
"""Candidate widths are multiples of this (DRC: NC4HW4 layouts on mobile)."""
TRAIN_DIRS = ("train/bsds400", "train/t91")
DEFAULT_RATE = 0.5
"""DRC uses r = 0.3 on DRN-S, whose RCAB convs are 93% of its MACs; in drn-x4 (4 RCABs per stage)
they are 64%, so r = 0.5 (widths at most 32 of 64) is what cuts at least 30% of the whole network."""
MACS_SIDE = 96
"""LR side at which params and MACs are reported (the DRC tables' convention, PAPERS.md 3.2)."""


# -- channels ----------------------------------------------------------------------------
def candidate_widths(channels: int, rate: float) -> list[int]:
    """DRC's choices for one layer: ``channels * (1 - rate) * SEARCH_FRACTIONS`` rounded to a
    multiple of 4 (half up), at least 4 and at most ``channels``; unique, ascending."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"the pruning rate must be in [0, 1), not {rate}")
    found = set()
    for share in SEARCH_FRACTIONS:
        multiples = math.floor(round(channels * (1.0 - rate) * share / CHANNEL_MULTIPLE, 6) + 0.5)
        found.add(min(channels, max(CHANNEL_MULTIPLE, CHANNEL_MULTIPLE * multiples)))
    return sorted(found)


def named_rcabs(model: nn.Module) -> list[tuple[str, RCAB]]:
    """The prunable blocks in stage order (the order of ``DRN(inner=...)``)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, RCAB)]


def inner_widths(model: nn.Module) -> list[int]:
    return [block.inner for _, block in named_rcabs(model)]


def l1_ranks(block: RCAB) -> torch.Tensor:
    """Rank of every inner channel, 0 for the largest L1 norm of the second conv's weights that read it."""
    with torch.no_grad():
        norms = block.body[2].weight.abs().sum(dim=(0, 2, 3))
        order = norms.argsort(descending=True, stable=True)
        ranks = torch.empty_like(order)
        ranks[order] = torch.arange(len(order))
    return ranks


def soft_mask(logits: torch.Tensor, widths: Sequence[int], ranks: torch.Tensor) -> torch.Tensor:
    """``sum_k softmax(logits)_k * 1[rank < widths_k]``: each channel weighted by the probability
    of the candidate widths that keep it."""
    keeps = (ranks.unsqueeze(0) < torch.tensor(list(widths)).unsqueeze(1)).to(logits.dtype)
    return logits.softmax(0) @ keeps


@contextmanager
def masked_inner(model: nn.Module, masks: Sequence[Callable[[], torch.Tensor]]) -> Iterator[None]:
    """While inside, every RCAB's inner activations (its first conv's output) are multiplied by
    its mask, evaluated at each forward; a hook, so the blocks' own code is what runs."""
    blocks = named_rcabs(model)
    if len(masks) != len(blocks):
        raise ValueError(f"{len(masks)} masks for {len(blocks)} RCABs")

    def hook_for(mask: Callable[[], torch.Tensor]) -> Callable[..., torch.Tensor]:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
            return output * mask().to(output.dtype).view(1, -1, 1, 1)

        return hook

    handles = [b.body[0].register_forward_hook(hook_for(m)) for (_, b), m in zip(blocks, masks, strict=True)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def dr_loss(model: nn.Module, dual: nn.Module, pair: Pair) -> torch.Tensor:
    """L_P (multi-scale L1) + 0.1 L_D on one batch: the loss every DRC step follows."""
    inputs, target = pair
    return dual_regression(model, dual, inputs, target, F.l1_loss, torch.Generator())


def _descend(loss: torch.Tensor, params: list[torch.Tensor], opt: torch.optim.Optimizer) -> None:
    """One optimizer step on ``params`` only (gradients of the other parameters are not computed)."""
    for param, grad in zip(params, torch.autograd.grad(loss, params), strict=True):
        param.grad = grad
    opt.step()


# -- 1. channel-number search -----------------------------------------------------------------
def search_logits(
    model: DRN,
    dual: nn.Module,
    batches: Iterator[Pair],
    held: Iterator[Pair],
    rate: float,
    steps: int,
    weight_lr: float = 1e-4,
    alpha_lr: float = 3e-4,
) -> list[torch.Tensor]:
    """Architecture logits over ``candidate_widths`` of every RCAB after ``steps`` rounds.

    A round moves the logits (Adam) on a ``held`` batch, then the weights of copies of the
    networks (the given ones stay untouched) on a training batch from ``batches``, both on the
    dual regression loss under the soft masks. First-order DARTS: the logits' gradient is taken
    at the current weights instead of after the paper's unrolled virtual weight step.
    Deterministic for the same networks and batches.
    """
    model = copy.deepcopy(model).train().requires_grad_(True)
    dual = copy.deepcopy(dual).train().requires_grad_(True)
    blocks = [block for _, block in named_rcabs(model)]
    choices = [candidate_widths(block.inner, rate) for block in blocks]
    logits = [torch.zeros(len(c), requires_grad=True) for c in choices]
    params = [*model.parameters(), *dual.parameters()]
    weight_opt = torch.optim.Adam(params, lr=weight_lr)
    alpha_opt = torch.optim.Adam(logits, lr=alpha_lr)

    def mask_of(i: int) -> Callable[[], torch.Tensor]:
        return lambda: soft_mask(logits[i], choices[i], l1_ranks(blocks[i]))

    with masked_inner(model, [mask_of(i) for i in range(len(blocks))]):
        for step in range(steps):
            _descend(dr_loss(model, dual, next(held)), logits, alpha_opt)
            loss = dr_loss(model, dual, next(batches))
            _descend(loss, params, weight_opt)
            if (step + 1) % max(1, steps // 10) == 0:
                log.info("search step %d/%d  loss %.5f  widths %s", step + 1, steps, loss.item(), pick(logits, choices))
    return [a.detach().clone() for a in logits]


def pick(logits: Sequence[torch.Tensor], choices: Sequence[Sequence[int]]) -> list[int]:
    """The most probable candidate width of every layer."""
    return [c[int(a.argmax())] for a, c in zip(logits, choices, strict=True)]


def search_widths(
    model: DRN, dual: nn.Module, batches: Iterator[Pair], held: Iterator[Pair], rate: float, steps: int, **opts: float
) -> list[int]:
    """One inner width per RCAB (stage order), each from ``candidate_widths(width, rate)``; see ``search_logits``."""
    logits = search_logits(model, dual, batches, held, rate, steps, **opts)
    return pick(logits, [candidate_widths(w, rate) for w in inner_widths(model)])


# -- 2. channel pruning -------------------------------------------------------------------------
def channel_importance(model: DRN, dual: nn.Module, batches: Iterable[Pair]) -> list[torch.Tensor]:
    """Per RCAB and inner channel, ``|sum over batches of dL_DR/dm_c|`` for a mask m = 1 on the
    inner activations: the first-order Taylor estimate of what removing the channel costs."""
    masks = [torch.ones(w, requires_grad=True) for w in inner_widths(model)]
    totals = [torch.zeros(w) for w in inner_widths(model)]
    with masked_inner(model, [lambda m=m: m for m in masks]):
        for pair in batches:
            for total, grad in zip(totals, torch.autograd.grad(dr_loss(model, dual, pair), masks), strict=True):
                total += grad
    return [t.abs() for t in totals]


def kept_channels(importance: Sequence[torch.Tensor], widths: Sequence[int]) -> list[torch.Tensor]:
    """Per RCAB the indices of its ``widths[i]`` most important inner channels, ascending."""
    if len(widths) != len(importance):
        raise ValueError(f"{len(widths)} widths for {len(importance)} RCABs")
    for score, width in zip(importance, widths, strict=True):
        if not 1 <= width <= len(score):
            raise ValueError(f"cannot keep {width} of {len(score)} channels")
    return [score.topk(width).indices.sort().values for score, width in zip(importance, widths, strict=True)]


def narrow(model: DRN, keep: Sequence[Sequence[int] | torch.Tensor]) -> DRN:
    """A DRN whose RCAB i has only the inner channels ``keep[i]``: those rows of the first conv
    (weight and bias) and columns of the second; every other weight is copied unchanged."""
    pruned = DRN(model.scale, model.channels, model.blocks, inner=[len(k) for k in keep])
    state = dict(model.state_dict())
    for (name, _), kept in zip(named_rcabs(model), keep, strict=True):
        index = torch.as_tensor(kept, dtype=torch.long)
        for key, dim in ((f"{name}.body.0.weight", 0), (f"{name}.body.0.bias", 0), (f"{name}.body.2.weight", 1)):
            state[key] = state[key].index_select(dim, index)
    pruned.load_state_dict(state, strict=True)
    return pruned.train(model.training)


def prune(model: DRN, dual: nn.Module, widths: Sequence[int], batches: Iterable[Pair]) -> DRN:
    """The DRN with inner widths ``widths``, keeping each RCAB's most important channels."""
    return narrow(model, kept_channels(channel_importance(model, dual, batches), widths))


# -- 3. fine-tuning companion ---------------------------------------------------------------------
def load_teacher(path: Path) -> nn.Module:
    """A trained network built from the card beside its weights, frozen and in eval mode."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the teacher's weights do not exist yet (train that model first)")
    card = weights.read_card(path)
    teacher = registry.build(card["arch"], **card["arch_args"])
    weights.load_into(teacher, path)
    return teacher.eval().requires_grad_(False)


class DRCCompanion(nn.Module):
    """Training-only partner of a pruned DRN: fresh dual nets and the frozen full DRN (``teacher``,
    a weights path with its card) for ``distill_dual_regression``.

    The teacher's parameters do not require gradients (the Trainer leaves them out of its
    optimizer) and it stays in eval mode whatever ``train()`` says; it is part of the
    state_dict, so a checkpoint resumes with exactly the teacher it started with.
    """

    def __init__(self, teacher: str, scale: int = 4, channels: int = 16, kd_weight: float = 1.0) -> None:
        super().__init__()
        self.dual = DualNet(scale, channels)
        self.teacher = load_teacher(Path(teacher))
        if getattr(self.teacher, "scale", scale) != scale:
            raise ValueError(f"the teacher works at x{self.teacher.scale}, not x{scale}")
        self.kd_weight = kd_weight

    def train(self, mode: bool = True) -> DRCCompanion:
        super().train(mode)
        self.teacher.eval()
        return self


# -- command line -------------------------------------------------------------------------------
def training_pairs(
    data: Path, scale: int, patch: int, batch: int, holdout: int, seed: int
) -> tuple[Iterator[Pair], Iterator[Pair]]:
    """Endless (LR, HR) batches from shared/data/train (never val/): the training split, then the
    ``holdout`` images kept apart for the search's architecture steps."""
    kept, held = training_split(data, TRAIN_DIRS, holdout)
    degrade = bicubic_down(scale)

    def stream(files: list[Path], seed: int) -> Iterator[Pair]:
        sampler = PatchSampler([load_rgb(f) for f in files], patch, seed=seed)
        generator = torch.Generator().manual_seed(seed)
        while True:
            yield degrade(sampler.batch(batch), generator)

    return stream(kept, seed), stream(held, seed + 1)


def load_trained(path: Path, dual_path: Path | None = None) -> tuple[DRN, DualNet, dict[str, Any]]:
    """A trained DRN, its dual nets (from its run's checkpoint, by default beside the weights) and its card."""
    card = weights.read_card(path)
    model = registry.build(card.get("arch", "drn"), **card["arch_args"])
    if not isinstance(model, DRN):
        raise ValueError(f"{path}: DRC prunes DRN models, not {card.get('arch')!r}")
    weights.load_into(model, path)
    dual_path = dual_path or path.parent / "checkpoint.pt"
    if not dual_path.is_file():
        raise FileNotFoundError(f"{dual_path}: no checkpoint with the trained dual nets (pass --dual)")
    state = torch.load(dual_path, weights_only=True)["companion"]
    if any(k.startswith("dual.") for k in state):  # a drc-companion's checkpoint: its duals only
        state = {k.removeprefix("dual."): v for k, v in state.items() if k.startswith("dual.")}
    dual = DualNet(model.scale, channels=state["steps.0.0.weight"].shape[0])
    dual.load_state_dict(state, strict=True)
    return model, dual, card


def size(model: nn.Module) -> tuple[int, int]:
    """Parameters and MACs at a MACS_SIDE x MACS_SIDE LR input."""
    return sum(p.numel() for p in model.parameters()), count_macs(model.eval(), MACS_SIDE, MACS_SIDE)


def describe_size(label: str, params: int, macs: int, full_macs: int) -> str:
    at = f"{MACS_SIDE}x{MACS_SIDE} LR"
    return f"{label}: {params / 1e6:.3f} M params, {macs / 1e9:.2f} GMACs at {at} ({macs / full_macs:.1%} of the full)"


def run_search(args: argparse.Namespace) -> dict[str, Any]:
    model, dual, _ = load_trained(args.weights, args.dual)
    batches, held = training_pairs(args.data, model.scale, args.patch, args.batch, args.holdout, args.seed)
    logits = search_logits(model, dual, batches, held, args.rate, args.steps, args.weight_lr, args.alpha_lr)
    choices = [candidate_widths(w, args.rate) for w in inner_widths(model)]
    widths = pick(logits, choices)
    params, macs = size(model)
    light_params, light_macs = size(DRN(model.scale, model.channels, model.blocks, inner=widths))
    print(describe_size("full", params, macs, macs))
    print(describe_size("searched", light_params, light_macs, macs))
    result = {
        "weights": str(args.weights),
        "rate": args.rate,
        "steps": args.steps,
        "batch": args.batch,
        "patch": args.patch,
        "seed": args.seed,
        "full_widths": inner_widths(model),
        "candidates": choices,
        "probabilities": [[round(p, 4) for p in a.softmax(0).tolist()] for a in logits],
        "widths": widths,
        f"macs_{MACS_SIDE}": {"full": macs, "searched": light_macs},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"widths {widths} written to {args.out}")
    return result


def run_prune(args: argparse.Namespace) -> dict[str, Any]:
    model, dual, parent = load_trained(args.weights, args.dual)
    widths = json.loads(args.widths.read_text())["widths"]
    batches, _ = training_pairs(args.data, model.scale, args.patch, args.batch, args.holdout, args.seed)
    pruned = prune(model, dual, widths, (next(batches) for _ in range(args.batches)))
    params, macs = size(model)
    light_params, light_macs = size(pruned)
    print(describe_size("before", params, macs, macs))
    print(describe_size("after", light_params, light_macs, macs))
    card = {
        "name": f"{parent.get('name', 'drn')}-pruned",
        "arch": "drn",
        "arch_args": {"scale": model.scale, "channels": model.channels, "blocks": model.blocks, "inner": widths},
        "steps": 0,
        "params": light_params,
        f"macs_{MACS_SIDE}": light_macs,
        "parent": {k: parent[k] for k in ("name", "steps", "train_seconds") if k in parent},
        "pruning": {
            "from": str(args.weights),
            "widths_from": str(args.widths),
            "importance": "first-order Taylor |sum dL_DR/dmask| over the batches",
            "batches": args.batches,
            "batch": args.batch,
            "patch": args.patch,
            "params_before": params,
            f"macs_{MACS_SIDE}_before": macs,
        },
    }
    weights.save(pruned, args.out, card)
    print(f"pruned network written to {args.out} (+ {args.out.with_suffix('.json').name})")
    return card


def parser() -> argparse.ArgumentParser:
    main_parser = argparse.ArgumentParser(prog="python -m denoise_cli.training.drc", description=__doc__.split("\n")[0])
    commands = main_parser.add_subparsers(dest="command", required=True)
    search = commands.add_parser("search", help="dual-regression channel-number search; writes widths as JSON")
    prune_ = commands.add_parser("prune", help="prune a trained DRN to searched widths; writes safetensors + card")
    for sub in (search, prune_):
        sub.add_argument("weights", type=Path, help="trained DRN .safetensors (its card beside it)")
        sub.add_argument("--dual", type=Path, default=None, help="checkpoint with the trained duals (default: beside)")
        sub.add_argument("--data", type=Path, default=SHARED_DATA, help="shared data root (only its train/ is used)")
        sub.add_argument("--batch", type=int, default=8)
        sub.add_argument("--patch", type=int, default=96, help="HR patch side")
        sub.add_argument("--holdout", type=int, default=40, help="training images kept apart for the search")
        sub.add_argument("--seed", type=int, default=0)
    search.add_argument("--out", type=Path, default=Path("runs/drn-light-x4/widths.json"))
    search.add_argument("--rate", type=float, default=DEFAULT_RATE, help="candidates go up to (1 - rate) x width")
    search.add_argument("--steps", type=int, default=300)
    search.add_argument("--weight-lr", type=float, default=1e-4)
    search.add_argument("--alpha-lr", type=float, default=3e-4)
    prune_.add_argument("--widths", type=Path, default=Path("runs/drn-light-x4/widths.json"), help="search output")
    prune_.add_argument("--out", type=Path, default=Path("runs/drn-light-x4/pruned.safetensors"))
    prune_.add_argument("--batches", type=int, default=16, help="batches the channel importance is summed over")
    return main_parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    torch.manual_seed(args.seed)
    (run_search if args.command == "search" else run_prune)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
