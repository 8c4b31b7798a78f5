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
