"""The kill test's *write points*: the instants of a write where ``KDSL_KILL_AT=N`` ends the
process at its Nth point (``os._exit(137)``, as SIGKILL would) and ``KDSL_KILL_TRACE=FILE`` appends
each point's number and name to FILE. Every atomic write of the run directory passes three
(:func:`kdsl.training.rundir.atomic_write`), a sharded checkpoint its own
(:mod:`kdsl.training.dist_checkpoint`). Unset (always, outside the kill tests), a point costs one
environment lookup."""

from __future__ import annotations

import os

KILL_AT_ENV = "KDSL_KILL_AT"
KILL_TRACE_ENV = "KDSL_KILL_TRACE"
_points_passed = 0  # write points passed by this process (only counted while the kill test asks)


def write_point(what: str, path: str) -> None:
    """A point of a write where the kill test may end the process (see the module doc)."""
    global _points_passed
    at, trace = os.environ.get(KILL_AT_ENV), os.environ.get(KILL_TRACE_ENV)
    if not at and not trace:
        return
    _points_passed += 1
    if trace:
        with open(trace, "a") as fh:
            fh.write(f"{_points_passed} {what} {os.path.basename(path)}\n")
    if at and int(at) == _points_passed:
        os._exit(137)  # no cleanup, no finally: what SIGKILL leaves behind
