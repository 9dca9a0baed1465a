"""What a pipeline refers to outside its file: maps and geometry (errors), hosts and run numbers (warnings)."""

from __future__ import annotations

import textwrap

import pytest

from conduit.cli import main
from conduit.config.pipeline import PipelineError, load_pipeline


def write(tmp_path, text: str, name: str = "pipe.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(path) -> list[str]:
    with pytest.raises(PipelineError) as caught:
        load_pipeline(path)
    return caught.value.lines


DETECTOR = """
[source]
kind = "simulate"

[detector]
{lines}
"""


def test_missing_and_malformed_maps_and_geometry_name_their_file_and_line(tmp_path):
    path = write(tmp_path, DETECTOR.format(lines='electronics_map = "nomap.csv"\npad_geometry = "nogeo.csv"'))
    assert problems(path) == [
        f"{path}:6: detector.electronics_map: {tmp_path / 'nomap.csv'}: no such electronics map file",
        f"{path}:7: detector.pad_geometry: {tmp_path / 'nogeo.csv'}: pad geometry file not found",
    ]
    (tmp_path / "map.csv").write_text("cobo,asad,aget,aget channel,pad\n0,0,0,0,1\n0,0,0,x,2\n")
    (tmp_path / "geo.csv").write_text("x,y\n0.0,0.0\nabc,1.0\n")
    path = write(tmp_path, DETECTOR.format(lines='electronics_map = "map.csv"\npad_geometry = "geo.csv"'))
    assert problems(path) == [
        f"{path}:6: detector.electronics_map: {tmp_path / 'map.csv'}:3: expected an integer, got 'x'",
        f"{path}:7: detector.pad_geometry: {tmp_path / 'geo.csv'}:3: expected numbers in columns x,y, got 'abc,1.0'",
    ]


def test_a_geometry_that_does_not_place_the_maps_pads_is_an_error(tmp_path):
    (tmp_path / "two.csv").write_text("x,y\n0.0,0.0\n1.0,1.0\n")
    path = write(tmp_path, DETECTOR.format(lines='pad_geometry = "two.csv"'))
    assert problems(path) == [
        f"{path}:6: detector.pad_geometry: two.csv places 2 pads (ids 0..1) but the electronics map <bundled "
        "attpc_pad_map.csv> uses pad ids up to 10239: 10238 of its 10240 pads have no position, so their charge "
        "would never reach a point cloud"]
    # A map with pad ids beyond the generated plane's 10,240.
    (tmp_path / "big.csv").write_text("cobo,asad,aget,aget channel,pad\n0,0,0,0,5\n0,0,0,1,12000\n")
    path = write(tmp_path, DETECTOR.format(lines='electronics_map = "big.csv"'))
    assert problems(path) == [
        f"{path}:6: detector.electronics_map: the generated pad plane places 10240 pads (ids 0..10239) but the "
        f"electronics map {tmp_path / 'big.csv'} uses pad ids up to 12000: 1 of its 2 pads have no position, so "
        "their charge would never reach a point cloud"]
    # A geometry covering the map is fine.
    (tmp_path / "six.csv").write_text("x,y\n" + "".join(f"{i}.0,0.0\n" for i in range(6)))
    (tmp_path / "small.csv").write_text("0,0,0,0,5\n0,0,0,1,2\n")
    load_pipeline(write(tmp_path, DETECTOR.format(lines='electronics_map = "small.csv"\npad_geometry = "six.csv"')))


LIVE = """
[source]
kind = "exporter"
hosts = {hosts}

[engine]
workers = 0

[[stage]]
use = "hdf5"
histograms = false
"""


def test_check_warns_on_unresolvable_hosts_and_a_live_run_without_run_number(tmp_path, capsys):
    path = write(tmp_path, LIVE.format(hosts='["127.0.0.1:47001", "cobo-nowhere.invalid:47002"]'))
    assert main(["check", str(path)]) == 0
    out, err = capsys.readouterr()
    warnings = err.splitlines()
    assert len(warnings) == 2
    assert warnings[0].startswith(f"warning: {path}:4: source.hosts: cobo-nowhere.invalid does not resolve (")
    assert warnings[0].endswith("): its DataExporter cannot be reached from here")
    assert warnings[1] == (
        f"warning: {path}:3: source.kind: a live source without a run number, and output names with {{run}} "
        "(stage 1 hdf5.path): `conduit run` refuses to start a stage that writes one without --run N (or "
        "source.run = N), rather than write run 0000")
    assert out.endswith("ok: the pipeline is valid (2 warnings above)\n")

    path = write(tmp_path, LIVE.format(hosts='"127.0.0.1:47001-47003"\nrun = 12'), name="ok.toml")
    assert main(["check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.endswith("ok: the pipeline is valid\n")
