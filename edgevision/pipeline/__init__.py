"""The pipeline: source runner → detector → stages (face, scheduler, recorder hooks) → sinks."""

from edgevision.pipeline.loop import FrameResult, Pipeline, RunSummary, Sink, Stage

__all__ = ["FrameResult", "Pipeline", "RunSummary", "Sink", "Stage"]
