"""``conduit simulate``: realistic synthetic AT-TPC GET data with its truth.

A plugin like any other: :mod:`.plugin` (entry point ``simulate``) registers
the ``simulate`` source kind and the ``conduit simulate`` command. It builds on
the core's public GET library (:mod:`conduit.get`: frame encoder, .graw
writer, DataExporter server, event builder) and on :mod:`conduit_physics`.

Modules (import what you need; importing this package loads nothing heavy):

* :mod:`.params`      the parameter model shared by the CLI and the ``simulate`` source;
* :mod:`.presets`     named reactions and particle guns;
* masses, two-body kinematics and stopping powers come from the :mod:`conduit_physics` library;
* :mod:`.tracking`    numba: helices with continuous energy loss;
* :mod:`.response`    numba: electrons, diffusion, pads, gain, GET shaping;
* :mod:`.padgrid`     the point → pad lookup grid the response kernel uses;
* :mod:`.generator`   :class:`~.generator.Simulator`: one seeded event at a time, with truth;
* :mod:`.truth`, :mod:`.writers`, :mod:`.serve`   truth file, .graw / HDF5 writers, fake DataExporters;
* :mod:`.source`      the ``simulate`` source kind; :mod:`.command` the CLI; :mod:`.plugin` registers both.

The model and its parameters are described in docs/simulator.md.
"""
