"""Pipeline throughput, with and without recording, vs the synchronous tutorial loop, measured in one run (a
benchmark, never a test).

Replays ``supervision_walking.mp4`` (1280x720, 341 frames, people in every frame: with ``--record`` one event
records throughout) at ``--threads`` interpreter threads (default: the number of cores) and prints:

* ``edgevision run`` detection only, as a replay runs by default (``runtime.parallel: auto``, and
  ``runtime.kernels: int8``: the model's checked int8 per-channel copy, ``edgevision/inference/requant.py``): one
  single-thread interpreter per thread, frames side by side, each frame's inference submitted by the capture
  thread, which demuxes and scales each frame straight to the model input (FFmpeg's scaler from YUV; no
  full-resolution BGR image is made);
* the same with one interpreter of every thread (how a live camera runs: each frame soonest);
* the same with ``--record``: packets through the feed into the pre-roll ring and the remuxed clip (issue 13's
  target: >= 0.95 x detection only);
* the synchronous tutorial loop as issue 13 names it (read, cvtColor, resize, invoke; the outputs parsed into
  detections, nothing drawn), on the model file as downloaded (target: detection only >= 1.2 x it), and
  detection only on that same file (``runtime.kernels: as-shipped``): what the pipeline design gives alone,
  and the old OpenCV capture path for reference;
* the raw invoke rates (no decode at all) of one interpreter of every thread and of the side-by-side ones:
  the ceilings, and the best of them against the tutorial loop: what detection only could reach were decoding
  and scaling free;
* the pre-roll ring's memory, and where the clip starts against trigger - pre_roll and the source's keyframes
  (the walking clip's event starts at its first frame, so an untimed pass with the recorder blind before
  ``--trigger-at`` (9 s) shows a later one);
* the machine's load average at the end (a shared machine's figures need it).

Variants are interleaved and the best of ``--repeat`` runs kept. ``--primitives`` adds the per-frame CPU costs
of the recording primitives (decode to model input, packet ring + remux vs JPEG ring + re-encode, the one encode
of a raw camera, MJPEG reduced decode, the privacy blur).

Usage: ``python bench/pipeline.py [--model NAME] [--threads N ...] [--video PATH] [--repeat K] [--primitives]
[--primitives-only] [--trigger-at S]`` (models from ``$EDGEVISION_MODELS_DIR``; fetched from ``$EDGEVISION_SHARED/models``).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import resource
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from edgevision.capture.runner import ReplayRunner
from edgevision.capture.sources import OpenCVSource
from edgevision.catalog import fetch_entry, load_catalog
from edgevision.config import load_config
from edgevision.detection.detector import FixedDetect
from edgevision.detection.factory import build_detector
from edgevision.detection.parallel import ParallelDetect
from edgevision.paths import default_models_dir
from edgevision.pipeline.loop import Pipeline

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("EDGEVISION_SHARED", REPO.parent / "shared"))


def ensure_models(name: str, dest: Path) -> None:
    cat = load_catalog()
    for entry in cat.files_for(name):
        fetch_entry(entry, dest, mirror=str(SHARED / "models"))


def decode_and_prepare(detector, video: Path) -> tuple[list[np.ndarray], float]:  # type: ignore[no-untyped-def]
    """Preprocessed tensors of every frame, and the CPU ms per frame that decoding + preprocessing cost."""
    cap = cv2.VideoCapture(str(video))
    tensors = []
    c0 = time.process_time()
    while True:
        ok, img = cap.read()
        if not ok:
            break
        tensors.append(detector.preprocess(img))
    cap.release()
    return tensors, (time.process_time() - c0) / max(1, len(tensors)) * 1e3


def raw_rate(detector, tensors: list[np.ndarray]) -> float:  # type: ignore[no-untyped-def]
    h = detector.handle
    for t in tensors[:5]:
        h.invoke_on(t)
    t0 = time.perf_counter()
    for t in tensors:
        h.invoke_on(t)
    return len(tensors) / (time.perf_counter() - t0)


def raw_side_by_side_rate(detectors, tensors: list[np.ndarray]) -> float:  # type: ignore[no-untyped-def]
    """Invokes per second of ``detectors`` each invoking its share of ``tensors`` on its own thread."""
    for d in detectors:
        for t in tensors[:3]:
            d.handle.invoke_on(t)
    shares = [tensors[k :: len(detectors)] for k in range(len(detectors))]

    def work(d, share) -> None:  # type: ignore[no-untyped-def]
        for t in share:
            d.handle.invoke_on(t)

    threads = [threading.Thread(target=work, args=(d, sh)) for d, sh in zip(detectors, shares, strict=True)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return len(tensors) / (time.perf_counter() - t0)


def pipeline_rate(make_step, video: Path, opencv: bool = False) -> float:  # type: ignore[no-untyped-def]
    """``edgevision run --video`` detection only: demux, frames scaled by FFmpeg straight to the model input on
    the capture thread (``opencv``: the old OpenCVSource path, full BGR then resize). ``make_step()`` gives the
    detect step: one interpreter (``FixedDetect``) or frames side by side (``ParallelDetect``, the default for
    a replay)."""
    from edgevision.capture.demux import DemuxSource
    from edgevision.capture.stream import PacketSource

    step = make_step()
    source = OpenCVSource(str(video)) if opencv else PacketSource(DemuxSource(video))
    runner = ReplayRunner(source, step.prepare)  # type: ignore[arg-type]
    pipe = Pipeline(runner, step, status_interval=1e9)  # closes the step at the end
    summary = pipe.run(threading.Event())
    return summary.frames_processed / summary.seconds


def record_rate(make_step, video: Path, data: Path, pre_roll: float = 3.0, trigger_at: float | None = None):  # type: ignore[no-untyped-def]
    """``edgevision run --video --record``: the same pipeline, the source's packets to the recorder through the
    feed (pre-roll ring, clip remuxed); returns (fps, ring stats, index rows of the events).

    ``trigger_at``: the recorder sees no detection before that media time, so the event starts there (on the
    walking clip people are in every frame, which puts the trigger at its first frame and proves nothing about
    where a clip starts)."""
    from edgevision.capture.demux import DemuxSource
    from edgevision.capture.feed import PacketFeed
    from edgevision.capture.stream import PacketSource
    from edgevision.events.state import EventSettings
    from edgevision.recorder.index import EventIndex
    from edgevision.recorder.recorder import Recorder
    from edgevision.recorder.retention import RetentionPolicy
    from edgevision.recorder.state import RecorderSettings

    step = make_step()
    feed = PacketFeed(blocking=True)
    runner = ReplayRunner(PacketSource(DemuxSource(video), feed), step.prepare)  # type: ignore[arg-type]
    runner.on_stop.append(feed.close)
    settings = RecorderSettings(
        data_dir=data,
        camera="bench",
        events=EventSettings(post_roll=5.0),
        pre_roll=pre_roll,
        retention=RetentionPolicy(max_age_s=None, min_free_bytes=None),
    )
    rec = Recorder(settings, blocking=True, packets=feed)
    ring = []

    class RingProbe:  # the ring's memory while the event runs (it is emptied of nothing during an event)
        def on_result(self, result) -> None:  # type: ignore[no-untyped-def]
            if result.frame.index % 25 == 0:
                ring.append(rec.clips.stats())

        def close(self) -> None:
            pass

    class Later:  # the recorder as a sink, blind before trigger_at
        def on_result(self, result) -> None:  # type: ignore[no-untyped-def]
            if trigger_at is not None and result.frame.ts < trigger_at:
                result = dataclasses.replace(result, detections=[])
            rec.on_result(result)

        def close(self) -> None:
            rec.close()

    pipe = Pipeline(
        runner, step, [Later() if trigger_at is not None else rec, RingProbe()], status_interval=1e9
    )
    summary = pipe.run(threading.Event())
    index = EventIndex(data)
    rows = [r.to_dict() for r in index.list()]
    index.close()
    return summary.frames_processed / summary.seconds, max(ring, key=lambda r: r.memory_bytes), rows


def event_line(what: str, ev: dict, keys: list[float], pre_roll: float) -> str:  # type: ignore[type-arg]
    """Where an event's clip starts against trigger - pre_roll and the source's keyframes (issue 13's rule: at
    the last keyframe at or before it)."""
    want = max((k for k in keys if k <= ev["start_ts"] - pre_roll), default=keys[0])
    ok = "as the rule says" if abs(ev["clip_start_ts"] - want) < 1e-3 else "NOT at that keyframe"
    return (
        f"{what}: trigger {ev['start_ts']:.2f} s, trigger - pre_roll {ev['start_ts'] - pre_roll:.2f} s, clip starts "
        f"{ev['clip_start_ts']:.2f} s (last keyframe at or before: {want:.2f} s, {ok}; source keyframes "
        f"{', '.join(f'{k:.2f}' for k in keys)}); clip {ev['clip_frames']} packets"
    )


def keyframes(video: Path) -> list[float]:
    from edgevision.capture.demux import DemuxSource

    src = DemuxSource(video)
    src.open()
    out = []
    while (item := src.read(decode=False)) is not None:
        if item.packet is not None and item.packet.keyframe:
            out.append(item.packet.ts)
    src.close()
    return out


def tutorial_rate(detector, video: Path) -> float:  # type: ignore[no-untyped-def]
    cap = cv2.VideoCapture(str(video))
    n = 0
    t0 = time.perf_counter()
    w, h = detector.input_size
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        tensor = cv2.resize(rgb, (w, h))[np.newaxis]
        detector.parse(detector.handle.run(tensor))
        n += 1
    cap.release()
    return n / (time.perf_counter() - t0)


def _cpu_ms(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    """CPU ms per item of ``fn()`` processing ``n`` items."""
    c0 = time.process_time()
    fn()
    return (time.process_time() - c0) / max(1, n) * 1e3


def primitive_costs(video: Path, size: tuple[int, int] = (300, 300), pre_roll_s: float = 3.0) -> None:
    """Issue 13's building blocks, measured in one run on ``video`` (CPU ms per frame, best of 2)."""
    import av

    from edgevision.capture.demux import DecodedFrame, DemuxSource, FrameSkip
    from edgevision.capture.encoder import FrameEncoder, MjpegDecoder, decode_jpeg_for_model
    from edgevision.face.privacy import blur_region
    from edgevision.recorder.clip import ClipWriter
    from edgevision.recorder.packet_ring import PacketRing
    from edgevision.recorder.remux import PacketClipWriter
    from edgevision.recorder.ring import PreRollRing

    n = int(av.open(str(video)).streams.video[0].frames) or 1
    print(f"-- primitives on {video.name} ({n} frames), CPU ms per frame, one run")

    def opencv_path(convert: bool) -> None:
        cap = cv2.VideoCapture(str(video))
        while True:
            ok, img = cap.read()
            if not ok:
                break
            if convert:
                cv2.resize(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), size, interpolation=cv2.INTER_LINEAR)
        cap.release()

    def demux_path(convert: bool, threads: int, skip: str = "NONE") -> None:
        src = DemuxSource(video, decoder_threads=threads)
        src.open()
        src.set_skip(FrameSkip[skip])
        while (item := src.read()) is not None:
            for f in item.frames:
                if convert:
                    f.model_input(*size)
        src.close()

    # One decoder thread on both sides, so CPU time compares work, not thread scheduling on a busy machine;
    # the two paths alternate and the best of 3 is kept.
    saved = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS")
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "threads;1"
    runs: dict[str, list[float]] = {"cv": [], "av": [], "dec": [], "nonref": []}
    try:
        for _ in range(3):
            runs["cv"].append(_cpu_ms(lambda: opencv_path(True), n))
            runs["av"].append(_cpu_ms(lambda: demux_path(True, 1), n))
            runs["dec"].append(_cpu_ms(lambda: demux_path(False, 1), n))
            runs["nonref"].append(_cpu_ms(lambda: demux_path(True, 1, "NONREF"), n))
    finally:
        if saved is None:
            del os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"]
        else:
            os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = saved
    cv_ms, av_ms, dec_ms, nonref_ms = (min(runs[k]) for k in ("cv", "av", "dec", "nonref"))
    # The conversion alone, on the same decoded frames: what differs between the two paths.
    with av.open(str(video)) as probe:
        raw = list(itertools.islice(probe.decode(video=0), 100))

    def opencv_conversion() -> None:
        for f in raw:
            bgr = f.to_ndarray(format="bgr24")
            cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), size, interpolation=cv2.INTER_LINEAR)

    def scaler_conversion() -> None:
        for i, f in enumerate(raw):
            DecodedFrame(f, 0.0, i).model_input(*size)

    conv_cv = min(_cpu_ms(opencv_conversion, len(raw)) for _ in range(5))
    conv_av = min(_cpu_ms(scaler_conversion, len(raw)) for _ in range(5))
    print("decode -> model input, one decoder thread each:")
    print(f"  OpenCV read + cvtColor + resize to {size[0]}x{size[1]}   : {cv_ms:6.2f}")
    print(
        f"  PyAV decode + FFmpeg scaler (area) from YUV : {av_ms:6.2f}   ratio {av_ms / cv_ms:.2f}   (decode alone {dec_ms:.2f})"
    )
    print(
        f"  conversion only: YUV->BGR->RGB->resize {conv_cv:5.2f}  vs scaler {conv_av:5.2f}   ratio {conv_av / conv_cv:.2f}"
    )
    print(
        f"  decoder skipping non-reference frames       : {nonref_ms:6.2f} per packet (every packet still kept)"
    )

    src = DemuxSource(video)
    src.open()
    packets, images = [], []
    while (item := src.read()) is not None:
        if item.packet is not None:
            packets.append(item.packet)
        images += [f.bgr() for f in item.frames]
    info = src.stream_info
    src.close()
    assert info is not None
    with tempfile.TemporaryDirectory() as tmp:
        ring = PacketRing(pre_roll_s, 64 << 20)
        push_ms = _cpu_ms(lambda: [ring.push(p) for p in packets], len(packets))
        packet_mem = ring.stats()

        def remux() -> None:
            w = PacketClipWriter(Path(tmp) / "packets.mp4", info)
            for p in packets:
                w.write(p)
            w.finalize()

        remux_ms = min(_cpu_ms(remux, len(packets)) for _ in range(2))
        jring = PreRollRing(pre_roll_s, 64 << 20)
        jpeg_ms = _cpu_ms(lambda: [jring.push(i / 25.0, i, img) for i, img in enumerate(images)], len(images))
        jpeg_bytes = jring.bytes
        held = jring.since(-1.0)
        jdec_ms = _cpu_ms(lambda: [rf.decode() for rf in held], len(held))

        def reencode() -> None:
            w = ClipWriter(Path(tmp) / "reencode.mp4", 25.0, "libx264")
            for i, img in enumerate(images):
                w.write(img, i / 25.0)
            w.finalize()

        x264_ms = _cpu_ms(reencode, len(images))
        enc = FrameEncoder(images[0].shape[1], images[0].shape[0], 25.0, "libx264")
        once_ms = _cpu_ms(lambda: [enc.encode(img, i / 25.0) for i, img in enumerate(images)], len(images))
    print(f"record, idle  : packet ring push {push_ms:6.3f}  vs JPEG into the ring {jpeg_ms:6.2f}")
    print(
        f"record, event : packet remux     {remux_ms:6.3f}  vs libx264 veryfast re-encode {x264_ms:6.2f}"
        f" (+ {jdec_ms:.2f} per pre-roll JPEG decoded)   ratio {remux_ms / x264_ms:.3f}"
    )
    print(f"raw camera    : one continuous encode (libx264 ultrafast, zerolatency) {once_ms:6.2f}")
    print(
        f"pre-roll {pre_roll_s:.0f} s : packet ring {packet_mem.payload_bytes / 1e6:5.2f} MB payload"
        f" ({packet_mem.memory_bytes / 1e6:.2f} MB with overhead, {packet_mem.span_s:.1f} s held, whole GOPs)"
        f" vs JPEG ring {jpeg_bytes / 1e6:5.2f} MB"
    )

    jpegs = [cv2.imencode(".jpg", img)[1].tobytes() for img in images[:100]]
    full_ms = _cpu_ms(
        lambda: [cv2.resize(cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR), size) for j in jpegs],
        len(jpegs),
    )
    red_ms = _cpu_ms(lambda: [cv2.resize(decode_jpeg_for_model(j, size), size) for j in jpegs], len(jpegs))
    mj = MjpegDecoder()
    yuv_ms = _cpu_ms(lambda: [mj.decode(j) for j in jpegs], len(jpegs))
    print(
        f"MJPEG -> model: full decode + resize {full_ms:6.2f}  vs reduced-scale decode {red_ms:6.2f}   ratio {red_ms / full_ms:.2f}"
        f"   (FFmpeg YUV decode for the encoder: {yuv_ms:.2f})"
    )

    frame = images[len(images) // 2]
    face = 300
    y1, x1 = 360 - face // 2 - int(0.4 * face), 640 - face // 2 - int(0.4 * face)
    side = face + 2 * int(0.4 * face)  # the face box grown by the privacy margin
    roi = frame[y1 : y1 + side, x1 : x1 + side]

    def old_blur() -> None:  # what privacy.py did before: a kernel as large as the face, twice, at full size
        k = max(3, side | 1)
        cv2.GaussianBlur(cv2.GaussianBlur(roi, (k, k), 0), (k, k), 0)

    old_ms = _cpu_ms(old_blur, 1)
    new_ms = min(_cpu_ms(lambda: blur_region(roi), 1) for _ in range(5))
    print(
        f"privacy blur, one {face}-px face on a 720p frame: before {old_ms:8.1f}  after {new_ms:6.2f}   ratio {old_ms / new_ms:,.0f}x"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="ssd_mobilenet_v1_coco_quant")
    ap.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[os.cpu_count() or 1],
        help="interpreter thread counts to measure (default: the number of cores)",
    )
    ap.add_argument("--pre-roll", type=float, default=3.0, help="pre-roll seconds of the --record run")
    ap.add_argument(
        "--trigger-at",
        type=float,
        default=9.0,
        help="media time of the later trigger in the untimed pre-roll pass",
    )
    ap.add_argument("--primitives", action="store_true", help="also the recording/blur primitive costs")
    ap.add_argument("--video", type=Path, default=SHARED / "media" / "video" / "supervision_walking.mp4")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each measurement; the best is kept")
    ap.add_argument("--primitives-only", action="store_true", help="only the recording/blur primitive costs")
    args = ap.parse_args()
    if args.primitives_only:
        primitive_costs(args.video)
        return
    models = default_models_dir()
    ensure_models(args.model, models)
    cores = os.cpu_count() or 1
    print(f"model {args.model} on {args.video.name}, {cores} CPU core(s)")
    for threads in args.threads:
        cfg = load_config(
            None, {"detector.model": args.model, "runtime.threads": threads, "models.dir": str(models)}
        )
        detector = build_detector(cfg)
        # what `edgevision run --video` does by default (runtime.parallel: auto): one single-thread interpreter
        # per thread, frames side by side; and the one interpreter with every thread, as a live camera runs
        n, per = max(1, threads), 1
        one = cfg.model_copy(update={"runtime": cfg.runtime.model_copy(update={"threads": per})})
        side_by_side = [build_detector(one) for _ in range(n)]
        # the downloaded file as the tutorial loop loads it (runtime.kernels: as-shipped), for the tutorial loop
        # and for the pipeline design alone; edgevision runs the checked int8 per-channel copy by default
        as_shipped = {"runtime": cfg.runtime.model_copy(update={"kernels": "as-shipped"})}
        shipped = build_detector(cfg.model_copy(update=as_shipped))
        shipped_one = one.model_copy(
            update={"runtime": one.runtime.model_copy(update={"kernels": "as-shipped"})}
        )
        side_by_side_shipped = [build_detector(shipped_one) for _ in range(n)]
        assert detector.handle.kernel_path is not None and shipped.handle.kernel_path is None

        def parallel(ds=side_by_side):  # type: ignore[no-untyped-def]
            return ParallelDetect(ds) if len(ds) > 1 else FixedDetect(ds[0])

        def parallel_shipped(ds=side_by_side_shipped):  # type: ignore[no-untyped-def]
            return ParallelDetect(ds) if len(ds) > 1 else FixedDetect(ds[0])

        def fixed(d=detector):  # type: ignore[no-untyped-def]
            return FixedDetect(d)

        det, one_rate, rec, tut, old, det_shipped = [], [], [], [], [], []
        ring = rows = None

        def run_record() -> float:
            nonlocal ring, rows
            with tempfile.TemporaryDirectory() as tmp:
                fps, ring, rows = record_rate(parallel, args.video, Path(tmp) / "data", args.pre_roll)
            return fps

        variants = [
            (det, lambda: pipeline_rate(parallel, args.video)),
            (rec, run_record),
            (tut, lambda d=shipped: tutorial_rate(d, args.video)),
            (det_shipped, lambda: pipeline_rate(parallel_shipped, args.video)),
            (one_rate, lambda: pipeline_rate(fixed, args.video)),
            (old, lambda: pipeline_rate(fixed, args.video, opencv=True)),
        ]
        # Interleaved, and the order rotated every round, so a load change on a shared machine (or a warm cache)
        # favours no variant.
        for k in range(args.repeat):
            for out, fn in variants[k % len(variants) :] + variants[: k % len(variants)]:
                out.append(fn())
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        tensors, capture_cpu_ms = decode_and_prepare(detector, args.video)
        raw = max(raw_rate(detector, tensors) for _ in range(args.repeat))
        raw_sbs = max(raw_side_by_side_rate(side_by_side, tensors) for _ in range(args.repeat))
        raw_shipped = max(raw_rate(shipped, tensors) for _ in range(args.repeat))
        raw_sbs_shipped = max(
            raw_side_by_side_rate(side_by_side_shipped, tensors) for _ in range(args.repeat)
        )
        d, r, t, o, one1 = max(det), max(rec), max(tut), max(old), max(one_rate)
        ds = max(det_shipped)
        print(
            f"-- {threads} interpreter thread(s){' = cores' if threads == cores else ''}, {len(tensors)} frames, best of {args.repeat}"
        )
        print(f"raw invoke rate, 1 interpreter of {threads} threads : {raw:7.1f} /s")
        print(f"raw invoke rate, {n} of {per} thread side by side : {raw_sbs:7.1f} /s")
        print(
            f"  the file as shipped (uint8 kernels): {raw_shipped:7.1f} /s and {raw_sbs_shipped:7.1f} /s   "
            f"(int8 copy / as shipped {max(raw, raw_sbs) / max(raw_shipped, raw_sbs_shipped):.2f})"
        )
        print(
            f"edgevision run, detection only     : {d:7.1f} fps   ({n} interpreter(s) of {per} thread, side by side: "
            f"the replay default)"
        )
        print(
            f"edgevision run --record            : {r:7.1f} fps   vs detection only {r / d:.3f}   (target >= 0.95)"
        )
        print(
            f"synchronous tutorial loop          : {t:7.1f} fps   detection only vs tutorial {d / t:.2f}   (target >= 1.2)"
        )
        print(
            f"  the same, model file as shipped  : {ds:7.1f} fps   vs tutorial {ds / t:.2f}   (the pipeline design "
            "alone: same file as the tutorial loop)"
        )
        print(
            f"  one interpreter of {threads} threads       : {one1:7.1f} fps   vs tutorial {one1 / t:.2f}   (a live camera's "
            "default; vs raw invoke "
            f"{one1 / raw:.2f})"
        )
        print(f"  (old OpenCV capture path          : {o:7.1f} fps   vs tutorial {o / t:.2f})")
        print(
            f"ceiling (best raw invoke, no decode): {max(raw, raw_sbs):7.1f} /s   vs tutorial {max(raw, raw_sbs) / t:.2f}"
            f"   (detection only cannot beat it; as shipped {max(raw_shipped, raw_sbs_shipped) / t:.2f})"
        )
        print(
            f"all runs (fps): detect {fmt(det)}  record {fmt(rec)}  tutorial {fmt(tut)}  one {fmt(one_rate)}  "
            f"opencv {fmt(old)}  detect-as-shipped {fmt(det_shipped)}"
        )
        if ring is not None:
            print(f"{ring.line()}")
        keys = keyframes(args.video)
        if rows:
            print(event_line("event", rows[0], keys, args.pre_roll))
        # once more, untimed, the recorder blind before trigger_at: where a later trigger's clip starts
        with tempfile.TemporaryDirectory() as tmp:
            _, _, late = record_rate(parallel, args.video, Path(tmp) / "data", args.pre_roll, args.trigger_at)
        if late:
            print(
                event_line(
                    f"event, no person seen before {args.trigger_at:.1f} s", late[0], keys, args.pre_roll
                )
            )
        print(f"decode + preprocess (OpenCV)       : {capture_cpu_ms:7.2f} CPU ms/frame")
        print(f"peak RSS                           : {rss_mb:7.1f} MiB")
    print(f"machine load (uptime): {os.getloadavg()}")
    if args.primitives:
        primitive_costs(args.video)


def fmt(values: list[float]) -> str:
    return "/".join(f"{v:.1f}" for v in values)


if __name__ == "__main__":
    main()
