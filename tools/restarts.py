"""When `hearthmesh run` starts a failed node again, and when it gives up (SPEC §11.8.6).

A node that failed stopped itself (SPEC §11.8.5); `hearthmesh run` is one command with no
service manager behind it, so it restarts the node in the same process from the same data dir.
The wait before each restart doubles with the faults in the window; the fault that makes
`RESTART_GIVE_UP_FAULTS` within `RESTART_WINDOW_S` gives up instead: a fault that comes back at
once is not cured by starting again, and an operator (or a service manager) must look.
Sans-I/O: the caller passes the time. State owned here: the times of the faults in the window.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

__all__ = [
    "RESTART_FIRST_WAIT_S",
    "RESTART_GIVE_UP_FAULTS",
    "RESTART_MAX_WAIT_S",
    "RESTART_WINDOW_S",
    "RestartPolicy",
    "Restarts",
]

RESTART_FIRST_WAIT_S: Final = 1.0
"""The wait before the restart after a first fault; doubled per fault in the window."""

RESTART_MAX_WAIT_S: Final = 60.0
"""The longest wait before a restart (reached only with a larger give-up count)."""

RESTART_GIVE_UP_FAULTS: Final = 5
"""This many faults within `RESTART_WINDOW_S` end the run with a non-zero exit code."""

RESTART_WINDOW_S: Final = 600.0
"""The window in which faults count (a fault older than this is forgotten)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RestartPolicy:
    """The restart rule's numbers; the defaults are SPEC §11.8.6's."""

    first_wait_s: float = RESTART_FIRST_WAIT_S
    max_wait_s: float = RESTART_MAX_WAIT_S
    give_up_faults: int = RESTART_GIVE_UP_FAULTS
    window_s: float = RESTART_WINDOW_S


class Restarts:
    """The faults of one run within the policy's window."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self._faults: deque[float] = deque()

    @property
    def faults(self) -> int:
        """Faults within the window at the last `fault`."""
        return len(self._faults)

    def fault(self, now_s: float) -> float | None:
        """Count a fault at `now_s`: the wait before the next start, or None to give up."""
        policy = self.policy
        while self._faults and self._faults[0] <= now_s - policy.window_s:
            self._faults.popleft()
        self._faults.append(now_s)
        if len(self._faults) >= policy.give_up_faults:
            return None
        doublings = min(len(self._faults) - 1, 30)
        wait_s: float = policy.first_wait_s * 2.0**doublings
        return min(policy.max_wait_s, wait_s)
