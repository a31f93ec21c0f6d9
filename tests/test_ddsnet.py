"""DDS-Net: slimmable layers, configurations, the gate and their arithmetic."""

from __future__ import annotations

import pytest
import torch

from denoise_cli.flops import count_macs
from denoise_cli.models.ddsnet import DDSNet, SlimConv2d, noise_sigma
from denoise_cli.registry import weights_dir

from .conftest import smooth_scene


def test_a_slim_conv_is_the_prefix_of_the_full_conv() -> None:
    torch.manual_seed(0)
    conv = SlimConv2d(16, 24, 3, padding=1)
    x = torch.randn(1, 16, 9, 9)
    full = conv(x)
    conv.out_active = 8
    narrow = conv(x[:, :16])
    assert torch.allclose(narrow, full[:, :8], atol=1e-6)
    thin_input = conv(x[:, :4])
    reference = torch.nn.functional.conv2d(x[:, :4], conv.weight[:8, :4], conv.bias[:8], padding=1)
    assert torch.allclose(thin_input, reference, atol=1e-6)


@pytest.mark.parametrize("noise_map", [False, True])
def test_every_configuration_keeps_the_size_and_costs_what_it_says(noise_map: bool) -> None:
    net = DDSNet(channels=64, blocks=2, noise_map=noise_map).eval()
    x = torch.rand(1, 3, 21, 30)
    costs = []
    for index in range(net.choices):
        net.use(index)
        with torch.no_grad():
            assert net(x).shape == x.shape
        measured = count_macs(net, 32, 32) / (32 * 32)
        assert measured == pytest.approx(net.macs_per_pixel(net.configs[index]), rel=1e-6)
        costs.append(measured)
    assert costs == sorted(costs) and len(set(costs)) == len(costs) and costs[0] < costs[-1] / 5


def test_sub_networks_share_weights_with_the_largest() -> None:
    torch.manual_seed(0)
    net = DDSNet(channels=16, blocks=2)
    x = torch.rand(2, 3, 16, 16)
    net(x, config=[8, 8, 8]).sum().backward()
    grad = net.body[0].conv1.weight.grad
    assert grad[:8, :8].abs().sum() > 0 and grad[8:].abs().sum() == 0 and grad[:, 8:].abs().sum() == 0


def test_the_gate_picks_per_image_and_a_forced_choice_wins() -> None:
    net = DDSNet(channels=16, blocks=2).eval()
    image = torch.rand(1, 3, 64, 64)
    facts = net.decide(image)
    assert 0 <= net.active < net.choices and facts["width"] == pytest.approx(net.shares()[net.active], abs=1e-3)
    assert facts["macs"] == round(net.macs_per_pixel(net.configs[net.active]) * 64 * 64) <= facts["macs_full"]
    net.use(0)
    assert net.decide(image)["width"] == pytest.approx(net.shares()[0], abs=1e-3) and net.active == 0
    with pytest.raises(ValueError, match="does not exist"):
        net.use(net.choices)


def test_gate_takes_the_cheapest_width_likely_good_enough_not_the_most_likely_label() -> None:
    from denoise_cli.models.ddsnet import pick_width

    # labels: the cheapest good sub-network; P(width 1 is good) = 0.30 + 0.25 >= 0.5
    assert pick_width(torch.tensor([[0.30, 0.25, 0.0, 0.45]]).log(), confidence=0.5) == 1
    assert pick_width(torch.tensor([[0.05, 0.10, 0.30, 0.55]]).log(), confidence=0.5) == 3
    assert pick_width(torch.tensor([[0.05, 0.10, 0.30, 0.55]]).log(), confidence=0.1) == 1
    net = DDSNet(channels=16, blocks=2).eval()
    with torch.no_grad():
        net.gate.classify.weight.zero_()
        net.gate.classify.bias.copy_(torch.tensor([0.10, 0.45, 0.0, 0.45]).log())
    net.decide(torch.rand(1, 3, 32, 32))
    assert net.active == 1


def test_gate_of_a_noise_map_network_sees_the_noise_level() -> None:
    torch.manual_seed(0)
    net = DDSNet(channels=16, blocks=2, noise_map=True).eval()
    image = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        light, heavy = net.gate(image, torch.tensor([5 / 255])), net.gate(image, torch.tensor([50 / 255]))
        assert not torch.allclose(light, heavy)
        assert torch.equal(net.gate(image), net.gate(image, noise_sigma(image)))  # estimated when not given


def test_gate_costs_under_a_percent_of_the_smallest_sub_network() -> None:
    net = DDSNet().eval()
    gate = count_macs(net.gate, 256, 256) / (256 * 256)
    assert gate < 0.01 * net.macs_per_pixel(net.configs[0])


