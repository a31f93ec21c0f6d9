from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from denoise_cli import registry, weights
from denoise_cli.engine import Enhancer


def test_missing_weights_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DENOISE_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(weights.WeightsError, match=r"mallenet\.json: model card not found"):
        registry.load("mallenet")
    (tmp_path / "mallenet.json").write_text("{}")
    with pytest.raises(weights.WeightsError, match=r"mallenet\.safetensors: weights file not found"):
        registry.load("mallenet")


def test_corrupt_weights_is_a_clear_error(tiny_weights: Path) -> None:
    path = tiny_weights / "mallenet.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(weights.WeightsError, match="not a readable safetensors file"):
        registry.load("mallenet")


def test_pickle_is_refused(tiny_weights: Path) -> None:
    path = tiny_weights / "mallenet.safetensors"
    torch.save({"x": torch.zeros(1)}, path)  # a pickle under a safetensors name
    with pytest.raises(weights.WeightsError):
        registry.load("mallenet")


def test_weights_of_another_shape_are_refused(tiny_weights: Path) -> None:
    card_path = tiny_weights / "mallenet.json"
    card = json.loads(card_path.read_text())
    card["arch_args"]["channels"] = 12
    card_path.write_text(json.dumps(card))
    with pytest.raises(weights.WeightsError, match="do not fit the architecture"):
        registry.load("mallenet")


def test_unreadable_card(tiny_weights: Path) -> None:
    (tiny_weights / "mallenet.json").write_text("{not json")
    with pytest.raises(weights.WeightsError, match="unreadable model card"):
        registry.load("mallenet")


def test_enhancer_runs_tiny_model_tiled_and_whole(tiny_weights: Path) -> None:
    x = torch.rand(1, 3, 70, 90)
    whole = Enhancer("mallenet", device="cpu", precision="fp32", tile=0)(x)
    tiled = Enhancer("mallenet", device="cpu", precision="fp32", tile=48, overlap=16)(x)
    assert whole.shape == tiled.shape == x.shape
    assert whole.min().item() >= 0.0 and whole.max().item() <= 1.0
    assert (whole - tiled).abs().mean().item() < 0.05  # blended, not stitched garbage


def test_precision_auto_stays_fp32_without_a_measured_bf16_drop(tiny_weights: Path) -> None:
    assert Enhancer("mallenet", device="cpu").precision == "fp32"


@pytest.mark.parametrize(
    ("drop", "faster", "expected"), [(0.01, "bf16", "bf16"), (0.01, "fp32", "fp32"), (0.3, "bf16", "fp32")]
)
def test_precision_auto_takes_bf16_only_when_measured_faster_and_good(
    tiny_weights: Path, monkeypatch: pytest.MonkeyPatch, drop: float, faster: str, expected: str
) -> None:
    from denoise_cli import engine

    card_path = tiny_weights / "mallenet.json"
    card = json.loads(card_path.read_text())
    card["metrics"] = {"bf16_psnr_drop_db": drop}
    card_path.write_text(json.dumps(card))
    monkeypatch.setattr(engine, "fastest_precision", lambda device, run: faster)
    assert Enhancer("mallenet", device="cpu").precision == expected


def test_precision_timing_takes_turns_so_a_burst_of_other_load_slows_every_candidate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from denoise_cli import device

    clock, calls = [0.0], []

    def run(precision: str) -> None:  # fp32 is faster; another process is busy during the first three calls
        calls.append(precision)
        clock[0] += {"fp32": 1.0, "bf16": 1.5}[precision] + (5.0 if len(calls) <= 3 else 0.0)

    monkeypatch.setattr(device.time, "perf_counter", lambda: clock[0])
    assert device.fastest_precision(torch.device("cpu"), run) == "fp32"
    assert calls == ["fp32", "bf16"] * 3


def test_fp16_on_cpu_is_refused(tiny_weights: Path) -> None:
    with pytest.raises(ValueError, match="fp16"):
        Enhancer("mallenet", device="cpu", precision="fp16")


def test_a_regular_install_finds_the_weights_under_its_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DENOISE_WEIGHTS_DIR", raising=False)
    installed = tmp_path / "share" / "denoise" / "weights"
    installed.mkdir(parents=True)
    monkeypatch.setattr(registry, "INSTALLED_WEIGHTS", installed)
    assert registry.weights_dir() == registry.SHIPPED_WEIGHTS  # a checkout's own weights/ wins
    monkeypatch.setattr(registry, "SHIPPED_WEIGHTS", tmp_path / "site-packages" / "weights")
    assert registry.weights_dir() == installed
    monkeypatch.setenv("DENOISE_WEIGHTS_DIR", str(tmp_path))
    assert registry.weights_dir() == tmp_path


def test_float16_storage_halves_the_file_and_loads_back_as_float32(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Conv2d(8, 8, 3)
    full, half = tmp_path / "full.safetensors", tmp_path / "half.safetensors"
    weights.save(model, full, {"name": "full"})
    weights.save(model, half, {"name": "half"}, torch.float16)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = torch.nn.Conv2d(8, 8, 3)
    weights.load_into(loaded, half)
    assert loaded.weight.dtype == torch.float32
    assert torch.allclose(loaded.weight, model.weight, rtol=1e-3, atol=1e-4)
    assert not torch.equal(loaded.weight, model.weight)  # it really was rounded
