# Type stubs of the native extension vnfkit._core, checked against it with mypy.stubtest in CI.
# pybind11 classes are declared `metaclass=type` so stubtest accepts their pybind11 metaclass.
# One section per bridge file (src/bind_<area>.cpp); keep each section next to its own heading.
import enum
from typing import Any, ClassVar, overload

import numpy as np
import numpy.typing as npt

# ---------------------------------------------------------------- packet (src/bind_packet.cpp)

class DropReason(enum.IntEnum):
    NONE = 0
    TRUNCATED = 1
    BAD_ETHERTYPE = 2
    BAD_IP_VERSION = 3
    BAD_IHL = 4
    BAD_IP_LENGTH = 5
    BAD_L4_HEADER = 6
    BAD_EXT_HEADER = 7
    POLICY = 8
    NO_MAPPING = 9
    POOL_EXHAUSTED = 10
    TABLE_FULL = 11
    TTL_EXPIRED = 12
    OTHER = 13

def drop_reason_name(code: int) -> str: ...
def flow_key_dtype() -> np.dtype[Any]: ...

class PacketBatch(metaclass=type):  # pybind11 classes: see the note at the top
    def __init__(self, packets: list[bytes | bytearray], ts_ns: npt.NDArray[np.uint64] | None = None) -> None: ...
    def __len__(self) -> int: ...
    def packet(self, index: int) -> bytes: ...
    def validate(self) -> None: ...
    @property
    def data(self) -> npt.NDArray[np.uint8]: ...
    @property
    def offsets(self) -> npt.NDArray[np.uint32]: ...
    @property
    def ts_ns(self) -> npt.NDArray[np.uint64]: ...
    @property
    def packet_id(self) -> npt.NDArray[np.uint64]: ...
    @property
    def hash(self) -> npt.NDArray[np.uint32]: ...
    @property
    def flow_id(self) -> npt.NDArray[np.uint32]: ...
    @property
    def queue(self) -> npt.NDArray[np.uint16]: ...
    @property
    def port(self) -> npt.NDArray[np.uint16]: ...
    @property
    def drop(self) -> npt.NDArray[np.uint8]: ...
    @property
    def flags(self) -> npt.NDArray[np.uint8]: ...
    @property
    def tcp_flags(self) -> npt.NDArray[np.uint8]: ...
    @property
    def l3_offset(self) -> npt.NDArray[np.uint16]: ...
    @property
    def l4_offset(self) -> npt.NDArray[np.uint16]: ...
    @property
    def l4_len(self) -> npt.NDArray[np.uint16]: ...
    @property
    def key(self) -> npt.NDArray[np.void]: ...

# (end of packet section)
#
#
# ---------------------------------------------------------------- classify (src/bind_classify.cpp)

# (end of classify section)
#
#
# ---------------------------------------------------------------- flow (src/bind_flow.cpp)

# (end of flow section)
#
#
# ---------------------------------------------------------------- state (src/bind_state.cpp)

# (end of state section)
#
#
# ---------------------------------------------------------------- nfs (src/bind_nfs.cpp)

# (end of nfs section)
