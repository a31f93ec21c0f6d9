"""Behaviour of the `denoise` command on small generated images (tiny random model)."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from denoise_cli.cli import main
from denoise_cli.tasks import TASKS

from .conftest import photo


def run(*args: str, input: bytes | None = None):
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def test_help_lists_every_subcommand() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for name in ("denoise", "sr", "raw2rgb", "demosaic", "deblock", "models", "eval"):
        assert name in result.output


@pytest.mark.parametrize("task", ["demosaic", "deblock"])
def test_unbuilt_tasks_say_so_and_exit_2(task: str, images: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(TASKS, task, dataclasses.replace(TASKS[task], default_model=None))  # a task without a model
    result = run(task, str(images))
    assert result.exit_code == 2
    assert "not built yet" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_batch_with_a_corrupt_file_goes_on(tiny_weights: Path, images: Path, tmp_path: Path) -> None:
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    out = tmp_path / "out"
    result = run("denoise", str(images), "-o", str(out) + "/")
    assert result.exit_code == 1
    assert sorted(p.name for p in out.iterdir()) == ["img0.png", "img1.png", "img2.png"]
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "broken.png" in errors[0]
    assert "3 done, 0 skipped, 1 failed" in result.stderr


def test_default_output_next_to_input_and_rerun_skips(tiny_weights: Path, images: Path) -> None:
    first = run("denoise", str(images))
    assert first.exit_code == 0
    outputs = sorted(p.name for p in images.glob("*_denoised.png"))
    assert outputs == ["img0_denoised.png", "img1_denoised.png", "img2_denoised.png"]
    stamp = (images / "img0_denoised.png").stat().st_mtime_ns
    second = run("denoise", str(images))  # our outputs are not taken as new inputs
    assert second.exit_code == 0
    assert "0 done, 3 skipped, 0 failed" in second.stderr
    assert (images / "img0_denoised.png").stat().st_mtime_ns == stamp
    assert not list(images.glob("*_denoised_denoised*"))


def test_on_exists_policies(tiny_weights: Path, images: Path, tmp_path: Path) -> None:
    src = images / "img0.png"
    target = tmp_path / "x.png"
    target.write_bytes(b"precious")
    assert run("denoise", str(src), "-o", str(target)).exit_code == 0
    assert target.read_bytes() == b"precious"  # skip is the default
    error = run("denoise", str(src), "-o", str(target), "--on-exists", "error")
    assert error.exit_code == 1 and "x.png" in error.stderr
    assert target.read_bytes() == b"precious"
    assert run("denoise", str(src), "-o", str(target), "--on-exists", "overwrite").exit_code == 0
    assert Image.open(target).size == (64, 48)


def test_input_is_never_its_own_output(tiny_weights: Path, images: Path) -> None:
    src = images / "img0.png"
    before = src.read_bytes()
    result = run("denoise", str(src), "--suffix", "", "--on-exists", "overwrite")
    assert result.exit_code == 1
    assert "output is the input itself" in result.stderr
    assert src.read_bytes() == before


def test_output_folder_that_is_the_input_folder_keeps_the_suffix(tiny_weights: Path, images: Path) -> None:
    result = run("denoise", str(images), "-o", str(images))
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in images.glob("*_denoised.png")) == [f"img{i}_denoised.png" for i in range(3)]


def test_a_folder_with_one_image_still_means_a_folder(tiny_weights: Path, tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    Image.fromarray(photo()).save(tmp_path / "one" / "a.png")
    result = run("denoise", str(tmp_path / "one"), "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "out" / "a.png").is_file()


def test_plain_stdout_lists_only_written_paths(tiny_weights: Path, images: Path, tmp_path: Path) -> None:
    result = run("denoise", str(images), "-o", str(tmp_path / "out"), "--format", "tif")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [str(tmp_path / "out" / f"img{i}.tif") for i in range(3)]
    assert Image.open(tmp_path / "out" / "img0.tif").format == "TIFF"


def test_stdout_takes_one_input_and_format_must_match(tiny_weights: Path, images: Path, tmp_path: Path) -> None:
    assert run("denoise", str(images), "-o", "-").exit_code == 2
    mismatch = run("denoise", str(images / "img0.png"), "-o", str(tmp_path / "x.png"), "--format", "jpg")
    assert mismatch.exit_code == 2 and "does not match" in mismatch.stderr


def test_tile_must_exceed_overlap(tiny_weights: Path, images: Path) -> None:
    result = run("denoise", str(images), "--tile", "32", "--overlap", "32")
    assert result.exit_code == 2 and "overlap" in result.stderr


def test_rich_markup_in_file_names_is_printed_verbatim(tiny_weights: Path, tmp_path: Path) -> None:
    bad = tmp_path / "scan[b]x[red].png"
    bad.write_bytes(b"not an image")
    result = run("denoise", str(bad), "-o", str(tmp_path / "o.png"))
    assert result.exit_code == 1
    assert "scan[b]x[red].png" in result.stderr


def test_recursive_mirrors_the_tree(tiny_weights: Path, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    (root / "a" / "b").mkdir(parents=True)
    (root / ".hidden").mkdir()
    Image.fromarray(photo()).save(root / "top.png")
    Image.fromarray(photo(seed=1)).save(root / "a" / "b" / "deep.jpg")
    Image.fromarray(photo(seed=2)).save(root / ".hidden" / "skip.png")
    (root / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    result = run("denoise", str(root), "-r", "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == ["a/b/deep.jpg", "top.png"]


def test_same_name_from_two_folders_is_not_silently_overwritten(tiny_weights: Path, tmp_path: Path) -> None:
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        Image.fromarray(photo()).save(tmp_path / d / "same.png")
    out = tmp_path / "out"
    result = run("denoise", str(tmp_path / "x" / "same.png"), str(tmp_path / "y" / "same.png"), "-o", str(out))
    assert result.exit_code == 1
    assert "would also be written" in result.stderr


def test_dry_run_writes_nothing_and_loads_no_model(tmp_path: Path, images: Path, monkeypatch) -> None:
    monkeypatch.setenv("DENOISE_WEIGHTS_DIR", str(tmp_path / "nowhere"))  # would fail if loaded
    result = run("denoise", str(images), "-o", str(tmp_path / "out"), "--dry-run")
    assert result.exit_code == 0
    assert result.stdout.count(" -> ") == 3
    assert not (tmp_path / "out").exists()


def test_missing_weights_one_line_naming_the_file(tmp_path: Path, images: Path, monkeypatch) -> None:
    monkeypatch.setenv("DENOISE_WEIGHTS_DIR", str(tmp_path / "nowhere"))
    result = run("denoise", str(images), "-o", str(tmp_path / "out"))
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    default = TASKS["denoise"].default_model
    assert len(errors) == 1 and f"{default}.json" in errors[0] and "not found" in errors[0]
    assert "Traceback" not in result.stderr


def test_json_lines(tiny_weights: Path, images: Path, tmp_path: Path) -> None:
    result = run("denoise", str(images), "-o", str(tmp_path / "out"), "--json", "--tile", "0")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["status"] for r in records] == ["ok"] * 3
    for r in records:
        assert {"input", "output", "status", "seconds", "model", "device", "precision", "tile"} <= set(r)
        assert r["model"] == "mallenet" and Path(r["output"]).is_file()


def test_format_and_quality(tiny_weights: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    low = run("denoise", str(images / "img0.png"), "-o", str(out / "low.jpg"), "--quality", "20")
    high = run("denoise", str(images / "img0.png"), "-o", str(out / "high.jpg"), "--quality", "95")
    assert low.exit_code == high.exit_code == 0
    assert Image.open(out / "low.jpg").format == "JPEG"
    assert (out / "low.jpg").stat().st_size < (out / "high.jpg").stat().st_size
    webp = run("denoise", str(images / "img1.png"), "-o", str(out) + "/", "--format", "webp")
    assert webp.exit_code == 0 and Image.open(out / "img1.webp").format == "WEBP"


def test_sixteen_bit_gray_in_sixteen_bit_gray_out(tiny_weights: Path, tmp_path: Path) -> None:
    data = (np.linspace(0, 65535, 40 * 56).reshape(40, 56)).astype(np.uint16)
    src = tmp_path / "deep.png"
    Image.fromarray(data).save(src)
    result = run("denoise", str(src), "-o", str(tmp_path / "o.png"))
    assert result.exit_code == 0, result.stderr
    out = Image.open(tmp_path / "o.png")
    assert out.mode in ("I;16", "I") and out.size == (56, 40)
    assert len(np.unique(np.asarray(out))) > 256  # not squeezed through 8 bits


def test_alpha_is_carried_through(tiny_weights: Path, tmp_path: Path) -> None:
    rgba = np.dstack([photo(), np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))])
    src = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(src)
    assert run("denoise", str(src), "-o", str(tmp_path / "o.png")).exit_code == 0
    out = np.asarray(Image.open(tmp_path / "o.png"))
    assert out.shape == (48, 64, 4)
    assert np.array_equal(out[..., 3], rgba[..., 3])


def test_stdin_to_stdout_subprocess(tiny_weights: Path, images: Path) -> None:
    data = (images / "img0.png").read_bytes()
    proc = subprocess.run(
        # a child process: the fixture's default model does not reach it, so name the tiny model
        [
            sys.executable,
            "-m",
            "denoise_cli",
            "denoise",
            "-",
            "-o",
            "-",
            "--format",
            "png",
            "--quiet",
            "--model",
            "mallenet",
        ],
        input=data,
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert Image.open(io.BytesIO(proc.stdout)).size == (64, 48)
    assert proc.stderr == b""


def test_stdin_to_a_file(tiny_weights: Path, images: Path, tmp_path: Path) -> None:
    result = run("denoise", "-", "-o", str(tmp_path / "o.webp"), input=(images / "img0.png").read_bytes())
    assert result.exit_code == 0, result.stderr
    assert Image.open(tmp_path / "o.webp").format == "WEBP"


def test_glob_inputs_are_expanded_by_the_tool(tiny_weights: Path, images: Path, tmp_path: Path) -> None:
    result = run("denoise", str(images / "img[01].png"), "-o", str(tmp_path / "out"))
    assert result.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["img0.png", "img1.png"]


def test_no_partial_output_when_the_model_fails(tiny_weights: Path, images: Path, tmp_path: Path, monkeypatch) -> None:
    from denoise_cli import engine

    def boom(self, x, precision):
        raise RuntimeError("simulated failure mid-image")

    monkeypatch.setattr(engine.Enhancer, "_forward", boom)
    out = tmp_path / "out"
    result = run("denoise", str(images / "img0.png"), "-o", str(out / "o.png"), "--precision", "fp32")
    assert result.exit_code == 1
    assert "simulated failure" in result.stderr
    assert not out.exists() or not any(out.iterdir())


def test_verbose_shows_the_traceback_of_a_failed_file(tiny_weights: Path, images: Path, tmp_path: Path) -> None:
    (images / "broken.png").write_bytes(b"not a png at all")
    result = run("denoise", str(images / "broken.png"), "-o", str(tmp_path / "o.png"), "--verbose")
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and "broken.png" in result.stderr


def test_models_lists_shipped_models_with_their_facts(tiny_weights: Path) -> None:
    result = run("models", "--json")
    assert result.exit_code == 0
    rows = {r["name"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert rows["mallenet"]["task"] == "denoise" and rows["mallenet"]["status"] == "ok"
    assert rows["mallenet"]["params"] > 1000 and rows["mallenet"]["gmacs_per_mp"] > 0.1
    assert rows["mallenet"]["default"] and not rows["drn-x2"]["default"]  # sr's default is drn-x4
    table = run("models")
    assert table.exit_code == 0 and "mallenet" in table.stdout and "denoise" in table.stdout


def test_eval_scores_a_folder_and_saves_metrics(tiny_weights: Path, images: Path) -> None:
    result = run("eval", "--model", "mallenet", "--data", str(images), "--sigma", "25", "--json", "--save-metrics")
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["method"] for r in rows] == ["input (noisy)", "mallenet"]
    assert rows[0]["images"] == 3 and 15 < rows[0]["psnr"] < 25  # sigma 25 noise on the input
    card = json.loads((tiny_weights / "mallenet.json").read_text())
    assert card["metrics"]["fp32"]["in sigma 25 | mallenet"]["psnr"] == round(rows[1]["psnr"], 3)
    assert card["gmacs_per_mp"] > 0 and card["params"] > 0


def test_lost_alpha_is_warned_about_naming_the_file(tiny_weights: Path, tmp_path: Path) -> None:
    src = tmp_path / "a.png"
    Image.fromarray(np.dstack([photo(), np.full((48, 64), 128, np.uint8)]), "RGBA").save(src)
    result = run("denoise", str(src), "-o", str(tmp_path / "o.jpg"))
    assert result.exit_code == 0
    assert "a.png" in result.stderr and "alpha" in result.stderr


def test_too_large_input_is_refused_naming_the_file(tiny_weights: Path, images: Path, tmp_path: Path) -> None:
    result = run("denoise", str(images), "-o", str(tmp_path / "out"), "--max-pixels", "0.002")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 3 and all("img" in e and "limit" in e for e in errors)


def test_truncated_and_unsupported_inputs_fail_alone(tiny_weights: Path, images: Path, tmp_path: Path) -> None:
    data = (images / "img0.png").read_bytes()
    (images / "cut.png").write_bytes(data[: len(data) // 2])
    Image.fromarray(np.zeros((8, 8), np.float32), "F").save(images / "float.tif")
    result = run("denoise", str(images), "-o", str(tmp_path / "out"))
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert sorted(Path(e.split(": ")[2]).name for e in errors) == ["cut.png", "float.tif"]
    assert len(list((tmp_path / "out").iterdir())) == 3


def test_ctrl_c_stops_cleanly_with_no_partial_file(
    tiny_weights: Path, images: Path, tmp_path: Path, monkeypatch
) -> None:
    from denoise_cli import fsutil

    real_replace = fsutil.os.replace
    calls = {"n": 0}

    def interrupted_replace(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(fsutil.os, "replace", interrupted_replace)
    out = tmp_path / "out"
    result = run("denoise", str(images), "-o", str(out))
    assert result.exit_code == 130
    assert sorted(p.name for p in out.iterdir()) == ["img0.png"]  # no .part file left behind
    assert "interrupted" in result.stderr
