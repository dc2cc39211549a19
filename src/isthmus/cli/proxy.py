"""`isthmus proxy`: run the sidecar proxy, configured from its environment (`ISTHMUS_PROXY_*`).

Kept free of the CLI's heavier imports (see `cli.entry`). A configuration
error prints one line saying which variable is wrong and exits 1.
"""

from __future__ import annotations

import logging
import sys

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def run() -> None:
    import uvloop

    from isthmus.components.proxy import ConfigError, ProxyConfig, run_proxy

    try:
        config = ProxyConfig.from_env()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    level = config.log_level.upper()
    logging.basicConfig(level=level if level in LEVELS else "INFO",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        uvloop.run(run_proxy(config))
    except OSError as e:  # a listen address in use, or not local
        print(f"error: proxy could not start: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        pass
