"""Clustering stages: ``cluster.hdbscan`` and ``cluster.dbscan`` (see docs/analysis.md)."""
