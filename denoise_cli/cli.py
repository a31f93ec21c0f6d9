"""The ``denoise`` command: parse, validate, call the batch runner, map results to exit codes.

Nothing here imports torch at module level, so ``--help`` stays fast.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import click

from . import __version__
from .batch import STDIO, ExitCode, OnExists, Report, Result, Status, UsageError
from .tasks import TASKS, Task

FORMAT_CHOICES = ["png", "jpg", "tif", "webp", "bmp"]


class Console:
    """stderr for people (progress, errors, summary); stdout for results only."""

    def __init__(self, quiet: bool, verbose: bool, json_lines: bool) -> None:
        from rich.console import Console as RichConsole

        self.quiet, self.verbose, self.json_lines = quiet, verbose, json_lines
        self.err = RichConsole(stderr=True, highlight=False, soft_wrap=True)

    def error(self, message: str) -> None:
        from rich.text import Text

        self.err.print(Text.assemble(("denoise: error:", "red"), " ", message))

    def note(self, message: str) -> None:
        if not self.quiet:
            self.err.print(message, markup=False)

    def result(self, result: Result, stdout_busy: bool) -> None:
        if self.json_lines and not stdout_busy:
            click.echo(json.dumps(result.as_json()))
        elif result.status is Status.OK and not stdout_busy:
            click.echo(result.output)
        elif result.status is Status.PLANNED:
            click.echo(f"{result.input} -> {result.output}")
        if result.status is Status.OK and "width" in result.facts and not self.json_lines:
            facts = result.facts
            self.note(
                f"{result.input}: width {facts['width']:.2f}"
                f" ({facts['macs'] / 1e9:.1f} of {facts['macs_full'] / 1e9:.1f} GMACs)"
            )
        if result.status is Status.FAILED and not result.aborted:
            self.error(f"{result.input}: {result.error}")
        elif result.status is Status.SKIPPED and self.verbose:
            self.note(f"skipped {result.input}: {result.error} ({result.output})")


def setup_logging(verbose: bool, quiet: bool) -> None:
    """Our log records go to the current stderr: warnings always, details with --verbose."""
    logger = logging.getLogger("denoise_cli")
    for handler in [h for h in logger.handlers if getattr(h, "denoise_cli", False)]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.denoise_cli = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("denoise: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING)
    logger.propagate = False


def common_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by every image subcommand."""
    options = [
        click.argument("inputs", nargs=-1, metavar="INPUT..."),
        click.option(
            "-o", "--output", "output", default=None, help="Output file (one input), folder, or - for stdout."
        ),
        click.option("-r", "--recursive", is_flag=True, help="Walk sub-folders and mirror the tree under -o."),
        click.option(
            "--on-exists",
            type=click.Choice([e.value for e in OnExists]),
            default="skip",
            show_default=True,
            help="What to do when an output exists (skip makes an interrupted batch resumable).",
        ),
        click.option(
            "--suffix",
            default=None,
            help="Added to output names (default: task-specific next to inputs, none in -o folders).",
        ),
        click.option(
            "--format",
            "fmt",
            type=click.Choice(FORMAT_CHOICES),
            default=None,
            help="Output format (default: the input's).",
        ),
        click.option("--quality", type=click.IntRange(1, 100), default=None, help="JPEG/WebP quality."),
        click.option("--dry-run", is_flag=True, help="Print the input -> output plan and stop."),
        click.option("--model", default=None, help="Model name (see `denoise models`)."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True),
        click.option(
            "--precision",
            type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
            default="auto",
            show_default=True,
            help="auto: fp16 on CUDA; on CPU bf16 only where it is measured faster and keeps quality.",
        ),
        click.option(
            "--tile",
            type=click.IntRange(min=0),
            default=None,
            help="Tile side in pixels; 0 = whole image; default from size and memory.",
        ),
        click.option(
            "--overlap", type=click.IntRange(min=0), default=None, help="Tile overlap in pixels (default: the model's)."
        ),
        click.option(
            "--self-ensemble",
            is_flag=True,
            help="Average the model's results on the 8 flips and quarter turns of each image: a little"
            " better, 8x slower.",
        ),
        click.option(
            "--max-pixels",
            type=click.FloatRange(min=0, min_open=True),
            default=200.0,
            show_default=True,
            help="Refuse inputs larger than this many megapixels (decompression-bomb guard).",
        ),
        click.option("--json", "json_lines", is_flag=True, help="One JSON object per input on stdout."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary."),
        click.option("-v", "--verbose", is_flag=True, help="Log device, precision and tiles; tracebacks on errors."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def run_task(task: Task, **opts: Any) -> None:
    """The one flow behind every image subcommand."""
    setup_logging(opts["verbose"], opts["quiet"])
    console = Console(opts["quiet"], opts["verbose"], opts["json_lines"])
    model = opts["model"] or TASKS[task.name].default_model  # looked up now: tests swap the default
    classic = opts.get("engine") == "classic"
    if model is None and not classic:
        hint = " (--engine classic runs LibRaw's pipeline)" if task.raw_options else ""
        console.error(f"'{task.name}' is not built yet: no model for this task ships in this version{hint}")
        sys.exit(ExitCode.USAGE)

    if not opts["inputs"]:
        raise click.UsageError("missing INPUT (files, folders, globs or - for stdin)")

    from . import batch, registry

    overlap = opts["overlap"] or 0
    if not classic:
        try:
            model = registry.resolve(model, opts.get("scale"), task.name)
        except (registry.UnknownModelError, ValueError) as e:
            raise click.BadParameter(str(e), param_hint="--model") from None
        card = registry.card(model)
        if card.task != task.name:
            raise click.BadParameter(f"model {model!r} is for '{card.task}', not '{task.name}'", param_hint="--model")
        overlap = card.overlap if opts["overlap"] is None else opts["overlap"]
    if opts["self_ensemble"] and classic:
        raise click.BadParameter("the classic engine has no network to ensemble", param_hint="--self-ensemble")
    if opts["tile"] and overlap >= opts["tile"]:
        raise click.BadParameter(f"the overlap ({overlap}) must be smaller than the tile", param_hint="--tile")
    try:
        jobs = batch.plan(
            list(opts["inputs"]),
            opts["output"],
            suffix=opts["suffix"],
            default_suffix=task.suffix,
            fmt=opts["fmt"] or task.default_format,
            recursive=opts["recursive"],
            suffixes=task.inputs or batch.READABLE_SUFFIXES,
        )
    except UsageError as e:
        raise click.UsageError(str(e)) from None
    stdout_busy = any(job.target == STDIO for job in jobs)
    if stdout_busy and sys.stdout.isatty() and not opts["dry_run"]:
        raise click.UsageError("refusing to write image data to a terminal; redirect stdout or use -o FILE")

    report = _run_with_progress(task, model, jobs, opts, console, stdout_busy)
    if not opts["quiet"]:
        console.note(report.summary())
        widths = [r.facts["width"] for r in report.results if r.status is Status.OK and "width" in r.facts]
        if widths:
            console.note(f"average width {sum(widths) / len(widths):.2f} of the full network's MACs")
    sys.exit(report.exit_code)


def _run_with_progress(
    task: Task, model: str, jobs: list, opts: dict[str, Any], console: Console, stdout_busy: bool
) -> Report:
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from . import batch, registry
    from .engine import Enhancer
    from .tasks import Prepared, ReadOptions, image_processor
    from .weights import WeightsError

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console.err,
        disable=opts["quiet"] or len(jobs) < 1,
        transient=True,
    )
    files_bar = progress.add_task(task.name, total=len(jobs))
    tiles_bar = progress.add_task("tiles", total=1, visible=False)

    def on_tiles(done: int, total: int) -> None:
        progress.update(tiles_bar, completed=done, total=total, visible=total > 1)

    def make_enhancer(name: str) -> Enhancer:
        try:
            return Enhancer(
                name,
                device=opts["device"],
                precision=opts["precision"],
                tile=opts["tile"],
                overlap=opts["overlap"],
                width=opts.get("width"),
                self_ensemble=opts["self_ensemble"],
            )
        except (WeightsError, RuntimeError, ValueError) as e:
            raise batch.BatchAbort(str(e)) from None

    options = ReadOptions(
        int(opts["max_pixels"] * 1e6),
        pattern=opts.get("pattern"),
        white_balance=opts.get("wb") or "camera",
        bits=opts.get("bits") or 16,
        classic=opts.get("engine") == "classic",
        jpeg_quality=opts.get("quality_factor"),
    )
    strength = opts.get("strength", 1.0)

    def choose_model(prepared: Prepared) -> str:
        if opts["model"]:  # what the user asked for, whatever the file
            return model
        return registry.jpeg_specialist(model, prepared.facts.get("jpeg_quality"), prepared.picture.gray)

    process = image_processor(make_enhancer, choose_model, task.reader, options, opts["quality"], on_tiles, strength)

    def on_start(job: batch.Job, index: int) -> None:
        name = "stdin" if job.source == STDIO else job.source
        progress.update(files_bar, description=escape(f"{task.name} {name}"))

    def on_result(result: Result) -> None:
        progress.advance(files_bar)
        progress.update(tiles_bar, visible=False)
        console.result(result, stdout_busy)

    with progress:
        report = batch.run(
            jobs, process, OnExists(opts["on_exists"]), dry_run=opts["dry_run"], on_result=on_result, on_start=on_start
        )
    if report.aborted:
        console.error(report.aborted)
    return report


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="denoise")
def main() -> None:
    """Denoise, upscale, demosaick, deblock and develop images in batches.

    Inputs may be files, folders, globs or - (stdin). Outputs are written atomically and
    existing files are skipped unless --on-exists says otherwise. Exit codes: 0 all done,
    1 some inputs failed, 2 usage error, 130 interrupted.
    """


def _make_command(task: Task) -> click.Command:
    @common_options
    def command(**opts: Any) -> None:
        run_task(task, **opts)

    if task.raw_options:
        command = click.option(
            "--engine",
            type=click.Choice(["network", "classic"]),
            default="network",
            show_default=True,
            help="network: the learned pipeline; classic: LibRaw's own (rawpy), as a baseline and fallback.",
        )(command)
        command = click.option(
            "--bits",
            type=click.Choice(["8", "16"]),
            default="16",
            show_default=True,
            callback=lambda _ctx, _param, value: int(value),
            help="Bits per sample of PNG/TIFF outputs (JPEG is always 8).",
        )(command)
        command = click.option(
            "--wb",
            type=click.Choice(["camera", "auto", "daylight"]),
            default="camera",
            show_default=True,
            help="White balance: as shot, grey world, or the camera's daylight balance.",
        )(command)
    if task.strength:
        command = click.option(
            "--strength",
            type=click.FloatRange(0.0, 1.0),
            default=1.0,
            show_default=True,
            help="Blend the result with the input: 1 = the model's result, 0 = the input unchanged"
            " (values between keep some grain).",
        )(command)
    if task.quality_factor:
        command = click.option(
            "--quality-factor",
            type=click.IntRange(1, 100),
            default=None,
            help="The JPEG quality the inputs were saved at, instead of the estimate from each file's"
            " quantisation tables (which a PNG saved from a JPEG no longer has); it picks the model.",
        )(command)
    if task.widths:
        command = click.option(
            "--width",
            type=click.FloatRange(0.0, 1.0, min_open=True),
            default=None,
            help="Slimmable models (ddsnet): run the sub-network with this share of the full MACs"
            " (0.25, 0.5, 0.75, 1) instead of letting the gate choose per image.",
        )(command)
    if task.patterns:
        command = click.option(
            "--pattern",
            type=click.Choice(["RGGB", "BGGR", "GRBG", "GBRG"], case_sensitive=False),
            default="RGGB",
            show_default=True,
            callback=lambda _ctx, _param, value: value.upper(),
            help="CFA layout of single-channel mosaics (top-left 2x2); RAW files carry their own.",
        )(command)
    if task.scales:
        command = click.option(
            "--scale",
            type=click.Choice([str(s) for s in task.scales]),
            default=None,
            callback=lambda _ctx, _param, value: int(value) if value else None,
            help="Up-scaling factor; the output is exactly this times the input size"
            " (default: the largest the model ships in).",
        )(command)
    return click.command(name=task.name, help=task.help)(command)


for _task in TASKS.values():
    main.add_command(_make_command(_task))


@main.command("models")
@click.option("--json", "json_lines", is_flag=True, help="One JSON object per model.")
def models_command(json_lines: bool) -> None:
    """List the models: task, parameters, MACs per megapixel, measured quality."""
    from .flops import size_facts
    from .registry import CARDS, build_from_card, resolve
    from .tasks import TASKS
    from .weights import WeightsError, read_card

    defaults = {resolve(t.default_model) for t in TASKS.values() if t.default_model}
    rows = []
    for card in CARDS.values():
        try:
            meta = read_card(card.weights_path)
            status = "ok" if card.weights_path.is_file() else "weights missing"
        except WeightsError:
            meta, status = {}, "weights missing"
        if status == "ok" and not meta.get("gmacs_per_mp"):
            net = build_from_card(card.name, meta)
            meta.update(size_facts(net, card.max_tile))
        rows.append(
            {
                "name": card.name,
                "task": card.task,
                "params": meta.get("params"),
                "gmacs_per_mp": meta.get("gmacs_per_mp"),
                "quality": meta.get("metrics", {}).get("summary", ""),
                "steps": meta.get("steps"),
                "status": status,
                "default": card.name in defaults,
                "why": meta.get("why", ""),
                "summary": card.summary,
                "paper": card.paper,
            }
        )
    if json_lines:
        for row in rows:
            click.echo(json.dumps(row))
        return
    from rich.console import Console as RichConsole
    from rich.table import Table

    table = Table("model", "task", "params", "GMACs/MP", "quality (measured)", "what", box=None)
    for r in rows:
        params = f"{r['params'] / 1e6:.2f} M" if r["params"] else "-"
        macs = f"{r['gmacs_per_mp']:.0f}" if r["gmacs_per_mp"] else "-"
        what = r["summary"] if r["status"] == "ok" else f"{r['summary']} ({r['status']})"
        name = f"{r['name']} (default)" if r["default"] else r["name"]
        table.add_row(name, r["task"], params, macs, r["quality"] or "-", what)
    console = RichConsole(soft_wrap=False)
    console.print(table)
    for r in rows:
        if r["default"] and r["why"]:
            console.print(f"{r['name']} is the default of `denoise {r['task']}`: {r['why']}", highlight=False)


def _variants(enhancer: Any, model: str) -> dict[str, Any]:
    """The methods eval scores for one model: itself, or for a slimmable model its gate and
    each of its sub-networks."""
    shares = getattr(enhancer.model, "shares", None)
    if shares is None:
        return {model: enhancer}

    def forced(index: int | None) -> Any:
        def run(x: Any) -> Any:
            enhancer.model.use(index)
            return enhancer(x)

        run.facts = enhancer.facts  # type: ignore[attr-defined]
        return run

    methods = {f"{model} (gate)": forced(None)}
    for index, share in enumerate(shares()):
        methods[f"{model} width {share:.2f}"] = forced(index)
    return methods


@main.command("eval")
@click.option("--model", required=True, help="Model to score.")
@click.option(
    "--data",
    "data_dirs",
    multiple=True,
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Folder of clean images, or a noisy/gt pair folder; repeatable.",
)
@click.option(
    "--sigma",
    "sigmas",
    multiple=True,
    type=float,
    default=(15.0, 25.0, 50.0),
    show_default=True,
    help="AWGN levels (8-bit units); repeatable or space-separated.",
)
@click.option(
    "--scale", type=click.Choice(["2", "4"]), default=None, help="Super-resolution: the factor (picks NAME-xS)."
)
@click.option(
    "--quality",
    "qualities",
    multiple=True,
    type=click.IntRange(1, 100),
    default=(10, 20, 30, 40),
    show_default=True,
    help="Deblocking: JPEG qualities to encode at; repeatable.",
)
@click.option(
    "--mixed", is_flag=True, help="Also a setting where each image gets one of sigma 5, 15, 25, 50 (fixed by name)."
)
@click.option("--baseline", is_flag=True, help="Also score CBM3D (needs the optional `bm3d` package).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True, help="CBM3D processes at once.")
@click.option(
    "--baseline-sigma",
    "baseline_sigmas",
    multiple=True,
    type=float,
    help="Noisy/clean pairs: the CBM3D sigmas to try (the best over the set is reported); repeatable."
    " Default 5, 10, 15, 20, 30, 40.",
)
@click.option("--crop", type=int, default=None, help="Centre-crop every image to this size first.")
@click.option("--limit", type=int, default=None, help="Only the first N images of each folder.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True)
@click.option("--tile", type=click.IntRange(min=0), default=None)
@click.option("--self-ensemble", is_flag=True, help="The model averaged over 8 flips and turns (a row of its own).")
@click.option("--json", "json_lines", is_flag=True, help="One JSON object per row.")
@click.option("--save-metrics", is_flag=True, help="Store the results in the model's card (weights/NAME.json).")
@click.argument("extra_sigmas", nargs=-1, type=float, required=False)
def eval_command(
    model: str, data_dirs: tuple[str, ...], sigmas: tuple[float, ...], extra_sigmas: tuple[float, ...], **opts: Any
) -> None:
    """Score a model on a folder with PSNR/SSIM.

    Denoisers: RGB, 8-bit outputs, fixed-seed AWGN (or noisy/clean pairs), CBM3D with
    --baseline. Super-resolution: Y channel with the scale shaved, beside bicubic.
    Demosaicking: RGGB mosaics, RGB with a 4-pixel border ignored, beside bilinear and
    Malvar. Deblocking: libjpeg at each --quality, beside the JPEG input. RAW-to-RGB:
    synthetic camera RAW unprocessed from each image (noise and camera fixed per file name),
    RGB with a 4-pixel border ignored, beside Malvar with the known camera and LibRaw.
    """
    from pathlib import Path

    from .engine import Enhancer
    from .evaluate import evaluate_deblock, evaluate_demosaic, evaluate_model, evaluate_raw2rgb, evaluate_sr
    from .weights import WeightsError

    setup_logging(False, False)
    err = Console(False, False, False)
    if opts["save_metrics"] and (opts["crop"] or opts["limit"]):
        raise click.UsageError("--save-metrics records whole-folder results only; drop --crop/--limit")
    from .registry import UnknownModelError, card, resolve

    try:
        model = resolve(model, int(opts["scale"]) if opts["scale"] else None)
    except (UnknownModelError, ValueError) as e:
        raise click.BadParameter(str(e), param_hint="--model") from None
    task, scale = card(model).task, card(model).scale
    try:
        enhancer = Enhancer(
            model,
            device=opts["device"],
            precision=opts["precision"],
            tile=opts["tile"],
            self_ensemble=opts["self_ensemble"],
        )
    except (WeightsError, KeyError, RuntimeError, ValueError) as e:
        err.error(str(e))
        sys.exit(ExitCode.FAILED)
    method = f"{model} (self-ensemble x8)" if opts["self_ensemble"] else model
    all_sigmas = list(sigmas) + list(extra_sigmas)
    rows = []
    for data in data_dirs:
        err.note(f"evaluating {model} ({enhancer.precision}) on {data} ...")
        subset = {"crop": opts["crop"], "limit": opts["limit"]}
        if task == "sr":
            rows += evaluate_sr(enhancer, method, Path(data), scale, **subset)
            continue
        if task == "demosaic":
            rows += evaluate_demosaic(enhancer, method, Path(data), **subset)
            continue
        if task == "raw2rgb":
            rows += evaluate_raw2rgb(enhancer, method, Path(data), **subset)
            continue
        if task == "deblock":
            rows += evaluate_deblock(enhancer, method, Path(data), list(opts["qualities"]), **subset)
            continue
        rows += evaluate_model(
            _variants(enhancer, method),
            Path(data),
            all_sigmas + (["mixed"] if opts["mixed"] else []),
            crop=opts["crop"],
            limit=opts["limit"],
            baseline=opts["baseline"],
            jobs=opts["jobs"],
            baseline_sigmas=opts["baseline_sigmas"],
        )
    if opts["json_lines"]:
        for r in rows:
            click.echo(json.dumps(r.__dict__))
    else:
        click.echo("| data | method | PSNR (dB) | SSIM | images | seconds | note |")
        click.echo("|---|---|---|---|---|---|---|")
        for r in rows:
            click.echo(
                f"| {r.setting} | {r.method} | {r.psnr:.2f} | {r.ssim:.4f} | {r.images} | {r.seconds:.1f} | {r.note} |"
            )
    if opts["save_metrics"]:
        from .evaluate import save_metrics

        save_metrics(enhancer, rows, opts["precision"])
