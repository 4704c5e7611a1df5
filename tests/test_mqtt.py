"""MQTT like Frigate and Home Assistant discovery: the event payload, topics, switches, snapshot and counts —
as pure units, against a real mosquitto in-process, and end to end with `edgevision run`."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import cv2
import numpy as np
import pytest
from browser import free_port
from conftest import WALKING
from media import splice
from mqtt_helpers import MOSQUITTO, Broker, FakePublisher, Subscriber

from edgevision.capture.sources import read_frames
from edgevision.config import MqttConfig, load_config
from edgevision.detection.detector import FixedDetect
from edgevision.detection.factory import build_detector
from edgevision.events.stage import EventStage
from edgevision.events.state import EventSettings
from edgevision.naming import camera_name, topic_name
from edgevision.pipeline.control import Controls, RecordingGate
from edgevision.pipeline.loop import Pipeline
from edgevision.publish.factory import StatsPublisher, build_sharing
from edgevision.publish.hass import discovery_configs
from edgevision.publish.mqtt import MqttPublisher, Topics
from edgevision.publish.mqtt_events import EVENT_KEYS, EventRelay
from edgevision.publish.outbox import Outbox
from edgevision.publish.presence import Presence
from edgevision.recorder.index import EventIndex
from edgevision.results import DetectMode, FrameResult, Latency
from edgevision.results.detection import BBox, Detection
from edgevision.results.events import EventPhase
from edgevision.results.frame import Frame

needs_broker = pytest.mark.skipif(not MOSQUITTO, reason="mosquitto not installed (CI installs it)")
TOPICS = Topics("edgevision", "porch")


def _staged(presence: Presence, result: FrameResult) -> FrameResult:
    """``result`` as the pipeline hands it to sinks: after the event stage presence reads."""
    presence.events.process(result)
    return result


# -- the camera name ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "name", "topic"),
    [
        ({"recorder.camera": "Front door"}, "Front door", "Front_door"),
        ({"recorder.camera": "a/b+c#"}, "a/b+c#", "a_b_c"),
        ({"source.kind": "camera", "source.camera": 2}, "camera2", "camera2"),
        ({"source.kind": "picamera2"}, "picamera20", "picamera20"),
        ({"source.kind": "video", "source.path": "/x/hall way.mp4"}, "hall way", "hall_way"),
        (
            {"source.kind": "url", "source.url": "rtsp://user:secret@10.0.0.5:554/live/"},
            "10.0.0.5_554_live",
            "10_0_0_5_554_live",
        ),
        (
            {
                "source.kind": "url",
                "source.url": "rtsp://user:secret@10.0.0.5:554/live",
                "recorder.camera": "gate",
            },
            "gate",
            "gate",
        ),
    ],
)
def test_one_camera_name_for_index_topics_and_device(
    overrides: dict[str, Any], name: str, topic: str
) -> None:
    cfg = load_config(None, overrides)
    assert camera_name(cfg) == name and topic_name(name) == topic
    assert "secret" not in camera_name(cfg)  # a stream's credentials never become a name


# -- the event payload -------------------------------------------------------------------------------------
def _person(score: float = 0.9) -> Detection:
    return Detection("person", 0, score, BBox(0.3, 0.2, 0.5, 0.9))


def _result(i: int, persons: int, fps: float = 10.0) -> FrameResult:
    img = np.full((120, 160, 3), 60, np.uint8)
    dets = [_person(0.6 + 0.01 * (i % 30)) for _ in range(persons)]
    return FrameResult(Frame(img, i / fps, i, "test"), dets, Latency(total=5.0), "m", rung="m@300")


def _messages(pub: FakePublisher) -> list[dict[str, Any]]:
    return [json.loads(p) for t, p, _ in pub.queued if t == "edgevision/events"]


def _check_shape(messages: list[dict[str, Any]]) -> None:
    assert messages
    for m in messages:
        assert set(m) == {"type", "id", "camera", "sent_at", "before", "after"}
        assert m["type"] in ("new", "update", "end")
        assert list(m["before"]) == list(m["after"]) == list(EVENT_KEYS)  # same keys in every message
        assert m["id"] == m["after"]["id"] == m["before"]["id"]


def test_recorded_events_carry_the_index_row_and_a_stable_id(tmp_path: Path) -> None:
    index = EventIndex(tmp_path)
    pub = FakePublisher(TOPICS)
    relay = EventRelay(pub, rows=lambda i: r.to_dict() if (r := index.get(i)) else None)
    eid = index.create("Porch cam", "person", 1.0, 10)
    relay.recorder_event(EventPhase.START, {"event_id": eid, "start_ts": 1.0, "frame": 10})
    relay.recorder_event(EventPhase.UPDATE, {"event_id": eid, "ts": 2.0, "max_score": 0.8, "peak_count": 2})
    index.update(
        eid,
        end_ts=5.0,
        end_wall=time.time(),
        clip_path="clips/1.mp4",
        snapshot_path="s/1.jpg",
        max_score=0.9,
        peak_count=3,
        status="finalized",
    )
    row = index.get(eid)
    assert row is not None
    relay.recorder_event(EventPhase.END, row.to_dict())
    new, update, end = msgs = _messages(pub)
    _check_shape(msgs)
    assert [m["type"] for m in msgs] == ["new", "update", "end"]
    assert len({m["id"] for m in msgs}) == 1 and new["id"].endswith("-porch")
    assert (
        new["before"] == new["after"]
        and update["before"] == new["after"]
        and end["before"] == update["after"]
    )
    assert new["after"]["active"] and not new["after"]["has_clip"] and new["after"]["end_time"] is None
    assert update["after"]["top_score"] == 0.8 and update["after"]["peak_count"] == 2
    a = end["after"]
    assert a["event_id"] == eid and a["index"]["id"] == eid and a["index"]["camera"] == "Porch cam"
    assert not a["active"] and a["has_clip"] and a["has_snapshot"] and a["status"] == "finalized"
    assert a["top_score"] == 0.9 and a["end_time"] == row.end_wall and a["camera"] == "porch"
    # An event ended by start-up recovery (no new/update in this run) has the same shape and id.
    relay2 = EventRelay(pub)
    relay2.recorder_event(EventPhase.END, {**row.to_dict(), "status": "recovered"})
    again = _messages(pub)[-1]
    _check_shape([again])
    assert again["id"] == new["id"] and again["before"] == again["after"]
    index.close()


def test_without_a_recorder_presence_publishes_events_counts_occupancy_and_snapshot() -> None:
    pub = FakePublisher(TOPICS)
    relay = EventRelay(pub)
    settings = EventSettings(post_roll=1.0, trigger_frames=2, window_frames=3)
    presence = Presence(
        pub, relay, EventStage(settings), emit_events=True, count_interval=0.0, snapshot_interval=0.05
    )
    plan = [0] * 5 + [2] * 30 + [0] * 20 + [1] * 10  # two visits; the second still there at the end
    for i, n in enumerate(plan):
        presence.on_result(_staged(presence, _result(i, n)))
        time.sleep(0.002)
    presence.close()
    msgs = _messages(pub)
    _check_shape(msgs)
    types = [m["type"] for m in msgs]
    assert types[0] == "new" and types.count("new") == types.count("end") == 2 and "update" in types
    first_end = next(m for m in msgs if m["type"] == "end")
    assert first_end["after"]["peak_count"] == 2 and first_end["after"]["index"] is None
    assert first_end["after"]["status"] == "not-recorded" and first_end["after"]["end_time"] is not None
    assert len({m["id"] for m in msgs}) == 2
    occupancy = [p for t, p, retain in pub.queued if t == "edgevision/porch/person/occupancy" and retain]
    assert occupancy == [b"OFF", b"ON", b"OFF", b"ON", b"OFF"]  # OFF first: see the test below
    counts = [int(v) for t, v in pub.states if t == "edgevision/porch/person"]
    assert 2 in counts and 1 in counts and counts[-1] == 0
    snaps = [v for t, v in pub.states if t == "edgevision/porch/person/snapshot"]
    decoded = cv2.imdecode(np.frombuffer(snaps[-1], np.uint8), cv2.IMREAD_COLOR) if snaps else None
    assert decoded is not None and decoded.shape == (120, 160, 3)


def test_an_event_split_at_max_length_stays_occupied() -> None:
    pub = FakePublisher(TOPICS)
    settings = EventSettings(post_roll=0.5, max_length=2.0)
    presence = Presence(pub, EventRelay(pub), EventStage(settings), emit_events=True)
    for i, n in enumerate([1] * 50 + [0] * 10):  # 5 s of a person at 10 fps: split twice
        presence.on_result(_staged(presence, _result(i, n)))
    presence.close()
    msgs = _messages(pub)
    _check_shape(msgs)
    assert [m["type"] for m in msgs if m["type"] != "update"] == ["new", "end"] * 3
    assert len({m["id"] for m in msgs}) == 3
    assert [p for t, p, _ in pub.queued if t.endswith("/occupancy")] == [b"OFF", b"ON", b"OFF"]


@pytest.mark.parametrize("recording", [False, True])
def test_a_new_run_first_clears_the_occupancy_a_killed_run_left_on(recording: bool) -> None:
    """Occupancy is retained: a run killed during an event (power cut, OOM, SIGKILL) left ON at the broker, and
    without --record no recovery closed it, so Home Assistant showed the room occupied again as soon as the
    restarted run said 'online', until the next event ended. A run starts with OFF queued (nobody can be seen yet:
    an event needs trigger_frames first)."""
    pub = FakePublisher(TOPICS)
    presence = Presence(
        pub, EventRelay(pub), EventStage(EventSettings(post_roll=0.5)), emit_events=not recording
    )
    assert pub.queued == [("edgevision/porch/person/occupancy", b"OFF", True)]
    presence.close()


def test_a_new_run_first_zeroes_the_counts_a_killed_run_left() -> None:
    """Counts are retained too: a killed run left e.g. '2' people, and a restarted run whose camera was not back
    yet (no frame, so no count) kept showing them in Home Assistant for as long as the source was absent."""
    pub = FakePublisher(TOPICS)
    settings = EventSettings(post_roll=0.5, labels=("person", "car"))
    presence = Presence(pub, EventRelay(pub), EventStage(settings), emit_events=True)
    assert pub.states == [("edgevision/porch/person", b"0"), ("edgevision/porch/car", b"0")]
    presence.close()


def test_recorder_present_presence_leaves_events_to_it() -> None:
    pub = FakePublisher(TOPICS)
    presence = Presence(pub, EventRelay(pub), EventStage(EventSettings(post_roll=0.5)), emit_events=False)
    for i, n in enumerate([1] * 10 + [0] * 10):
        presence.on_result(_staged(presence, _result(i, n)))
    presence.close()
    assert _messages(pub) == []
    assert [p for t, p, _ in pub.queued] == [b"OFF", b"ON", b"OFF"]


# -- the switches in the pipeline --------------------------------------------------------------------------
def test_controls_are_thread_safe_and_tell_listeners() -> None:
    c = Controls(detect=True, recordings=False)
    heard: list[tuple[str, bool]] = []
    c.listeners.append(lambda n, on: heard.append((n, on)))
    threads = [threading.Thread(target=c.set, args=("detect", i % 2 == 0)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(heard) == 50 and heard[-1] == ("detect", c.detect)  # the last heard is the state in force
    c.set("recordings", True)
    assert c.recordings and heard[-1] == ("recordings", True)
    with pytest.raises(KeyError):
        c.set("lights", True)


class _Collect:
    def __init__(self) -> None:
        self.results: list[FrameResult] = []

    def on_result(self, result: FrameResult) -> None:
        self.results.append(result)

    def close(self) -> None:
        pass


def test_recording_switch_hides_detections_from_the_recorder_only() -> None:
    c = Controls(recordings=True)
    inner = _Collect()
    gate = RecordingGate(inner, c)
    gate.on_result(_result(0, 2))
    c.set("recordings", False)
    r = _result(1, 2)
    gate.on_result(r)
    assert [len(x.detections) for x in inner.results] == [2, 0] and len(
        r.detections
    ) == 2  # others still see them


def test_detection_switch_skips_the_detector(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    detector = build_detector(load_config(None, {"models.dir": str(models_dir)}))
    calls = []
    invoke = detector.handle.invoke

    def counted() -> None:
        calls.append(1)
        invoke()

    monkeypatch.setattr(detector.handle, "invoke", counted)
    c = Controls()
    pipeline = Pipeline(None, FixedDetect(detector), controls=c)  # type: ignore[arg-type]
    image = read_frames(str(WALKING), 1)[0]
    on = pipeline.process(Frame(image, 0.0, 0, "t"))
    c.set("detect", False)
    off = pipeline.process(Frame(image, 0.04, 1, "t"))
    assert any(d.label == "person" for d in on.detections) and len(calls) == 1
    assert off.detections == [] and off.mode is DetectMode.OFF and len(calls) == 1
    c.set("detect", True)
    assert pipeline.process(Frame(image, 0.08, 2, "t")).detections and len(calls) == 2


# -- against a real broker ---------------------------------------------------------------------------------
@needs_broker
def test_discovery_removes_the_entities_of_labels_no_longer_recorded(tmp_path: Path) -> None:
    """A label taken out of recorder.labels left its count sensor announced (retained) for good: Home Assistant
    kept an entity nothing updates. The run removes this device's retained configs it does not announce, and only
    those."""
    broker = Broker(tmp_path)
    sub = Subscriber(broker.port)
    stale = "homeassistant/sensor/edgevision_porch/car_count/config"
    other = "homeassistant/sensor/edgevision_garage/car_count/config"  # another camera's: left alone
    for topic in (stale, other):
        sub.publish(topic, json.dumps({"name": "Car count"}), retain=True)
    sub.wait(lambda: sub.last(stale) is not None and sub.last(other) is not None)  # retained, and seen here
    configs = discovery_configs(TOPICS, "porch", ["person"], ())
    config = MqttConfig(host="127.0.0.1", port=broker.port, reconnect_max_s=1, drain_timeout_s=10)
    pub = MqttPublisher(config, Outbox(tmp_path / "o.db", 100), TOPICS, discovery=configs)
    try:
        sub.wait(lambda: sub.last(stale) == b"")
        sub.wait(lambda: all(sub.last(t) is not None for t, _ in configs))
    finally:
        pub.close()
        sub.close()
    announced = [(t, p) for t, p in configs if p is not None]  # None: a switch this run removes itself
    late = Subscriber(broker.port, client_id="late")
    try:
        late.wait(lambda: late.last(other) is not None and all(late.last(t) for t, _ in announced))
        time.sleep(0.5)
        assert late.last(stale) is None  # no retained config left: the entity is gone
        assert all(json.loads(late.last(t) or b"") == p for t, p in announced)  # its own are not touched
    finally:
        late.close()
        broker.stop()  # (it was left running: one mosquitto process per run of this test)


@needs_broker
def test_two_devices_at_one_camera_name_say_so_and_keep_each_others_entities(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two Pis left at the default name (both ``camera0``) merged into one Home Assistant device: with one
    client id they knocked each other off the broker in turn, and each removed the other's entities as "no
    longer announced". Now their client ids differ, both log the clash, and each keeps to its own configs."""
    broker = Broker(tmp_path)
    config = MqttConfig(host="127.0.0.1", port=broker.port, reconnect_max_s=1, drain_timeout_s=10)
    b_configs = discovery_configs(TOPICS, "porch", ["person", "car"], (), device_id="bbbbbbbbbbbb")
    a_configs = discovery_configs(TOPICS, "porch", ["person"], (), device_id="aaaaaaaaaaaa")
    car = "homeassistant/sensor/edgevision_porch/car_count/config"
    sub = Subscriber(broker.port)
    b = MqttPublisher(config, Outbox(tmp_path / "b.db", 100), TOPICS, b_configs, device="bbbbbbbbbbbb")
    a = None
    try:
        sub.wait(lambda: sub.last(car) is not None)
        caplog.set_level(logging.ERROR, logger="edgevision.publish.mqtt")
        a = MqttPublisher(config, Outbox(tmp_path / "a.db", 100), TOPICS, a_configs, device="aaaaaaaaaaaa")
        sub.wait(lambda: a is not None and a.clashes == {"bbbbbbbbbbbb"} and b.clashes == {"aaaaaaaaaaaa"})
        said = [
            r.getMessage() for r in caplog.records if "also publishes as camera 'porch'" in r.getMessage()
        ]
        assert len(said) == 2, said
        assert any("device bbbbbbbbbbbb" in m for m in said) and any("device aaaaaaaaaaaa" in m for m in said)
        time.sleep(1.5)  # a's retained-config subscription has long been answered; a knock-off would show now
        assert a._links == 1 and b._links == 1  # neither was disconnected by the other's client id
        assert sub.last(car) and json.loads(sub.last(car) or b"")["device"]["serial_number"] == "bbbbbbbbbbbb"
        assert b"" not in sub.on(car)  # never removed
    finally:
        if a is not None:
            a.close()
        b.close()
        sub.close()
        broker.stop()


