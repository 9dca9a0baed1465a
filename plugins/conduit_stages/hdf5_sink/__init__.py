"""The ``hdf5`` sink: crash-safe recording in attpc_merger 1.0 and Spyral layouts.

Importing this package is cheap (h5py is imported when the sink opens).
"""
