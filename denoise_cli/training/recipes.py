"""One small recipe per shipped model: data, degradation, schedule."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..registry import Q10_QUALITIES
from .degrade import add_gaussian_noise, imresize

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"

# A degradation makes (input, target) from a clean batch.
Degrade = Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def awgn(sigma_range: tuple[float, float]) -> Degrade:
    def degrade(clean: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        noisy, _ = add_gaussian_noise(clean, sigma_range, generator)
        return noisy, clean

    return degrade


def bicubic_down(scale: int) -> Degrade:
    """The super-resolution protocol: MATLAB-style bicubic shrink, stored as 8-bit like an LR file."""

    def degrade(clean: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        small = imresize(clean, 1.0 / scale).float()
        return small.clamp_(0.0, 1.0).mul_(255.0).round_().div_(255.0), clean

    return degrade


@dataclass
class Recipe:
    model: str
    """Registry name; also the weights file stem."""
    arch: str
    arch_args: dict[str, Any]
    train_dirs: list[str]
    """Folders under shared/data/ (train/ only)."""
    degrade: Degrade
    monitor: dict[str, Degrade]
    """Named fixed degradations scored on held-out training images while training."""
    patch: int = 96
    patch_scale: tuple[float, float] = (0.5, 1.0)
    """Range of the random down-scaling of a training image before a patch is cut; the held-out
    crops are down-scaled by its upper end."""
    batch: int = 16
    steps: int = 20000
    lr: float = 4e-4
    min_lr: float = 1e-6
    warmup: int = 500
    ema: float = 0.999
    loss: str = "l1"
    objective: str = "restore"
    """Key in objectives.OBJECTIVES."""
    companion: tuple[str, dict[str, Any]] | None = None
    """(architecture, arguments) of a training-only network the objective uses, e.g. DRN's duals."""
    fresh_lr_scale: float = 1.0
    """Learning-rate factor for the tensors an --init-matching start leaves fresh (a block added
    to a trained trunk), so they can catch up with weights that are already trained."""
    trainable: str | None = None
    """Train only parameters whose name starts with this (e.g. DDS-Net's gate); None: all."""
    finish: Callable[[Any], None] | None = None
    """A step after the last training step, given the Trainer (e.g. DDS-Net's channel tailoring)."""
    holdout: int = 12
    """Training images kept apart for the monitoring curve."""
    stored_as: str = "float32"
    """Tensor type of the exported weights file: "float16" for large models (half the size)."""
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        """The JSON-able part, stored in the weights card."""
        skip = {"degrade", "monitor", "finish"}
        out = {k: v for k, v in asdict(self).items() if k not in skip}
        out["monitor"] = list(self.monitor)
        return out


