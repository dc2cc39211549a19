"""The proxy's configuration from its environment: defaults, and what a bad value gets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from isthmus.components.proxy.config import ConfigError, ProxyConfig

ANCHORS = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
GOOD = {"POD_IP": "127.0.0.9", "ISTHMUS_PROXY_IDENTITY_LOCAL_NAME":
        "web.emojivoto.serviceaccount.identity.isthmus.cluster.local",
        "ISTHMUS_PROXY_IDENTITY_TRUST_ANCHORS": ANCHORS,
        "ISTHMUS_PROXY_IDENTITY_SVC_ADDR": "127.0.128.5:8080",
        "ISTHMUS_POD_DIR": "/pods/x"}


def test_defaults_follow_the_pod_ip_and_the_contract_ports() -> None:
    c = ProxyConfig.from_env(GOOD)
    assert c.inbound == ("127.0.0.9", 4143)
    assert c.outbound == ("127.0.0.9", 4140)
    assert c.admin == ("127.0.0.9", 4191)
    assert c.forward_host == "127.0.0.9"
    assert c.token_file == Path("/pods/x/serviceaccount/token")
    assert c.destination_addr is None
    assert c.destination_name == "isthmus-destination.isthmus.serviceaccount.identity.isthmus.cluster.local"
    assert c.trust_domain == "cluster.local"


@pytest.mark.parametrize(("change", "message"), [
    ({"ISTHMUS_PROXY_IDENTITY_LOCAL_NAME": ""}, "ISTHMUS_PROXY_IDENTITY_LOCAL_NAME is not set"),
    ({"ISTHMUS_PROXY_IDENTITY_LOCAL_NAME": "web"}, "'web' is not a workload identity"),
    ({"ISTHMUS_PROXY_IDENTITY_TRUST_ANCHORS": "nope"}, "holds no PEM certificate"),
    ({"ISTHMUS_PROXY_IDENTITY_SVC_ADDR": ""}, "ISTHMUS_PROXY_IDENTITY_SVC_ADDR is not set"),
    ({"ISTHMUS_PROXY_IDENTITY_SVC_ADDR": "nohost"}, "'nohost' is not host:port"),
    ({"ISTHMUS_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY": "80,x"}, "'x' is not a port"),
    ({"ISTHMUS_PROXY_IDLE_TIMEOUT": "soon"}, "'soon' is not a positive duration"),
    ({"ISTHMUS_PROXY_WORKLOAD": "web"}, "is not kind/name"),
])
def test_bad_values_name_the_variable(change: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ProxyConfig.from_env({**GOOD, **change})


def test_cli_reports_a_bad_environment_in_one_line() -> None:
    isthmus = str(Path(sys.executable).parent / "isthmus")
    out = subprocess.run([isthmus, "proxy"], env={"PATH": "/usr/bin", "POD_IP": "127.0.0.9"},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert out.stderr.strip() == ("error: ISTHMUS_PROXY_IDENTITY_LOCAL_NAME is not set: set it to "
                                  "this workload's identity, or set ISTHMUS_PROXY_IDENTITY_DISABLED=1")
    assert out.stdout == ""
