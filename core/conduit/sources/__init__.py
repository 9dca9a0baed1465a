"""The built-in sources: DataExporter client, .graw run folders, merged HDF5 files."""