@pytest.fixture
def tiny_ddsnet(tmp_path, monkeypatch: pytest.MonkeyPatch) -> str:
    from denoise_cli import registry, weights

    args = {"channels": 16, "blocks": 2}
    torch.manual_seed(0)
    net = DDSNet(**args)
    net.configs.copy_(torch.tensor([[8, 8, 8], [8, 16, 16], [16, 8, 16], [16, 16, 16]]))
    weights.save(net, tmp_path / "w" / "ddsnet-tiny.safetensors", {"arch_args": args})
    card = registry.ModelCard("ddsnet-tiny", "denoise", "ddsnet", "test", "test", overlap=16, tile_multiple=2)
    monkeypatch.setitem(registry.CARDS, "ddsnet-tiny", card)
    monkeypatch.setenv("DENOISE_WEIGHTS_DIR", str(tmp_path / "w"))
    return "ddsnet-tiny"


def test_cli_reports_width_and_macs_per_image_and_the_average(tiny_ddsnet: str, images) -> None:
    import json

    from click.testing import CliRunner

    from denoise_cli.cli import main

    forced = CliRunner().invoke(main, ["denoise", str(images), "--model", tiny_ddsnet, "--width", "1", "--json"])
    assert forced.exit_code == 0, forced.stderr
    records = [json.loads(line) for line in forced.stdout.splitlines()]
    assert len(records) == 3 and all(r["width"] == 1.0 and r["macs"] == r["macs_full"] > 0 for r in records)
    gated = CliRunner().invoke(main, ["denoise", str(images), "--model", tiny_ddsnet, "--on-exists", "overwrite"])
    assert gated.exit_code == 0 and "average width" in gated.stderr
    assert gated.stderr.count("GMACs)") == 3
    wrong = CliRunner().invoke(
        main, ["denoise", str(images), "--model", tiny_ddsnet, "--width", "0.1", "--on-exists", "overwrite"]
    )
    assert wrong.exit_code == 1 and "no sub-network near width 0.1" in wrong.stderr


def test_width_is_refused_for_models_with_one_width(tiny_weights, images) -> None:
    from click.testing import CliRunner

    from denoise_cli.cli import main

    result = CliRunner().invoke(main, ["denoise", str(images), "--width", "0.5"])
    assert result.exit_code == 1 and "--width is for slimmable models" in result.stderr


