"""The project's exceptions. Each one a user can cause carries a message fit to print."""


class TunerError(Exception):
    """Base of every error the tuner raises on purpose."""


class SpaceError(TunerError, ValueError):
    """An invalid search space; the message names the parameter."""


class DefinitionError(TunerError):
    """A study file that cannot be loaded or lacks what a study needs."""


class StorageError(TunerError):
    """The database cannot be reached or used."""


class StudyNotFound(TunerError, KeyError):
    """No study of that name in the storage."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class StudyExists(TunerError):
    """A study of that name already exists and was not to be loaded."""


class NoTunerDatabase(StorageError):
    """A reader's database holds no tuner tables (or its SQLite file does not exist); a
    reader creates nothing, so it says so instead."""


class ForeignDatabase(StorageError):
    """The database holds another application's schema (or a newer tuner's): the tuner
    neither writes to it nor creates its tables there."""


class StudyBusy(TunerError):
    """The study is held by a live coordinator or worker, so it cannot be deleted now."""
