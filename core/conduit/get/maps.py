"""The electronics map: GET hardware address (cobo, asad, aget, channel) <-> pad number.

Two CSV forms are read (get_format.md 3.5):

* 6 columns, attpc_merger's current form, header ``cobo,asad,aget,aget channel,det keyword,det channel``;
  ``pad`` rows make the pad map, other keywords (``si_upstream_front`` ...) are kept in
  :attr:`ElectronicsMap.detectors`;
* 5 columns ``cobo,asad,aget,aget channel,pad``, with or without a header line.

Blank lines and ``#`` comments are ignored, CR/LF/CRLF line ends all work, rows
made only of negative numbers (``-1,-1,-1,-1,-1`` placeholders) are skipped. A bad
file raises :class:`MapError` with one line ``file:line: what is wrong``.

The default is attpc_merger's map (MIT), bundled as ``conduit/data/attpc_pad_map.csv``:
10,240 pads on 40 (cobo, asad) pairs. FPN channels (11, 22, 45, 56) never map to a
pad; a map row naming one is ignored with a warning.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path

import numpy as np

from .frames import FPN_CHANNELS, N_AGETS, N_CHANNELS

__all__ = ["ElectronicsMap", "MapError", "load_electronics_map", "parse_electronics_map", "N_COBOS", "N_ASADS",
           "DEFAULT_MAP_NAME"]

log = logging.getLogger("conduit.get.maps")

N_COBOS = 11
N_ASADS = 4
DEFAULT_MAP_NAME = "attpc_pad_map.csv"
#: Codes in :attr:`ElectronicsMap.slots`.
UNMAPPED, FPN = -1, -2


class MapError(ValueError):
    """A bad electronics map file (message: ``file:line: what``)."""


@dataclasses.dataclass(frozen=True, eq=False)
class ElectronicsMap:
    """Dense lookups between GET channels and pads."""

    #: Where the map came from (``<bundled attpc_pad_map.csv>`` for the default).
    source: str
    #: int32 [cobo(11), asad(4), aget(4), channel(68)] -> pad, -1 when unmapped.
    pads: np.ndarray = dataclasses.field(repr=False)
    #: int16 [pad] -> (cobo, asad, aget, channel); rows of pads absent from the map are -1.
    hardware: np.ndarray = dataclasses.field(repr=False)
    #: Non-pad detectors by keyword: int32 (n, 5) rows [cobo, asad, aget, channel, det channel].
    detectors: dict[str, np.ndarray] = dataclasses.field(repr=False)

    def __post_init__(self) -> None:
        slots = self.pads.reshape(N_COBOS, N_ASADS, N_AGETS * N_CHANNELS).copy()
        for aget in range(N_AGETS):
            for channel in FPN_CHANNELS:
                slots[:, :, aget * N_CHANNELS + channel] = FPN
        object.__setattr__(self, "_slots", slots)
        unmapped = np.full(N_AGETS * N_CHANNELS, UNMAPPED, np.int32)
        unmapped[[a * N_CHANNELS + c for a in range(N_AGETS) for c in FPN_CHANNELS]] = FPN
        object.__setattr__(self, "_unmapped_slots", unmapped)

    @property
    def n_pads(self) -> int:
        """Pads mapped."""
        return int(np.count_nonzero(self.pads >= 0))

    @functools.cached_property
    def asads(self) -> tuple[tuple[int, int], ...]:
        """Sorted (cobo, asad) pairs that carry at least one pad (40 in the default map)."""
        has = (self.pads >= 0).any(axis=(2, 3))
        return tuple((int(c), int(a)) for c, a in np.argwhere(has))

    def slots(self, cobo: int, asad: int) -> np.ndarray:
        """int32 (272,) for one AsAd, index ``aget * 68 + channel``: pad, -1 unmapped, -2 FPN.

        Out-of-range (cobo, asad) give an all-unmapped table (FPN channels still -2).
        """
        if 0 <= cobo < N_COBOS and 0 <= asad < N_ASADS:
            return self._slots[cobo, asad]  # type: ignore[attr-defined]
        return self._unmapped_slots  # type: ignore[attr-defined]

    def pad_of(self, cobo, asad, aget, channel) -> np.ndarray:
        """Pad numbers for arrays of hardware addresses (-1 where unmapped or out of range)."""
        cobo, asad, aget, channel = (np.asarray(v, np.int64) for v in (cobo, asad, aget, channel))
        ok = (cobo >= 0) & (cobo < N_COBOS) & (asad >= 0) & (asad < N_ASADS) & (aget >= 0) & (aget < N_AGETS) \
            & (channel >= 0) & (channel < N_CHANNELS)
        out = np.full(np.broadcast(cobo, asad, aget, channel).shape, -1, np.int32)
        out[ok] = self.pads[cobo[ok] if cobo.ndim else cobo, asad[ok] if asad.ndim else asad,
                            aget[ok] if aget.ndim else aget, channel[ok] if channel.ndim else channel]
        return out

    def hardware_of(self, pad) -> np.ndarray:
        """(…, 4) int16 (cobo, asad, aget, channel) of pad numbers (-1 rows for unknown pads)."""
        pad = np.asarray(pad, np.int64)
        ok = (pad >= 0) & (pad < self.hardware.shape[0])
        out = np.full(pad.shape + (4,), -1, np.int16)
        out[ok] = self.hardware[pad[ok]]
        return out


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def parse_electronics_map(text: str, source: str) -> ElectronicsMap:
    """Parse map CSV ``text``; ``source`` names the file in errors."""
    pads = np.full((N_COBOS, N_ASADS, N_AGETS, N_CHANNELS), -1, np.int32)
    seen_hw: dict[tuple[int, int, int, int], int] = {}
    seen_pad: dict[int, int] = {}
    detectors: dict[str, list[list[int]]] = {}
    n_columns: int | None = None
    header_done = False
    fpn_rows = 0
    limits = (("cobo", N_COBOS), ("asad", N_ASADS), ("aget", N_AGETS), ("channel", N_CHANNELS))

    def fail(lineno: int, message: str) -> MapError:
        return MapError(f"{source}:{lineno}: {message}")

    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split(",")]
        if not header_done:
            header_done = True
            if not all(_is_int(f) for f in fields[:4]):
                if len(fields) not in (5, 6):
                    raise fail(lineno, f"header has {len(fields)} columns; expected 5 "
                                       "(cobo,asad,aget,aget channel,pad) or 6 (...,det keyword,det channel)")
                n_columns = len(fields)
                continue
        if n_columns is None:
            if len(fields) not in (5, 6):
                raise fail(lineno, f"{len(fields)} columns; expected 5 (cobo,asad,aget,aget channel,pad) "
                                   "or 6 (cobo,asad,aget,aget channel,det keyword,det channel)")
            n_columns = len(fields)
        if len(fields) != n_columns:
            raise fail(lineno, f"{len(fields)} columns, the file has {n_columns}")
        keyword = "pad" if n_columns == 5 else fields[4].lower()
        number_fields = fields[:4] + [fields[-1]]
        try:
            cobo, asad, aget, channel, det = (int(f) for f in number_fields)
        except ValueError:
            bad = next(f for f in number_fields if not _is_int(f))
            raise fail(lineno, f"expected an integer, got {bad!r}") from None
        if not keyword:
            raise fail(lineno, "empty detector keyword")
        if all(v < 0 for v in (cobo, asad, aget, channel, det)):
            continue  # a -1,-1,-1,-1,-1 placeholder row
        for (name, limit), value in zip(limits, (cobo, asad, aget, channel)):
            if not 0 <= value < limit:
                raise fail(lineno, f"{name} {value} out of range 0..{limit - 1}")
        if det < 0:
            raise fail(lineno, f"{'pad' if keyword == 'pad' else 'detector channel'} {det} is negative")
        if channel in FPN_CHANNELS:
            fpn_rows += 1
            continue
        hw = (cobo, asad, aget, channel)
        if hw in seen_hw:
            raise fail(lineno, f"cobo {cobo} asad {asad} aget {aget} channel {channel} already mapped on line "
                               f"{seen_hw[hw]}")
        seen_hw[hw] = lineno
        if keyword == "pad":
            if det in seen_pad:
                raise fail(lineno, f"pad {det} already mapped on line {seen_pad[det]}")
            seen_pad[det] = lineno
            pads[hw] = det
        else:
            detectors.setdefault(keyword, []).append([cobo, asad, aget, channel, det])
    if not seen_hw:
        raise MapError(f"{source}: no channels in the electronics map")
    if fpn_rows:
        log.warning("%s: ignored %d row(s) on FPN channels 11/22/45/56 (never pads)", source, fpn_rows)
    n_pad_ids = max(seen_pad) + 1 if seen_pad else 0
    hardware = np.full((n_pad_ids, 4), -1, np.int16)
    where = np.argwhere(pads >= 0)
    hardware[pads[tuple(where.T)]] = where
    return ElectronicsMap(
        source=source,
        pads=pads,
        hardware=hardware,
        detectors={k: np.asarray(v, np.int32).reshape(-1, 5) for k, v in detectors.items()},
    )


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, mtime_ns: int, size: int) -> ElectronicsMap:
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise MapError(f"{path}: cannot read electronics map: {err}") from None
    return parse_electronics_map(text, path)


@functools.lru_cache(maxsize=1)
def _default_map() -> ElectronicsMap:
    text = (Path(__file__).resolve().parent.parent / "data" / DEFAULT_MAP_NAME).read_text(encoding="utf-8")
    return parse_electronics_map(text, f"<bundled {DEFAULT_MAP_NAME}>")


def load_electronics_map(path: Path | str | None = None) -> ElectronicsMap:
    """The map in ``path`` (5- or 6-column CSV), or the bundled default when None.

    Cached per (path, modification time, size). Raises :class:`MapError` (one line).
    """
    if path is None:
        return _default_map()
    p = Path(path).expanduser()
    try:
        st = p.stat()
    except FileNotFoundError:
        raise MapError(f"{p}: no such electronics map file") from None
    except OSError as err:
        raise MapError(f"{p}: cannot read electronics map: {err}") from None
    return _load_cached(str(p.resolve()), st.st_mtime_ns, st.st_size)
