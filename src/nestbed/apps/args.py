"""argparse for the programs in nodes: a bad argument is one line on stderr and exit 2 (no usage block)."""
from __future__ import annotations

import argparse
import sys

TYPE_CHECKING = False     # not typing's: importing typing costs ~0.13 s of a start under emulation
if TYPE_CHECKING:
    from typing import NoReturn


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: {message}\n")
        sys.exit(2)


def fail(prog: str, message: str, code: int = 2) -> NoReturn:
    """One clear line and exit (2: bad arguments; 1: the run failed)."""
    sys.stderr.write(f"{prog}: {message}\n")
    sys.exit(code)
