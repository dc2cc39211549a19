"""What `isthmus check` asks of pods directly: proxies' admin ports, their inbound TLS, the injector.

- `admin_ready`: `GET /ready` on a proxy's admin port (plain HTTP, no
  HTTP proxy in between): the status and the body (the reason, when 503);
- `presented_certificate`: a TLS 1.3 handshake with a proxy's inbound port
  without a client certificate, verifying the certificate the proxy
  presents against the trust anchors and the identity its pod must have
  (`identity.tlsconfig.client_context`, the check the proxies themselves
  make of each other). The proxy refuses the connection right after, as it
  requires client certificates; by then the client has seen the proxy's
  certificate. When verification fails the leaf is fetched again without
  verification, so the report can say what the proxy presents;
- `webhook_review`: an AdmissionReview POSTed over HTTPS to an injector
  pod, its certificate verified with the webhook configuration's
  `caBundle` for the Service's DNS name, as the API server does.

Pods are reached at their IPs, as the API server reaches webhooks. That
works from the machine of an embedded cluster (pods have loopback
addresses); on Kubernetes it needs a route to the pod network.
`ProbeError` says what failed: the connection, TLS, or the answer.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from isthmus.components.identity.tlsconfig import client_context

__all__ = ["Presented", "ProbeError", "Probes", "SocketProbes"]

TIMEOUT = 5.0
REVIEW_API = "admission.k8s.io/v1"


class ProbeError(Exception):
    """A pod could not be asked, or answered something unusable; the message says which."""


@dataclass(frozen=True)
class Presented:
    """The leaf a proxy presented (DER; None when none was seen) and the verification's complaint ("" when verified)."""

    leaf_der: bytes | None
    error: str = ""


class Probes(Protocol):
    def admin_ready(self, ip: str, port: int) -> tuple[int, str]:
        """`GET /ready`: (status, body); `ProbeError` when there is no answer."""

    def presented_certificate(self, ip: str, port: int, *, anchors_pem: bytes, identity: str) -> Presented:
        """The certificate the proxy at ip:port presents, verified (see the module docstring)."""

    def webhook_review(self, ip: str, port: int, *, ca_pem: bytes, server_name: str, path: str,
                       namespace: str) -> dict[str, Any]:
        """The AdmissionResponse to a review of a Pod CREATE in `namespace` that opts out of injection."""


def _addr(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


class SocketProbes:
    """`Probes` over real sockets, each call with its own connection and `timeout`."""

    def __init__(self, *, timeout: float = TIMEOUT) -> None:
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"<SocketProbes timeout={self.timeout}s>"

    def _connect(self, ip: str, port: int) -> socket.socket:
        try:
            return socket.create_connection((ip, port), timeout=self.timeout)
        except OSError as e:
            raise ProbeError(f"cannot connect to {_addr(ip, port)}: {e.strerror or e}") from None

    def admin_ready(self, ip: str, port: int) -> tuple[int, str]:
        conn = http.client.HTTPConnection(ip, port, timeout=self.timeout)
        try:
            conn.request("GET", "/ready")
            response = conn.getresponse()
            return response.status, response.read(4096).decode(errors="replace")
        except (OSError, http.client.HTTPException) as e:
            reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
            raise ProbeError(f"GET http://{_addr(ip, port)}/ready: {reason}") from None
        finally:
            conn.close()

    def _handshake(self, ip: str, port: int, ctx: ssl.SSLContext) -> bytes | None:
        with self._connect(ip, port) as raw, ctx.wrap_socket(raw) as tls:
            return tls.getpeercert(binary_form=True)

    def presented_certificate(self, ip: str, port: int, *, anchors_pem: bytes, identity: str) -> Presented:
        try:
            verified = client_context(None, anchors_pem, expected_identity=identity)
        except ssl.SSLError as e:
            raise ProbeError(f"the trust anchors cannot be loaded: {e}") from None
        try:
            return Presented(self._handshake(ip, port, verified))
        except ssl.SSLCertVerificationError as e:
            complaint = e.verify_message or str(e)
        except ProbeError as e:
            return Presented(None, str(e))
        except (OSError, ssl.SSLError) as e:  # reset before a certificate, not TLS
            return Presented(None, f"TLS handshake with {_addr(ip, port)} failed: {e}")
        # What did it present? Ask again without verifying, only to read the certificate.
        anything = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        anything.check_hostname = False
        anything.verify_mode = ssl.CERT_NONE
        anything.minimum_version = ssl.TLSVersion.TLSv1_3
        try:
            return Presented(self._handshake(ip, port, anything), complaint)
        except (ProbeError, OSError, ssl.SSLError):
            return Presented(None, complaint)

    def webhook_review(self, ip: str, port: int, *, ca_pem: bytes, server_name: str, path: str,
                       namespace: str) -> dict[str, Any]:
        try:
            ctx = ssl.create_default_context(cadata=ca_pem.decode("ascii", errors="replace"))
        except (ssl.SSLError, ValueError) as e:
            raise ProbeError(f"the webhook's caBundle cannot be loaded: {e}") from None
        uid = str(uuid.uuid4())
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"generateName": "isthmus-check-", "namespace": namespace,
                            "annotations": {"isthmus.io/inject": "disabled"}},
               "spec": {"containers": [{"name": "check", "image": "isthmus-check"}]}}
        review = {"apiVersion": REVIEW_API, "kind": "AdmissionReview", "request": {
            "uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace, "operation": "CREATE", "dryRun": True,
            "userInfo": {"username": "isthmus-check"}, "object": pod, "oldObject": None,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}}}
        body = json.dumps(review).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: {server_name}:{port}\r\nContent-Type: application/json\r\n"
                f"Accept: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
        where = f"https://{_addr(ip, port)}{path}"
        try:
            with self._connect(ip, port) as raw, ctx.wrap_socket(raw, server_hostname=server_name) as tls:
                tls.sendall(head.encode() + body)
                response = http.client.HTTPResponse(tls)
                response.begin()
                status, data = response.status, response.read(1 << 20)
        except ssl.SSLCertVerificationError as e:
            raise ProbeError(f"{where}: its certificate does not verify with the webhook's caBundle for "
                             f"{server_name}: {e.verify_message or e}") from None
        except (OSError, ssl.SSLError, http.client.HTTPException) as e:
            raise ProbeError(f"{where}: {e}") from None
        if status != 200:
            raise ProbeError(f"{where} answered {status}: {data[:200].decode(errors='replace').strip()}")
        try:
            answer = json.loads(data)
        except ValueError:
            answer = None
        response_obj = answer.get("response") if isinstance(answer, dict) else None
        if not isinstance(response_obj, dict):
            raise ProbeError(f"{where} did not answer with an AdmissionReview")
        if response_obj.get("uid") != uid:
            raise ProbeError(f"{where} answered another review (uid {response_obj.get('uid')!r}, sent {uid})")
        return response_obj
