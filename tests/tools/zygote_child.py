"""A process for tests/tools/test_zygote.py to fork: `facts` prints what it was given and what
it is as one JSON line; `exit N` exits with N; `spin S` uses S seconds of CPU and exits; `sleep`
waits to be killed."""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time


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
        case ["spin", seconds]:  # uses that much CPU, then exits
            while time.process_time() < float(seconds):
                pass
            return 0
        case _:
            print("up", flush=True)
            time.sleep(60)
            return 1
