"""The training loop on a tiny model and a generated folder: steps, resume, export."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from denoise_cli import registry, weights
from denoise_cli.training.data import MONITOR_CROP, PatchSampler, monitor_crops, split_holdout
from denoise_cli.training.degrade import imresize
from denoise_cli.training.loop import Trainer, lr_at
from denoise_cli.training.objectives import dual_regression, easy_or_hard_labels, scale_pyramid
from denoise_cli.training.recipes import RECIPES, bicubic_down

from .conftest import TINY_ARCH, photo, tiny_teacher


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    folder = tmp_path / "data" / "train" / "synthetic"
    folder.mkdir(parents=True)
    for i in range(6):
        Image.fromarray(photo(96, 128, seed=i)).save(folder / f"{i}.png")
    return tmp_path / "data"


def tiny_recipe(steps: int):
    return dataclasses.replace(
        RECIPES["mallenet"],
        arch_args=TINY_ARCH,
        train_dirs=["train/synthetic"],
        patch=32,
        batch=2,
        steps=steps,
        warmup=2,
        holdout=0,
    )


def test_trains_resumes_and_exports(tmp_path: Path, data_root: Path) -> None:
    out = tmp_path / "run"
    first = Trainer(tiny_recipe(6), out, data_root)
    first.run(max_minutes=0.0)  # the time budget stops it after one step, resumably
    assert first.step == 1 and (out / "checkpoint.pt").exists()
    second = Trainer(tiny_recipe(6), out, data_root)
    assert second.resume() and second.step == 1
    assert all(
        torch.equal(a, b)
        for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values(), strict=True)
    )
    second.run()
    assert second.step == 6
    card = json.loads((out / "mallenet.json").read_text())
    assert card["steps"] == 6 and card["arch_args"] == TINY_ARCH and card["recipe"]["patch"] == 32
    model, meta = registry.load("mallenet", out / "mallenet.safetensors")
    assert meta["steps"] == 6 and not model.training


def test_sigterm_ends_the_step_checkpoints_and_stops(tmp_path: Path, data_root: Path, monkeypatch) -> None:
    trainer = Trainer(tiny_recipe(6), tmp_path / "run", data_root)
    step = trainer.train_step

    def step_then_terminate() -> float:
        loss = step()
        if trainer.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss

    monkeypatch.setattr(trainer, "train_step", step_then_terminate)
    before = signal.getsignal(signal.SIGTERM)
    trainer.run()
    assert trainer.step == 2 and signal.getsignal(signal.SIGTERM) is before
    resumed = Trainer(tiny_recipe(6), tmp_path / "run", data_root)
    assert resumed.resume() and resumed.step == 2


def test_learning_rate_warms_up_then_decays() -> None:
    recipe = tiny_recipe(100)
    assert lr_at(0, recipe) < lr_at(1, recipe) <= recipe.lr
    assert lr_at(50, recipe) < recipe.lr
    assert lr_at(100, recipe) == pytest.approx(recipe.min_lr)


def test_holdout_is_disjoint_from_training_files() -> None:
    files = [Path(f"{i}.png") for i in range(40)]
    kept, held = split_holdout(files, 5)
    assert len(held) == 5 and not set(kept) & set(held) and len(kept) + len(held) == 40


def tiny_drn_recipe(steps: int):
    return dataclasses.replace(
        RECIPES["drn-x4"],
        arch_args={"scale": 4, "channels": 4, "blocks": 1},
        companion=("drn-dual", {"scale": 4, "channels": 4}),
        train_dirs=["train/synthetic"],
        patch=32,
        batch=2,
        steps=steps,
        warmup=1,
        holdout=0,
    )


def test_dual_regression_trains_the_dual_nets_and_resumes_them(tmp_path: Path, data_root: Path) -> None:
    out = tmp_path / "run"
    trainer = Trainer(tiny_drn_recipe(3), out, data_root)
    before = [p.detach().clone() for p in trainer.companion.parameters()]
    trainer.run()
    after = list(trainer.companion.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    again = Trainer(tiny_drn_recipe(3), out, data_root)
    assert again.resume()
    assert all(torch.equal(a, b) for a, b in zip(after, again.companion.parameters(), strict=True))
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert set(saved["model"]) == set(trainer.model.state_dict())  # the duals are not in the model weights


def test_init_from_a_run_folder_takes_its_trained_dual_nets(tmp_path: Path, data_root: Path) -> None:
    first = Trainer(tiny_drn_recipe(2), tmp_path / "run", data_root)
    first.run()
    tuned = Trainer(tiny_drn_recipe(2), tmp_path / "tune", data_root)
    tuned.init_from(tmp_path / "run" / "drn-x4.safetensors", continue_schedule=False)
    pairs = zip(first.companion.state_dict().values(), tuned.companion.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    (tmp_path / "run" / "checkpoint.pt").unlink()
    fresh = Trainer(tiny_drn_recipe(2), tmp_path / "fresh", data_root)
    fresh.init_from(tmp_path / "run" / "drn-x4.safetensors", continue_schedule=False)
    pairs = zip(first.companion.state_dict().values(), fresh.companion.state_dict().values(), strict=True)
    assert not all(torch.equal(a, b) for a, b in pairs)


def test_scale_pyramid_runs_from_the_input_to_the_target() -> None:
    target = torch.rand(2, 3, 32, 48)
    inputs = bicubic_down(4)(target, torch.Generator())[0]
    levels = scale_pyramid(inputs, target, 3)
    assert [t.shape[-2:] for t in levels] == [(8, 12), (16, 24), (32, 48)]
    assert levels[0] is inputs and levels[-1] is target
    assert torch.allclose(levels[1], imresize(target, 0.5).float())


def test_bicubic_down_stores_8_bit_lr_images() -> None:
    hr = torch.rand(1, 3, 16, 16)
    lr, target = bicubic_down(2)(hr, torch.Generator())
    assert lr.shape == (1, 3, 8, 8) and target is hr
    assert torch.equal(lr, (lr * 255).round() / 255) and lr.min() >= 0 and lr.max() <= 1
    assert (lr - imresize(hr, 0.5).float()).abs().max() <= 0.5 / 255 + 1e-6


def test_dual_regression_weighs_the_dual_term_by_a_tenth() -> None:
    torch.manual_seed(0)
    model, dual = registry.build("drn", scale=2, channels=4, blocks=1), registry.build("drn-dual", scale=2, channels=4)
    hr = torch.rand(1, 3, 16, 16)
    lr, _ = bicubic_down(2)(hr, torch.Generator())
    total = dual_regression(model, dual, lr, hr, F.l1_loss, torch.Generator())
    outs = model.forward_all(lr)
    primal = F.l1_loss(outs[0], lr) + F.l1_loss(outs[1], hr)
    assert total.item() == pytest.approx((primal + 0.1 * F.l1_loss(dual(outs)[0], lr)).item(), rel=1e-5)


def test_warm_restart_ramps_the_learning_rate_up_again() -> None:
    recipe = tiny_recipe(100)  # warm-up of 2 steps
    assert lr_at(50, recipe, restart=50) == pytest.approx(lr_at(50, recipe) / 2)
    assert lr_at(52, recipe, restart=50) == lr_at(52, recipe)


def tiny_ddsnet_recipe(name: str, steps: int):
    return dataclasses.replace(
        RECIPES[name],
        arch_args={"channels": 16, "blocks": 2},
        train_dirs=["train/synthetic"],
        patch=32,
        batch=2,
        steps=steps,
        warmup=1,
        holdout=4,
    )


def test_ddsnet_stages_tailor_widths_then_train_only_the_gate(tmp_path: Path, data_root: Path) -> None:
    for i in range(6, 12):  # more images: four are held out for the tailoring batch
        Image.fromarray(photo(128, 128, seed=i)).save(data_root / "train" / "synthetic" / f"{i}.png")
    super_net = Trainer(tiny_ddsnet_recipe("ddsnet-super", 2), tmp_path / "super", data_root)
    super_net.run()
    configs = super_net.ema.configs
    shares = [super_net.ema.width_of(c) for c in configs]
    assert configs.shape == (4, 3) and shares == sorted(shares) and shares[-1] == 1.0
    assert int(configs.min()) >= 8 and shares[0] < 1.0
    exported = tmp_path / "super" / "ddsnet-super.safetensors"

    again = Trainer(tiny_ddsnet_recipe("ddsnet-super", 2), tmp_path / "again", data_root)
    again.init_from(exported, continue_schedule=False)  # a fine-tune of the tailored network
    own = configs.clone()
    own[1:3] = configs[0]  # a choice tailoring would not make again
    for net in (again.model, again.ema):
        net.configs.copy_(own)
    again.run()
    assert torch.equal(again.model.configs, own) and torch.equal(again.ema.configs, own)  # stage 2 ran once

    gate = Trainer(tiny_ddsnet_recipe("ddsnet", 2), tmp_path / "gate", data_root)
    gate.init_from(exported)
    assert gate.step == 0 and torch.equal(gate.model.configs, configs)  # a new schedule, the tailored widths
    before = {k: v.clone() for k, v in gate.model.state_dict().items()}
    gate.run()
    after = gate.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("gate.") for k in changed)


def test_gate_labels_pick_the_cheapest_sub_network_when_all_are_equal() -> None:
    net = registry.build("ddsnet", channels=16, blocks=1)
    torch.nn.init.zeros_(net.tail.weight)
    torch.nn.init.zeros_(net.tail.bias)  # every configuration now returns its input
    noisy, clean = torch.rand(3, 3, 16, 16), torch.rand(3, 3, 16, 16)
    assert easy_or_hard_labels(net, noisy, clean).tolist() == [0, 0, 0]


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_builds_degrades_and_scores_a_batch(name: str, tmp_path: Path) -> None:
    from denoise_cli.training.objectives import OBJECTIVES, pixel_loss

    recipe = RECIPES[name]
    torch.manual_seed(0)
    model = registry.build(recipe.arch, **recipe.arch_args)
    companion = None
    if recipe.companion:
        arch, args = recipe.companion
        if "teacher" in args:  # the real teacher may not be trained yet: a tiny random one of the same scale
            args = {**args, "teacher": str(tiny_teacher(tmp_path, recipe.arch_args["scale"]))}
        companion = registry.build(arch, **args)
    generator = torch.Generator().manual_seed(0)
    inputs, target = recipe.degrade(torch.rand(2, 3, recipe.patch, recipe.patch), generator)
    loss = OBJECTIVES[recipe.objective](model, companion, inputs, target, pixel_loss(recipe.loss), generator)
    assert loss.ndim == 0 and torch.isfinite(loss)
    for degrade in recipe.monitor.values():
        monitored, clean = degrade(torch.rand(1, 3, 64, 64), torch.Generator().manual_seed(1))
        with torch.no_grad():
            assert model(monitored).shape == clean.shape


def test_a_finetune_starts_a_new_schedule_and_records_its_parent(tmp_path: Path, data_root: Path) -> None:
    first = Trainer(tiny_recipe(3), tmp_path / "a", data_root)
    first.run()
    tune = Trainer(dataclasses.replace(tiny_recipe(2), loss="l2", lr=1e-5), tmp_path / "b", data_root)
    tune.init_from(tmp_path / "a" / "mallenet.safetensors", continue_schedule=False)
    assert tune.step == 0
    tune.run()
    card = json.loads((tmp_path / "b" / "mallenet.json").read_text())
    assert card["steps"] == 2 and card["parent"]["steps"] == 3 and card["recipe"]["loss"] == "l2"
    resumed = Trainer(tiny_recipe(2), tmp_path / "b", data_root)
    assert resumed.resume() and resumed.parent == card["parent"]


def test_the_network_shape_comes_from_the_run_then_the_init_card(tmp_path: Path) -> None:
    from denoise_cli.training.__main__ import architecture_of

    recipe_args = {"scale": 4, "channels": 16, "blocks": 4}
    pruned = tmp_path / "pruned.safetensors"
    weights.save(torch.nn.Linear(1, 1), pruned, {"arch": "drn", "arch_args": {**recipe_args, "inner": [8] * 8}})
    run = tmp_path / "run"
    assert architecture_of("drn-light-x4", "drn", recipe_args, run, None) == recipe_args
    assert architecture_of("drn-light-x4", "drn", recipe_args, run, pruned)["inner"] == [8] * 8
    assert architecture_of("drn-light-x4", "panet", recipe_args, run, pruned) == recipe_args  # another network
    own = {"arch": "drn", "arch_args": {"inner": [4] * 8}}
    weights.save(torch.nn.Linear(1, 1), run / "drn-light-x4.safetensors", own)
    assert architecture_of("drn-light-x4", "drn", recipe_args, run, pruned)["inner"] == [4] * 8  # resuming wins


def test_the_input_floor_is_logged_for_same_size_tasks_only(tmp_path: Path) -> None:
    data_root = tmp_path / "data"
    (data_root / "train" / "synthetic").mkdir(parents=True)
    for i in range(4):  # the held-out crops are 128 px
        Image.fromarray(photo(160, 160, seed=i)).save(data_root / "train" / "synthetic" / f"{i}.png")
    denoiser = Trainer(dataclasses.replace(tiny_recipe(1), holdout=2), tmp_path / "a", data_root)
    floor = denoiser.monitor_inputs()
    # mallenet's monitor adds sigma 15/25/50 AWGN: the input PSNR falls as sigma grows, near 20*log10(255/sigma)
    assert list(floor) == list(RECIPES["mallenet"].monitor)
    assert all(abs(v - 20 * math.log10(255 / float(k.removeprefix("sigma")))) < 1.0 for k, v in floor.items())
    upscaler = Trainer(dataclasses.replace(tiny_drn_recipe(1), holdout=2), tmp_path / "b", data_root)
    assert upscaler.monitor_inputs() == {}


def test_log_mse_is_minus_the_mean_psnr_so_light_and_heavy_noise_weigh_alike() -> None:
    import math

    from denoise_cli.metrics import psnr
    from denoise_cli.training.objectives import pixel_loss

    torch.manual_seed(0)
    target = torch.rand(2, 3, 16, 16)
    out = target + torch.randn(2, 3, 16, 16) * torch.tensor([0.01, 0.2]).view(2, 1, 1, 1)
    mean_psnr = sum(psnr(out[i : i + 1], target[i : i + 1]) for i in range(2)) / 2
    loss = pixel_loss("log-mse")
    assert loss(out, target).item() == pytest.approx(-mean_psnr * math.log(10) / 10, abs=1e-4)
    # halving the error of the light-noise image helps as much as halving the heavy one's
    light = torch.stack([target[0] + (out[0] - target[0]) / 2, out[1]])
    heavy = torch.stack([out[0], target[1] + (out[1] - target[1]) / 2])
    assert loss(light, target).item() == pytest.approx(loss(heavy, target).item(), abs=1e-4)
    assert pixel_loss("l2")(light, target) > pixel_loss("l2")(heavy, target)


def test_an_x4_network_starts_from_its_x2_sibling_where_the_tensors_fit(tmp_path: Path, data_root: Path) -> None:
    def edsr(scale: int, steps: int):
        tiny = {"scale": scale, "features": 8, "blocks": 2, "attention": False}
        recipe = RECIPES[f"edsr-x{scale}"]
        return dataclasses.replace(
            recipe, arch_args=tiny, train_dirs=["train/synthetic"], patch=16 * scale, batch=2, steps=steps, holdout=0
        )

    Trainer(edsr(2, 2), tmp_path / "x2", data_root).run()
    x4 = Trainer(edsr(4, 2), tmp_path / "x4", data_root)
    x4.init_from(tmp_path / "x2" / "edsr-x2.safetensors", matching_only=True)
    x2_state = load_file(str(tmp_path / "x2" / "edsr-x2.safetensors"))
    x4_state = x4.model.state_dict()
    assert x4.step == 0 and x4.parent["steps"] == 2
    assert sorted(x4.parent["started_afresh"]) == ["upsample.2.bias", "upsample.2.weight"]  # the second x2 stage
    assert all(torch.equal(x4_state[k], v) for k, v in x2_state.items())
    assert all(torch.equal(x4_state[k], v) for k, v in x4.ema.state_dict().items())
    x4.run()
    card = json.loads((tmp_path / "x4" / "edsr-x4.json").read_text())
    assert card["arch_args"]["scale"] == 4 and card["parent"]["name"] == "edsr-x2"
    # trained further from its exported weights (a warm restart), it keeps its lineage
    longer = Trainer(edsr(4, 3), tmp_path / "x4-longer", data_root)
    longer.init_from(tmp_path / "x4" / "edsr-x4.safetensors")
    assert longer.step == 2 and longer.parent == card["parent"]
    with pytest.raises(weights.WeightsError, match="no tensor fits"):
        weights.load_matching(torch.nn.Linear(2, 2), tmp_path / "x2" / "edsr-x2.safetensors")


def test_fresh_tensors_learn_at_their_own_rate_and_keep_it_on_resume(tmp_path: Path, data_root: Path) -> None:
    tiny = {"scale": 2, "features": 8, "blocks": 2}
    common = {"train_dirs": ["train/synthetic"], "patch": 32, "batch": 2, "steps": 4, "warmup": 1, "holdout": 0}
    Trainer(
        dataclasses.replace(RECIPES["edsr-x2"], arch_args={**tiny, "attention": False}, **common),
        tmp_path / "twin",
        data_root,
    ).run()
    fork_recipe = dataclasses.replace(
        RECIPES["pa-edsr-x2"], arch_args={**tiny, "attention": True}, fresh_lr_scale=10.0, **common
    )
    fork = Trainer(fork_recipe, tmp_path / "fork", data_root)
    fork.init_from(tmp_path / "twin" / "edsr-x2.safetensors", matching_only=True)
    fork.run(max_minutes=0.0)  # one step, then a resumable stop
    trunk, fresh = fork.opt.param_groups
    assert fresh["lr"] == pytest.approx(10 * trunk["lr"]) and trunk["lr"] > 0
    attention = {id(p) for p in fork.model.attention.parameters()}
    assert {id(p) for p in fresh["params"]} == attention
    assert not attention & {id(p) for p in trunk["params"]}
    resumed = Trainer(fork_recipe, tmp_path / "fork", data_root)
    assert resumed.resume() and [len(g["params"]) for g in resumed.opt.param_groups] == [
        len(trunk["params"]),
        len(fresh["params"]),
    ]


def ramp_image(side: int = 200) -> np.ndarray:
    """Grey rising by exactly one level per pixel to the right, so a patch's step between
    neighbours tells the scale it was cut at."""
    row = np.arange(side, dtype=np.uint8)
    return np.repeat(np.broadcast_to(row, (side, side))[..., None], 3, axis=2).copy()


def steepest_step(patch: torch.Tensor) -> float:
    """Mean step between neighbours along the steeper axis (flips and turns move the ramp's axis)."""
    steps = [patch.diff(dim=d).abs().mean().item() * 255 for d in (-1, -2)]
    return max(steps)


@pytest.mark.parametrize(("scales", "expected"), [((1.0, 1.0), 1.0), ((0.5, 0.5), 2.0), ((0.25, 0.25), 4.0)])
def test_patches_are_cut_at_the_recipe_scale(scales: tuple[float, float], expected: float) -> None:
    sampler = PatchSampler([ramp_image()], patch=32, scales=scales, seed=3)
    for patch in sampler.batch(4):
        assert steepest_step(patch) == pytest.approx(expected, rel=0.05)


def test_held_out_crops_are_down_scaled_like_the_patches(tmp_path: Path) -> None:
    Image.fromarray(ramp_image(256)).save(tmp_path / "ramp.png")
    full, half = monitor_crops([tmp_path / "ramp.png"]), monitor_crops([tmp_path / "ramp.png"], scale=0.5)
    assert full.shape == half.shape == (1, 3, MONITOR_CROP, MONITOR_CROP)
    assert steepest_step(full[0]) == pytest.approx(1.0, rel=0.05)
    assert steepest_step(half[0]) == pytest.approx(2.0, rel=0.05)
