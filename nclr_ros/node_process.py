"""A node started as a child process (the bag tools' live passes, the benchmarks)."""
from __future__ import annotations

import signal
import subprocess


def stop_node_process(process: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """SIGINT (the node stops its worker, saves and exits), then kill after `timeout_s`."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
