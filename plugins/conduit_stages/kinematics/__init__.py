"""The ``kinematics`` stage: excitation energy and CM angle per track, with a fast track fit (docs/analysis.md).

Modules: :mod:`.params` (the reaction and the choices), :mod:`.reaction` (closed-form
physics per track on :mod:`conduit_physics`), :mod:`.helixfit` (numba: the fit),
:mod:`.stage` (the stage), :mod:`.curves` (kinematic curves of the listed states).
"""
