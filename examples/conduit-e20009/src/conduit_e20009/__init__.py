"""Experiment e20009's stages for attpc-conduit (an example of a third-party plugin package)."""
