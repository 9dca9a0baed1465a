"""``conduit new-stage``: write a ready-to-install stage plugin package.

``conduit new-stage myexp.hitcount`` writes ``conduit-myexp-hitcount/`` with a
pyproject declaring the ``conduit`` entry point, the stage class with a
parameter model, a test and an example pipeline. ``pip install -e`` it and
``conduit stages`` lists the new stage at once.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from string import Template

DESCRIPTION = """Write a stage plugin package skeleton.

    conduit new-stage myexp.hitcount            # a transform stage
    conduit new-stage myexp.logger --kind sink  # a sink stage
    pip install -e conduit-myexp-hitcount       # then: conduit stages

The package holds pyproject.toml (with the entry point), the stage class with a
typed parameter model, a pytest test and an example pipeline."""

NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="dotted stage name, e.g. myexp.hitcount (lower case, digits, underscores)")
    parser.add_argument("--kind", choices=("transform", "sink"), default="transform", help="stage kind")
    parser.add_argument("--dir", type=Path, default=Path("."), help="where to create the package directory")
    parser.add_argument("--force", action="store_true", help="overwrite an existing directory")


PYPROJECT = Template('''\
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "The $name stage for attpc-conduit"
requires-python = ">=3.11"
dependencies = ["attpc-conduit", "numpy"]

[project.optional-dependencies]
test = ["pytest"]

# This line is what makes `conduit` find the stage: group "conduit", any unique name.
[project.entry-points.conduit]
$entry = "$package.plugin"

[tool.setuptools.packages.find]
where = ["src"]
''')

PLUGIN = Template('''\
"""Registers the stages of this package with attpc-conduit (keep this module light: `conduit --help` loads it)."""

from conduit import hookimpl


@hookimpl
def conduit_register_stages(register):
    from .stage import $cls

    register($cls)
''')

TRANSFORM = Template('''\
"""The $name stage."""

from __future__ import annotations

import numpy as np

from conduit import Params, TransformStage, param
from conduit.event import SAMPLES


class ${cls}Params(Params):
    """Parameters of $name (validated from its [[stage]] table)."""

    threshold: float = param(100.0, "pulse height above the trace median that counts as a hit (ADC)", gt=0)


class $cls(TransformStage):
    """Counts the pads whose pulse height exceeds a threshold (replace with your analysis)."""

    name = "$name"
    requires = ("traces",)
    provides = ("$artifact",)
    Params = ${cls}Params

    def process(self, event) -> None:
        samples = event.traces[:, SAMPLES].astype(np.float32)
        height = samples.max(axis=1) - np.median(samples, axis=1)
        hit = height > self.params.threshold
        event.artifacts["$artifact"] = {
            "hit_pads": int(hit.sum()),
            "max_height": float(height.max()) if len(height) else 0.0,
        }
''')

SINK = Template('''\
"""The $name stage."""

from __future__ import annotations

from conduit import Params, SinkStage, param


class ${cls}Params(Params):
    """Parameters of $name (validated from its [[stage]] table)."""

    path: str = param("out/${artifact}_{run:04d}.csv", "output file (template with {run})")


class $cls(SinkStage):
    """Writes one line per event: id, number of traces, analysed flag (replace with your output)."""

    name = "$name"
    Params = ${cls}Params

    def open(self) -> None:
        self.path = self.context.format_path(self.params.path)
        self.claim = self.context.claim_output(self.path)  # one run per file; nothing is written yet
        self.file = None

    def begin(self) -> None:
        self.claim.make_room()  # a file already there is kept under a numbered name
        self.file = open(self.path, "w")
        self.file.write("event,n_traces,analysed\\n")

    def consume(self, event) -> None:
        self.file.write(f"{event.id},{event.n_traces},{int(event.analysed)}\\n")

    def close(self) -> None:
        if self.file is not None:  # None when the run never began: leave the path as it was
            self.file.close()
        self.claim.release()

    def outputs(self) -> list[str]:
        return [str(self.path)] if self.file is not None else []
''')

TEST_TRANSFORM = Template('''\
import numpy as np

from conduit import Event, RunContext
from $package.stage import $cls


def make_event():
    traces = np.zeros((3, 517), dtype=np.int16)
    traces[:, 5:] = 400                # pedestal
    traces[0, 5 + 200] = 400 + 500     # one clear pulse
    traces[1, 5 + 100] = 400 + 50      # below threshold
    return Event(id=1, traces=traces)


def test_counts_pads_above_threshold():
    stage = $cls($cls.Params(threshold=100.0), RunContext())
    event = make_event()
    stage.process(event)
    assert event.artifacts["$artifact"] == {"hit_pads": 1, "max_height": 500.0}


def test_parameters_are_validated():
    import pytest
    from conduit import ParamError

    with pytest.raises(ParamError):
        $cls.Params.from_mapping({"threshold": -1})
''')

TEST_SINK = Template('''\
import numpy as np

from conduit import Event, RunContext
from $package.stage import $cls


def test_writes_one_line_per_event(tmp_path):
    stage = $cls($cls.Params(path=str(tmp_path / "out_{run}.csv")), RunContext(run=3))
    stage.open()
    stage.begin()
    stage.consume(Event(id=5, traces=np.zeros((2, 517), dtype=np.int16)))
    stage.close()
    assert (tmp_path / "out_3.csv").read_text().splitlines() == ["event,n_traces,analysed", "5,2,0"]
''')

PIPELINE = Template('''\
# Example pipeline using $name: `conduit run pipeline.toml`
[source]
kind = "simulate"
events = 20

[[stage]]
use = "$name"
''')

README = Template('''\
# $dist

The `$name` stage for [attpc-conduit](https://github.com/).

    pip install -e .            # conduit finds the stage through its entry point
    conduit stages              # lists $name with its parameters
    conduit run pipeline.toml   # try it on simulated events
    pytest                      # the stage's tests

Edit `src/$package/stage.py`: the class attributes say what the stage needs
(`requires`), what it adds to the event (`provides`) and its parameters
(`Params`); `process(event)` does the work for one event. See the plugin
author guide in attpc-conduit's docs/writing-a-plugin.md.
''')


def class_name(stage_name: str) -> str:
    """``myexp.hit_count`` -> ``MyexpHitCount``."""
    return "".join(part.capitalize() for part in re.split(r"[._]", stage_name) if part)


def write_skeleton(name: str, kind: str, directory: Path, force: bool = False) -> Path:
    """Create the package; return its directory."""
    if not NAME.match(name):
        raise ValueError(f"stage name must be dotted lower-case words like 'myexp.hitcount', got {name!r}")
    slug = name.replace(".", "_")
    dist = "conduit-" + name.replace(".", "-").replace("_", "-")
    package = "conduit_" + slug
    root = directory / dist
    if root.exists() and not force:
        raise FileExistsError(f"{root} already exists (use --force to overwrite)")
    values = dict(name=name, dist=dist, package=package, entry=slug, cls=class_name(name),
                  artifact=slug)
    files = {
        root / "pyproject.toml": PYPROJECT,
        root / "README.md": README,
        root / "pipeline.toml": PIPELINE,
        root / "src" / package / "__init__.py": Template('"""The $name stage for attpc-conduit."""\n'),
        root / "src" / package / "plugin.py": PLUGIN,
        root / "src" / package / "stage.py": TRANSFORM if kind == "transform" else SINK,
        root / "tests" / f"test_{slug}.py": TEST_TRANSFORM if kind == "transform" else TEST_SINK,
    }
    for path, template in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.substitute(values))
    return root


def main(args: argparse.Namespace) -> int:
    try:
        root = write_skeleton(args.name, args.kind, args.dir, args.force)
    except (ValueError, FileExistsError) as err:
        print(f"conduit new-stage: {err}", file=sys.stderr)
        return 2
    print(f"wrote {root}/")
    print(f"next:  pip install -e {root}   then   conduit stages   (lists {args.name})")
    return 0
