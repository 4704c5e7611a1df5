"""The pipeline: source runner → detect step → stages (face, privacy, events) → sinks."""

from edgevision.pipeline.loop import Pipeline, RunSummary

__all__ = ["Pipeline", "RunSummary"]
