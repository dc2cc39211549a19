"""The pod runner of an embedded cluster: Pods run as local processes, status reported by callback.

`PodRunner` is the entry point (see `runner.py`); `read_log` reads a container
log as `kubectl logs` shows it. The decisions live in `isthmus.core.podstatus`.
"""

from isthmus.components.podrunner.logs import read_log
from isthmus.components.podrunner.runner import NotFound, PodRunner, PodRunnerError

__all__ = ["NotFound", "PodRunner", "PodRunnerError", "read_log"]
