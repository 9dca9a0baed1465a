"""The ``histogram`` sink: 1-D and 2-D histograms of track and event quantities, with gates.

Importing this package is cheap; the classes live in :mod:`.spec` (parameters),
:mod:`.hset` (filling), :mod:`.shared` (what other sinks see, through
:class:`conduit_physics.histograms.Histograms`), :mod:`.store` (the saved
layout) and :mod:`.sink`. Quantities and gates are the public library's
(:mod:`conduit_physics.quantities`, :mod:`conduit_physics.gates`).
"""
