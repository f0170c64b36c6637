"""vnfkit: stateful, elastic, fault-tolerant virtual network functions in Python over native C++ tables."""

from __future__ import annotations

try:
    from . import _core
except ImportError as exc:  # pragma: no cover - only on a broken install
    raise ImportError(
        "vnfkit's native extension (vnfkit._core) is missing or failed to load: "
        f"{exc}. Install vnfkit with `pip install .` from a checkout (it compiles the C++ engine), "
        "or in a developer tree build it with `cmake --preset dev && cmake --build --preset dev`."
    ) from exc

__version__ = "0.1.0"

DropReason = _core.DropReason
FLOW_KEY_DTYPE = _core.flow_key_dtype()

__all__ = ["DropReason", "FLOW_KEY_DTYPE", "__version__"]

# classify: software RSS (Toeplitz hash, indirection table, multi-queue classifier)
from .classify import (  # noqa: E402
    MICROSOFT_RSS_KEY,
    MultiQueueClassifier,
    Reta,
    Toeplitz,
    toeplitz_hash,
    toeplitz_hash_v4,
)

__all__ += ["MICROSOFT_RSS_KEY", "MultiQueueClassifier", "Reta", "Toeplitz", "toeplitz_hash", "toeplitz_hash_v4"]

# ---- shared aggregate state, determinant logging, output commit, replay (vnfkit.state)
from .state import (  # noqa: E402
    DivergenceError,
    OutputCommit,
    Replayer,
    SharedState,
)

__all__ += ["DivergenceError", "OutputCommit", "Replayer", "SharedState"]

# flow tables: range, exception and per-flow tables (vnfkit/tables.py)
from .tables import ExceptionTable, FlowTable, RangeTable, SnapshotError  # noqa: E402

__all__ += ["ExceptionTable", "FlowTable", "RangeTable", "SnapshotError"]

# packet (src/bind_packet.cpp, vnfkit/packets.py, vnfkit/traffic.py)
PacketBatch = _core.PacketBatch
PcapError = _core.PcapError
__all__ += ["PacketBatch", "PcapError"]

# VNF base class and multi-queue runner (vnfkit/vnf.py)
from .vnf import VNF, Context, ControlState, Runner, RunResult, WorkerError  # noqa: E402

__all__ += ["VNF", "Context", "ControlState", "Runner", "RunResult", "WorkerError"]
