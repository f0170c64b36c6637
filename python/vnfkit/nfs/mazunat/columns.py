"""Column helpers shared by MazuNAT's modules: flow-key gathers and IPv4 address columns."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ... import _core
from ...tables import FlowTable

__all__ = ["addr_column"]

_KEY_DTYPE = np.dtype(_core.flow_key_dtype())
_V40 = np.dtype((np.void, 40))
_V64 = np.dtype((np.void, 64))


def _keys_at(keys: npt.NDArray[Any], idx: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """keys[idx] for FLOW_KEY_DTYPE arrays, gathered as opaque 40-byte records (numpy's gather of
    structured records with sub-array fields is several times slower)."""
    return keys.view(_V40)[idx].view(_KEY_DTYPE)


def _entry_keys(t: FlowTable, slots: npt.NDArray[np.uint32]) -> npt.NDArray[Any]:
    """The stored keys of table slots (first 40 bytes of each 64-byte engine entry)."""
    rec = t._entries.view(_V64)[slots]  # same package: tables.FlowTable keeps the entry view
    return np.ascontiguousarray(rec.view(np.uint8).reshape(-1, 64)[:, :40]).view(_KEY_DTYPE).reshape(-1)


def addr_column(addr_bytes: npt.NDArray[Any]) -> npt.NDArray[np.uint32]:
    """Host-order uint32 from the first 4 bytes of a (n, 16) uint8 address column."""
    return np.ascontiguousarray(addr_bytes[:, :4]).view(">u4").reshape(-1).astype(np.uint32)
