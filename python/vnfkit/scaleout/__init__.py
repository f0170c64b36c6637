"""Scale-out with migration avoidance: switch models, controller, baselines and a simulation.

* :mod:`.switches` -- :class:`HardwareSwitch` (ranges + at most 2 048 rules, update delay) and
  :class:`SoftwareSwitch` (per server: ranges + unbounded exceptions), both counting traffic.
* :mod:`.controller` -- :class:`Controller`: split (M from measured per-sub-range load), exceptions
  for the old flows, threshold push or the alternative final step, scale-in, repeated splits.
* :mod:`.baselines` -- never-migrate and always-migrate on the same code.
* :mod:`.detector`, :mod:`.placement`, :mod:`.instance` -- the controller's inputs.
* :mod:`.workload`, :mod:`.sim` -- the study's workload and a virtual-time simulation that drives
  the real tables and controller slot by slot, checking every packet's affinity.
* :mod:`.live` -- the same controller steering real packets between real VNF instances.
"""

from .controller import Controller, ControllerConfig, Transfer
from .detector import DetectorConfig, OverloadDetector
from .errors import HardwareTableFullError, NoFreeCoreError, RangeNotOwnedError, ScaleoutError
from .instance import SimInstance
from .placement import Placement
from .switches import WIRE_BYTES_64B, HardwareSwitch, SoftwareSwitch

__all__ = [
    "Controller",
    "ControllerConfig",
    "DetectorConfig",
    "HardwareSwitch",
    "HardwareTableFullError",
    "NoFreeCoreError",
    "OverloadDetector",
    "Placement",
    "RangeNotOwnedError",
    "ScaleoutError",
    "SimInstance",
    "SoftwareSwitch",
    "Transfer",
    "WIRE_BYTES_64B",
]
