"""The recorder: person events become clips (with pre- and post-roll), snapshots and index rows.

Threads: the pipeline thread runs the pure event state machine and hands each frame to the recorder thread
through a bounded queue. Live, a full queue drops the frame (counted, never silent) so inference never waits;
in replay it waits, so output is deterministic. Frames that carry an event start or end are never dropped.
The recorder thread owns the packet ring and the open clip (:class:`~edgevision.recorder.packet_clips.PacketClips`:
clips are the capture's packets remuxed, pre-roll is those packets while no clip is open), the snapshot writer
and the index; packets come from the capture's feed, taken up to the frame being handled so an event starts and
ends at the same instant in both (:mod:`~edgevision.recorder.intake`), or, with privacy redaction, from one
encode of the redacted frames. Retention runs on its own timer thread.

Disk trouble degrades instead of crashing: ENOSPC while writing a clip salvages what was written and switches
to snapshots only; a failing snapshot switches to index only; an index write that fails (SQLite's "database or
disk is full") is queued in memory and retried (:mod:`~edgevision.recorder.index_writer`); free space coming
back restores full recording.

Crash safety: the recorder owns the data directory (:mod:`~edgevision.recorder.lock`) and runs start-up
recovery before its thread starts. An event's row names its clip before the clip file exists; statistics are
written as the event runs; a finish is clip fsync -> rename -> directory fsync -> hash -> snapshot -> index row,
and the row is the commit point, so recovery completes a finish killed at any step. Ends are announced to the
listeners from the index (``end_sent``), the same path for live ends and for ends closed by recovery.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgevision.capture.factory import encoder_codec
from edgevision.capture.feed import FeedItem, PacketFeed, StreamStart
from edgevision.events.stage import EventStage
from edgevision.events.state import EventEnd, EventStart, RunningStats
from edgevision.pipeline.handoff import put_or_drop, put_waiting
from edgevision.recorder.faults import fault_point
from edgevision.recorder.index import EventIndex
from edgevision.recorder.index_rebuild import highest_file_id, open_recorder_index
from edgevision.recorder.index_writer import IndexWriter
from edgevision.recorder.intake import PacketIntake
from edgevision.recorder.lock import DataDirLock
from edgevision.recorder.mode import Mode
from edgevision.recorder.packet_clips import PacketClips, cut_note, cuts_clip, hash_values, salvage_cut_clip
from edgevision.recorder.recovery import Checking, RecoveryReport, recover
from edgevision.recorder.remux import MuxerRefused
from edgevision.recorder.retention import RetentionTimer, free_space
from edgevision.recorder.snapshots import EventStills
from edgevision.recorder.space import DISK_ERRNOS, DiskSpace
from edgevision.recorder.state import ActiveEvent, RecorderSettings, WorkItem, track
from edgevision.recorder.wallclock import boot_clock_at
from edgevision.results import FrameResult
from edgevision.results.events import EventPhase, EventUpdate
from edgevision.results.frame import Frame

log = logging.getLogger(__name__)

STATS_EVERY_S = 1.0  # how often (frame clock) a running event's statistics reach the index


class Recorder:
    """A pipeline sink that records events. ``close()`` finalizes an active event and joins the thread."""

    def __init__(
        self,
        settings: RecorderSettings,
        blocking: bool,
        index: EventIndex | None = None,
        clock: Callable[[], float] = time.monotonic,
        free_bytes: Callable[[Path], int] = free_space,
        fps_source: Callable[[], float | None] | None = None,
        listeners: list[Callable[[EventPhase, dict[str, Any]], object]] | None = None,
        events: EventStage | None = None,
        packets: PacketFeed | None = None,
        on_recovery: Checking | None = None,
    ) -> None:
        self.settings = settings
        self.listeners = list(listeners or [])
        self.fps_source = fps_source
        self.blocking = blocking
        self.clock = clock
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        # One process owns the directory (raises DataDirBusy, exit 75): held until close().
        self._dir_lock = DataDirLock(settings.data_dir, "run --record").acquire()
        try:
            owner = (settings.camera, settings.events.labels[0])  # of rows made for files found without one
            # a damaged index is set aside and rebuilt from the files: recording goes on (index_rebuild.py)
            self.index = index or open_recorder_index(settings.data_dir, *owner)
            # before any frame; files a row never named are given one
            self.recovery: RecoveryReport = recover(self.index, settings.data_dir, on_recovery, owner)
            # ids above every file's too: a row that never left the writer's memory (killed while the disk was
            # full) left its files named by its id, and a new event given that id would overwrite them
            self.writer = IndexWriter(self.index, highest_file_id(settings.data_dir) + 1)
        except BaseException:
            self._dir_lock.release()
            raise
        self.events = events or EventStage(settings.events)  # the pipeline's stage; its own when fed directly
        # Pre-roll is the packet ring, a clip is packets remuxed: the capture's packets (``packets``), or the one
        # encode of the frames handed over here (privacy blur: only redacted frames reach the disk).
        self.clips = PacketClips(settings.pre_roll, settings.pre_roll_max_bytes)
        self.intake = PacketIntake(packets, encoder_codec(settings.codec), settings.fps_hint)
        self.clips_cut_by_reconnect = 0
        # A reconnect cut the active event's clip: it goes on in a new row from the first frame at or after the
        # new stream's first packet (recorder thread). Pending until that packet came in: None.
        self._resume_pending = False
        self._resume_from: float | None = None
        self.disk = DiskSpace(
            settings.data_dir, settings.retention, self.index, free_bytes, clock, settings.space_check_s
        )
        self._ends_checked = False
        self.dropped = 0
        self.events_started = 0
        self.events_finalized = 0
        self._q: queue.Queue[WorkItem | None] = queue.Queue(maxsize=settings.queue_frames)
        self._active: ActiveEvent | None = None
        self._error: BaseException | None = None
        self._last_frame: Frame | None = None
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()
        # Age and size limits are applied on their own timer; free space is also checked before each clip.
        self.retention = RetentionTimer(
            self.disk.retention_pass, settings.retention_interval_s, self.disk.stopping
        )
        self.retention.start()

    @property
    def mode(self) -> Mode:
        """How much of an event is written now (see :mod:`~edgevision.recorder.space`)."""
        return self.disk.mode

    @property
    def queue_depth(self) -> int:
        """Frames waiting for the recorder thread."""
        return self._q.qsize()

    # -- pipeline thread -------------------------------------------------------------------------------
    def on_result(self, result: FrameResult) -> None:
        if self._error is not None:
            raise self._error
        if self.retention.error is not None:
            raise self.retention.error
        item = track(result, self.events)
        self._last_frame = result.frame
        if self.blocking or item.signals:
            put_waiting(self._q, item, self._thread, lambda: self._error, "recorder thread")
            return
        if not put_or_drop(self._q, item):
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning("recorder: %d frame(s) dropped: the recorder cannot keep up", self.dropped)

    def on_idle_events(self, update: EventUpdate) -> None:
        """An event ended by time alone (no frame from a live source): its clip and row are closed now, not when
        frames come back; the clip ends with the last packets the source gave."""
        if self._error is not None:
            raise self._error
        if update.signals and self._last_frame is not None:
            item = WorkItem(self._last_frame, [], list(update.signals), False, frameless=True)
            put_waiting(self._q, item, self._thread, lambda: self._error, "recorder thread")

    def drain(self, timeout: float = 60.0) -> bool:
        """Wait until every frame handed over so far has been handled; False on timeout or failure."""
        deadline = time.monotonic() + timeout
        while self._q.unfinished_tasks and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._q.unfinished_tasks and self._error is None

    def close(self) -> None:
        """Finalize an active event at the last frame, stop the thread and re-raise its failure, if any."""
        final = self.events.flush()
        if final is not None and self._last_frame is not None:
            self._put_final(WorkItem(self._last_frame, [], list(final.signals), False, frameless=True))
        self._put_final(None)
        self._thread.join(timeout=120.0)
        self.retention.stop()  # a pass ends after the event it is deleting
        if self._thread.is_alive() or self.retention.running:  # the index stays open, the directory locked
            raise RuntimeError("recorder or retention did not finish (120 s, 30 s): the index stays open")
        try:
            if self._error is None:
                if not self.writer.flush():  # recovery closes rows that landed; files without one are adopted
                    log.error(
                        "recorder: %d index write(s) could not be saved (disk full): start-up recovery closes "
                        "the events whose row landed; %d event(s) whose row never landed are given a row from "
                        "their files at the next start (their scores lost), if their clip or snapshot was written",
                        self.writer.pending,
                        self.writer.pending_creates,
                    )
                self._announce_ends()
            try:
                self.index.close()
            except Exception as exc:  # a close that cannot checkpoint on a full disk loses nothing committed
                log.warning("recorder: closing the index: %s", exc)
        finally:
            self._dir_lock.release()
        if self._error is not None:
            raise self._error
        if self.retention.error is not None:
            raise self.retention.error

    def _put_final(self, item: WorkItem | None) -> None:
        while self._thread.is_alive():
            try:
                self._q.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    # -- recorder thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                try:
                    item = self._q.get(timeout=0.2)
                except queue.Empty:
                    if not self.blocking:  # live, results stopped: a feed half full flows to the ring
                        for packet in self.intake.pull_backlog():
                            self._push(packet)
                    self._housekeeping()
                    continue
                if item is None:
                    break
                try:
                    self._handle(item)
                    self._housekeeping()
                finally:
                    self._q.task_done()
        except BaseException as exc:  # raised to the pipeline at the next frame or at close()
            log.error("recorder failed: %s", exc)
            self._error = exc
            self.clips.abort()  # the .partial stays for start-up recovery
        finally:
            self.intake.close()  # a capture thread waiting for room in the feed returns

    def _handle(self, item: WorkItem) -> None:
        if not self._ends_checked:  # listeners are attached by now: announce ends recovery closed
            self._ends_checked = True
            self._announce_ends()
        frame = item.frame
        for sig in item.signals:
            if isinstance(sig, EventEnd):
                self._take_packets(sig.end_ts, inclusive=False)  # the clip ends where the event does
                self._finish(sig, frame)
            else:
                self._take_packets(frame.ts)
                self._begin(sig, frame)
        if item.frameless:
            return
        self._take_packets(frame.ts)
        if not self.intake.from_feed:
            if self.intake.encoder is None and self.fps_source is not None:
                self.intake.fps = self.fps_source() or self.intake.fps
            for packet in self.intake.encode(frame.best_image, frame.ts):
                self._push(packet)
        if self._resume_pending and self._resume_from is not None and frame.ts >= self._resume_from:
            self._resume_pending = False  # not before: a frame of the old stream may come after its marker
            self._split_for_new_stream(frame)
        active = self._active
        if active is None:
            return
        best = active.observe(item)
        if (stats := active.stats) != active.stats_written and frame.ts - active.stats_ts >= STATS_EVERY_S:
            # a crashed event keeps what it had: recovery finds the statistics in the row
            active.stats_ts, active.stats_written = frame.ts, stats
            mx, mean, peak, best_ts = stats
            self.writer.update(
                active.event_id, max_score=mx, mean_score=mean, peak_count=peak, best_ts=best_ts
            )
        if best and active.stills.frame is not None and frame.ts - active.last_update >= 1.0:
            active.last_update = frame.ts
            self._notify(
                EventPhase.UPDATE,
                {"event_id": active.event_id, "ts": frame.ts, "max_score": stats[0], "peak_count": stats[2]},
            )
        active.stills.offer(frame, best, item.matches or item.detections, item.faces)

    def _begin(self, sig: EventStart, frame: Frame) -> None:
        self.disk.check(force=True)
        event_id = self.writer.next_id_preview()
        clip_rel = f"clips/{time.strftime('%Y%m%d')}/{event_id:06d}.mp4" if self.mode == Mode.NORMAL else None
        # The row names the clip before the file exists: recovery never meets a .partial nobody owns.
        created = self.writer.create(
            self.settings.camera,
            self.settings.events.labels[0],
            sig.trigger_ts,
            frame.index,
            frame.captured_at or None,  # stamped when the trigger frame left the camera
            status="recording",
            clip_path=clip_rel,
            end_sent=0,
        )
        assert created == event_id
        self.events_started += 1
        clip = None
        if clip_rel is not None and self.clips.stream is None:
            log.warning("event %d: no video packet yet: no clip", event_id)
            clip_rel = None
            self.writer.update(event_id, clip_path=None)
        self._active = ActiveEvent(
            event_id,
            sig,
            None,
            clip_rel,
            EventStills(
                self.settings.thumb_width, self.settings.store_face_crops, self.settings.jpeg_quality
            ),
        )
        if clip_rel is not None:
            try:
                # opens the clip with the pre-roll: packets from the last keyframe at or before trigger - pre_roll
                clip = self._active.clip = self.clips.start(self.settings.data_dir / clip_rel, sig.trigger_ts)
            except (OSError, MuxerRefused) as exc:
                if not cuts_clip(exc):
                    raise
                if self.clips.clip is None and isinstance(exc, OSError):  # the file could not even be created
                    self.disk.degrade(Mode.SNAPSHOTS_ONLY, exc)
                    self._active.clip_rel = None
                    self.writer.update(event_id, clip_path=None)
                else:  # the disk filled (or the muxer refused a packet) while the pre-roll was written: salvage
                    self._active.clip = self.clips.clip
                    self._cut_clip(self._active, exc)
                clip = None
        self._notify(
            EventPhase.START, {"event_id": event_id, "start_ts": sig.trigger_ts, "frame": frame.index}
        )
        if clip is not None and clip.first_ts is not None:
            self.writer.update(event_id, clip_start_ts=clip.first_ts)
        fault_point("event.started")
        log.info(
            "event %d started (camera %s, trigger at %.2f s)", event_id, self.settings.camera, sig.trigger_ts
        )

    def _take_packets(self, until_ts: float, inclusive: bool = True) -> None:
        """Move the capture's packets up to ``until_ts`` into the ring and clip (never past the frame clock)."""
        for item in self.intake.pull(until_ts, inclusive):
            self._push(item)

    def _push(self, item: FeedItem) -> None:
        if isinstance(item, StreamStart):
            self._new_stream(item)
            return
        if self._resume_pending and self._resume_from is None:
            self._resume_from = item.ts
        try:
            self.clips.push(item)
        except (OSError, MuxerRefused) as exc:
            if not cuts_clip(exc) or self._active is None or self._active.clip is None:
                raise
            self._cut_clip(self._active, exc)

    def _new_stream(self, start: StreamStart) -> None:
        """The source reconnected (or its encoder restarted): an open clip ends here and the ring starts over;
        packets of the new stream cannot join the old ones (the parameter sets may differ)."""
        active = self._active
        if active is not None and active.clip is not None and self.clips.stream is not None:
            log.warning(
                "event %d: the source reconnected: its clip ends here; the event goes on in a new one",
                active.event_id,
            )
            self.clips_cut_by_reconnect += 1
            self.writer.update(active.event_id, **self._finalize_clip(active))
            self._resume_pending, self._resume_from = True, None
        self.clips.set_stream(start.info)

    def _split_for_new_stream(self, frame: Frame) -> None:
        """The event goes on after a reconnect cut its clip: its row ends here (``split``, as at ``max_length``)
        and a new row starts, whose clip holds the new stream from its first keyframe: a camera's glitch costs
        the moments of the outage, not the rest of the event. The old row keeps the statistics of its own
        frames (as of the last one before ``frame``); the new one counts its own from ``frame`` on."""
        active = self._active
        if active is None:
            return
        mx, mean, peak, best_ts = active.stats
        seq = active.start.seq
        self._finish(EventEnd(seq, frame.ts, active.last_ts, True, mx, mean, peak, best_ts), frame)
        self._begin(EventStart(seq, frame.ts, frame.ts), frame)
        if self._active is not None:
            self._active.own = RunningStats()

    def _cut_clip(self, active: ActiveEvent, exc: OSError | MuxerRefused) -> None:
        """A disk or muxer error cut the active event's clip: salvage it; a disk error also stops new clips."""
        assert active.clip is not None
        clip = active.clip
        active.clip = None
        self.clips.abort()
        salvage = salvage_cut_clip(clip, active.event_id)
        active.clip_unsettled = salvage is None
        if salvage == {}:  # nothing playable: no clip
            active.clip_rel = None
        values = dict(salvage or {})
        notes = [cut_note(exc), *([str(values.pop("note"))] if "note" in values else [])]
        self.writer.update(
            active.event_id, clip_path=active.clip_rel, clip_frames=None, note="; ".join(notes), **values
        )
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:  # the disk's: no clip until it recovers
            # (the muxer's refusal and a file-size limit are this clip's alone: the next event records one)
            self.disk.degrade(Mode.SNAPSHOTS_ONLY, exc)

    def _finish(self, sig: EventEnd, frame: Frame) -> None:
        """Close the active event: clip (fsync, rename, dir fsync), hash, snapshot, then the index row.

        The row is written last: a kill before it leaves a ``recording`` row whose clip recovery finishes.
        ``frame`` is the one the end came with (the last one for an end by time alone); the end's wall clock is
        read as of its capture, moved by where the end lies from it on the frame clock (as the start's is).
        """
        active = self._active
        self._resume_pending = False  # an event that ends is not resumed
        if active is None:
            return
        self._active = None
        values: dict[str, object] = {
            "end_ts": sig.end_ts,
            "end_wall": boot_clock_at(frame.captured_at or None).wall + (sig.end_ts - frame.ts),
            "end_frame": active.last_index,
        }
        status = "finalized"
        if active.clip is not None:
            values.update(self._finalize_clip(active))
        elif active.clip_rel is not None and not active.clip_done:
            status = "recovered"  # the clip was cut short by a disk error and salvaged
        if active.clip_unsettled:
            status = "recording"  # the .partial could not be salvaged: start-up recovery closes the row
        if self.mode != Mode.INDEX_ONLY:
            try:
                active.stills.write(self.settings.data_dir, active.event_id, values)
            except OSError as exc:
                if exc.errno not in DISK_ERRNOS:
                    raise
                self.disk.degrade(Mode.INDEX_ONLY, exc)
        fault_point("finish.snapshot")
        # a split-off row counts its own statistics: the event stage's span the whole event
        own = active.own is not None
        stats = active.stats if own else (sig.max_score, sig.mean_score, sig.peak_count, sig.best_ts)
        values.update(
            zip(("max_score", "mean_score", "peak_count", "best_ts"), stats, strict=True),
            status=status,
            degraded=None if self.mode == Mode.NORMAL else str(self.mode),
        )
        self.writer.update(active.event_id, **values)  # the commit point
        self.events_finalized += 1
        self._announce_ends()
        log.info("event %d finalized (%s)", active.event_id, values.get("clip_path") or "no clip")

    def _finalize_clip(self, active: ActiveEvent) -> dict[str, object]:
        """Close the event's clip (fsync, rename, dir fsync) and hash it; the index values it gives.

        Disk and muxer errors salvage the ``.partial``; other errors propagate (a clip that cannot be finalized is
        not swallowed). A clip without a single packet from a keyframe on is removed (no clip)."""
        assert active.clip is not None
        clip = active.clip
        try:
            final = self.clips.finish()
        except (OSError, MuxerRefused) as exc:
            if not cuts_clip(exc):
                raise
            self._cut_clip(active, exc)  # salvages the .partial
            return {}
        except ValueError as exc:  # nothing decodable was written: the .partial is gone
            log.warning("event %d: %s", active.event_id, exc)
            active.clip, active.clip_rel = None, None
            return {"clip_path": None}
        active.clip, active.clip_done = None, True
        values: dict[str, object] = dict(
            clip_path=active.clip_rel,
            clip_start_ts=clip.first_ts,
            clip_frames=clip.frames,
            **hash_values(final.final_path, active.event_id),  # a read error keeps the clip, unhashed
        )
        fault_point("finish.hashed")
        return values

    def _announce_ends(self) -> None:
        """Send ``end`` for every closed event whose end was not sent yet (live ends and ends closed by
        start-up recovery alike), then mark it sent. A kill in between sends it again: at least once."""
        for row in self.writer.unsent_ends():
            data = row.to_dict()
            del data["end_sent"]  # bookkeeping of this index, not part of the event
            self._notify(EventPhase.END, data)
            self.writer.update(row.id, end_sent=1)

    def _notify(self, kind: EventPhase, data: dict[str, Any]) -> None:
        """Tell listeners (MQTT) about an event. Runs after the index is written: a listener that fails is
        logged and does not touch the recording."""
        for listener in self.listeners:
            try:
                listener(kind, data)
            except Exception as exc:
                log.error("recorder: %s listener failed: %s", kind, exc)

    def _housekeeping(self) -> None:
        self.disk.check()
        if self.writer.pending and self.writer.flush():
            self._announce_ends()  # rows that waited for the disk are in: their ends can go out