def packed_mosaic(max_saturation: float = 1.0) -> Degrade:
    """Demosaicking: the RGGB mosaic of the clean patch, packed to four half-resolution planes.

    ``max_saturation`` > 1 first scales the chroma of half the patches (their difference from
    the grey mean) by a factor drawn in [1, max_saturation]: the training photos are mostly
    muted, and strongly coloured scenes, where the colour planes are least alike, are where
    demosaicking is hardest.
    """

    def degrade(clean: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        from ..raw import mosaic, pack

        if max_saturation > 1.0:
            n = clean.shape[0]
            gain = 1.0 + (max_saturation - 1.0) * torch.rand(n, 1, 1, 1, generator=generator)
            gain = torch.where(torch.rand(n, 1, 1, 1, generator=generator) < 0.5, gain, torch.ones_like(gain))
            grey = clean.mean(dim=1, keepdim=True)
            clean = (grey + gain.to(clean) * (clean - grey)).clamp(0.0, 1.0)
        return pack(mosaic(clean)), clean

    return degrade


def jpeg(quality_range: tuple[int, int], gray_fraction: float) -> Degrade:
    from ..jpeg import random_jpeg

    return random_jpeg(quality_range, gray_fraction)


PANET_NOTES = [
    "PANet backbone (head, ResBlocks, pyramid attention in the middle, ResBlocks, conv, global"
    " skip, tail) with fewer blocks than the paper's 80 for a CPU budget; the attention block is"
    " the paper's (scales 1.0-0.6, 3x3 patches, softmax scale 10, reduction 2).",
    "training patches are 48 px (the paper's size) because attention cost is quadratic in the patch area:"
    " at 64 px the attention took three times the convs' MACs and a step 3.1 s on one EPYC core, at 48 px about 1.1 s",
]


def panet_recipe(
    model: str,
    arch_args: dict[str, Any],
    degrade: Degrade,
    notes: list[str],
    monitor: Degrade | None = None,
    **schedule: Any,
) -> Recipe:
    """A PANet recipe; its held-out curve uses ``monitor`` (default: the training degradation)."""
    return Recipe(
        model=model,
        arch="panet",
        arch_args={"features": 64, "blocks": 12, **arch_args},
        train_dirs=["train/bsds400", "train/t91"],
        degrade=degrade,
        monitor={"val": monitor or degrade},
        notes=PANET_NOTES + notes,
        **{"patch": 48, "batch": 16, "steps": 10000, "lr": 2e-4, **schedule},
    )


def panet_rgb_recipe(model: str, degrade: Degrade, note: str) -> Recipe:
    """A same-size RGB PANet (deblocking, denoising): residual prediction, body at half resolution."""
    residual_note = "predicts the residual (image skip) and runs its body at half resolution (space-to-depth)"
    return panet_recipe(model, {"unshuffle": 2, "image_skip": True}, degrade, [note, residual_note])


def edsr_recipe(scale: int, attention: bool, **schedule: Any) -> Recipe:
    name = f"{'pa-edsr' if attention else 'edsr'}-x{scale}"
    return Recipe(
        model=name,
        arch="pa-edsr",
        arch_args={"scale": scale, "features": 64, "blocks": 16, "attention": attention},
        train_dirs=["train/bsds400", "train/t91"],
        degrade=bicubic_down(scale),
        monitor={f"x{scale}": bicubic_down(scale)},
        notes=[
            "EDSR-baseline trunk (16 x 64, the paper's 32 x 256 does not train on 2 CPU cores)"
            + (
                ", pyramid attention after block 8, starting as the identity (zero value embedding; since session 11)"
                if attention
                else ", no attention (the ablation twin)"
            ),
        ],
        **{"patch": 64 * scale // 2, "batch": 16, "steps": 12000, "lr": 3e-4, **schedule},
    )


def raw_to_rgb() -> Degrade:
    from .unprocess import synthetic_raw

    return synthetic_raw


def hyperisp_recipe(hyper: bool, **schedule: Any) -> Recipe:
    return Recipe(
        model="hyperisp" if hyper else "hyperisp-plain",
        arch="hyperisp",
        arch_args={"features": 32, "blocks": 6, "hyper": hyper, "code_dim": 16, "hidden": 16},
        train_dirs=["train/bsds400", "train/t91"],
        degrade=raw_to_rgb(),
        monitor={"synthetic": raw_to_rgb()},
        notes=[
            "synthetic RAW by unprocessing (Brooks et al. 2019): inverse tone curve and gamma, inverse"
            " colour matrix of a random camera, inverse white balance, RGGB mosaic, shot + read noise",
            "loss on white-balanced linear RGB; the colour matrix, gamma and tone curve are fixed steps after",
            "HyperConv2d kernels generated by an MLP (hidden 16) from a 16-d code per layer"
            if hyper
            else "plain convs: the same MACs as the hypernetwork model, fewer parameters",
        ],
        **{"patch": 128, "batch": 16, "steps": 8000, "lr": 4e-4, **schedule},
    )


def camera_noise() -> Degrade:
    from .realnoise import camera_noise

    return camera_noise


def vdn_recipe(hyper: bool, **schedule: Any) -> Recipe:
    from .realnoise import RANGES

    return Recipe(
        model="vdn-hyper" if hyper else "vdn-plain",
        arch="vdn",
        arch_args={
            "features": 32,
            "sigma_features": 32,
            "sigma_layers": 5,
            "hyper": hyper,
            "code_dim": 16,
            "hidden": 4,
        },
        train_dirs=["train/bsds400", "train/t91"],
        degrade=camera_noise(),
        monitor={"camera": camera_noise(), "sigma25": awgn((25.0, 25.0))},
        objective="variational",
        notes=[
            "realistic camera noise made from clean crops (training/realnoise.py): " + "; ".join(RANGES),
            "VDN's variational objective (window p = 7, eps_0^2 = 1e-6); the held-out curve is synthetic, never real/",
            "VDN shape for a CPU: D-Net a 3-level U-Net on the H/2 unshuffled image (32/64/128 channels,"
            " residual blocks, additive skips), S-Net 5 convs at H/4",
            "HyperConv2d kernels generated by an MLP (hidden 4) from a 16-d code per layer"
            if hyper
            else "plain convs: the same network and MACs as vdn-hyper, fewer parameters",
            "after training, `python -m denoise_cli.training.residual_cap` chooses the card's residual cap"
            " (VDN.cap) on the held-out synthesis",
        ],
        stored_as="float16",  # 7.8 M parameters with the hypernetworks: 15.7 MB instead of 31
        **{"patch": 128, "batch": 16, "steps": 8000, "lr": 2e-4, **schedule},
    )


def _tailor(trainer: Any) -> None:
    from .ddsnet import tailor_trainer

    tailor_trainer(trainer)


def drn_recipe(scale: int, channels: int, blocks: int, **schedule: Any) -> Recipe:
    return Recipe(
        model=f"drn-x{scale}",
        arch="drn",
        arch_args={"scale": scale, "channels": channels, "blocks": blocks},
        train_dirs=["train/bsds400", "train/t91"],
        degrade=bicubic_down(scale),
        monitor={f"x{scale}": bicubic_down(scale)},
        objective="dual_regression",
        companion=("drn-dual", {"scale": scale, "channels": channels}),
        **schedule,
    )


def drn_light_recipe(**schedule: Any) -> Recipe:
    """DRC stage 3: fine-tune the pruned drn-x4 with the dual regression loss and distillation."""
    full = {"scale": 4, "channels": 16, "blocks": 4}
    return Recipe(
        model="drn-light-x4",
        arch="drn",
        arch_args=full,  # the pruned widths come from the --init card (see training/__main__.py)
        train_dirs=["train/bsds400", "train/t91"],
        degrade=bicubic_down(4),
        monitor={"x4": bicubic_down(4)},
        objective="distill_dual_regression",
        companion=("drc-companion", {"teacher": "runs/drn-x4/drn-x4.safetensors", "scale": 4, "channels": 16}),
        notes=[
            "DRC (Guo et al., arXiv 2207.07929) on drn-x4: run from the checkout root, after drn-x4 is trained,"
            " `python -m denoise_cli.training.drc search runs/drn-x4/drn-x4.safetensors` (RCAB inner widths,"
            " rate 0.5), `python -m denoise_cli.training.drc prune runs/drn-x4/drn-x4.safetensors`, then"
            " `python -m denoise_cli.training drn-light-x4 --init runs/drn-light-x4/pruned.safetensors --finetune`",
            "the per-RCAB widths (arch_args 'inner') come from the card of the --init weights",
            "loss: multi-scale L1 + 0.1 x dual L1 + 1.0 x L1 to the frozen drn-x4's output; the dual nets start afresh",
        ],
        **{"patch": 128, "batch": 16, "steps": 4000, "lr": 1e-4, "warmup": 200, **schedule},
    )


RECIPES: dict[str, Recipe] = {
    "mallenet": Recipe(
        model="mallenet",
        arch="mallenet",
        arch_args={"channels": 32, "full_res_channels": 16, "blocks_per_stage": 2, "kernel_size": 3},
        train_dirs=["train/bsds400", "train/t91"],
        degrade=awgn((0.0, 55.0)),
        monitor={"sigma15": awgn((15.0, 15.0)), "sigma25": awgn((25.0, 25.0)), "sigma50": awgn((50.0, 50.0))},
        patch=96,
        batch=16,
        steps=9000,
        lr=5e-4,
        notes=[
            "blind AWGN, sigma uniform in [0, 55] per patch, not clipped",
            "width: 16 channels at full resolution, 32 at H/2, 64 at H/4, 128 at H/8. On a CPU the"
            " full-resolution passes are memory-bound: with 32 full-resolution channels the"
            " slice-and-conv alone took ~45% of the run time, so full resolution only fuses, applies"
            " one 3x3 MalleConv and predicts the noise (67 GMACs/MP against 556 for DnCNN).",
            "upsampling between levels is depth-to-space (1x1 conv + pixel shuffle), not bilinear",
        ],
    ),
    # DRN-S is 4.8 M parameters and 110 GMACs at a 96x96 LR input: far beyond a CPU budget.
    # The same design, narrower: fewer RCABs per up stage, same head width.
    "drn-x4": drn_recipe(4, channels=16, blocks=4, patch=128, batch=16, steps=12000, lr=3e-4),
    "drn-x2": drn_recipe(2, channels=32, blocks=8, patch=96, batch=16, steps=12000, lr=3e-4),
    # DRC: drn-x4 with its RCABs' inner widths searched and pruned, fine-tuned with distillation.
    "drn-light-x4": drn_light_recipe(),
    # PANet: one backbone, three tasks. Body at half resolution (a packed mosaic, or
    # space-to-depth for same-size tasks) so a CPU can train it.
    "panet-demosaic": panet_recipe(
        "panet-demosaic",
        {"in_channels": 4, "upscale": 2, "mosaic_skip": True},
        packed_mosaic(max_saturation=2.0),
        [
            "input: the RGGB mosaic packed to R, G1, G2, B planes at half resolution; output: full-resolution RGB",
            "predicts the correction to Malvar-He-Cutler demosaicking (added to the output, computed in fp32)",
            "half the training patches get their chroma scaled by 1-2 (strongly coloured scenes; 1-1.6 to session 15)",
            "patches are cut from the training photos down-scaled by 0.3-0.5 (0.5-1 to session 16): the photos are"
            " JPEGs with 4:2:0 chroma, so at full size their colour has half the resolution a Bayer sensor records;"
            " the held-out crops are down-scaled by 0.5 from session 17",
        ],
        monitor=packed_mosaic(),  # unsaturated
        patch_scale=(0.3, 0.5),
    ),
    "panet-deblock": panet_rgb_recipe(
        "panet-deblock",
        jpeg((10, 60), gray_fraction=0.25),
        "blind over JPEG qualities 10-60 (libjpeg via Pillow, 4:2:0), a quarter of the patches grey",
    ),
    # The paper trains one deblocking model per JPEG quality; the blind model above covers the
    # rest. Fine-tuned from it (--init weights/panet-deblock.safetensors --finetune).
    "panet-deblock-q10": panet_rgb_recipe(
        "panet-deblock-q10",
        jpeg((8, 12), gray_fraction=0.25),
        "JPEG qualities 8-12 (libjpeg via Pillow, 4:2:0), a quarter of the patches grey: the paper's per-quality"
        f" model for q10, picked by `denoise deblock` when a file's estimated quality is <= {Q10_QUALITIES[1]}",
    ),
    # Grey files at the q10 qualities (Classic5's kind): the paper's CAR models are grey models.
    # Fine-tuned from panet-deblock-q10 (--init weights/panet-deblock-q10.safetensors --finetune).
    "panet-deblock-q10-gray": panet_rgb_recipe(
        "panet-deblock-q10-gray",
        jpeg((8, 12), gray_fraction=1.0),
        "grey JPEGs at qualities 8-12 (libjpeg via Pillow, one component), as R = G = B: the grey per-quality"
        f" model, picked by `denoise deblock` for greyscale files estimated at quality <= {Q10_QUALITIES[1]}",
    ),
    "panet-denoise": panet_rgb_recipe(
        "panet-denoise",
        awgn((0.0, 55.0)),
        "blind AWGN, sigma uniform in [0, 55], like mallenet (the paper trains one model per sigma)",
    ),
    # DDS-Net: stage 1 trains the slimmable super network with the sandwich rule and its
    # finish step tailors the per-layer widths (stage 2); stage 3 trains only the gate.
    "ddsnet-super": Recipe(
        model="ddsnet-super",
        arch="ddsnet",
        arch_args={"channels": 64, "blocks": 8, "noise_map": True},
        train_dirs=["train/bsds400", "train/t91"],
        degrade=awgn((0.0, 55.0)),
        monitor={"sigma15": awgn((15.0, 15.0)), "sigma50": awgn((50.0, 50.0))},
        objective="sandwich",
        finish=_tailor,
        patch=64,  # four passes per step: 0.65 s on one EPYC core at 64 px (96 px: 2.25 times the pixels)
        batch=16,
        steps=5000,
        lr=5e-4,
        notes=[
            "super network: space-to-depth, 8 residual blocks of 64 channels, every conv slimmable to a"
            " prefix of its channels (multiples of 8, at least 16)",
            "a noise-level input channel (Haar-MAD estimate, FFDNet-style map): the blind super network's"
            " narrow widths lost 2-9 dB at sigma 0-5, judging the noise level worst where it matters most",
            "sandwich rule: largest, smallest and two random per-layer configurations each step",
            "finish: progressive channel tailoring on held-out training crops at sigma 5-50 into"
            " sub-networks at 25/50/75% of the full MACs",
        ],
    ),
    "ddsnet": Recipe(
        model="ddsnet",
        arch="ddsnet",
        arch_args={"channels": 64, "blocks": 8, "noise_map": True},
        train_dirs=["train/bsds400", "train/t91"],
        degrade=awgn((0.0, 55.0)),
        monitor={"sigma15": awgn((15.0, 15.0)), "sigma50": awgn((50.0, 50.0))},
        objective="width_gate",
        trainable="gate.",
        patch=96,
        batch=16,
        steps=1000,
        lr=1e-3,
        warmup=100,
        notes=[
            "stage 3: only the gate trains (start from the tailored super network with --init);"
            " its label per patch is the cheapest sub-network within 0.2 dB of the largest,"
            " measured online on that patch",
        ],
    ),
    # PA-EDSR and its no-attention twin: same trunk, recipe and steps.
    **{r.model: r for r in (edsr_recipe(s, a) for s in (2, 4) for a in (True, False))},
    # raw2rgb: the HyperConv network and its plain twin at the same MACs.
    "hyperisp": hyperisp_recipe(True),
    "hyperisp-plain": hyperisp_recipe(False),
    # Real camera noise: VDN with HyperConvs and its plain twin at the same MACs.
    "vdn-hyper": vdn_recipe(True),
    "vdn-plain": vdn_recipe(False),
}
