"""The sidecar proxy: `isthmus proxy`, configured from its environment (see `config`)."""

from isthmus.components.proxy.config import ConfigError, ProxyConfig
from isthmus.components.proxy.proxy import Proxy
from isthmus.components.proxy.proxy import run as run_proxy

__all__ = ["ConfigError", "Proxy", "ProxyConfig", "run_proxy"]
