"""The one training loop every model uses.

Measured precision (bf16 autocast + channels_last where it is faster), AdamW with a
linear warm-up and cosine decay, an EMA of the weights (which is what ships), gradient
clipping, a PSNR curve on held-out training crops, and a resumable checkpoint written
every few minutes and on SIGTERM / Ctrl-C. Exported weights are the EMA model as
safetensors plus a JSON card.
"""

from __future__ import annotations

import copy
import datetime
import logging
import math
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import registry, weights
from ..device import autocast, cpu_name, fastest_precision, set_threads
from ..metrics import psnr
from .data import PatchSampler, load_rgb, monitor_crops, training_split
from .objectives import OBJECTIVES, pixel_loss
from .recipes import SHARED_DATA, Recipe

log = logging.getLogger("denoise.train")


@contextmanager
def signals_caught() -> Iterator[list[int]]:
    """Record SIGTERM and SIGINT in the yielded list instead of dying, so a run can end its
    step, checkpoint and stop (``kill PID`` or a session's end loses no work). Off the main
    thread, where handlers cannot be set, the list stays empty."""
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return
    previous = {
        sig: signal.signal(sig, lambda signum, _: caught.append(signum)) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield caught
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def lr_at(step: int, recipe: Recipe, restart: int | None = None) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``min_lr`` at ``steps``.

    ``restart`` is the step a warm restart began at (weights kept, fresh optimizer): the
    learning rate ramps up again over ``warmup`` steps so Adam's new moments can settle.
    """
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    progress = min(1.0, (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup))
    lr = recipe.min_lr + 0.5 * (recipe.lr - recipe.min_lr) * (1 + math.cos(math.pi * progress))
    if restart is not None and step - restart < recipe.warmup:
        lr *= (step - restart + 1) / recipe.warmup
    return lr


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p, 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(b)


class Trainer:
    """Holds the state of one run; ``run()`` trains until done or out of time."""

    def __init__(self, recipe: Recipe, out_dir: Path, data_root: Path = SHARED_DATA, seed: int = 0) -> None:
        set_threads()
        torch.manual_seed(seed)
        self.recipe = recipe
        self.out_dir = out_dir
        self.device = torch.device("cpu")
        self.model = registry.build(recipe.arch, **recipe.arch_args).to(memory_format=torch.channels_last)
        self.ema = copy.deepcopy(self.model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        # A training-only network the objective needs (DRN's dual nets); it is not exported.
        self.companion = None
        if recipe.companion:
            arch, args = recipe.companion
            self.companion = registry.build(arch, **args).to(memory_format=torch.channels_last)
        self.objective = OBJECTIVES[recipe.objective]
        self.loss = pixel_loss(recipe.loss)
        if recipe.trainable:
            for name, param in self.model.named_parameters():
                param.requires_grad_(name.startswith(recipe.trainable))
        self.opt = self._optimizer()
        self.generator = torch.Generator().manual_seed(seed)
        self.step = 0
        self.restart: int | None = None
        self.parent: dict[str, Any] | None = None
        """What an --init fine-tune started from (its card's name, steps, time), for the card."""
        self.seconds = 0.0
        self.precision = "fp32"

        train_files, held = training_split(data_root, recipe.train_dirs, recipe.holdout)
        images = [load_rgb(f) for f in train_files]
        self.sampler = PatchSampler(images, recipe.patch, scales=recipe.patch_scale, seed=seed)
        self.monitor_clean = monitor_crops(held, scale=recipe.patch_scale[1])
        log.info("%d training images, %d held out for monitoring", len(train_files), len(held))

    def _optimizer(self, fresh: Iterable[str] = ()) -> torch.optim.Optimizer:
        """AdamW over the model and the companion's trainable parameters; the ``fresh`` tensors
        (names in the model) get their own group at ``recipe.fresh_lr_scale`` times the rate."""
        fresh = set(fresh) if self.recipe.fresh_lr_scale != 1.0 else set()
        named = list(self.model.named_parameters())
        # A companion's frozen parts (DRC's teacher) stay out of the optimizer.
        extra = [p for p in self.companion.parameters() if p.requires_grad] if self.companion else []
        groups: list[dict[str, Any]] = [{"params": [p for n, p in named if n not in fresh] + extra}]
        if fresh:
            groups.append({"params": [p for n, p in named if n in fresh], "lr_scale": self.recipe.fresh_lr_scale})
        return torch.optim.AdamW(groups, lr=self.recipe.lr, betas=(0.9, 0.99), weight_decay=0.0)

    # -- state -----------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    def save_checkpoint(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "companion": self.companion.state_dict() if self.companion else None,
            "opt": self.opt.state_dict(),
            "step": self.step,
            "restart": self.restart,
            "parent": self.parent,
            "seconds": self.seconds,
            "generator": self.generator.get_state(),
            "sampler": self.sampler.rng.bit_generator.state,
            "precision": self.precision,
        }
        tmp = self.checkpoint_path.with_suffix(".part")
        torch.save(state, tmp)
        tmp.replace(self.checkpoint_path)

    def resume(self) -> bool:
        if not self.checkpoint_path.exists():
            return False
        # Our own checkpoint; weights_only keeps even this one free of arbitrary pickles.
        state = torch.load(self.checkpoint_path, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        if self.companion is not None:
            self.companion.load_state_dict(state["companion"])
        self.parent = state.get("parent")
        self.opt = self._optimizer((self.parent or {}).get("started_afresh", ()))
        self.opt.load_state_dict(state["opt"])
        self.step, self.seconds = state["step"], state["seconds"]
        self.restart = state.get("restart")
        self.generator.set_state(state["generator"])
        self.sampler.rng.bit_generator.state = state["sampler"]
        self.precision = state.get("precision", self.precision)
        log.info("resumed %s at step %d", self.checkpoint_path, self.step)
        return True

    def init_from(self, path: Path, continue_schedule: bool = True, matching_only: bool = False) -> None:
        """Start from shipped weights (no optimizer state is shipped).

        The same model trained further continues its schedule from the card's step count (a
        warm restart); otherwise, or with ``continue_schedule=False`` (a fine-tuning phase),
        a new schedule starts at step 0 and the card records what it started from.
        ``matching_only`` loads just the tensors whose names and shapes fit (EDSR trains its
        x4 network from the x2 one: all but the second up-sampling stage); the card lists
        those that started afresh, and a new schedule starts.
        """
        card = weights.read_card(path)
        fresh: list[str] = []
        if matching_only:
            fresh = weights.load_matching(self.model, path)
            self.ema.load_state_dict(self.model.state_dict())
            continue_schedule = False
        else:
            weights.load_into(self.model, path)
            weights.load_into(self.ema, path)
        self._companion_from_run(path.parent / "checkpoint.pt")
        if continue_schedule and card.get("name") == self.recipe.model:
            self.step = self.restart = int(card.get("steps", 0))
            self.seconds = float(card.get("train_seconds", 0))
            self.parent = card.get("parent")  # the same lineage, trained further
        else:
            self.parent = {k: card.get(k) for k in ("name", "steps", "train_seconds", "parent") if card.get(k)}
            if fresh:
                self.parent["started_afresh"] = fresh
                self.opt = self._optimizer(fresh)
        log.info("initialised from %s (step %d)%s", path, self.step, f"; afresh: {', '.join(fresh)}" if fresh else "")

    def _companion_from_run(self, checkpoint: Path) -> None:
        """The trained companion (e.g. DRN's dual nets) of the run the --init weights come from,
        when its checkpoint sits beside them and fits; otherwise the companion starts afresh."""
        if self.companion is None or not checkpoint.is_file():
            return
        state = torch.load(checkpoint, weights_only=True).get("companion")
        try:
            self.companion.load_state_dict(state or {})
        except RuntimeError:
            log.info("companion starts afresh (%s holds another one)", checkpoint)
            return
        log.info("companion loaded from %s", checkpoint)

    # -- steps -----------------------------------------------------------------------
    def _forward_backward(self, precision: str) -> float:
        clean = self.sampler.batch(self.recipe.batch)
        inputs, target = self.recipe.degrade(clean, self.generator)
        inputs = inputs.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, precision):
            loss = self.objective(self.model, self.companion, inputs, target, self.loss, self.generator)
        loss.backward()
        return loss.item()

    def pick_precision(self, requested: str = "auto") -> None:
        if requested == "auto":

            def trial(precision: str) -> None:
                self._forward_backward(precision)
                self.opt.zero_grad(set_to_none=True)

            requested = fastest_precision(self.device, trial)
        self.precision = requested
        log.info("training on %s, precision %s, channels_last", cpu_name(), self.precision)

    def train_step(self) -> float:
        for group in self.opt.param_groups:
            group["lr"] = lr_at(self.step, self.recipe, self.restart) * group.get("lr_scale", 1.0)
        loss = self._forward_backward(self.precision)
        torch.nn.utils.clip_grad_norm_([p for group in self.opt.param_groups for p in group["params"]], 0.5)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        update_ema(self.ema, self.model, self.recipe.ema if self.step > self.recipe.warmup else 0.0)
        self.step += 1
        return loss

    @torch.no_grad()
    def monitor(self, model: nn.Module | None = None) -> dict[str, float]:
        """PSNR of ``model`` (default: the EMA) on the held-out crops, one fixed seed per degradation."""
        if self.monitor_clean is None:
            return {}
        model = self.ema if model is None else model
        was_training = model.training
        model.eval()
        scores = {}
        for name, inputs, target in self._monitor_pairs():
            with autocast(self.device, self.precision):
                output = model(inputs.contiguous(memory_format=torch.channels_last))
            scores[name] = psnr(output.float().clamp(0, 1), target)
        model.train(was_training)
        return scores

    def monitor_inputs(self) -> dict[str, float]:
        """PSNR of the degraded held-out crops themselves, where input and target have one size
        (a denoiser's floor to read the curve against)."""
        if self.monitor_clean is None:
            return {}
        pairs = self._monitor_pairs()
        return {name: psnr(x.float().clamp(0, 1), y) for name, x, y in pairs if x.shape == y.shape}

    def _monitor_pairs(self) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
        """(name, input, target) of each monitored degradation of the held-out crops, one fixed seed each."""
        assert self.monitor_clean is not None
        for name, degrade in self.recipe.monitor.items():
            yield (name, *degrade(self.monitor_clean, torch.Generator().manual_seed(1234)))

    def best_weights(self) -> tuple[str, nn.Module, dict[str, float]]:
        """The EMA or the raw weights, whichever scores higher on the held-out crops.

        The EMA usually wins once the learning rate has decayed; while it is still high
        the average of a fast-moving trajectory can trail the raw weights by a decibel or more.
        """
        ema, raw = self.monitor(self.ema), self.monitor(self.model)
        if raw and sum(raw.values()) > sum(ema.values()):
            return "raw", self.model, raw
        return "ema", self.ema, ema

    # -- export ----------------------------------------------------------------------
    def export(self, path: Path, extra: dict[str, Any] | None = None) -> None:
        card = {
            "name": self.recipe.model,
            "arch": self.recipe.arch,
            "arch_args": self.recipe.arch_args,
            "steps": self.step,
            "train_seconds": round(self.seconds),
            "trained_on": cpu_name(),
            "precision": self.precision,
            "recipe": self.recipe.describe(),
            **({"parent": self.parent} if self.parent else {}),
            "exported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        which, model, scores = self.best_weights()
        card["params"] = sum(p.numel() for p in model.parameters())
        card["weights"] = f"{which} (higher held-out PSNR than the {'raw' if which == 'ema' else 'EMA'} weights)"
        card["monitor_psnr"] = {k: round(v, 3) for k, v in scores.items()}
        if path.with_suffix(".json").exists():  # keep measured metrics of an earlier export
            old = weights.read_card(path)
            card = {**{k: v for k, v in old.items() if k in ("metrics", "why")}, **card}
        card.update(extra or {})
        weights.save(model, path, card, getattr(torch, self.recipe.stored_as))
        log.info("exported %s weights to %s (step %d)", which, path, self.step)

    def run(
        self,
        max_minutes: float | None = None,
        checkpoint_minutes: float = 5.0,
        log_every: int = 50,
        monitor_every: int = 1000,
    ) -> None:
        with signals_caught() as caught:
            self._run(caught, max_minutes, checkpoint_minutes, log_every, monitor_every)
        self.save_checkpoint()
        if self.recipe.finish is not None and self.step >= self.recipe.steps:
            self.recipe.finish(self)
        self.export(self.out_dir / f"{self.recipe.model}.safetensors")

    def _run(
        self,
        caught: list[int],
        max_minutes: float | None,
        checkpoint_minutes: float,
        log_every: int,
        monitor_every: int,
    ) -> None:
        started = time.monotonic()
        last_checkpoint = started
        losses: list[float] = []
        if inputs := self.monitor_inputs():
            log.info("held-out PSNR of the inputs  %s", "  ".join(f"{k} {v:.2f}" for k, v in inputs.items()))
        tick = window = time.monotonic()
        while self.step < self.recipe.steps:
            losses.append(self.train_step())
            now = time.monotonic()
            self.seconds += now - tick
            tick = now
            if self.step % log_every == 0:
                log.info(
                    "step %d  loss %.5f  lr %.2e  %.2f s/step",
                    self.step,
                    sum(losses) / len(losses),
                    lr_at(self.step, self.recipe, self.restart),
                    (now - window) / len(losses),  # wall time of these steps, data synthesis included
                )
                losses.clear()
                window = now
            if self.step % monitor_every == 0:
                for label, net in (("ema", self.ema), ("raw", self.model)):
                    scores = self.monitor(net)
                    shown = "  ".join(f"{k} {v:.2f}" for k, v in scores.items())
                    log.info("step %d  held-out PSNR (%s)  %s", self.step, label, shown)
            if now - last_checkpoint > checkpoint_minutes * 60:
                self.save_checkpoint()
                self.export(self.out_dir / f"{self.recipe.model}.safetensors")
                last_checkpoint = now
            if max_minutes is not None and now - started > max_minutes * 60:
                log.info("time budget of %.0f min reached at step %d", max_minutes, self.step)
                return
            if caught:
                log.info("signal %d: stopping resumably at step %d", caught[0], self.step)
                return
            tick = time.monotonic()
