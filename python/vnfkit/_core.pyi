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

MICROSOFT_RSS_KEY: bytes

def toeplitz_hash(data: bytes | bytearray, key: bytes | bytearray | None = None) -> int: ...
def _toeplitz_hash_v4_bitserial(
    src: npt.NDArray[np.uint32],
    dst: npt.NDArray[np.uint32],
    sport: npt.NDArray[np.uint16],
    dport: npt.NDArray[np.uint16],
    key: bytes | bytearray | None = None,
    ports: bool = True,
) -> npt.NDArray[np.uint32]: ...

class Toeplitz(metaclass=type):
    simd_supported: ClassVar[bool]
    def __init__(self, key: bytes | bytearray | None = None, *, simd: bool = True) -> None: ...
    @property
    def simd(self) -> bool: ...
    @property
    def key(self) -> bytes: ...
    def hash(self, data: bytes | bytearray) -> int: ...
    def hash_v4(
        self,
        src: npt.NDArray[np.uint32],
        dst: npt.NDArray[np.uint32],
        sport: npt.NDArray[np.uint16],
        dport: npt.NDArray[np.uint16],
        *,
        ports: bool = True,
        symmetric: bool = False,
    ) -> npt.NDArray[np.uint32]: ...
    def hash_keys(
        self, keys: npt.NDArray[np.void], *, ports: bool = True, symmetric: bool = False
    ) -> npt.NDArray[np.uint32]: ...

class Reta(metaclass=type):
    def __init__(self, size: int = 128, *, num_queues: int = 1) -> None: ...
    @property
    def size(self) -> int: ...
    @property
    def num_queues(self) -> int: ...
    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> int: ...
    def __setitem__(self, index: int, queue: int) -> None: ...
    def set(self, index: int, queue: int) -> None: ...
    def update(self, table: npt.NDArray[np.uint16] | list[int] | tuple[int, ...]) -> None: ...
    def fill_round_robin(self) -> None: ...
    @property
    def table(self) -> npt.NDArray[np.uint16]: ...
    def lookup(self, hash: int) -> int: ...

class MultiQueueClassifier(metaclass=type):
    def __init__(
        self,
        num_queues: int,
        *,
        key: bytes | bytearray | None = None,
        symmetric: bool = False,
        reta_size: int = 128,
        use_ports: bool = True,
    ) -> None: ...
    @property
    def num_queues(self) -> int: ...
    @property
    def symmetric(self) -> bool: ...
    @property
    def use_ports(self) -> bool: ...
    @property
    def key(self) -> bytes: ...
    @property
    def reta(self) -> Reta: ...
    def classify(self, batch: PacketBatch) -> list[npt.NDArray[np.uint32]]: ...
    def ports_for_queue(
        self,
        remote_addr: object,
        public_addr: object,
        remote_port: int,
        queue: int,
        *,
        port_lo: int = 50000,
        port_hi: int = 65535,
        proto: int = 6,
    ) -> npt.NDArray[np.uint16]: ...

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
