"""Pipeline files: parsing, validation with line numbers, overrides.

Public API: :func:`load_pipeline` (raises :class:`PipelineError`, whose
``lines`` are ``file.toml:LINE: ...`` messages), :class:`Pipeline`,
:class:`StageConfig`. The modules inside are the core's own.
"""

from .pipeline import Pipeline, PipelineError, StageConfig, load_pipeline

__all__ = ["Pipeline", "PipelineError", "StageConfig", "load_pipeline"]
