"""GET ingestion: GRAW frames, the electronics map, the event builder, a DataExporter server.

Modules (import the one you need; this package imports nothing heavy):

* :mod:`conduit.get.frames`       frame header parsing, validation, numpy decoding and the encoder
                                  (``encode_frame``, ``encode_event_frames``);
* :mod:`conduit.get.maps`         the electronics map (``load_electronics_map``);
* :mod:`conduit.get.decoder`      the fast per-frame decoder (numba kernels in ``_kernels``);
* :mod:`conduit.get.builder`      the event builder (``EventBuilder``);
* :mod:`conduit.get.options`      the builder parameters shared by the ``graw``, ``hdf5`` and ``exporter`` sources;
* :mod:`conduit.get.grawfiles`    .graw run folders: file discovery, frame streams, the k-way merge;
* :mod:`conduit.get.dataexporter` an in-process DataExporter-compatible TCP server (tests, simulator).
"""
