"""The shapes of the standard artifacts stages exchange.

Any stage providing one of these names must produce exactly this form, so
that stages from different plugins can be swapped (``cluster.hdbscan`` for
another clusterer) and sinks can record and display them.

``cloud``
    float64 array (N, 8), rows sorted by z, columns :data:`CLOUD_COLUMNS`
    (Spyral's point cloud layout): x, y, z (mm), amplitude (ADC),
    integral (ADC·TB), pad id, time (TB, after per-pad correction), pad scale.

``clusters``
    :class:`Clusters`: one label per cloud row (-1 = noise/outlier) and, per
    cluster, its label and direction.

``estimates``
    numpy structured array, one row per estimated track, dtype
    :data:`ESTIMATE_DTYPE`.

``kinematics``
    numpy structured array, dtype :data:`KINEMATICS_DTYPE`: exactly one row
    per row of ``estimates``, in the same order (so per-track quantities of
    both line up), with the reaction read from that track: the ejectile
    hypothesis, energies at the vertex, the residual's excitation energy and
    the centre-of-mass angle; ``status`` says why a row has no result
    (:data:`KINEMATICS_STATUS`).

These forms are checked where a stage hands its artifacts on
(:func:`check_outputs`, called by the engine after every transform stage):
type, number of columns, dtype and the lengths that must agree
(``len(clusters.labels) == len(cloud)``, one ``kinematics`` row per
``estimates`` row). The checks are O(1), a few microseconds per stage; the
values themselves (z order, direction codes) are not checked. A stage whose
artifact breaks its form fails on that event with :class:`ArtifactError`
naming the stage, as if it had raised.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .event import Event
    from .stage import Stage

__all__ = [
    "CLOUD_COLUMNS",
    "X",
    "Y",
    "Z",
    "AMPLITUDE",
    "INTEGRAL",
    "PAD_ID",
    "TIME",
    "SCALE",
    "Clusters",
    "Direction",
    "ESTIMATE_DTYPE",
    "empty_cloud",
    "empty_estimates",
    "KINEMATICS_DTYPE",
    "KINEMATICS_STATUS",
    "FIT_STATUS",
    "empty_kinematics",
    "ArtifactError",
    "ArtifactContract",
    "CONTRACTS",
    "artifact_problem",
    "check_outputs",
]

CLOUD_COLUMNS = ("x", "y", "z", "amplitude", "integral", "pad", "time", "scale")
X, Y, Z, AMPLITUDE, INTEGRAL, PAD_ID, TIME, SCALE = range(8)


def empty_cloud(n: int = 0) -> np.ndarray:
    return np.zeros((n, len(CLOUD_COLUMNS)), dtype=np.float64)


class Direction:
    """Track direction codes (Spyral's values)."""

    NONE = -1
    FORWARD = 0  # towards +z, the pad plane
    BACKWARD = 1


@dataclasses.dataclass
class Clusters:
    """Cluster assignment of the points of ``cloud``.

    ``labels[i]`` is the cluster of cloud row ``i`` (-1: noise or outlier).
    ``cluster_labels[k]`` and ``directions[k]`` describe cluster ``k``
    (clusters in the order the clusterer produced them, noise excluded).
    """

    labels: np.ndarray  # int32 (N,)
    cluster_labels: np.ndarray  # int32 (K,)
    directions: np.ndarray  # int8 (K,), Direction codes

    @property
    def count(self) -> int:
        return int(len(self.cluster_labels))

    def indices(self, k: int) -> np.ndarray:
        """Cloud row indices of cluster ``k`` (in cloud order, i.e. sorted by z)."""
        return np.flatnonzero(self.labels == self.cluster_labels[k])

    @classmethod
    def empty(cls, n_points: int) -> Clusters:
        return cls(
            labels=np.full(n_points, -1, dtype=np.int32),
            cluster_labels=np.zeros(0, dtype=np.int32),
            directions=np.zeros(0, dtype=np.int8),
        )


#: One row per estimated track. Units: mm, rad, T·m; dE in integral units (ADC·TB).
ESTIMATE_DTYPE = np.dtype(
    [
        ("event", np.int64),
        ("cluster_index", np.int32),
        ("cluster_label", np.int32),
        ("vertex_x", np.float64),
        ("vertex_y", np.float64),
        ("vertex_z", np.float64),
        ("center_x", np.float64),
        ("center_y", np.float64),
        ("center_z", np.float64),
        ("radius", np.float64),
        ("polar", np.float64),
        ("azimuthal", np.float64),
        ("brho", np.float64),
        ("dE", np.float64),
        ("arclength", np.float64),
        ("dEdx", np.float64),
        ("sqrt_dEdx", np.float64),
        ("direction", np.int8),
        ("n_points", np.int32),
        ("fit_rms", np.float64),
    ]
)


def empty_estimates(n: int = 0) -> np.ndarray:
    return np.zeros(n, dtype=ESTIMATE_DTYPE)


#: Why a ``kinematics`` row has no excitation energy (index = ``status`` code).
KINEMATICS_STATUS = (
    "ok",
    "no_hypothesis",  # no ejectile hypothesis accepts the track (PID gates)
    "no_brho",  # the estimate has no usable B-rho (zero, NaN)
    "beam_stopped",  # the beam stops before the vertex z
    "unphysical",  # no real missing mass (the track does not fit the reaction)
)
#: Whether the track fit ran and what came of it (index = ``fit_status`` code).
FIT_STATUS = (
    "off",  # not run: the estimate's values are used
    "converged",
    "not_converged",  # the iteration limit was reached: its last values are used
    "failed",  # diverged, too few points, or most points far from it: the estimate's values are used
)

#: One row per ``estimates`` row. Units: MeV, rad, T·m, mm; ``*_energy`` are kinetic energies at the vertex.
KINEMATICS_DTYPE = np.dtype(
    [
        ("event", np.int64),
        ("cluster_index", np.int32),  # of the estimate row (and of the cluster)
        ("status", np.int8),  # KINEMATICS_STATUS code
        ("hypothesis", np.int8),  # index of the ejectile hypothesis used (-1: none)
        ("ejectile_Z", np.int8),  # charge of the ejectile hypothesis
        ("ejectile_A", np.int16),  # mass number of the ejectile hypothesis
        ("excitation", np.float64),  # residual excitation energy (MeV), by missing mass
        ("theta_cm", np.float64),  # ejectile centre-of-mass polar angle (rad)
        ("ejectile_energy", np.float64),  # MeV at the vertex
        ("ejectile_brho", np.float64),  # T·m at the vertex
        ("ejectile_polar", np.float64),  # rad, from the beam axis
        ("ejectile_azimuthal", np.float64),  # rad
        ("beam_energy", np.float64),  # MeV at the vertex
        ("reaction_x", np.float64),  # mm: the vertex used (fitted, or the estimate's)
        ("reaction_y", np.float64),
        ("reaction_z", np.float64),
        ("fit_status", np.int8),  # FIT_STATUS code
        ("fit_iterations", np.int16),
        ("fit_residual", np.float64),  # median distance of the cluster's points from the fitted trajectory (mm)
    ]
)


def empty_kinematics(n: int = 0) -> np.ndarray:
    return np.zeros(n, dtype=KINEMATICS_DTYPE)


# -- contracts -------------------------------------------------------------------------------------


class ArtifactError(ValueError):
    """An artifact that breaks its declared form; the message names the stage that produced it."""


@dataclasses.dataclass(frozen=True)
class ArtifactContract:
    """The declared form of a standard artifact and how to check it (cheaply: no pass over the values)."""

    name: str
    form: str  #: what it must be, for messages and docs
    problem: Callable[[Any], str | None]  #: '' / None when ``value`` has the form, else what is wrong


def _array_problem(value: Any, ndim: int, dtype: np.dtype, columns: int | None = None) -> str | None:
    if not isinstance(value, np.ndarray):
        return f"got {type(value).__name__}"
    if value.ndim != ndim or (columns is not None and value.shape[1] != columns):
        return f"got shape {value.shape}"
    if value.dtype is not dtype and value.dtype != dtype:
        return f"got dtype {_dtype_text(value.dtype)}"
    return None


def _dtype_text(dtype: np.dtype) -> str:
    return "a structured dtype with other fields" if dtype.names else str(dtype)


def _cloud_problem(value: Any) -> str | None:
    return _array_problem(value, 2, _FLOAT64, len(CLOUD_COLUMNS))


def _clusters_problem(value: Any) -> str | None:
    if not isinstance(value, Clusters):
        return f"got {type(value).__name__}"
    for field, dtype in (("labels", _INT32), ("cluster_labels", _INT32), ("directions", _INT8)):
        problem = _array_problem(getattr(value, field), 1, dtype)
        if problem:
            return f"{field}: {problem}"
    if len(value.directions) != len(value.cluster_labels):
        return (f"{len(value.cluster_labels)} cluster_labels but {len(value.directions)} directions "
                "(one per cluster)")
    return None


def _estimates_problem(value: Any) -> str | None:
    return _array_problem(value, 1, ESTIMATE_DTYPE)


def _kinematics_problem(value: Any) -> str | None:
    return _array_problem(value, 1, KINEMATICS_DTYPE)


_FLOAT64, _INT32, _INT8 = np.dtype(np.float64), np.dtype(np.int32), np.dtype(np.int8)

#: The standard artifacts' declared forms, by name.
CONTRACTS: dict[str, ArtifactContract] = {c.name: c for c in (
    ArtifactContract("cloud", "a float64 array (N, 8): x, y, z, amplitude, integral, pad, time, scale",
                     _cloud_problem),
    ArtifactContract("clusters", "a conduit.artifacts.Clusters: labels int32 (N,) one per cloud row, "
                     "cluster_labels int32 (K,), directions int8 (K,)", _clusters_problem),
    ArtifactContract("estimates", "a structured array (M,) of ESTIMATE_DTYPE", _estimates_problem),
    ArtifactContract("kinematics", "a structured array (M,) of KINEMATICS_DTYPE, one row per estimates row",
                     _kinematics_problem),
)}

#: Artifacts whose lengths must agree: (a, length of a, b, length of b, why).
_ALIGNED: tuple[tuple[str, Callable[[Any], int], str, Callable[[Any], int], str], ...] = (
    ("clusters", lambda c: len(c.labels), "cloud", len, "one label per cloud row"),
    ("kinematics", len, "estimates", len, "one kinematics row per estimates row"),
)


def artifact_problem(name: str, value: Any) -> str | None:
    """What is wrong with ``value`` as the standard artifact ``name`` (None: right, or not a standard one)."""
    contract = CONTRACTS.get(name)
    if contract is None:
        return None
    problem = contract.problem(value)
    return f"'{name}' must be {contract.form}; {problem}" if problem else None


def check_outputs(stage: Stage, event: Event) -> None:
    """Check the standard artifacts ``stage`` provides or modifies on ``event``; raise :class:`ArtifactError`.

    Called by the engine after each transform stage's ``process``. Besides each
    artifact's own form, the lengths that must agree are compared whenever the
    stage touched one side (a cloud filter placed after the clusterer leaves
    ``clusters.labels`` longer than ``cloud``: that filter is named). The bad
    artifact is taken off the event before raising, so that no later stage or
    sink reads it, whether the stage ran in a worker process or in this one.
    """
    touched = type(stage).artifacts(stage.params)[1]
    artifacts = event.artifacts
    for name in touched:
        if name in CONTRACTS and name in artifacts:
            problem = artifact_problem(name, artifacts[name])
            if problem:
                del artifacts[name]
                raise ArtifactError(f"stage '{stage.name}' produced a bad artifact: {problem}")
    for a, len_a, b, len_b, why in _ALIGNED:
        if (a in touched or b in touched) and a in artifacts and b in artifacts:
            n_a, n_b = len_a(artifacts[a]), len_b(artifacts[b])
            if n_a != n_b:
                del artifacts[a if a in touched else b]
                hint = "" if a in touched else (f"; a stage that changes '{b}' belongs before the stages that "
                                                f"derive something from it (declare modifies = (\"{b}\",))")
                raise ArtifactError(f"stage '{stage.name}' left '{a}' and '{b}' out of line: {n_a} rows of "
                                    f"'{a}' for {n_b} of '{b}' ({why}){hint}")
