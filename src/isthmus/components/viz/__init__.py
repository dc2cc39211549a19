"""Viz: the collector, the metrics sources, the viz API, tap fan-out and the dashboard."""
