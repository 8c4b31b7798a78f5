"""Where trial checkpoints live: a local folder by default, any fsspec URL (s3://, gs://,
a shared mount...) when workers run on many hosts. One folder per trial number."""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterable
from pathlib import Path

import fsspec

from tuner.states import TrialState
from tuner.storage.records import Trial

log = logging.getLogger(__name__)


class Artifacts:
    """Folders of files by number (`<url>/<prefix>-<number>`): trials' checkpoints and
    weights, or a resumable trial's checkpoints by epoch."""

    def __init__(self, url: str, *, prefix: str = "trial") -> None:
        self.url, self.prefix = url, prefix
        self._fs, self._root = fsspec.core.url_to_fs(url)

    def __repr__(self) -> str:
        return f"Artifacts({self.url!r})"

    def _path(self, number: int) -> str:
        return f"{self._root.rstrip('/')}/{self.prefix}-{number}"

    def put(self, number: int, folder: Path) -> None:
        """Store the files of a local folder as trial `number`'s checkpoint."""
        target = self._path(number)
        self._fs.makedirs(target, exist_ok=True)
        for file in sorted(folder.iterdir()):
            self._fs.put_file(str(file), f"{target}/{file.name}")

    def get(self, number: int, folder: Path) -> None:
        """Copy trial `number`'s checkpoint into a local folder."""
        source = self._path(number)
        if not self._fs.exists(source):
            raise FileNotFoundError(f"no checkpoint of trial {number} under {self.url}")
        folder.mkdir(parents=True, exist_ok=True)
        for path in self._fs.ls(source, detail=False):
            self._fs.get_file(path, str(folder / Path(path).name))

    def exists(self, number: int) -> bool:
        return self._fs.exists(self._path(number))

    def delete(self, number: int) -> None:
        if self._fs.exists(self._path(number)):
            self._fs.rm(self._path(number), recursive=True)

    def numbers(self) -> list[int]:
        """The trial numbers that have a checkpoint."""
        if not self._fs.exists(self._root):
            return []
        names = (Path(p).name for p in self._fs.ls(self._root, detail=False))
        return sorted(int(n.split("-", 1)[1]) for n in names if n.startswith(f"{self.prefix}-"))

    def remove(self) -> None:
        """Delete every folder here, and this one."""
        if self._fs.exists(self._root):
            self._fs.rm(self._root, recursive=True)


def best_models(url: str) -> Artifacts:
    """Where trials keep their best epoch's weights: the `best` folder of a study's artifacts."""
    return Artifacts(f"{url.rstrip('/')}/best")


def resume_points(url: str, number: int) -> Artifacts:
    """Where trial `number` keeps the checkpoints it resumes from after a crash, by epoch:
    `<artifacts>/resume/trial-N/epoch-E`."""
    return Artifacts(f"{url.rstrip('/')}/resume/trial-{number}", prefix="epoch")


class KeptModels:
    """Keeps the saved weights of a study's best `keep` COMPLETE trials, and deletes those
    of the others as they finish, so the disk a study uses stays bounded."""

    def __init__(self, store: Artifacts, keep: int, sign: int, trials: Iterable[Trial]) -> None:
        self.store, self.keep, self.sign = store, keep, sign
        self._best: list[tuple[float, int]] = []  # (signed value, -number): best last
        finished = [t for t in trials if t.state.is_finished()]
        for trial in finished:
            self.note(trial, delete=False)
        kept = self.numbers()
        for number in set(store.numbers()) & {t.number for t in finished} - kept:
            store.delete(number)  # left by a run that stopped before deleting them

    def numbers(self) -> set[int]:
        return {-number for _, number in self._best}

    def note(self, trial: Trial, *, delete: bool = True) -> None:
        """A finished trial: keep its weights if it ranks among the best (ties: the earlier
        trial), else delete them, or the weights it pushes out."""
        if trial.state != TrialState.COMPLETE or trial.value is None:
            if delete:
                self.store.delete(trial.number)
            return
        bisect.insort(self._best, (self.sign * trial.value, -trial.number))
        if len(self._best) > self.keep:
            _, number = self._best.pop(0)
            if delete:
                self.store.delete(-number)
