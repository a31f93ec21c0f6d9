"""Plan a batch (inputs -> outputs), run it item by item, report, decide the exit code.

One bad file never stops the batch: it becomes a ``failed`` result with a one-line reason.
"""

from __future__ import annotations

import glob
import logging
import os
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from .imageio import FORMATS

log = logging.getLogger(__name__)

STDIO = "-"
WRITABLE_SUFFIXES = {f".{name}" for name in FORMATS}
READABLE_SUFFIXES = WRITABLE_SUFFIXES


class OnExists(str, Enum):
    SKIP = "skip"
    OVERWRITE = "overwrite"
    ERROR = "error"


class Status(str, Enum):
    OK = "ok"
    SKIPPED = "skipped"
    FAILED = "failed"
    PLANNED = "planned"


class ExitCode:
    OK = 0
    FAILED = 1
    USAGE = 2
    INTERRUPTED = 130


class UsageError(Exception):
    """The command line cannot be planned (exit code 2)."""


class BatchAbort(Exception):
    """Raised by a process function when no further item can succeed (e.g. missing weights)."""


@dataclass(frozen=True)
class Job:
    source: str
    """Input path, or '-' for stdin."""
    target: str
    """Output path, or '-' for stdout."""
    fmt: str | None = None
    """Output format name (png, jpg, ...); None: from the target's suffix."""
    problem: str | None = None
    """Set when planning already knows this item cannot run (e.g. a name collision)."""


@dataclass
class Result:
    input: str
    output: str | None
    status: Status
    seconds: float = 0.0
    error: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    aborted: bool = False
    """Failed because the batch stopped (its reason is reported once, not per file)."""

    def as_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "input": self.input,
            "output": self.output,
            "status": self.status.value,
            "seconds": round(self.seconds, 3),
        }
        if self.error:
            record["error"] = self.error
        record.update(self.facts)
        return record


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)
    interrupted: bool = False
    aborted: str | None = None
    """Why the batch stopped early (every remaining item is failed with this reason)."""

    def count(self, status: Status) -> int:
        return sum(r.status is status for r in self.results)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return ExitCode.INTERRUPTED
        return ExitCode.FAILED if self.count(Status.FAILED) else ExitCode.OK

    def summary(self) -> str:
        parts = [
            f"{self.count(Status.OK)} done",
            f"{self.count(Status.SKIPPED)} skipped",
            f"{self.count(Status.FAILED)} failed",
        ]
        if self.count(Status.PLANNED):
            parts.insert(0, f"{self.count(Status.PLANNED)} planned")
        return ", ".join(parts) + (" (interrupted)" if self.interrupted else "")


# -- planning -------------------------------------------------------------------------


def _is_input(path: Path, suffixes: Collection[str]) -> bool:
    return path.suffix.lower() in suffixes and not path.name.startswith(".")


def expand_inputs(
    inputs: Iterable[str], recursive: bool, suffixes: Collection[str] = READABLE_SUFFIXES
) -> list[tuple[str, Path | None]]:
    """Each input as (path, base folder for mirroring or None). Globs are expanded here;
    folders contribute the files whose suffix is in ``suffixes``."""
    found: list[tuple[str, Path | None]] = []
    for item in inputs:
        if item == STDIO:
            found.append((STDIO, None))
            continue
        path = Path(item)
        if path.is_dir():
            walker = path.rglob("*") if recursive else path.iterdir()
            files = sorted(p for p in walker if p.is_file() and _is_input(p, suffixes) and not _hidden_under(p, path))
            found.extend((str(p), path) for p in files)
        elif path.exists():
            found.append((item, None))
        elif glob.has_magic(item):
            matches = sorted(glob.glob(item, recursive=recursive))
            if not matches:
                raise UsageError(f"{item}: no file matches")
            found.extend((m, None) for m in matches if Path(m).is_file())
        else:
            found.append((item, None))  # fails when read, with the reason, like any bad file
    return found


