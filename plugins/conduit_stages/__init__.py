"""The built-in stages of attpc-conduit.

Each sub-package is one stage family and a plugin of its own, registered
through its own entry point in the ``conduit`` group exactly as a third-party
plugin would be. A family imports only the core's public API, the library
:mod:`conduit_physics` and itself, never another family (docs/architecture.md;
``tests/core/test_core_architecture.py`` checks it):

* ``pointcloud``  traces to 3-D points (transform)
* ``cluster``     ``cluster.hdbscan`` and ``cluster.dbscan`` (transforms)
* ``estimate``    vertex, angles, B-rho, dE/dx per track (transform)
* ``kinematics``  excitation energy and CM angle per track, with a track fit (transform)
* ``histogram``   1-D/2-D histograms and gates (sink), published as a typed service
* ``hdf5_sink``   crash-safe HDF5 recording (sink ``hdf5``)
* ``rerun_sink``  live Rerun view and .rrd files (sink ``rerun``), and the importer
"""
