"""Bad input, reported as one line: the exception and the argument parser every command uses."""

from __future__ import annotations

import argparse


class BenchError(Exception):
    """Bad input: the message names the field or file at fault. The CLI prints it, exits 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are a BenchError: one line naming the option, exit 2, no usage dump."""

    def error(self, message: str):
        raise BenchError(f"{message} (see {self.prog} --help)")