def _hidden_under(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def output_suffix(source: Path, fmt: str | None) -> str:
    """The output extension: the format's, or the input's own when it is writable, else .png."""
    if fmt:
        return FORMATS[fmt].extension
    return source.suffix if source.suffix.lower() in WRITABLE_SUFFIXES else ".png"


def plan(
    inputs: list[str],
    out: str | None,
    *,
    suffix: str | None,
    default_suffix: str,
    fmt: str | None = None,
    recursive: bool = False,
    suffixes: Collection[str] = READABLE_SUFFIXES,
) -> list[Job]:
    """Map inputs to outputs.

    Without ``out`` each output goes next to its input as ``NAME{suffix}.EXT``; files found
    in folders that already carry the suffix (our own earlier outputs) are left out. ``out``
    names a file only for a single input file (or stdin); otherwise it is a folder (created),
    mirrored with ``--recursive``, where the suffix defaults to none unless the folder is the
    input's own. Two inputs that would write the same file make the later one a failed item.
    """
    found = expand_inputs(inputs, recursive, suffixes)
    if not found:
        raise UsageError("no input images")
    if any(src == STDIO for src, _ in found) and len(found) > 1:
        raise UsageError("'-' (stdin) cannot be mixed with other inputs")
    if out == STDIO and len(found) > 1:
        raise UsageError("-o - (stdout) takes exactly one input")

    single_input = len(inputs) == 1 and (inputs[0] == STDIO or Path(inputs[0]).is_file()) and not recursive
    file_out = out is not None and single_input and not _looks_like_folder(out)
    if file_out and out != STDIO and fmt and _fmt_of(out) not in (None, fmt) and FORMATS[fmt] != FORMATS[_fmt_of(out)]:
        raise UsageError(f"-o {out} does not match --format {fmt}")
    jobs: list[Job] = []
    seen: dict[str, str] = {}
    for source, base in found:
        if source == STDIO:
            if out is None:
                raise UsageError("reading stdin needs -o FILE or -o -")
            jobs.append(Job(STDIO, out, fmt or (None if out == STDIO else _fmt_of(out))))
            continue
        src = Path(source)
        if file_out:
            assert out is not None
            target = out
        else:
            folder = src.parent if out is None else Path(out)
            if out is not None and base is not None and recursive:
                folder = folder / src.parent.relative_to(base)
            own_folder = os.path.abspath(folder) == os.path.abspath(src.parent)
            used_suffix = suffix if suffix is not None else (default_suffix if own_folder else "")
            if used_suffix and base is not None and src.stem.endswith(used_suffix):
                continue  # an output of an earlier run, found in the same folder
            target = str(folder / f"{src.stem}{used_suffix}{output_suffix(src, fmt)}")
        key = os.path.normcase(os.path.abspath(target))
        problem = None
        if key in seen:
            problem = f"output {target} would also be written by {seen[key]}"
        else:
            seen[key] = source
        jobs.append(Job(source, target, fmt or _fmt_of(target), problem))
    return jobs


def _looks_like_folder(out: str) -> bool:
    return out.endswith(("/", os.sep)) or Path(out).is_dir()


def _fmt_of(target: str) -> str | None:
    ext = Path(target).suffix.lower().lstrip(".")
    return ext if ext in FORMATS else None


# -- running --------------------------------------------------------------------------

Process = Callable[[Job], dict[str, Any]]


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def decide(job: Job, on_exists: OnExists) -> Result | None:
    """A result without running, when the policy or the plan settles the item."""
    if job.problem:
        return Result(job.source, job.target, Status.FAILED, error=job.problem)
    if job.target == STDIO or not os.path.lexists(job.target):
        return None
    if job.source != STDIO and _same_file(job.source, job.target):
        return Result(
            job.source, job.target, Status.FAILED, error="output is the input itself; inputs are never overwritten"
        )
    if on_exists is OnExists.SKIP:
        return Result(job.source, job.target, Status.SKIPPED, error=f"{job.target} exists")
    if on_exists is OnExists.ERROR:
        return Result(job.source, job.target, Status.FAILED, error=f"{job.target} exists (--on-exists error)")
    return None


def run(
    jobs: list[Job],
    process: Process,
    on_exists: OnExists,
    *,
    dry_run: bool = False,
    on_result: Callable[[Result], None] | None = None,
    on_start: Callable[[Job, int], None] | None = None,
) -> Report:
    """Run every job; a failure is recorded and the batch goes on. Ctrl-C stops cleanly."""
    report = Report()
    for index, job in enumerate(jobs):
        if on_start:
            on_start(job, index)
        result = decide(job, on_exists)
        if result is None and dry_run:
            result = Result(job.source, job.target, Status.PLANNED)
        if result is None:
            start = time.perf_counter()
            try:
                facts = process(job)
                result = Result(job.source, job.target, Status.OK, time.perf_counter() - start, facts=facts)
            except KeyboardInterrupt:
                report.interrupted = True
                break
            except BatchAbort as e:
                report.aborted = str(e)
                for rest in jobs[index:]:
                    report.results.append(Result(rest.source, None, Status.FAILED, error=str(e), aborted=True))
                    if on_result:
                        on_result(report.results[-1])
                break
            except Exception as e:  # one bad file never stops the batch
                log.debug("%s failed", job.source, exc_info=True)
                reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                result = Result(job.source, None, Status.FAILED, time.perf_counter() - start, error=reason)
        report.results.append(result)
        if on_result:
            on_result(result)
    return report
