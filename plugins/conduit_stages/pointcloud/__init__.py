"""The ``pointcloud`` stage: GET traces to Spyral-layout point clouds (see docs/analysis.md)."""
