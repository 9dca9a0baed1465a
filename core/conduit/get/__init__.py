"""GET ingestion: GRAW frames, the electronics map, the event builder, the sources' machinery.

Modules (import the one you need; this package imports nothing heavy):

* :mod:`conduit.get.frames`          frame header parsing, validation, numpy decoding and the encoder
                                     (``encode_frame``, ``encode_event_frames``);
* :mod:`conduit.get.maps`            the electronics map (``load_electronics_map``);
* :mod:`conduit.get.decoder`         the fast per-frame decoder (numba kernels in ``_kernels``);
* :mod:`conduit.get.builder`         the event builder (``EventBuilder``);
* :mod:`conduit.get.options`         the builder parameters shared by the ``graw`` and ``exporter`` sources;
* :mod:`conduit.get.grawfiles`       .graw run folders: discovery, stream reader, k-way merge, ``RunWriter``;
* :mod:`conduit.get.merged`          merged HDF5 files (legacy, 1.0, 2.0 layouts);
* :mod:`conduit.get.hosts`           DataExporter host lists (``parse_hosts``);
* :mod:`conduit.get.exporter_client` the DataExporter protocol, client side (one CoBo's receive loop);
* :mod:`conduit.get.dataexporter`    an in-process DataExporter-compatible TCP server (tests, simulator).

The sources themselves are plugins in :mod:`conduit.sources` (``graw``, ``hdf5``, ``exporter``);
docs/ingestion.md is the user guide.
"""
