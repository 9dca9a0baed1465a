"""The built-in stages of attpc-conduit.

Each sub-package is one stage family, registered through its own entry point
in the ``conduit`` group, exactly as a third-party plugin would be:

* ``pointcloud``  traces to 3-D points (transform)
* ``cluster``     ``cluster.hdbscan`` and ``cluster.dbscan`` (transforms)
* ``estimate``    vertex, angles, B-rho, dE/dx per track (transform)
* ``histogram``   1-D/2-D histograms and gates (sink)
* ``hdf5_sink``   crash-safe HDF5 recording (sink ``hdf5``)
* ``rerun_sink``  live Rerun view and .rrd files (sink ``rerun``), and the importer
"""
