"""Deliveries: a teacher's result of a method or function handed to the student's same call.

During the source model's pass a :class:`Delivery` queues what the callable returned; during the
destination's pass it answers each call from the queue, in order, without running the original.
Every result must be used within the step (KD603, KD604); ``keep`` bounds the queue (KD605).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Deque, List, Optional

from kdsl.core.diagnostics import error
from kdsl.core.span import Span
from kdsl.runtime.patches import CallListener
from kdsl.runtime.recorders import PassState


class Delivery(CallListener):
    """During the source model's pass, queue what the callable returned; during the destination's
    pass, answer each call from the queue, in order, without running the original."""

    def __init__(self, description: str, source: str, dest: str, keep: Optional[int],
                 span: Optional[Span], state: PassState) -> None:
        self.description = description
        self.source, self.dest = source, dest
        self.keep = keep
        self.span = span
        self.state = state
        self.queue: Deque[Any] = deque()
        self.produced = 0
        self.seen: List[Any] = []  # what the calibrating pass produced, until the step ends (the dry run reads it)
        self.handles: List[Any] = []

    def intercepts(self) -> bool:
        return self.state.active == self.dest

    def respond(self, args, kwargs):
        if not self.queue:
            raise error("KD603", f"delivery of {self.description}: the {self.dest}'s pass called it "
                        f"more often than the {self.source}'s pass did ({self.produced} "
                        f"result{'s' if self.produced != 1 else ''} delivered)", self.span,
                        hint=f"the {self.source} and the {self.dest} must make the same calls in a step")
        return self.queue.popleft()

    def after(self, args, kwargs, out) -> None:
        if self.state.active == self.source:
            if self.keep is not None and len(self.queue) >= self.keep:
                raise error("KD605", f"delivery of {self.description} holds at most {self.keep} "
                            f"result{'s' if self.keep != 1 else ''} (keep {self.keep}), and the "
                            f"{self.source}'s pass produced more", self.span,
                            hint="raise 'keep', or leave it out for no bound")
            self.queue.append(out)
            self.produced += 1
            if self.state.calibrating:
                self.seen.append(out)

    def finish_step(self) -> None:
        left = len(self.queue)
        produced = self.produced
        self.clear()
        if left:
            raise error("KD604", f"delivery of {self.description}: the {self.source}'s pass produced "
                        f"{produced} result{'s' if produced != 1 else ''} but the {self.dest}'s pass "
                        f"used {produced - left}", self.span,
                        hint="nothing carries over to the next step; the two passes must match")

    def clear(self) -> None:
        self.queue.clear()
        self.seen = []
        self.produced = 0

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
        self.clear()
