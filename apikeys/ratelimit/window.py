"""One verification's place in its key's window, and the one error every store raises."""

from __future__ import annotations

from typing import NamedTuple


class Window(NamedTuple):
    """One verification's place in its key's current window."""

    allowed: bool
    count: int  # verifications the window has admitted, this one included if it was counted
    reset: float  # seconds until the window ends and its count starts again
    mark: object = None  # what give_back needs to find the count again


class StoreError(Exception):
    """The counter store failed or was too slow to answer; ``unreachable``: it cannot be reached at all."""

    def __init__(self, message: str, *, unreachable: bool = False):
        super().__init__(message)
        self.unreachable = unreachable
