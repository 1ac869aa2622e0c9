"""One job per input image, run safely: the loop `upscale`, `attention` and `evaluate` share.

A :class:`Batch` finds the images of files, folders and globs (``files.find_images``), plans each
one's outputs with the caller's planner, refuses outputs that would overwrite an input or another
image's output, skips images whose outputs all exist (unless ``overwrite``), runs the rest, and
reports one line per failure while going on. Before computing an item it claims its outputs (a
hidden claim file beside each), so concurrent runs into one folder split the work; temporary files
that a killed run left in the output folders are removed first. Its :class:`Tally` says how many were done, skipped
and failed; a command exits 1 when some failed. Under ``torchrun`` each rank takes every
``world``-th item of the planned order (``shard``).

Messages are in the library's words; a caller adds advice in its own (a CLI names its flags)
through :class:`Hints`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from ..errors import YodaError
from ..fsutil import claim_all, release, remove_stale_temporaries
from .files import FoundImages, expand_globs, find_images, missing_reason, resolved


@dataclass
class Item:
    """One input image and the files it becomes."""

    image: Path
    key: str
    """The image's path relative to its input argument, POSIX style (seeds and names use it)."""
    outputs: list[Path]
    """The planned outputs; the first is the main one."""
    pending: list[Path] = field(default_factory=list)
    """The outputs to write (set by :meth:`Batch.plan`: all, or those missing without overwrite)."""


