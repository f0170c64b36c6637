"""Test-bed helpers that start real components (root only).

* :mod:`.ovs` -- Open vSwitch's userspace datapath (``ovsdb-server`` + ``ovs-vswitchd``) on a
  private run directory.
"""
