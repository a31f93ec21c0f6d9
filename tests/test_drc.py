"""DRC on tiny random DRNs: candidate widths, search, pruning, distillation and the CLI."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from denoise_cli import registry, weights
from denoise_cli.flops import count_macs
from denoise_cli.models.drn import DRN, RCAB, DualNet
from denoise_cli.training import drc
from denoise_cli.training.loop import Trainer
from denoise_cli.training.objectives import OBJECTIVES, distill_dual_regression, dual_regression
from denoise_cli.training.recipes import RECIPES, bicubic_down

from .conftest import photo, tiny_teacher

# DRN(4, channels=4, blocks=1): two RCABs of 16 channels, at the LR size and at 2x it.


def tiny(scale: int = 4, channels: int = 4, blocks: int = 1, seed: int = 0) -> tuple[DRN, DualNet]:
    torch.manual_seed(seed)
    return DRN(scale, channels, blocks), DualNet(scale, channels)


def pairs(count: int, scale: int = 4, side: int = 16, seed: int = 0) -> list[drc.Pair]:
    generator = torch.Generator().manual_seed(seed)
    return [bicubic_down(scale)(torch.rand(2, 3, side, side, generator=generator), generator) for _ in range(count)]


def zero_inner_channels(model: DRN, keep: list[list[int]], x: torch.Tensor) -> list[torch.Tensor]:
    """The model's outputs with every RCAB's inner channels outside ``keep`` zeroed after the ReLU."""

    def hook_for(kept: list[int]):
        def hook(module, inputs, output):
            mask = torch.zeros(output.shape[1])
            mask[kept] = 1.0
            return output * mask.view(1, -1, 1, 1)

        return hook

    blocks = [m for m in model.modules() if isinstance(m, RCAB)]
    handles = [b.body[1].register_forward_hook(hook_for(k)) for b, k in zip(blocks, keep, strict=True)]
    try:
        with torch.no_grad():
            return model.forward_all(x)
    finally:
        for h in handles:
            h.remove()


def test_candidate_widths_match_hand_values() -> None:
    # 64 * 0.7 * {0.5 .. 1.0} = 22.4, 26.9, 31.4, 35.8, 40.3, 44.8 -> nearest multiples of 4
    assert drc.candidate_widths(64, 0.3) == [24, 28, 32, 36, 40, 44]
    assert drc.candidate_widths(64, 0.5) == [16, 20, 24, 28, 32]
    assert drc.candidate_widths(64, 0.7) == [8, 12, 16, 20]  # 9.6 .. 19.2: duplicates merge
    assert drc.candidate_widths(16, 0.0) == [8, 12, 16]
    assert drc.candidate_widths(8, 0.3) == [4]  # never under 4
    assert drc.candidate_widths(6, 0.0) == [4, 6]  # never over the layer's width
    with pytest.raises(ValueError, match="rate"):
        drc.candidate_widths(64, 1.0)


def test_channels_rank_by_the_second_convs_l1_norm_and_mask_by_candidate_probability() -> None:
    block = RCAB(8)
    with torch.no_grad():
        block.body[2].weight.copy_(torch.ones_like(block.body[2].weight) * torch.arange(8.0).view(1, 8, 1, 1))
        block.body[2].weight[:, 2] *= -10.0  # the norm counts magnitudes: channel 2 is now the largest
    ranks = drc.l1_ranks(block)
    assert ranks.tolist() == [7, 6, 0, 5, 4, 3, 2, 1]
    mask = drc.soft_mask(torch.zeros(2), [2, 4], ranks)  # two equally likely candidates
    assert mask.tolist() == [0.0, 0.0, 1.0, 0.0, 0.0, 0.5, 0.5, 1.0]  # ranks 0-1 always kept, 2-3 half the time
    sure = drc.soft_mask(torch.tensor([0.0, 50.0]), [2, 4], ranks)  # all mass on width 4
    assert torch.allclose(sure, (ranks < 4).float())


def test_drn_inner_widths_are_json_arch_args_and_none_is_the_full_network() -> None:
    net = DRN(4, channels=4, blocks=2, inner=[4, 8, 12, 16])
    convs = [(b.body[0].out_channels, b.body[2].in_channels) for b in net.modules() if isinstance(b, RCAB)]
    assert convs == [(4, 4), (8, 8), (12, 12), (16, 16)]
    assert net(torch.rand(1, 3, 6, 5)).shape == (1, 3, 24, 20)
    args = json.loads(json.dumps({"scale": 4, "channels": 4, "blocks": 2, "inner": [4, 8, 12, 16]}))
    registry.build("drn", **args).load_state_dict(net.state_dict(), strict=True)
    full, explicit = DRN(4, 4, 2), DRN(4, 4, 2, inner=[16, 16, 16, 16])
    assert drc.inner_widths(full) == [16] * 4
    assert {k: v.shape for k, v in full.state_dict().items()} == {k: v.shape for k, v in explicit.state_dict().items()}
    with pytest.raises(ValueError, match="one per RCAB"):
        DRN(4, 4, 2, inner=[8, 8])


def test_narrowing_equals_zeroing_the_dropped_channels() -> None:
    model, _ = tiny()
    keep = [[0, 3, 5, 9], [1, 2, 15]]
    pruned = drc.narrow(model, keep)
    assert drc.inner_widths(pruned) == [4, 3]
    x = torch.rand(2, 3, 5, 7)
    with torch.no_grad():
        got = pruned.forward_all(x)
    for a, b in zip(got, zero_inner_channels(model, keep, x), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(got[-1], model(x), atol=1e-3)  # the dropped channels did matter


def test_pruning_to_the_full_widths_is_the_same_network() -> None:
    model, dual = tiny(blocks=2)
    pruned = drc.prune(model, dual, drc.inner_widths(model), pairs(1))
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), pruned.state_dict().values(), strict=True)
    )
    x = torch.rand(1, 3, 6, 6)
    with torch.no_grad():
        assert torch.equal(model(x), pruned(x))


def test_pruning_cuts_the_rcab_macs_by_the_channels_removed() -> None:
    model, dual = tiny()
    pruned = drc.prune(model, dual, [8, 4], pairs(1))
    # Each RCAB's two 3x3 convs cost 2 * 9 * 16 * inner MACs per pixel: LR 8x8 and 16x16.
    expected = 2 * 9 * 16 * ((16 - 8) * 8 * 8 + (16 - 4) * 16 * 16)
    assert count_macs(model, 8, 8) - count_macs(pruned, 8, 8) == expected


def test_pruning_drops_the_channels_the_loss_does_not_depend_on() -> None:
    model, dual = tiny()
    blocks = [m for m in model.modules() if isinstance(m, RCAB)]
    with torch.no_grad():
        for block in blocks:
            block.body[0].bias.fill_(1.0)  # every inner channel alive (a dead ReLU channel has importance 0 too)
        blocks[0].body[2].weight[:, 5] = 0.0  # nothing reads inner channel 5 of the first RCAB
        blocks[1].body[2].weight[:, 11] = 0.0
    importance = drc.channel_importance(model, dual, pairs(2))
    assert importance[0][5] == 0 and importance[1][11] == 0
    assert (importance[0] > 0).sum() == 15 and (importance[1] > 0).sum() == 15
    kept = drc.kept_channels(importance, [15, 15])
    assert 5 not in kept[0].tolist() and 11 not in kept[1].tolist()
    assert kept[0].tolist() == sorted(kept[0].tolist())
    with pytest.raises(ValueError, match="cannot keep"):
        drc.kept_channels(importance, [17, 4])


def test_search_is_reproducible_returns_candidates_and_leaves_the_model_alone() -> None:
    model, dual = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train, held = pairs(2, seed=1), pairs(2, seed=2)

    def run() -> list[torch.Tensor]:
        return drc.search_logits(model, dual, itertools.cycle(train), itertools.cycle(held), 0.3, 3, alpha_lr=0.05)

    first, second = run(), run()
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert all(a.shape == (3,) and a.abs().sum() > 0 for a in first)  # candidates [4, 8, 12], all moved
    widths = drc.search_widths(model, dual, itertools.cycle(train), itertools.cycle(held), 0.3, 3, alpha_lr=0.05)
    assert widths == drc.pick(first, [[4, 8, 12]] * 2)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_search_moves_only_the_logits_of_blocks_whose_channels_matter() -> None:
    model, dual = tiny()
    block = next(m for m in model.modules() if isinstance(m, RCAB))
    with torch.no_grad():
        block.body[2].weight.zero_()  # the first RCAB's mask cannot change the loss
    logits = drc.search_logits(model, dual, iter(pairs(1)), iter(pairs(1, seed=3)), 0.3, 1, alpha_lr=0.05)
    assert torch.equal(logits[0], torch.zeros(3)) and logits[1].abs().sum() > 0


def companion(folder: Path, kd_weight: float = 1.0) -> drc.DRCCompanion:
    return registry.build("drc-companion", teacher=str(tiny_teacher(folder)), scale=4, channels=4, kd_weight=kd_weight)


def test_distillation_adds_the_l1_distance_to_the_teacher(tmp_path: Path) -> None:
    student, _ = tiny(seed=1)
    partner = companion(tmp_path, kd_weight=2.0)
    lr, hr = pairs(1)[0]
    total = OBJECTIVES["distill_dual_regression"](student, partner, lr, hr, F.l1_loss, torch.Generator())
    plain = dual_regression(student, partner.dual, lr, hr, F.l1_loss, torch.Generator())
    with torch.no_grad():
        distance = F.l1_loss(student(lr), partner.teacher(lr))
    assert torch.isfinite(total) and total.item() == pytest.approx((plain + 2.0 * distance).item(), rel=1e-5)
    with pytest.raises(ValueError, match="teacher"):
        distill_dual_regression(student, DualNet(4, 4), lr, hr, F.l1_loss, torch.Generator())


def distil(folder: Path, kd_weight: float, steps: int = 5) -> tuple[float, float, drc.DRCCompanion]:
    """A tiny student's L1 distance to the teacher before and after ``steps`` Adam steps of the objective."""
    student, _ = tiny(seed=1)
    partner = companion(folder, kd_weight).train()
    params = [*student.parameters(), *(p for p in partner.parameters() if p.requires_grad)]
    assert len(params) == len(list(student.parameters())) + len(list(partner.dual.parameters()))
    opt = torch.optim.Adam(params, lr=2e-3)
    lr, hr = pairs(1)[0]

    def distance() -> float:
        with torch.no_grad():
            return F.l1_loss(student(lr), partner.teacher(lr)).item()

    start = distance()
    for _ in range(steps):
        distill_dual_regression(student, partner, lr, hr, F.l1_loss, torch.Generator()).backward()
        opt.step()
        opt.zero_grad()
    return start, distance(), partner


