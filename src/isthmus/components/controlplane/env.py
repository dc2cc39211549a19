"""Reading a control-plane command's settings from its environment, with errors that name the variable.

The control plane's pods (`isthmus identity`, `isthmus destination`,
`isthmus proxy-injector`) are configured entirely by environment variables
that the install manifests set (see `isthmus.resources.manifests`, `ENV_*`);
a bad or missing one stops the command at once with a
`ControlPlaneConfigError` such as `ISTHMUS_IDENTITY_ISSUER_KEY is not set
(the issuer's private key, PEM)`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from isthmus.core.identity import workload_identity

__all__ = ["ControlPlaneConfigError", "Env", "log_level"]


class ControlPlaneConfigError(ValueError):
    """The environment does not describe a command that can run; the message names the variable."""


class Env:
    """Typed reads of one environment (`os.environ` unless given)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._env = os.environ if env is None else env

    def get(self, name: str, default: str = "") -> str:
        return self._env.get(name) or default

    def require(self, name: str, what: str) -> str:
        value = self._env.get(name)
        if not value:
            raise ControlPlaneConfigError(f"{name} is not set ({what})")
        return value

    def address(self, name: str, what: str) -> tuple[str, int]:
        text = self.require(name, what)
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ControlPlaneConfigError(f"{name}={text!r} is not HOST:PORT ({what})")
        return host.strip("[]"), int(port)

    def certificates(self, name: str, what: str) -> bytes:
        text = self.require(name, what)
        if "-----BEGIN CERTIFICATE-----" not in text:
            raise ControlPlaneConfigError(f"{name} holds no PEM certificate ({what})")
        return text.encode()

    def private_key(self, name: str, what: str) -> bytes:
        text = self.require(name, what)
        if "PRIVATE KEY-----" not in text:
            raise ControlPlaneConfigError(f"{name} holds no PEM private key ({what})")
        return text.encode()

    def trust_domain(self, name: str) -> str:
        domain = self.get(name, "cluster.local")
        try:
            workload_identity("probe", "probe", domain)
        except ValueError as e:
            raise ControlPlaneConfigError(f"{name}={domain!r} is not a trust domain: {e}") from None
        return domain


def log_level(env: Mapping[str, str] | None = None, name: str = "ISTHMUS_LOG") -> int:
    """The logging level `ISTHMUS_LOG` names (debug, info, warning, error); info otherwise."""
    value = (os.environ if env is None else env).get(name, "info").upper()
    level = logging.getLevelName(value)
    return level if isinstance(level, int) else logging.INFO