@needs_broker
def test_topics_switches_discovery_and_availability_on_a_real_broker(tmp_path: Path) -> None:
    broker = Broker(tmp_path)
    sub = Subscriber(broker.port)
    controls = Controls(detect=True, recordings=True)
    switches = ("detect", "recordings")
    configs = discovery_configs(TOPICS, "porch", ["person"], switches)
    config = MqttConfig(host="127.0.0.1", port=broker.port, reconnect_max_s=1, drain_timeout_s=10)
    outbox = Outbox(tmp_path / "o.db", 100)
    pub = MqttPublisher(config, outbox, TOPICS, discovery=configs, controls=controls, switches=switches)
    try:
        sub.wait(lambda: sub.last("edgevision/porch/available") == b"online")
        sub.wait(
            lambda: len([t for t, _, _ in sub.messages if t.startswith("homeassistant/")]) == len(configs)
        )
        for topic, payload in configs:
            assert payload is not None and json.loads(sub.on(topic)[-1]) == payload
        sub.wait(lambda: sub.last("edgevision/porch/detect/state") == b"ON")
        sub.publish("edgevision/porch/detect/set", "OFF")
        sub.wait(lambda: sub.last("edgevision/porch/detect/state") == b"OFF")
        assert not controls.detect and controls.recordings
        sub.publish("edgevision/porch/recordings/set", "off")  # case does not matter
        sub.wait(lambda: sub.last("edgevision/porch/recordings/state") == b"OFF")
        assert not controls.recordings
        sub.publish("edgevision/porch/detect/set", "maybe")  # ignored
        sub.publish("edgevision/porch/detect/set", "ON")
        sub.wait(lambda: sub.last("edgevision/porch/detect/state") == b"ON")
        assert controls.detect and sub.on("edgevision/porch/detect/state") == [b"ON", b"OFF", b"ON"]
        # Counts, occupancy and snapshot from a Presence on this publisher.
        relay = EventRelay(pub)
        presence = Presence(
            pub,
            relay,
            EventStage(EventSettings(post_roll=0.5)),
            emit_events=True,
            count_interval=0.0,
            snapshot_interval=0.05,
        )
        for i, n in enumerate([3] * 12 + [0] * 10):
            presence.on_result(_staged(presence, _result(i, n)))
            time.sleep(0.01)
        presence.close()
        sub.wait(
            lambda: sub.last("edgevision/porch/person") == b"0" and b"3" in sub.on("edgevision/porch/person")
        )
        sub.wait(lambda: sub.on("edgevision/porch/person/occupancy") == [b"OFF", b"ON", b"OFF"])
        sub.wait(lambda: sub.last("edgevision/porch/person/snapshot") is not None)
        jpeg = sub.last("edgevision/porch/person/snapshot")
        assert jpeg is not None and jpeg[:2] == b"\xff\xd8"
        sub.wait(lambda: any(json.loads(p)["type"] == "end" for p in sub.on("edgevision/events")))
        _check_shape([json.loads(p) for p in sub.on("edgevision/events")])
    finally:
        pub.close()
        sub.wait(lambda: sub.last("edgevision/porch/available") == b"offline")
        sub.close()
    # Retained state survives for a newcomer (Home Assistant restarting): snapshot, counts, switch states.
    late = Subscriber(broker.port, client_id="late")
    try:
        late.wait(lambda: late.last("edgevision/porch/person/snapshot") == jpeg)
        late.wait(lambda: late.last("edgevision/porch/detect/state") == b"ON")
        late.wait(lambda: late.last("edgevision/porch/person/occupancy") == b"OFF")
        assert all(retain for _, _, retain in late.messages)
    finally:
        late.close()
        broker.stop()


