"""Errors a user can cause, each rendered as one line: where, what, how to fix.

NestbedError            base of every error the CLI prints as one line (never a traceback)
├── TopologyError       the topology (file or Python API) is wrong; carries the location
├── PreflightError      this machine cannot realize the topology (missing qdisc, not root, …)
└── ExperimentError     the experiment's state forbids the request (exists already, not found, …)
    └── CommandNotFound exec of a program the node does not have (exit code 127, as shells do)
"""
from __future__ import annotations


class NestbedError(Exception):
    """An error meant for the user: str(err) is the whole message, one line."""
    exit_code = 1


class TopologyError(NestbedError):
    def __init__(self, message: str, location: str | None = None, hint: str | None = None):
        self.message = message
        self.location = location
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        text = f"{self.location}: {self.message}" if self.location else self.message
        return f"{text}; {self.hint}" if self.hint else text


class PreflightError(NestbedError):
    pass


class ExperimentError(NestbedError):
    pass


class CommandNotFound(ExperimentError):
    exit_code = 127      # what shells return for a missing command
