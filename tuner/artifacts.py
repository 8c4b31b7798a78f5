"""Where trial checkpoints live: a local folder by default, any fsspec URL (s3://, gs://,
a shared mount...) when workers run on many hosts. One folder per trial number."""

from __future__ import annotations

import logging
from pathlib import Path

import fsspec

log = logging.getLogger(__name__)


class Artifacts:
    def __init__(self, url: str) -> None:
        self.url = url
        self._fs, self._root = fsspec.core.url_to_fs(url)

    def __repr__(self) -> str:
        return f"Artifacts({self.url!r})"

    def _path(self, number: int) -> str:
        return f"{self._root.rstrip('/')}/trial-{number}"

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
        return sorted(int(n.split("-", 1)[1]) for n in names if n.startswith("trial-"))