def _run(env: dict[str, str], cfg: Path, video: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "edgevision", "run", "--config", str(cfg), "--video", str(video), *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _mqtt_config(tmp: Path, port: int, extra: str = "") -> Path:
    cfg = tmp / "c.yaml"
    cfg.write_text(
        f"mqtt:\n  enabled: true\n  host: 127.0.0.1\n  port: {port}\n  stats_interval_s: 1\n"
        f"  reconnect_max_s: 2\n  drain_timeout_s: 30\n  homeassistant_discovery: true\n{extra}"
    )
    return cfg


@needs_broker
def test_run_without_record_publishes_events_and_dies_offline(env: dict[str, str], tmp_path: Path) -> None:
    """No --record: person events, counts and the snapshot still go out; a killed run is marked offline (LWT)."""
    broker = Broker(tmp_path)
    sub = Subscriber(broker.port)
    cfg = _mqtt_config(tmp_path, broker.port, "recorder:\n  camera: Hall cam\n  post_roll_s: 1.0\n")
    video = tmp_path / "visit.avi"
    splice(video, [("empty", 20), ("people", 40), ("empty", 60), ("people", 200)])
    proc = _run(env, cfg, video, "--realtime")
    try:
        sub.wait(lambda: any(json.loads(p)["type"] == "end" for p in sub.on("edgevision/events")), 90)
        sub.wait(lambda: sub.last("edgevision/Hall_cam/person/snapshot") is not None)
        assert sub.last("edgevision/Hall_cam/available") == b"online"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        sub.wait(lambda: sub.last("edgevision/Hall_cam/available") == b"offline")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
        sub.close()
        broker.stop()
    events = [json.loads(p) for p in sub.on("edgevision/events")]
    _check_shape(events)
    assert (
        events[0]["type"] == "new"
        and events[0]["camera"] == "Hall_cam"
        and events[0]["after"]["index"] is None
    )
    counts = {int(v) for v in sub.on("edgevision/Hall_cam/person")}
    assert 0 in counts and max(counts) >= 1
    assert b"ON" in sub.on("edgevision/Hall_cam/person/occupancy")
    discovered = [t for t, _, _ in sub.messages if t.startswith("homeassistant/")]
    assert "homeassistant/switch/edgevision_Hall_cam/detect/config" in discovered
    # No recorder: no recordings switch (its config, if a previous run announced one, is emptied).
    assert sub.on("homeassistant/switch/edgevision_Hall_cam/recordings/config") == [b""]


@needs_broker
def test_switches_turn_recording_and_detection_off_and_on_in_a_run(
    env: dict[str, str], tmp_path: Path
) -> None:
    """recordings OFF (retained before start): the first visit is seen but not recorded; switched ON after it,
    the second visit is recorded. detect OFF then: counts stay 0 and the third visit is not seen. (The first
    visit comes 4 s in: time for the run to connect and receive the retained command.)"""
    broker = Broker(tmp_path)
    sub = Subscriber(broker.port)
    sub.publish("edgevision/hall/recordings/set", "OFF", retain=True)
    data = tmp_path / "data"
    cfg = _mqtt_config(
        tmp_path, broker.port, "recorder:\n  camera: hall\n  post_roll_s: 1.0\n  pre_roll_s: 0.5\n"
    )
    video = tmp_path / "three.avi"
    splice(
        video,
        [
            ("empty", 100),
            ("people", 40),
            ("empty", 150),
            ("people", 40),
            ("empty", 150),
            ("people", 40),
            ("empty", 60),
        ],
    )
    proc = _run(env, cfg, video, "--realtime", "--record", "--data-dir", str(data))
    occupancy = "edgevision/hall/person/occupancy"
    try:
        sub.wait(lambda: sub.last("edgevision/hall/recordings/state") == b"OFF", 60)
        sub.wait(lambda: sub.on(occupancy)[-2:] == [b"ON", b"OFF"], 60)  # first visit over
        sub.client.publish("edgevision/hall/recordings/set", b"", retain=True)  # clear the retained command
        sub.publish("edgevision/hall/recordings/set", "ON")
        sub.wait(lambda: sub.last("edgevision/hall/recordings/state") == b"ON")
        sub.wait(lambda: sub.on(occupancy).count(b"OFF") == 3, 60)  # the start's OFF, then second visit over
        sub.publish("edgevision/hall/detect/set", "OFF")
        sub.wait(lambda: sub.last("edgevision/hall/detect/state") == b"OFF")
        n_counts = len(sub.on("edgevision/hall/person"))
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
        sub.close()
        broker.stop()
    rows = EventIndex(data).list()
    assert len(rows) == 1  # only the second visit was recorded
    events = [json.loads(p) for p in sub.on("edgevision/events")]
    _check_shape(events)
    assert {e["after"]["event_id"] for e in events} == {rows[0].id}
    assert [e["type"] for e in events if e["type"] != "update"] == ["new", "end"]
    assert sub.on(occupancy).count(b"ON") == 2  # the third visit was not seen: detection was off
    assert all(v == b"0" for v in sub.on("edgevision/hall/person")[n_counts:])


# -- the persistent outbox ---------------------------------------------------------------------------------
def test_outbox_is_bounded_persistent_and_counts_drops(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", 5)
    assert all(box.put("t", str(i).encode()) for i in range(5))
    assert not box.put("t", b"5") and not box.put("t", b"6")
    box.close()
    box = Outbox(tmp_path / "o.db", 5)
    assert len(box) == 5 and box.dropped == 2
    first = box.peek()
    assert first is not None and first[2] == b"0"
    box.delete(first[0])
    assert len(box) == 4 and box.put("t", b"7")
    box.close()


def test_a_full_outbox_still_takes_the_latest_retained_state(tmp_path: Path) -> None:
    """A long broker outage filled the outbox with event messages; the occupancy OFF at the end of the event was
    then dropped like any new message, so the broker kept the retained ON and Home Assistant showed the room
    occupied until the next event. A retained state is queued even when full, in place of its older values."""
    box = Outbox(tmp_path / "o.db", 3)
    assert box.put("occ", b"ON", retain=True) and box.put("ev", b"1") and box.put("ev", b"2")
    assert not box.put("ev", b"3")  # full: events are dropped (and counted)
    assert box.put("occ", b"OFF", retain=True)  # replaces the ON still waiting
    assert box.put("other", b"ON", retain=True)  # nothing of its topic waits: one over the bound
    assert box.put("other", b"OFF", retain=True)
    rows = []
    while (msg := box.peek()) is not None:
        rows.append((msg[1], msg[2]))
        box.delete(msg[0])
    assert rows == [("ev", b"1"), ("ev", b"2"), ("occ", b"OFF"), ("other", b"OFF")]
    assert box.dropped == 3  # the event, and the two retained values a newer one replaced
    box.close()


def test_a_damaged_outbox_is_set_aside_not_a_crash_loop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An mqtt-outbox.db SQLite cannot read (a damaged SD card) crashed every start with a DatabaseError traceback
    (exit 1, so systemd restarted it into the same crash, with no camera, web view or recording meanwhile). Its
    messages cannot be read anyway: it is kept aside for a look and a new outbox is started."""
    path = tmp_path / "mqtt-outbox.db"
    path.write_bytes(b"not a database" * 400)
    with caplog.at_level(logging.WARNING):
        box = Outbox(path, 5)
    assert len(box) == 0 and box.put("t", b"p") and len(box) == 1
    box.close()
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("mqtt-outbox.db.damaged")]
    assert len(kept) == 1 and kept[0].read_bytes() == b"not a database" * 400
    assert "damaged" in caplog.text and str(kept[0]) in caplog.text


@pytest.mark.parametrize("record", [False, True])
def test_the_outbox_is_in_the_configured_data_dir_recording_or_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record: bool
) -> None:
    """``--data-dir`` (``recorder.data_dir``) places the outbox with or without ``--record``, never the default."""
    default = tmp_path / "default"
    monkeypatch.setenv("EDGEVISION_DATA_DIR", str(default))
    data = tmp_path / "data5"
    cfg = load_config(
        None,
        {
            "mqtt.enabled": True,
            "mqtt.host": "127.0.0.1",
            "mqtt.port": free_port(),  # nobody listens: the publisher keeps retrying in the background
            "mqtt.drain_timeout_s": 0.0,
            "recorder.enabled": record,
            "recorder.data_dir": str(data),
        },
    )
    sharing = build_sharing(
        cfg, "porch", data if record else None, None, dict, EventStage(EventSettings(post_roll=0.5))
    )
    try:
        assert sharing.mqtt is not None
    finally:
        sharing.close()
    assert (data / "mqtt-outbox.db").is_file()
    assert not default.exists()


@needs_broker
def test_mqtt_events_survive_a_broker_outage(env: dict[str, str], tmp_path: Path) -> None:
    video = tmp_path / "three.avi"
    splice(
        video,
        [
            ("empty", 40),
            ("people", 30),
            ("empty", 140),
            ("people", 30),
            ("empty", 140),
            ("people", 30),
            ("empty", 140),
        ],
    )
    broker = Broker(tmp_path)
    sub = Subscriber(broker.port)
    time.sleep(0.5)
    data = tmp_path / "data"
    cfg = _mqtt_config(tmp_path, broker.port, "recorder:\n  post_roll_s: 2.0\n  pre_roll_s: 1.0\n")
    proc = _run(env, cfg, video, "--realtime", "--record", "--data-dir", str(data))
    try:
        time.sleep(9.0)  # first event done, second starting
        broker.stop()  # outage in the middle of the replay
        time.sleep(6.0)
        broker.start()
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        rows = EventIndex(data).list()
        sub.wait(
            lambda: sum(json.loads(p)["type"] == "end" for p in sub.on("edgevision/events")) >= len(rows)
        )
    finally:
        sub.close()
        broker.stop()
    assert len(rows) == 3
    events = [json.loads(p) for p in sub.on("edgevision/events")]
    _check_shape(events)
    starts = sorted(e["after"]["event_id"] for e in events if e["type"] == "new")
    ends = sorted(e["after"]["event_id"] for e in events if e["type"] == "end")
    assert starts == ends == [r.id for r in rows]  # every event exactly once: no loss, no duplicate
    end = next(e for e in events if e["type"] == "end")
    assert end["after"]["index"]["snapshot_path"] and end["after"]["status"] == "finalized"
    assert end["camera"] == "three" and end["after"]["has_snapshot"] and end["after"]["has_clip"]
    assert sub.live("edgevision/three/person/occupancy").count(b"ON") == 3
    topics = {t for t, _, _ in sub.messages}
    assert {"edgevision/three/available", "edgevision/three/stats", "edgevision/three/person"} <= topics
    box = Outbox(data / "mqtt-outbox.db", 10)
    assert len(box) == 0 and box.dropped == 0  # everything delivered, nothing dropped
    box.close()


@needs_broker
def test_a_qos0_event_published_as_the_link_drops_is_sent_after_reconnecting(tmp_path: Path) -> None:
    """paho keeps no QoS 0 message it could not write: the sender must not wait for its acknowledgement forever
    (every later event would then stay in the outbox until a restart)."""
    broker = Broker(tmp_path)
    broker.stop()  # the link is down when the first event comes
    config = MqttConfig(host="127.0.0.1", port=broker.port, qos=0, reconnect_max_s=1, drain_timeout_s=2)
    pub = MqttPublisher(config, Outbox(tmp_path / "o.db", 100), TOPICS)
    sub = None
    try:
        pub._connected.set()  # the instant between the socket closing and paho's on_disconnect
        pub.queue("edgevision/first", b"1", retain=True)
        time.sleep(1.0)  # the sender publishes it into the closed link
        pub._on_disconnect(pub.client, None, None, "lost", None)
        broker.start()
        sub = Subscriber(broker.port)
        pub.queue("edgevision/second", b"2", retain=True)
        sub.wait(lambda: sub.last("edgevision/first") == b"1" and sub.last("edgevision/second") == b"2", 15)
        sub.wait(lambda: len(pub.outbox) == 0, 5)
        assert sub.on("edgevision/first") == [b"1"]  # once
    finally:
        pub.close()
        if sub is not None:
            sub.close()
        broker.stop()


def test_an_unreachable_broker_is_said_once_per_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong mqtt.host or port (or a broker that is down) must show in the log while the run goes on, not only
    as "kept in the outbox" when it ends."""
    caplog.set_level(logging.WARNING, logger="edgevision.publish.mqtt")
    port = free_port()  # nobody listens
    config = MqttConfig(host="127.0.0.1", port=port, reconnect_max_s=1, drain_timeout_s=0)
    pub = MqttPublisher(config, Outbox(tmp_path / "o.db", 10), TOPICS)
    try:
        deadline = time.monotonic() + 10
        while "cannot reach" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2.5)  # more attempts fail
    finally:
        pub.close()
    assert caplog.text.count(f"mqtt: cannot reach the broker at 127.0.0.1:{port}") == 1, caplog.text


def test_stale_entities_are_looked_for_under_a_discovery_prefix_of_several_levels(tmp_path: Path) -> None:
    """``mqtt.discovery_prefix: home/ha`` (allowed) makes every discovery topic six levels deep, and the
    subscription that finds this device's stale entities was built for five only: none was made, and a label
    taken out of recorder.labels kept its Home Assistant entity for good."""
    configs = discovery_configs(TOPICS, "porch", ["person"], (), "home/ha")
    config = MqttConfig(host="127.0.0.1", port=free_port(), reconnect_max_s=1, drain_timeout_s=0)
    pub = MqttPublisher(config, Outbox(tmp_path / "o.db", 10), TOPICS, discovery=configs)
    try:
        assert pub._device_configs == [f"home/ha/+/edgevision_{TOPICS.camera}/+/config"]
    finally:
        pub.close()


def test_the_stats_say_0_fps_while_no_frame_comes() -> None:
    """The stats (retained; Home Assistant's "Frames per second" sensor) were sent only when a frame came: with
    the camera unplugged the sensor kept showing the last rate, 10 fps, for as long as it stayed away."""
    sent: list[dict[str, Any]] = []
    stats = StatsPublisher(
        cast(MqttPublisher, SimpleNamespace(stats=sent.append)), 0.1, lambda: {"dropped": 0}
    )
    try:
        stats.on_result(_result(0, 1))
        deadline = time.monotonic() + 10
        while not sent and time.monotonic() < deadline:  # no further frame: the source is gone
            time.sleep(0.05)
    finally:
        stats.close()
    assert sent and sent[0]["fps"] == 0 and sent[0]["persons"] == 0 and sent[0]["dropped"] == 0, sent


class _RecordingClient:
    """Stands in for paho's client inside ``_on_connect``: records publishes; the first one of ``topic`` lets
    ``during`` run on another thread (a pipeline thread calling ``state()`` while the reconnect republishes)."""

    def __init__(self, topic: str, during: Callable[[], None]) -> None:
        self.topic = topic
        self.published: list[tuple[str, bytes]] = []
        self.during: Callable[[], None] | None = during
        self.thread: threading.Thread | None = None

    def publish(self, topic: str, payload: Any, qos: int = 0, retain: bool = False) -> None:
        self.published.append((topic, payload if isinstance(payload, bytes) else str(payload).encode()))
        if self.during is not None and topic == self.topic:
            during, self.during = self.during, None
            self.thread = threading.Thread(target=during)
            self.thread.start()
            self.thread.join(0.3)  # with the state lock held by _on_connect, it waits (and publishes after)

    def subscribe(self, topics: Any, qos: int = 0) -> None:
        pass

    def message_callback_add(self, topic: str, callback: Callable[..., None]) -> None:
        pass


def test_a_state_set_while_reconnecting_reaches_the_broker_and_is_never_overwritten(tmp_path: Path) -> None:
    """The reconnect republished a snapshot of the states taken before "connected" was set: a count set in
    between was neither in the snapshot nor published by ``state()`` (not connected yet), and stayed stale on the
    broker until it changed again."""
    config = MqttConfig(host="127.0.0.1", port=free_port(), reconnect_max_s=1, drain_timeout_s=0)
    pub = MqttPublisher(config, Outbox(tmp_path / "o.db", 10), TOPICS)
    topic = TOPICS.count("person")
    try:
        pub.state(topic, b"1")
        fake = _RecordingClient(topic, lambda: pub.state(topic, b"2"))
        pub.client, real = fake, pub.client  # type: ignore[assignment]
        try:
            pub._on_connect(fake, None, None, SimpleNamespace(is_failure=False), None)
            assert fake.thread is not None
            fake.thread.join(5)
        finally:
            pub.client = real
    finally:
        pub.close()
    assert [v for t, v in fake.published if t == topic][-1] == b"2"
