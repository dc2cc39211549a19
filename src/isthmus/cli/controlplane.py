"""The control plane's container commands: `isthmus identity`, `isthmus destination`, `isthmus proxy-injector`.

They are what the install manifests' containers run (the same command line
in the image and in the embedded cluster's runner), configured only by
their environment (`isthmus.resources.manifests`, `ENV_*`). Each runs until
SIGTERM or SIGINT; a configuration it cannot run with is one line
`error: ...` on stderr and exit status 1 (the pod then shows
CrashLoopBackOff and `kubectl logs` says why).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import typer

__all__ = ["destination_cmd", "identity_cmd", "proxy_injector_cmd", "viz_api_cmd"]

HELP_PANEL = "Control plane (the commands of its pods)"
C = TypeVar("C")


def _fail(message: object) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(1)


def _serve(what: str, load: Callable[[], C],
           run: Callable[[C, asyncio.Event], Coroutine[Any, Any, None]]) -> None:
    import uvloop

    from isthmus.adapters.incluster import InClusterError
    from isthmus.components.controlplane import ControlPlaneConfigError, log_level
    from isthmus.components.destination import DestinationServiceError
    from isthmus.components.identity import IdentityServiceError

    logging.basicConfig(level=log_level(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpx2", "httpcore"):  # one line per API request otherwise
        logging.getLogger(noisy).setLevel(max(logging.WARNING, log_level()))
    try:
        config = load()
    except ControlPlaneConfigError as e:
        _fail(f"{what}: {e}")
        return

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(config, stop)

    try:
        uvloop.run(main())
    except (IdentityServiceError, DestinationServiceError, InClusterError) as e:
        _fail(f"{what}: {e}")
    except OSError as e:  # a listen address in use or not local
        _fail(f"{what} could not start: {e}")


def identity_cmd() -> None:
    """Run the identity service (configured from ISTHMUS_IDENTITY_* variables)."""
    from isthmus.components.controlplane import IdentityPodConfig, run_identity

    _serve("identity", IdentityPodConfig.from_env, run_identity)


def destination_cmd() -> None:
    """Run the destination service (configured from ISTHMUS_DESTINATION_* variables)."""
    from isthmus.components.controlplane import DestinationPodConfig, run_destination

    _serve("destination", DestinationPodConfig.from_env, run_destination)


def proxy_injector_cmd() -> None:
    """Run the proxy injector webhook (configured from ISTHMUS_INJECTOR_* variables)."""
    from isthmus.components.injector import InjectorPodConfig, run_injector

    _serve("proxy-injector", InjectorPodConfig.from_env, run_injector)


def viz_api_cmd() -> None:
    """Run the viz API and metrics collector (configured from ISTHMUS_VIZ_* variables)."""
    from isthmus.components.viz.run import VizPodConfig, run_viz_api

    _serve("viz-api", VizPodConfig.from_env, run_viz_api)
