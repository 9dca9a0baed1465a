"""The fast frame decoder: validated frame -> (m, 517) int16 event rows, with numba.

Rows are ``cobo, asad, aget, channel, pad, 512 samples`` for every mapped signal
channel that carried items, in order of first appearance in the frame. FPN
channels never become rows; with ``fpn_subtraction`` the mean of an AGET's FPN
waveforms is subtracted from that AGET's rows. Unmapped channels are dropped and
counted (:attr:`FrameDecoder.unmapped_channels`), invalid items too
(:attr:`FrameDecoder.items_dropped`).

numba is imported when the first decoder is created, not with this module.
"""

from __future__ import annotations

import numpy as np

from .frames import FULL, N_AGETS, N_BUCKETS, N_CHANNELS, PARTIAL, FrameInfo, encode_frame
from .maps import ElectronicsMap

__all__ = ["FrameDecoder", "ROWS_NEEDED"]

N_SLOTS = N_AGETS * N_CHANNELS
#: Rows :meth:`FrameDecoder.decode_into` needs in ``out``: one per channel of a frame, 16 FPN rows, a trash row
#: and a sentinel row (``_kernels.EXTRA_ROWS``; not imported here: numba is loaded with the first decoder).
ROWS_NEEDED = N_SLOTS + 18


class FrameDecoder:
    """Decode frames into event rows (not thread-safe: one decoder per thread)."""

    def __init__(self, emap: ElectronicsMap, *, fpn_subtraction: bool = False):
        from . import _kernels

        self._kernels = {PARTIAL: _kernels.decode_partial, FULL: _kernels.decode_full}
        self.emap = emap
        self.fpn_subtraction = bool(fpn_subtraction)
        # Reused output scratch: 272 rows, 16 FPN rows, a trash row, a sentinel row (see _kernels).
        self._scratch = np.empty((ROWS_NEEDED, 5 + N_BUCKETS), np.int16)
        self._stats = np.zeros(2, np.int64)

    @property
    def items_dropped(self) -> int:
        """Invalid items dropped so far (channel > 67, bucket > 511)."""
        return int(self._stats[0])

    @property
    def unmapped_channels(self) -> int:
        """Channels (once per frame) that carried data but are not in the map."""
        return int(self._stats[1])

    def decode(self, buf: np.ndarray, info: FrameInfo, cobo: int | None = None, asad: int | None = None) -> np.ndarray:
        """Rows (a new (m, 517) int16 array) of the validated frame ``info`` in the uint8 array ``buf``.

        ``cobo``/``asad`` override the header's (old firmware wrote CoBo 0 everywhere).
        """
        n = self.decode_into(buf, info, self._scratch, cobo, asad)
        return self._scratch[:n].copy()

    def decode_into(self, buf: np.ndarray, info: FrameInfo, out: np.ndarray, cobo: int | None = None,
                    asad: int | None = None, *, slots: np.ndarray | None = None) -> int:
        """Write the rows of the validated frame ``info`` to the first rows of ``out``; return how many.

        ``out`` is a C-contiguous int16 array of :data:`ROWS_NEEDED` rows (or more) x 517 columns, e.g.
        the free tail of an event's trace matrix: rows past the ones returned are scratch (FPN
        waveforms, dropped channels) and are overwritten. ``slots`` is ``emap.slots(cobo, asad)`` when the
        caller keeps it (looked up otherwise).
        """
        cobo = info.cobo if cobo is None else cobo
        asad = info.asad if asad is None else asad
        kernel = self._kernels.get(info.frame_type)
        if kernel is None or info.n_items == 0:
            return 0
        if slots is None:
            slots = self.emap.slots(cobo, asad)
        return kernel(buf, info.data_offset, info.n_items, slots, cobo, asad, out, self.fpn_subtraction, self._stats)

    def warm_up(self) -> None:
        """Compile (or load from numba's cache) both kernels for every argument type the sources use.

        numba compiles one specialisation per argument types: read-only buffers (frames given
        as ``bytes``) and writable ones (socket and file buffers) differ, and so do the two
        FPN settings. Compiling them all here keeps a multi-second compile out of the trio loop.
        """
        from .frames import check_frame

        stats = self._stats.copy()
        for mode in ("partial", "full"):
            frame = encode_frame(cobo=0, asad=0, event_id=0, timestamp=0, channels=np.array([[0, 0], [0, 11]]),
                                 samples=np.zeros((2, N_BUCKETS), np.int64), mode=mode)
            for buf in (np.frombuffer(frame, np.uint8), np.frombuffer(bytearray(frame), np.uint8)):
                info = check_frame(buf)
                for fpn in (False, True):
                    self._kernels[info.frame_type](buf, info.data_offset, 2, self.emap.slots(0, 0), 0, 0,
                                                   self._scratch, fpn, stats)
