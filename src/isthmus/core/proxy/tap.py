"""Tap: which requests a subscriber wants to see, and the events it gets.

A tap names a workload (``deploy/vote-bot``, ``po/web-1``, ``ns/emojivoto``)
and is served by that workload's proxies: a proxy shows every request it
handles, outbound (its workload is the client) and inbound (its workload is
the server). So the tapped resource is matched against the proxy's own
workload labels, on both directions. The optional ``to`` resource is matched
against the request's destination: the destination's labels from discovery
for outbound requests, the proxy's own workload for inbound ones.

Labels (`TapMeta.src_labels`, `TapMeta.dst_labels`) use Kubernetes' kind
names as keys: ``namespace``, ``pod``, ``deployment``, ``service``,
``statefulset``, ``serviceaccount`` and so on.

Every matched request produces three events, each with a text line as
``linkerd viz tap`` prints it::

    req id=0:1 proxy=out src=127.1.64.3:51234 dst=127.1.64.5:4143 tls=true :method=GET :authority=web-svc.emojivoto:80 :path=/api/list
    rsp id=0:1 proxy=out src=127.1.64.3:51234 dst=127.1.64.5:4143 tls=true :status=200 latency=1234µs
    end id=0:1 proxy=out src=127.1.64.3:51234 dst=127.1.64.5:4143 tls=true duration=56µs response-length=1234B

(``proxy=in `` with linkerd's alignment space for inbound; ``tls=`` is
"true" or the reason the connection is not mTLS), and a JSON-ready dict in
the shape of ``linkerd viz tap -o json``.

Promises:

* `Tap.active` is a plain attribute, False while nobody taps: the proxy
  checks it and builds no `TapMeta` otherwise; matching happens only then;
* events are formatted only when a subscriber asks (`TapEvent.line`,
  `TapEvent.to_dict`), not on the request path;
* a sink must not block (it drops what it cannot hold); a sink that raises is
  unsubscribed, so a broken subscriber never breaks a request;
* pure: times come in as `now` (seconds; latencies are differences of them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from isthmus.core.names import validate_dns1123_label, validate_dns1123_subdomain

__all__ = [
    "Tap",
    "TapEvent",
    "TapFilter",
    "TapMeta",
    "TapQueryError",
    "TapRequest",
    "TapSubscription",
    "matches",
    "parse_resource",
    "parse_tap_query",
]


class TapQueryError(ValueError):
    """A tap query that cannot be served; the message says what is wrong."""


# kind → accepted spellings (plural, singular, short), in linkerd's order.
_KIND_NAMES: dict[str, tuple[str, ...]] = {
    "cronjob": ("cronjobs", "cronjob", "cj"),
    "daemonset": ("daemonsets", "daemonset", "ds"),
    "deployment": ("deployments", "deployment", "deploy"),
    "job": ("jobs", "job"),
    "namespace": ("namespaces", "namespace", "ns"),
    "pod": ("pods", "pod", "po"),
    "replicaset": ("replicasets", "replicaset", "rs"),
    "replicationcontroller": ("replicationcontrollers", "replicationcontroller", "rc"),
    "statefulset": ("statefulsets", "statefulset", "sts"),
    "service": ("services", "service", "svc"),
}
_KINDS = {spelling: kind for kind, names in _KIND_NAMES.items() for spelling in names}
_VALID_KINDS = ", ".join(f"{names[0]} ({names[-1]})" if len(names) > 2 else names[0]
                         for names in _KIND_NAMES.values())
_QUERY_KEYS = ("resource", "namespace", "to", "to_namespace", "authority", "path", "method")
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True, slots=True)
class TapFilter:
    """What one subscriber wants; ``None`` fields match everything.

    `resource` and `to_resource` are (kind, name) with the kind's singular
    name ("deployment", "pod", "namespace", ...); an empty name means every
    resource of that kind. For kind "namespace" the name is the namespace.
    """

    namespace: str
    resource: tuple[str, str]
    to_namespace: str | None = None
    to_resource: tuple[str, str] | None = None
    authority: str | None = None  # exact :authority
    path: str | None = None  # prefix of :path
    method: str | None = None  # exact :method


@dataclass(slots=True)
class TapMeta:
    """What the proxy knows of one request when it starts.

    `direction` is "outbound" or "inbound". `tls` is "true" when the
    connection to the destination (outbound) or from the client (inbound) is
    mTLS, else why not ("no_identity", "not_provided_by_remote", ...).
    The proxy's own workload labels are `src_labels` for outbound requests and
    `dst_labels` for inbound ones.
    """

    direction: str
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    tls: str
    method: str
    authority: str
    path: str
    src_labels: Mapping[str, str] = field(default_factory=dict)
    dst_labels: Mapping[str, str] = field(default_factory=dict)
    # "proxy=... src=... dst=... tls=..." of the text lines, made by the first `TapEvent.line`.
    flow: str = field(default="", init=False, repr=False, compare=False)


def _resource_matches(labels: Mapping[str, str], namespace: str | None,
                      resource: tuple[str, str]) -> bool:
    if labels.get("namespace") != namespace:
        return False
    kind, name = resource
    if kind == "namespace":
        return True
    value = labels.get(kind)
    return value is not None and (not name or value == name)


def matches(f: TapFilter, meta: TapMeta) -> bool:
    """Whether the request `meta` describes is one `f` asks for."""
    own = meta.src_labels if meta.direction == "outbound" else meta.dst_labels
    if not _resource_matches(own, f.namespace, f.resource):
        return False
    if f.to_resource is not None and not _resource_matches(meta.dst_labels, f.to_namespace,
                                                           f.to_resource):
        return False
    if f.authority is not None and meta.authority != f.authority:
        return False
    if f.path is not None and not meta.path.startswith(f.path):
        return False
    return f.method is None or meta.method == f.method


# --- queries ------------------------------------------------------------------

def parse_resource(text: str, what: str = "resource") -> tuple[str, str]:
    """``kind/name`` or ``kind`` → (singular kind, name or "")."""
    if not text:
        raise TapQueryError(f'the {what} is empty; name one like "deploy/web" or "ns/emojivoto"')
    kind_text, _, name = text.partition("/")
    kind = _KINDS.get(kind_text.lower())
    if kind is None:
        raise TapQueryError(f'{what} "{text}": unknown resource type "{kind_text}"; valid '
                            f"types: {_VALID_KINDS}")
    if "/" in name:
        raise TapQueryError(f'{what} "{text}" is not TYPE/NAME')
    if name:
        problems = (validate_dns1123_label(name) if kind == "namespace"
                    else validate_dns1123_subdomain(name))
        if problems:
            raise TapQueryError(f'{what} "{text}": "{name}" is not a valid {kind} name: '
                                + "; ".join(problems))
    elif text.endswith("/"):
        raise TapQueryError(f'{what} "{text}" has an empty name')
    return kind, name


def _namespace(params: Mapping[str, str], key: str, default: str) -> str:
    value = params.get(key) or default
    problems = validate_dns1123_label(value)
    if problems:
        raise TapQueryError(f'{key} "{value}" is not a valid namespace name: '
                            + "; ".join(problems))
    return value


def parse_tap_query(params: Mapping[str, str]) -> TapFilter:
    """The filter of a tap query's parameters.

    Keys: ``resource`` (required: ``deploy/web``, ``deploy``, ``ns/emojivoto``,
    ...), ``namespace`` (default "default"), ``to`` (a resource, services
    included), ``to_namespace`` (the namespace of ``to``; default
    ``namespace``; alone it taps requests to that namespace), ``authority``,
    ``path`` (a prefix) and ``method``. Raises `TapQueryError`.
    """
    unknown = sorted(set(params) - set(_QUERY_KEYS))
    if unknown:
        raise TapQueryError(f"unknown tap parameter {', '.join(repr(k) for k in unknown)}; "
                            f"known: {', '.join(_QUERY_KEYS)}")
    if not params.get("resource"):
        raise TapQueryError('a resource to tap is required, like "deploy/web" or '
                            '"ns/emojivoto"')
    resource = parse_resource(params["resource"])
    if resource[0] == "service":
        raise TapQueryError(f'resource "{params["resource"]}": services are only supported '
                            'as a "to" resource')
    namespace = _namespace(params, "namespace", "default")
    if resource[0] == "namespace" and resource[1]:
        namespace = resource[1]

    to_resource: tuple[str, str] | None = None
    to_namespace: str | None = None
    if params.get("to"):
        to_resource = parse_resource(params["to"], "to resource")
        to_namespace = _namespace(params, "to_namespace", namespace)
        if to_resource[0] == "namespace" and to_resource[1]:
            to_namespace = to_resource[1]
    elif params.get("to_namespace"):
        to_namespace = _namespace(params, "to_namespace", namespace)
        to_resource = ("namespace", to_namespace)

    path = params.get("path") or None
    if path is not None and not path.startswith("/"):
        raise TapQueryError(f'path "{path}" must start with "/"')
    method = params.get("method") or None
    if method is not None and not set(method) <= _TOKEN:
        raise TapQueryError(f'method "{method}" is not an HTTP method')
    return TapFilter(namespace=namespace, resource=resource, to_namespace=to_namespace,
                     to_resource=to_resource, authority=params.get("authority") or None,
                     path=path, method=method)


# --- events -------------------------------------------------------------------

def _addr(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _micros(seconds: float) -> int:
    return max(0, round(seconds * 1_000_000))


def _duration(seconds: float) -> dict[str, int]:
    s, ns = divmod(max(0, round(seconds * 1_000_000_000)), 1_000_000_000)
    return {"seconds": s, "nanos": ns}


class TapEvent:
    """One tap event: kind "req", "rsp" or "end" of stream `base`:`stream`."""

    __slots__ = ("at", "base", "kind", "meta", "response_bytes", "since_request",
                 "since_response", "status", "stream")

    def __init__(self, kind: str, base: int, stream: int, meta: TapMeta, at: float, *,
                 status: int | None = None, since_request: float = 0.0,
                 since_response: float = 0.0, response_bytes: int = 0) -> None:
        self.kind = kind
        self.base = base
        self.stream = stream
        self.meta = meta
        self.at = at
        self.status = status
        self.since_request = since_request
        self.since_response = since_response
        self.response_bytes = response_bytes

    def __repr__(self) -> str:
        return f"<TapEvent {self.line()}>"

    def line(self) -> str:
        """The event as ``linkerd viz tap`` prints it (no newline)."""
        m = self.meta
        if not m.flow:
            m.flow = (f"proxy={'out' if m.direction == 'outbound' else 'in '} "
                      f"src={_addr(m.src_ip, m.src_port)} dst={_addr(m.dst_ip, m.dst_port)} "
                      f"tls={m.tls}")
        flow = f"id={self.base}:{self.stream} {m.flow}"
        if self.kind == "req":
            return f"req {flow} :method={m.method} :authority={m.authority} :path={m.path}"
        if self.kind == "rsp":
            return f"rsp {flow} :status={self.status} latency={_micros(self.since_request)}µs"
        return (f"end {flow} duration={_micros(self.since_response)}µs "
                f"response-length={self.response_bytes}B")

    def to_dict(self) -> dict[str, Any]:
        """The event in the shape of ``linkerd viz tap -o json``, plus a timestamp."""
        m = self.meta
        outbound = m.direction == "outbound"
        src_meta = dict(m.src_labels)
        dst_meta = dict(m.dst_labels)
        (dst_meta if outbound else src_meta)["tls"] = m.tls
        ident = {"base": self.base, "stream": self.stream}
        event: dict[str, Any] = {
            "source": {"ip": m.src_ip, "port": m.src_port, "metadata": src_meta},
            "destination": {"ip": m.dst_ip, "port": m.dst_port, "metadata": dst_meta},
            "routeMeta": None,
            "proxyDirection": "OUTBOUND" if outbound else "INBOUND",
            "timestamp": self.at,
        }
        if self.kind == "req":
            event["requestInitEvent"] = {"id": ident, "method": m.method, "scheme": "HTTP",
                                         "authority": m.authority, "path": m.path,
                                         "headers": []}
        elif self.kind == "rsp":
            event["responseInitEvent"] = {"id": ident,
                                          "sinceRequestInit": _duration(self.since_request),
                                          "httpStatus": self.status, "headers": []}
        else:
            event["responseEndEvent"] = {"id": ident,
                                         "sinceRequestInit": _duration(self.since_request),
                                         "sinceResponseInit": _duration(self.since_response),
                                         "responseBytes": self.response_bytes,
                                         "trailers": []}
        return event


Sink = Callable[[TapEvent], object]


class TapSubscription:
    """One subscriber: its filter, its sink and its stream counter."""

    __slots__ = ("_hub", "base", "closed", "filter", "sink", "streams")

    def __init__(self, hub: Tap, base: int, tap_filter: TapFilter, sink: Sink) -> None:
        self._hub = hub
        self.base = base
        self.filter = tap_filter
        self.sink = sink
        self.streams = 0  # requests matched so far
        self.closed = False

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<TapSubscription {self.base} {state}, {self.streams} requests matched>"

    def close(self) -> None:
        self._hub.unsubscribe(self)


class TapRequest:
    """One tapped request in flight: report its response and its end."""

    __slots__ = ("_targets", "meta", "responded", "started")

    def __init__(self, meta: TapMeta, now: float,
                 targets: list[tuple[TapSubscription, int]]) -> None:
        self.meta = meta
        self.started = now
        self.responded: float | None = None
        self._targets = targets

    def __repr__(self) -> str:
        return f"<TapRequest {self.meta.method} {self.meta.path} to {len(self._targets)} taps>"

    def _emit(self, kind: str, now: float, **fields: Any) -> None:
        for sub, stream in self._targets:
            if sub.closed:
                continue
            try:
                sub.sink(TapEvent(kind, sub.base, stream, self.meta, now, **fields))
            except Exception:
                sub.close()

    def response(self, status: int, now: float) -> None:
        """The response head arrived."""
        self.responded = now
        self._emit("rsp", now, status=status, since_request=now - self.started)

    def end(self, response_bytes: int, now: float) -> None:
        """The response stream ended (or the request failed, with no response)."""
        since_response = now - (self.responded if self.responded is not None else self.started)
        self._emit("end", now, since_request=now - self.started, since_response=since_response,
                   response_bytes=response_bytes)


class Tap:
    """The subscribers of one proxy; check `active` before building a `TapMeta`."""

    __slots__ = ("_next_base", "_subs", "active")

    def __init__(self) -> None:
        self._subs: tuple[TapSubscription, ...] = ()
        self._next_base = 0
        self.active = False

    def __repr__(self) -> str:
        return f"<Tap {len(self._subs)} subscribers>"

    def __len__(self) -> int:
        return len(self._subs)

    def subscribe(self, tap_filter: TapFilter, sink: Sink) -> TapSubscription:
        """Send the events of requests matching `tap_filter` to `sink` until closed."""
        sub = TapSubscription(self, self._next_base, tap_filter, sink)
        self._next_base += 1
        self._subs = (*self._subs, sub)
        self.active = True
        return sub

    def unsubscribe(self, sub: TapSubscription) -> None:
        sub.closed = True
        self._subs = tuple(s for s in self._subs if s is not sub)
        self.active = bool(self._subs)

    def start(self, meta: TapMeta, now: float) -> TapRequest | None:
        """A request starts: its `TapRequest` when some subscriber wants it, else None."""
        targets: list[tuple[TapSubscription, int]] | None = None
        for sub in self._subs:
            if matches(sub.filter, meta):
                stream = sub.streams
                sub.streams += 1
                if targets is None:
                    targets = []
                targets.append((sub, stream))
        if targets is None:
            return None
        request = TapRequest(meta, now, targets)
        request._emit("req", now)
        return request