def test_distillation_pulls_the_student_to_a_teacher_that_stays_frozen(tmp_path: Path) -> None:
    start, end, partner = distil(tmp_path / "kd", kd_weight=1.0)
    _, end_without, _ = distil(tmp_path / "plain", kd_weight=0.0)  # the same student, teacher and duals
    assert end < 0.8 * start and end < 0.9 * end_without
    assert not partner.teacher.training and not any(p.requires_grad for p in partner.teacher.parameters())
    assert all(p.grad is None for p in partner.teacher.parameters())
    saved = load_file(str(tmp_path / "kd" / "teacher.safetensors"))
    assert all(torch.equal(v, partner.teacher.state_dict()[k]) for k, v in saved.items())


def test_companion_needs_the_teacher_file_and_its_scale(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="teacher"):
        drc.DRCCompanion(str(tmp_path / "missing.safetensors"), scale=4, channels=4)
    with pytest.raises(ValueError, match="x2"):
        drc.DRCCompanion(str(tiny_teacher(tmp_path, scale=2)), scale=4, channels=4)


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """shared/data-like folder: train/bsds400 and train/t91 with three photos each."""
    for k, name in enumerate(("bsds400", "t91")):
        folder = tmp_path / "data" / "train" / name
        folder.mkdir(parents=True)
        for i in range(3):
            Image.fromarray(photo(64, 64, seed=3 * k + i)).save(folder / f"{i}.png")
    return tmp_path / "data"


