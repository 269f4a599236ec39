"""Bad input, reported as one line: the exception and the argument parser every command uses."""

from __future__ import annotations

import argparse
import errno
import os


class BenchError(Exception):
    """Bad input: the message names the field or file at fault. The CLI prints it, exits 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are a BenchError: one line naming the option, exit 2, no usage dump."""

    def error(self, message: str):
        raise BenchError(f"{message} (see {self.prog} --help)")


def yaml_error(where: str, e: Exception) -> BenchError:
    """A YAML parse error as one line ``FILE:LINE:COLUMN: ...`` (1-based, as editors count).

    PyYAML's own message spans several lines with a caret drawing; only its marks and problem
    are kept. Duck-typed, so this module does not import yaml.
    """
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    context = getattr(e, "context", None)
    if mark is None:
        return BenchError(f"{where}: not valid YAML: {problem}")
    what = f"{problem} ({context})" if context else problem
    return BenchError(f"{where}:{mark.line + 1}:{mark.column + 1}: not valid YAML: {what}")


# A full disk, a read-only or forbidden folder, an exhausted quota: nothing the input can fix.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT, errno.EPERM}
STORAGE_EXIT = 3


class StorageError(Exception):
    """A file could not be written: the message names the path and the cause. Exit 3."""

    def __init__(self, path, err: OSError):
        cause = os.strerror(err.errno) if err.errno else str(err)
        super().__init__(f"cannot write {path}: {cause}")
        self.path, self.errno = str(path), err.errno


def is_storage(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in STORAGE_ERRNOS


BUSY_EXIT = 4


class CellBusy(Exception):
    """Another process is training this cell (it holds the cell's lock). Exit 4."""
