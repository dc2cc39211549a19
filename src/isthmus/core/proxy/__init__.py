"""The sidecar proxy's decisions, without I/O: balancing, failure accrual, retries,
request targets, metrics and tap.

The proxy component (`isthmus.components.proxy`) owns sockets, TLS and the clock;
it calls these modules on its hot path with `now` (seconds on its clock) and the
bytes it has read. Everything here is synchronous and allocation-light.
"""
