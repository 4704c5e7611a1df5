"""Recording: pre-roll ring, crash-safe clips, snapshots, the SQLite event index, retention and recovery."""

from edgevision.recorder.index import EventIndex, EventRow
from edgevision.recorder.lock import DataDirBusy, DataDirLock
from edgevision.recorder.mode import Mode
from edgevision.recorder.recorder import Recorder
from edgevision.recorder.recovery import RecoveryReport, recover
from edgevision.recorder.retention import RetentionPolicy, plan_retention
from edgevision.recorder.state import RecorderSettings

__all__ = [
    "DataDirBusy",
    "DataDirLock",
    "EventIndex",
    "EventRow",
    "Mode",
    "Recorder",
    "RecorderSettings",
    "RecoveryReport",
    "RetentionPolicy",
    "plan_retention",
    "recover",
]
