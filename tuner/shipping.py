"""A study definition made in Python, packed into a file that worker processes load.

A notebook or a script defines its build function, `HyperModel`, callbacks and data in
`__main__`, which no other process can import. `pack` writes the definition by value
(cloudpickle) into the study's folder, each NumPy array of it as an `.npy` file beside it;
`unpack` reads it back with the arrays memory-mapped, so every worker process shares one
copy in the page cache and the data reaches a worker once, however many trials it runs.
Workers find the package like a study file (its path and sha256 are the study's).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import sys
import sysconfig
from pathlib import Path
from types import ModuleType
from typing import Any

import cloudpickle
import numpy as np

from tuner.definition import StudyDefinition
from tuner.errors import DefinitionError

PACKAGE = "definition.pkl"
_SERVICE = {"tuner", "workers"}  # imported by reference: every worker has them
SMALL = 1 << 16  # bytes: an array smaller than this travels inside the package


class CannotShip(Exception):
    """Part of the definition cannot go to another process (a generator, a tf.data
    pipeline, an open file...); the message says what."""


class _Pickler(cloudpickle.Pickler):
    """Pickles by value, with large arrays written aside as `.npy` files named by content."""

    def __init__(self, buffer: io.BytesIO, folder: Path) -> None:
        super().__init__(buffer, protocol=pickle.HIGHEST_PROTOCOL)
        self.folder = folder

    def persistent_id(self, obj: Any) -> str | None:
        if type(obj) is not np.ndarray or obj.nbytes < SMALL or obj.dtype.hasobject:
            return None
        digest = hashlib.sha256(np.ascontiguousarray(obj).data).hexdigest()[:24]
        name = f"array-{digest}.npy"
        if not (self.folder / name).exists():  # the same data is written once
            temporary = self.folder / f".{name}.tmp"
            with temporary.open("wb") as out:
                np.save(out, obj, allow_pickle=False)
            temporary.replace(self.folder / name)
        return name


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: Any, folder: Path) -> None:
        super().__init__(file)
        self.folder = folder

    def persistent_load(self, name: str) -> np.ndarray:
        return np.load(self.folder / name, mmap_mode="r")


def pack(definition: StudyDefinition, folder: Path) -> StudyDefinition:
    """Write `definition` into `folder` and return it as workers will know it: with the
    package's path and hash. `CannotShip` if some part cannot leave this process."""
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    own = _own_modules()
    for module in own:
        cloudpickle.register_pickle_by_value(module)
    try:
        _Pickler(buffer, folder).dump(definition)
    except Exception as exc:  # pickling fails with whatever the object raises
        raise CannotShip(f"{type(exc).__name__}: {exc}") from None
    finally:
        for module in own:
            cloudpickle.unregister_pickle_by_value(module)
    path = folder / PACKAGE
    temporary = folder / f".{PACKAGE}.tmp"
    temporary.write_bytes(buffer.getvalue())
    temporary.replace(path)  # a worker never reads half a package
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()
    return _with_origin(definition, str(path.resolve()), digest)


def _own_modules() -> list[ModuleType]:
    """The user's own modules (neither installed nor this service's): pickled by value like
    `__main__`, so the package needs no copy of them where it is loaded."""
    paths = sysconfig.get_paths()
    roots = {variant for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths
             for variant in (paths[key], os.path.realpath(paths[key]))}
    installed = tuple(os.path.join(root, "") for root in roots)
    return [module for name, module in list(sys.modules.items())
            if (file := getattr(module, "__file__", None)) and name != "__main__"
            and name.split(".")[0] not in _SERVICE
            and not os.path.abspath(file).startswith(installed)]


def unpack(path: str | Path) -> StudyDefinition:
    """The definition `pack` wrote, its arrays memory-mapped (read-only)."""
    path = Path(path)
    data = path.read_bytes()
    try:
        definition = _Unpickler(io.BytesIO(data), path.parent).load()
    except Exception as exc:
        raise DefinitionError(
            f"cannot load the packaged study {path}: {type(exc).__name__}: {exc} (a worker "
            "needs the same packages, and versions, as the process that packed it)") from None
    return _with_origin(definition, str(path.resolve()), hashlib.sha256(data).hexdigest())


def is_package(path: str | Path) -> bool:
    return Path(path).name == PACKAGE


def _with_origin(definition: StudyDefinition, path: str, digest: str) -> StudyDefinition:
    return dataclasses.replace(definition, path=path, source_hash=digest)