@dataclass
class Tally:
    """What a batch did: items done, skipped (outputs already there) and failed."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    busy: int = 0
    """Of ``skipped``: items another live run holds claims on (not known to be done)."""


@dataclass(frozen=True)
class Hints:
    """Advice appended to the batch's messages, in the caller's words."""

    exists: str = ""
    """After "skipped IMAGE: OUTPUT exists", in parentheses."""
    kept: str = ""
    """After "IMAGE: kept the existing OUTPUT", in parentheses."""
    input: str = ""
    """After "its output OUTPUT is an input image; refusing to overwrite it", in parentheses."""
    collision: str = ""
    """After "its output OUTPUT is also that of IMAGE", after a semicolon."""


def _ignore(_: str) -> None:
    pass


def _parenthesized(hint: str) -> str:
    return f" ({hint})" if hint else ""


def error_message(image: Path, error: BaseException) -> str:
    """One line about an image that failed: the message, naming the image, with the error's type
    unless it is a :class:`YodaError` (whose message is written for users)."""
    message = str(error) if isinstance(error, YodaError) else f"{type(error).__name__}: {error}"
    return message if str(image) in message else f"{image}: {message}"


ItemT = TypeVar("ItemT", bound=Item)
ResultT = TypeVar("ResultT")


class Batch(Generic[ItemT]):
    """Runs one job per image, one failure per line; see the module's docstring.

    ``report`` gets each failure line, ``note`` each remark (skipped entries and outputs).
    ``reraise`` lets a failure propagate instead (a debugging aid); errors of the ``fatal`` types
    always do (they would fail every image alike, such as missing weights).
    """

    def __init__(
        self,
        *,
        overwrite: bool = False,
        report: Callable[[str], None] = _ignore,
        note: Callable[[str], None] = _ignore,
        hints: Hints = Hints(),
        reraise: bool = False,
        fatal: tuple[type[BaseException], ...] = (),
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        self.overwrite = overwrite
        self.report = report
        self.note = note
        self.hints = hints
        self.reraise = reraise
        self.fatal = fatal
        self.rank, self.world = shard
        self.tally = Tally()

    def fail(self, line: str) -> None:
        """Report one failure and count it."""
        self.report(line)
        self.tally.failed += 1

    def find(
        self,
        arguments: Sequence[Path],
        recursive: bool = False,
        ignore_endings: tuple[str, ...] = (),
        exclude: Sequence[Path] = (),
    ) -> FoundImages:
        """The images of files, folders and globs; notes are passed on, missing arguments are failures.

        Nothing inside an ``exclude`` folder (the output folder) is taken from a folder argument.
        Raises :class:`YodaError` when there is nothing at all to work on.
        """
        found = find_images(expand_globs(arguments), recursive, ignore_endings=ignore_endings, exclude=exclude)
        for text in found.notes:
            self.note(text)
        for path in found.missing:
            self.fail(f"{path}: {missing_reason(path)}")
        if not found.images and not found.missing:
            where = ", ".join(map(str, arguments))
            raise YodaError(f"no images found in {where}; give image files, or folders that hold some")
        return found

    def plan(self, items: Iterable[ItemT]) -> list[ItemT]:
        """This rank's items that have work to do, in the given order, with ``pending`` set.

        Every item's outputs are checked against the inputs and the other items' outputs (so all
        ranks agree); a conflict fails the item, reported by the rank it belongs to.
        """
        items = list(items)
        for folder in sorted({output.parent for item in items for output in item.outputs}):
            for removed in remove_stale_temporaries(folder):
                self.note(f"removed {removed}, left by a run that was stopped")
        inputs = {resolved(item.image) for item in items}
        claimed: dict[Path, Path] = {}
        mine: list[ItemT] = []
        for index, item in enumerate(items):
            problem = self._conflict(item, inputs, claimed)
            for output in item.outputs:
                claimed.setdefault(resolved(output), item.image)
            if index % self.world != self.rank:
                continue
            if problem:
                self.fail(problem)
                continue
            item.pending = [output for output in item.outputs if self.overwrite or not output.exists()]
            if not item.pending:
                existing = ", ".join(map(str, item.outputs))
                verb = "exists" if len(item.outputs) == 1 else "exist"
                self.note(f"skipped {item.image}: {existing} {verb}{_parenthesized(self.hints.exists)}")
                self.tally.skipped += 1
                continue
            if len(item.pending) < len(item.outputs):
                kept = ", ".join(str(output) for output in item.outputs if output not in item.pending)
                self.note(f"{item.image}: kept the existing {kept}{_parenthesized(self.hints.kept)}")
            mine.append(item)
        return mine

    def _conflict(self, item: ItemT, inputs: set[Path], claimed: dict[Path, Path]) -> str | None:
        for output in item.outputs:
            target = resolved(output)
            if target in inputs:
                hint = _parenthesized(self.hints.input)
                return f"{item.image}: its output {output} is an input image; refusing to overwrite it{hint}"
            if target in claimed:
                hint = f"; {self.hints.collision}" if self.hints.collision else ""
                return f"{item.image}: its output {output} is also that of {claimed[target]}{hint}"
        return None

    def run(
        self,
        items: Sequence[ItemT],
        work: Callable[[list[ItemT]], Iterator[tuple[ItemT, ResultT | BaseException]]],
        *,
        chunk: int = 1,
        done: Callable[[ItemT, ResultT], None] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Tally:
        """Run ``work`` on chunks of up to ``chunk`` items; it yields each item with its result or
        its error. If ``work`` raises, the chunk's items it has not yielded fail with that error.
        ``done`` gets each success, ``progress`` the number of items finished (done or failed)."""
        for start in range(0, len(items), chunk):
            group, claims = self._claim(items[start : start + chunk])
            finished: set[int] = set()
            try:
                if not group:
                    continue
                for item, outcome in work(group):
                    finished.add(id(item))
                    self._settle(item, outcome, done)
                    if progress is not None:
                        progress(1)
            except self.fatal:
                raise
            except Exception as error:
                if self.reraise:
                    raise
                left = [item for item in group if id(item) not in finished]
                for item in left:
                    self.fail(error_message(item.image, error))
                if progress is not None and left:
                    progress(len(left))
            finally:
                for path in claims:
                    release(path)
        return self.tally

    def _claim(self, items: Sequence[ItemT]) -> tuple[list[ItemT], list[Path]]:
        """The items whose pending outputs this run claimed (another run may be writing the others,
        or may have finished them since the plan), and the claim files to release afterwards."""
        claimed: list[ItemT] = []
        held: list[Path] = []
        for item in items:
            mine = claim_all(item.pending)
            if mine is None:
                self.note(f"skipped {item.image}: another run is writing its output")
                self.tally.skipped += 1
                self.tally.busy += 1
                continue
            held.extend(mine)
            if mine and not self.overwrite:
                item.pending = [output for output in item.pending if not output.exists()]
                if not item.pending:
                    self.note(f"skipped {item.image}: another run wrote its output meanwhile")
                    self.tally.skipped += 1
                    continue
            claimed.append(item)
        return claimed, held

    def _settle(
        self, item: ItemT, outcome: ResultT | BaseException, done: Callable[[ItemT, ResultT], None] | None
    ) -> None:
        if isinstance(outcome, BaseException):
            if self.reraise or isinstance(outcome, self.fatal):
                raise outcome
            self.fail(error_message(item.image, outcome))
            return
        self.tally.done += 1
        if done is not None:
            done(item, outcome)


def each(work: Callable[[ItemT], ResultT]) -> Callable[[list[ItemT]], Iterator[tuple[ItemT, ResultT | BaseException]]]:
    """Chunk work from per-item work: each item's error is its own (for :meth:`Batch.run`)."""

    def run(items: list[ItemT]) -> Iterator[tuple[ItemT, ResultT | BaseException]]:
        for item in items:
            try:
                outcome: ResultT | BaseException = work(item)
            except Exception as error:
                outcome = error
            yield item, outcome

    return run
