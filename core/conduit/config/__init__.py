"""Pipeline files: parsing, validation with line numbers, overrides."""

from .pipeline import Pipeline, PipelineError, StageConfig, load_pipeline

__all__ = ["Pipeline", "PipelineError", "StageConfig", "load_pipeline"]
