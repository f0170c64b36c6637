"""The middleboxes of the study, built on vnfkit the way a user would build their own.

Each is a :class:`vnfkit.VNF` subclass in its own module, with a ``DEFAULTS`` dict of its
configuration keys (what ``vnfkit run NAME --config FILE.json`` accepts):

========================  ===========================================  ==================================================
name (CLI)                class                                        what it is
========================  ===========================================  ==================================================
``mazunat``               :class:`vnfkit.nfs.mazunat.MazuNAT`          NAT/firewall gateway (Mazu Networks Click config)
``simplenat``             :class:`vnfkit.nfs.simplenat.SimpleNAT`      static 1:1 prefix NAT
``monitor``               :class:`vnfkit.nfs.monitor.Monitor`          per-flow + shared per-prefix counters
``adaptive_lb``           :class:`vnfkit.nfs.adaptive_lb.AdaptiveLB`   least-loaded backend for new flows
``qos``                   :class:`vnfkit.nfs.qos.QoS`                  shared token buckets per traffic class
``wanopt``                :class:`vnfkit.nfs.wanopt.WanOptimizer`      redundancy elimination encoder (Cython stage)
``wanopt-decoder``        :class:`vnfkit.nfs.wanopt.WanOptDecoder`     its decoder
========================  ===========================================  ==================================================

Modules are imported on first use, so ``import vnfkit`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

#: CLI name -> (module, class name)
REGISTRY: dict[str, tuple[str, str]] = {
    "mazunat": ("vnfkit.nfs.mazunat", "MazuNAT"),
    "simplenat": ("vnfkit.nfs.simplenat", "SimpleNAT"),
    "monitor": ("vnfkit.nfs.monitor", "Monitor"),
    "adaptive_lb": ("vnfkit.nfs.adaptive_lb", "AdaptiveLB"),
    "qos": ("vnfkit.nfs.qos", "QoS"),
    "wanopt": ("vnfkit.nfs.wanopt", "WanOptimizer"),
    "wanopt-decoder": ("vnfkit.nfs.wanopt", "WanOptDecoder"),
}


def names() -> list[str]:
    """The CLI names of every shipped middlebox."""
    return list(REGISTRY)


def load(name: str) -> tuple[type[Any], dict[str, Any]]:
    """The VNF class called `name` and its module's DEFAULTS; ValueError for an unknown name."""
    try:
        module, cls = REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown NF {name!r}; choose one of: {', '.join(REGISTRY)}") from None
    mod = importlib.import_module(module)
    return getattr(mod, cls), dict(getattr(mod, "DEFAULTS", {}))
