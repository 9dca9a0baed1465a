"""How many times each event id was recorded, in about one bit per id.

The recorder names objects after the GET event id and suffixes repeats
(``event_ID_K`` after a DAQ counter restart). Remembering every id in a dict cost
about 100 bytes per recorded event, which a long live run never gives back; ids are
dense and mostly increasing, so a bitmap per block of 1,024 ids holds "seen once",
and the rare repeats are counted in a small dict.
"""

from __future__ import annotations

__all__ = ["IdCounter"]

_BLOCK_BITS = 10  # ids per bitmap block: 2**10 (128 bytes of bits; a few hundred bytes with the dict entry)


class IdCounter:
    """``add(id)`` returns how many times ``id`` was added before (0 the first time)."""

    def __init__(self) -> None:
        self._blocks: dict[int, bytearray] = {}
        self._repeats: dict[int, int] = {}

    def add(self, event_id: int) -> int:
        block = self._blocks.get(event_id >> _BLOCK_BITS)
        if block is None:
            block = self._blocks[event_id >> _BLOCK_BITS] = bytearray(1 << (_BLOCK_BITS - 3))
        offset = event_id & ((1 << _BLOCK_BITS) - 1)
        byte, bit = offset >> 3, 1 << (offset & 7)
        if not block[byte] & bit:
            block[byte] |= bit
            return 0
        before = self._repeats.get(event_id, 1)
        self._repeats[event_id] = before + 1
        return before

    def remove(self, event_id: int) -> None:
        """Undo the last ``add(event_id)`` (an event of a batch that is not committed after all)."""
        repeats = self._repeats.get(event_id)
        if repeats is not None:
            if repeats > 2:
                self._repeats[event_id] = repeats - 1
            else:
                del self._repeats[event_id]
            return
        block = self._blocks.get(event_id >> _BLOCK_BITS)
        if block is not None:
            offset = event_id & ((1 << _BLOCK_BITS) - 1)
            block[offset >> 3] &= ~(1 << (offset & 7)) & 0xFF

    def copy(self) -> IdCounter:
        other = IdCounter()
        other._blocks = {k: bytearray(v) for k, v in self._blocks.items()}
        other._repeats = dict(self._repeats)
        return other
