"""A worker process for tests/test_queue.py: ``python queue_child.py ROOT MODE [URL]``.

MODE ``slow``: each model call writes ``<root>/started-<n>`` and takes a second, so a test
can signal the worker mid-item. MODE ``die-before-ack``: the process kills itself (SIGKILL)
the moment it is about to acknowledge an item, after the run was logged.
"""

import os
import signal
import sys
import time
from pathlib import Path

from atomic_vault.models import ModelResponse
from atomic_vault.workqueue import Worker


class SlowModel:
    name = "slow"

    def __init__(self, root):
        self.root, self.calls = Path(root), 0

    def complete(self, request):
        self.calls += 1
        (self.root / f"started-{self.calls}").write_text("x")
        time.sleep(1.0)
        return ModelResponse(text="slow answer", input_tokens=3, output_tokens=2, cost_usd=0.0, model="slow")


def main():
    root, mode = sys.argv[1], sys.argv[2]
    queue = sys.argv[3] if len(sys.argv) > 3 else None
    worker = Worker(root, queue, lease=1.0, poll=0.05, until_empty=mode != "slow",
                    model=SlowModel(root) if mode == "slow" else None)
    if mode == "die-before-ack":  # the run is logged; the acknowledgement never happens
        worker.queue.complete = lambda claim, result: os.kill(os.getpid(), signal.SIGKILL)
    worker.run()


if __name__ == "__main__":
    main()
