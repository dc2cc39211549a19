"""Tests of the demo workloads under `isthmus.apps`."""