def test_eval_scores_the_gate_and_every_sub_network_on_mixed_noise(tiny_ddsnet: str, images) -> None:
    import json

    from click.testing import CliRunner

    from denoise_cli.cli import main

    args = ["eval", "--model", tiny_ddsnet, "--data", str(images), "--sigma", "25", "--mixed", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    settings = sorted({r["setting"] for r in rows})
    assert settings == ["in sigma 25", "in sigma mixed"]
    methods = [r["method"] for r in rows if r["setting"] == "in sigma mixed"]
    assert methods[:2] == ["input (noisy)", f"{tiny_ddsnet} (gate)"] and len(methods) == 6
    gate = next(r for r in rows if r["method"].endswith("(gate)"))
    assert gate["note"].startswith("mean width ")
    assert [r["method"] for r in rows if "width" in r["method"]][-1] == f"{tiny_ddsnet} width 1.00"


def _generated_scenes(count: int, size: int = 128) -> torch.Tensor:
    """Clean test scenes with flat areas, edges and texture: smooth colour gradients plus
    random rectangles and a band of stripes, no photographs needed."""
    generator = torch.Generator().manual_seed(7)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    scenes = []
    for _ in range(count):
        a, b, c = torch.rand(3, 3, 1, 1, generator=generator)
        image = (0.2 + 0.6 * (a * ys + b * xs) / 2 + 0.1 * c).expand(3, size, size).clone()
        for _ in range(4):
            top, left = torch.randint(0, size - 32, (2,), generator=generator).tolist()
            image[:, top : top + 32, left : left + 24] = torch.rand(3, 1, 1, generator=generator)
        period = int(torch.randint(3, 9, (1,), generator=generator))
        image[:, size // 2 :, : size // 3] *= 0.7 + 0.3 * (torch.arange(size // 3) // period % 2)
        scenes.append(image.clamp(0, 1))
    return torch.stack(scenes)


@pytest.mark.skipif(not (weights_dir() / "ddsnet.safetensors").is_file(), reason="ddsnet weights not shipped")
def test_shipped_gate_gives_light_noise_narrower_widths_than_heavy() -> None:
    from denoise_cli import registry

    net, _ = registry.load("ddsnet")
    clean = _generated_scenes(6)
    generator = torch.Generator().manual_seed(8)
    widths = {}
    for sigma in (5.0, 50.0):
        noisy = (clean + torch.randn(clean.shape, generator=generator) * sigma / 255).clamp(0, 1)
        widths[sigma] = [net.decide(image[None])["width"] for image in noisy]
    assert sum(widths[5.0]) / 6 < sum(widths[50.0]) / 6
    assert max(widths[5.0]) <= min(widths[50.0])


def test_subnetwork_table_scores_every_configuration_at_every_level() -> None:
    from denoise_cli.metrics import psnr
    from denoise_cli.training.ddsnet import subnetwork_psnr
    from denoise_cli.training.degrade import add_gaussian_noise

    net = DDSNet(channels=16, blocks=2)
    torch.nn.init.zeros_(net.tail.weight)
    torch.nn.init.zeros_(net.tail.bias)  # every configuration returns its input
    clean = torch.rand(2, 3, 16, 16) * 0.5 + 0.25
    table = subnetwork_psnr(net, clean, (5.0, 25.0))
    noisy, _ = add_gaussian_noise(clean, (25.0, 25.0), torch.Generator().manual_seed(25))
    expected = sum(psnr(noisy[i : i + 1].clamp(0, 1), clean[i : i + 1]) for i in range(2)) / 2
    assert sorted(table) == [5.0, 25.0] and all(len(row) == net.choices for row in table.values())
    assert table[25.0] == pytest.approx([expected] * net.choices, abs=1e-3)
    assert table[5.0][0] > table[25.0][0] + 10


@pytest.mark.parametrize("sigma", [2.0, 5.0, 15.0, 25.0, 50.0])
def test_noise_level_estimate_finds_the_sigma_of_gaussian_noise(sigma: float) -> None:
    clean = torch.from_numpy(smooth_scene(128, 160)).permute(2, 0, 1)[None].float()
    noisy = clean + torch.randn(clean.shape, generator=torch.Generator().manual_seed(0)) * sigma / 255
    assert float(noise_sigma(noisy)[0]) * 255 == pytest.approx(sigma, rel=0.08)
    assert float(noise_sigma(clean)[0]) * 255 < 0.5


def test_noise_map_comes_from_the_whole_image_so_every_tile_gets_the_same() -> None:
    torch.manual_seed(0)
    net = DDSNet(channels=16, blocks=2, noise_map=True).eval()
    net.use(net.choices - 1)  # the same sub-network throughout; only the noise level varies
    clean = torch.from_numpy(smooth_scene(64, 64)).permute(2, 0, 1)[None].float()
    noisy = clean + torch.randn(clean.shape, generator=torch.Generator().manual_seed(1)) * 25 / 255
    tile = clean[..., :32, :32]
    with torch.no_grad():
        alone = net(tile)  # estimated on the tile itself: no noise there
        assert net.decide(noisy)["noise_sigma"] == pytest.approx(25.0, rel=0.1)
        in_noisy_image = net(tile)
        net.decide(clean)
        in_clean_image = net(tile)
    assert not torch.allclose(in_noisy_image, in_clean_image, atol=1e-4)
    assert torch.allclose(in_clean_image, alone, atol=1e-5)


def test_in_place_distillation_teaches_narrow_widths_the_largest_output() -> None:
    from denoise_cli.training.objectives import pixel_loss, sandwich_configs, sandwich_distill

    torch.manual_seed(0)
    net = DDSNet(channels=16, blocks=2)
    noisy, clean = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    l1 = pixel_loss("l1")

    def gradients(loss: torch.Tensor) -> list[torch.Tensor]:
        net.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in net.parameters() if p.grad is not None]

    got = sandwich_distill(net, None, noisy, clean, l1, torch.Generator().manual_seed(3))
    got_grads = gradients(got)
    # the reference: only the largest sees the clean target; the narrow widths chase its
    # output, which is a constant for them (no gradient pulls the largest towards them)
    largest, *narrower = sandwich_configs(net, torch.Generator().manual_seed(3))
    full = net(noisy, config=largest)
    want = (l1(full, clean) + sum(l1(net(noisy, config=c), full.detach()) for c in narrower)) / 4
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    assert all(torch.allclose(g, w, atol=1e-6) for g, w in zip(got_grads, gradients(want), strict=True))
    full = net(noisy, config=largest)
    undetached = (l1(full, clean) + sum(l1(net(noisy, config=c), full) for c in narrower)) / 4
    assert not all(torch.allclose(g, w, atol=1e-6) for g, w in zip(got_grads, gradients(undetached), strict=True))


def test_perfect_gate_takes_the_cheapest_sub_network_within_the_tolerance() -> None:
    from denoise_cli.training.ddsnet import oracle_choice

    scores = torch.tensor([[30.00, 30.02, 30.04], [28.0, 28.5, 29.0], [35.0, 35.0, 35.0]])
    shares = [0.25, 0.5, 1.0]
    share, lost = oracle_choice(scores, shares, tolerance=0.05)
    assert share == pytest.approx((0.25 + 1.0 + 0.25) / 3)  # the second crop needs the full network
    assert lost == pytest.approx(0.04 / 3, abs=1e-5)
    share, lost = oracle_choice(scores, shares, tolerance=0.0)
    assert share == pytest.approx((1.0 + 1.0 + 0.25) / 3) and lost == 0.0


def test_log_mse_distillation_floors_the_distance_by_the_teachers_error() -> None:
    from denoise_cli.training.objectives import log_mse, sandwich_configs, sandwich_distill

    torch.manual_seed(0)
    net = DDSNet(channels=16, blocks=2)
    noisy, clean = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    got = sandwich_distill(net, None, noisy, clean, log_mse, torch.Generator().manual_seed(3))
    largest, *narrower = sandwich_configs(net, torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = net(noisy, config=largest)
        teacher = ((full - clean) ** 2).flatten(1).mean(dim=1)
        terms = [
            torch.log(((net(noisy, config=c) - full) ** 2).flatten(1).mean(dim=1) + teacher).mean() for c in narrower
        ]
    assert got.item() == pytest.approx((log_mse(full, clean) + sum(terms)).item() / 4, rel=1e-5)
    # a narrow width that already equals the teacher costs the teacher's ln(MSE), not ln(0)
    assert min(t.item() for t in terms) >= torch.log(teacher).mean().item() - 1e-6


def test_tailored_objective_trains_every_tailored_sub_network_equally() -> None:
    from denoise_cli.training.objectives import pixel_loss, tailored

    torch.manual_seed(0)
    net = DDSNet(channels=16, blocks=2)
    net.configs.copy_(torch.tensor([[8, 8, 16], [16, 8, 8], [16, 16, 8], [16, 16, 16]]))
    noisy, clean = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    l1 = pixel_loss("l1")
    got = tailored(net, None, noisy, clean, l1, torch.Generator())
    want = sum(l1(net(noisy, config=c.tolist()), clean) for c in net.configs) / 4
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


@pytest.mark.parametrize(("noise_map", "seed"), [(False, 0), (True, 1)])  # seeds whose random gates vary
def test_gate_calibration_scores_the_choices_the_cli_makes(noise_map: bool, seed: int) -> None:
    from denoise_cli.models.ddsnet import GATE_CONFIDENCE
    from denoise_cli.training.ddsnet import fixed_noise, gate_choices, gate_cost

    torch.manual_seed(seed)
    net = DDSNet(channels=16, blocks=2, noise_map=noise_map).eval()
    with torch.no_grad():  # a gate with an opinion
        for p in net.gate.parameters():
            p.normal_(0, 1)
    clean = torch.rand(6, 3, 32, 32)
    sigmas = (5.0, 50.0)
    picks = gate_choices(net, clean, sigmas, GATE_CONFIDENCE)
    decided = []
    for sigma in sigmas:
        for crop in fixed_noise(clean, sigma).split(1):
            net.decide(crop)
            decided.append(net.active)
    assert picks.tolist() == decided and len(set(decided)) > 1
    scores = torch.tensor([[30.0, 31.0, 32.0]] * 2)
    assert gate_cost(scores, [0.25, 0.5, 1.0], torch.tensor([0, 2])) == pytest.approx((0.625, 1.0))


def test_an_inserted_sub_network_lies_between_its_neighbours_and_the_cheapest_goes() -> None:
    from denoise_cli.training.ddsnet import insert_config

    torch.manual_seed(0)
    net = DDSNet(channels=32, blocks=2).eval()
    net.configs.copy_(torch.tensor([[8, 8, 8], [16, 16, 16], [32, 32, 16], [32, 32, 32]]))
    narrower, wider = net.configs[1].tolist(), net.configs[2].tolist()
    share = (net.width_of(narrower) + net.width_of(wider)) / 2
    insert_config(net, torch.rand(2, 3, 128, 128), share)
    configs = net.configs.tolist()
    assert configs[0] == narrower and configs[2:] == [wider, [32, 32, 32]]
    new = configs[1]
    assert all(lo <= v <= hi for lo, v, hi in zip(narrower, new, wider, strict=True))
    assert net.width_of(narrower) < net.width_of(new) <= share
    with pytest.raises(ValueError, match="below the cheapest"):
        insert_config(net, torch.rand(2, 3, 128, 128), 0.1)
