"""A process for tests/tools/test_zygote.py to fork: `facts` prints what it was given and what
it is as one JSON line; `exit N` exits with N; `spin S` uses S seconds of CPU and exits; `end
CODE` leaves output unflushed, a thread running, an atexit function and an object to free,
then calls sys.exit(CODE); `sleep` waits to be killed."""

from __future__ import annotations

import atexit
import gc
import json
import os
import random
import sys
import threading
import time
from collections.abc import Callable


class _Freed:
    """A cycle left for the teardown's last collection (the zygote's own objects are frozen:
    never collected, even then)."""

    def __init__(self) -> None:
        self.cycle = self

    def __del__(self, write: Callable[[int, bytes], int] = os.write) -> None:
        write(1, b"freed\n")  # os itself may be torn down by then


def _end_later() -> None:
    time.sleep(0.2)
    print("thread ended")


def _end(code: str) -> None:
    gc.disable()  # the cycle waits for the teardown
    _Freed()
    atexit.register(print, "atexit ran")
    threading.Thread(target=_end_later).start()  # not daemonic: the exit waits for it
    print("unflushed", end=" ")  # a pipe's stdout is block-buffered
    sys.exit(int(code) if code.isdigit() else code)


def main() -> int:
    match sys.argv[1:]:
        case ["facts"]:
            print("to stderr", file=sys.stderr, flush=True)
            facts = {
                "pid": os.getpid(),
                "ppid": os.getppid(),
                "argv": sys.argv,
                "env": os.environ.get("ZYGOTE_TEST"),
                "cwd": os.getcwd(),
                "random": random.getrandbits(64),
                "threads": threading.active_count(),
                "main_thread_id": threading.main_thread().native_id,
            }
            print(json.dumps(facts), flush=True)
            return 0
        case ["exit", code]:
            return int(code)
        case ["end", code]:
            _end(code)
            return 1
        case ["spin", seconds]:  # uses that much CPU, then exits
            while time.process_time() < float(seconds):
                pass
            return 0
        case _:
            print("up", flush=True)
            time.sleep(60)
            return 1