def test_finetune_recipe_trains_the_student_not_the_teacher_and_resumes(tmp_path: Path, data_root: Path) -> None:
    teacher_path = tiny_teacher(tmp_path)
    full = registry.build("drn", **weights.read_card(teacher_path)["arch_args"])
    weights.load_into(full, teacher_path)
    pruned = drc.narrow(full, [[0, 1, 2, 3, 4, 5, 6, 7], [8, 9, 10, 11]])
    arch_args = {"scale": 4, "channels": 4, "blocks": 1, "inner": [8, 4]}
    weights.save(pruned, tmp_path / "pruned.safetensors", {"name": "drn-x4-pruned", "arch_args": arch_args})
    recipe = dataclasses.replace(
        RECIPES["drn-light-x4"],
        arch_args=arch_args,
        companion=("drc-companion", {"teacher": str(teacher_path), "scale": 4, "channels": 4}),
        train_dirs=["train/t91"],
        patch=32,
        batch=2,
        steps=2,
        warmup=1,
        holdout=0,
    )
    trainer = Trainer(recipe, tmp_path / "run", data_root)
    trainer.init_from(tmp_path / "pruned.safetensors", continue_schedule=False)
    optimized = {id(p) for group in trainer.opt.param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in trainer.companion.teacher.parameters()}
    assert {id(p) for p in trainer.companion.dual.parameters()} <= optimized
    teacher_before = {k: v.clone() for k, v in trainer.companion.teacher.state_dict().items()}
    trainer.run()
    assert all(torch.equal(v, trainer.companion.teacher.state_dict()[k]) for k, v in teacher_before.items())
    assert not torch.equal(trainer.model.tails[-1].weight, pruned.tails[-1].weight)
    again = Trainer(recipe, tmp_path / "run", data_root)
    assert again.resume() and again.step == 2
    for a, b in zip(trainer.companion.state_dict().values(), again.companion.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    card = weights.read_card(tmp_path / "run" / "drn-light-x4.safetensors")
    assert card["arch_args"]["inner"] == [8, 4] and card["parent"]["name"] == "drn-x4-pruned"


def test_cli_searches_and_prunes_into_a_loadable_network(
    tmp_path: Path, data_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, dual = tiny(scale=2, channels=8, blocks=2)  # two RCABs of 16 channels
    trained = tmp_path / "drn-x2" / "drn-x2.safetensors"
    arch_args = {"scale": 2, "channels": 8, "blocks": 2}
    weights.save(model, trained, {"name": "drn-x2", "arch": "drn", "arch_args": arch_args, "steps": 7})
    torch.save({"companion": dual.state_dict()}, trained.parent / "checkpoint.pt")
    common = ["--data", str(data_root), "--batch", "2", "--patch", "32", "--holdout", "2"]
    widths_file, out = tmp_path / "light" / "widths.json", tmp_path / "light" / "pruned.safetensors"
    assert drc.main(["search", str(trained), "--out", str(widths_file), "--rate", "0.3", "--steps", "2", *common]) == 0
    found = json.loads(widths_file.read_text())
    assert found["candidates"] == [[4, 8, 12]] * 2 and all(w in (4, 8, 12) for w in found["widths"])

    assert (
        drc.main(["prune", str(trained), "--widths", str(widths_file), "--out", str(out), "--batches", "1", *common])
        == 0
    )
    card = weights.read_card(out)
    assert card["arch_args"] == {**arch_args, "inner": found["widths"]} and card["parent"]["steps"] == 7
    rebuilt = registry.build("drn", **card["arch_args"])
    weights.load_into(rebuilt, out)  # strict
    assert card["params"] == sum(p.numel() for p in rebuilt.parameters()) < sum(p.numel() for p in model.parameters())
    assert card["macs_96"] == count_macs(rebuilt.eval(), 96, 96) < card["pruning"]["macs_96_before"]
    shown = capsys.readouterr().out
    assert "before:" in shown and "after:" in shown and "GMACs at 96x96 LR" in shown


def test_cli_needs_the_trained_dual_nets(tmp_path: Path) -> None:
    model, _ = tiny(scale=2)
    trained = tmp_path / "drn-x2.safetensors"
    weights.save(
        model, trained, {"name": "drn-x2", "arch": "drn", "arch_args": {"scale": 2, "channels": 4, "blocks": 1}}
    )
    with pytest.raises(FileNotFoundError, match="--dual"):
        drc.load_trained(trained)


def test_the_default_rate_cuts_drn_x4_macs_by_at_least_30_percent() -> None:
    full = DRN(**RECIPES["drn-x4"].arch_args).eval()
    widest = [drc.candidate_widths(w, drc.DEFAULT_RATE)[-1] for w in drc.inner_widths(full)]
    light = DRN(**RECIPES["drn-x4"].arch_args, inner=widest).eval()
    # MACs are proportional to the pixel count here, so a small input gives the 96x96 ratio.
    assert count_macs(light, 24, 24) / count_macs(full, 24, 24) < 0.70
