"""The ``estimate`` stage: vertex, angles, B-rho and dE/dx per track (see docs/analysis.md)."""
