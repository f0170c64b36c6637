"""Shared set-up for vnfkit benchmarks: vnfkit's pytest plugin (the ``vnf_benchmark`` fixture).

An installed vnfkit registers the plugin through its ``pytest11`` entry point; from a source tree
(``PYTHONPATH=python``) it is loaded here instead."""

from importlib.metadata import entry_points

if not any(ep.value == "vnfkit.testing" for ep in entry_points(group="pytest11")):
    pytest_plugins = ["vnfkit.testing"]
