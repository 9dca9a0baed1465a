"""The electronics map: the bundled default, the 5- and 6-column forms, bad files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from conduit.get.maps import MapError, load_electronics_map, parse_electronics_map

BUNDLED = Path(__file__).resolve().parents[2] / "core" / "conduit" / "data"


def test_default_map(emap):
    assert emap.n_pads == 10_240
    assert len(emap.asads) == 40
    # CoBo 2 and 8 use AsAds 0-2, CoBo 10 uses 0-1, the others 0-3 (get_format.md 3.5).
    cobos = {}
    for c, a in emap.asads:
        cobos.setdefault(c, []).append(a)
    assert cobos[2] == [0, 1, 2] and cobos[8] == [0, 1, 2] and cobos[10] == [0, 1]
    assert all(cobos[c] == [0, 1, 2, 3] for c in (0, 1, 3, 4, 5, 6, 7, 9))
    # First data line of the file: 7,2,1,10,pad,9908
    assert emap.pads[7, 2, 1, 10] == 9908
    assert emap.hardware[9908].tolist() == [7, 2, 1, 10]
    assert np.all(emap.pads[:, :, :, [11, 22, 45, 56]] == -1)
    # Inverse is consistent for every pad.
    hw = emap.hardware
    assert np.array_equal(emap.pads[hw[:, 0], hw[:, 1], hw[:, 2], hw[:, 3]], np.arange(10_240))
    assert emap.pad_of([7, 0, 12], [2, 0, 0], [1, 0, 0], [10, 11, 0]).tolist() == [9908, -1, -1]
    assert emap.hardware_of([-1, 99_999]).tolist() == [[-1] * 4, [-1] * 4]
    s = emap.slots(7, 2)
    assert s[68 + 10] == 9908 and s[11] == -2 and s[68 + 56] == -2
    assert load_electronics_map() is emap  # cached


def test_bundled_map_is_attpc_mergers_file_byte_for_byte():
    """The bundled map is attpc_merger's default_pad_map.csv as recorded in data/README.md (its SHA-256)."""
    readme = (BUNDLED / "README.md").read_text()
    recorded = next(line.split("`")[-2] for line in readme.splitlines() if line.startswith("SHA-256 of"))
    digest = hashlib.sha256((BUNDLED / "attpc_pad_map.csv").read_bytes()).hexdigest()
    assert digest == recorded


def test_five_column_forms(tmp_path):
    with_header = "cobo,asad,aget,aget channel,pad\n0,1,2,3,100\n0,1,2,4,101\n"
    no_header_cr = "0,1,2,3,100\r0,1,2,4,101\r-1,-1,-1,-1,-1\r"
    for i, text in enumerate((with_header, no_header_cr)):
        p = tmp_path / f"m{i}.csv"
        p.write_text(text, newline="")
        m = load_electronics_map(p)
        assert m.n_pads == 2 and m.pads[0, 1, 2, 3] == 100 and m.pads[0, 1, 2, 4] == 101
        assert m.asads == ((0, 1),) and m.hardware.shape == (102, 4)
        assert m.hardware[50].tolist() == [-1] * 4


def test_six_column_form_keeps_silicon(tmp_path):
    text = ("cobo,asad,aget,aget channel,det keyword,det channel\n"
            "# comment line\n\n"
            "1,0,0,0,pad,7\n"
            "10,0,1,2,si_upstream_front,0\n"
            "10,0,1,3,si_upstream_front,1\n"
            "10,1,0,0,SI_DOWNSTREAM_BACK,5\n")
    p = tmp_path / "rcnp.csv"
    p.write_text(text)
    m = load_electronics_map(p)
    assert m.n_pads == 1 and m.asads == ((1, 0),)
    assert m.detectors["si_upstream_front"].tolist() == [[10, 0, 1, 2, 0], [10, 0, 1, 3, 1]]
    assert m.detectors["si_downstream_back"].tolist() == [[10, 1, 0, 0, 5]]
    assert m.pads[10, 0, 1, 2] == -1  # silicon channels are not pads


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("cobo,asad,aget,aget channel,pad\n0,0,0,0,1\n0,0,0,x,2\n", 3, "expected an integer, got 'x'"),
        ("0,0,0,0,1\n0,0,0,1\n", 2, "4 columns, the file has 5"),
        ("0,0,0\n", 1, "3 columns; expected 5"),
        ("0,0,0,0,1\n12,0,0,1,2\n", 2, "cobo 12 out of range 0..10"),
        ("0,0,0,0,1\n0,0,0,68,2\n", 2, "channel 68 out of range 0..67"),
        ("0,0,0,0,1\n0,0,0,0,2\n", 2, "already mapped on line 1"),
        ("0,0,0,0,1\n0,0,0,1,1\n", 2, "pad 1 already mapped on line 1"),
        ("0,0,0,0,-4\n", 1, "pad -4 is negative"),
        ("a,b,c\n", 1, "header has 3 columns"),
    ],
)
def test_bad_map_files(tmp_path, text, line, message):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(MapError) as err:
        load_electronics_map(p)
    assert str(err.value).startswith(f"{p.resolve()}:{line}: ")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_and_empty_map(tmp_path):
    with pytest.raises(MapError, match="no such electronics map file"):
        load_electronics_map(tmp_path / "nope.csv")
    p = tmp_path / "empty.csv"
    p.write_text("cobo,asad,aget,aget channel,pad\n")
    with pytest.raises(MapError, match="no channels"):
        load_electronics_map(p)


def test_fpn_rows_are_ignored(caplog):
    m = parse_electronics_map("0,0,0,11,5\n0,0,0,12,6\n", "x.csv")
    assert m.n_pads == 1 and m.pads[0, 0, 0, 12] == 6 and "FPN" in caplog.text


def test_stage_context_uses_the_map(tmp_path):
    from conduit.detector import DetectorParams
    from conduit.stage import StageContext

    (tmp_path / "map.csv").write_text("0,0,0,0,3\n")
    ctx = StageContext(detector=DetectorParams(electronics_map=Path("map.csv")), base_dir=tmp_path)
    assert ctx.electronics_map.pads[0, 0, 0, 0] == 3
    assert StageContext().electronics_map.n_pads == 10_240
