"""Every location resolves in ``edgevision.paths``: models, derived rungs, data, the event index, the mirror.

``models fetch | list | verify | info`` (and ``service install``) honour ``models.dir`` and ``models.mirror`` of
the config file; a flag beats the file."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SHARED_MODELS, run_cli

from edgevision import paths
from edgevision.config import load_config

VWW = "vww_mobilenet_v1_0.25_96"
VWW_FILE = "vww_mobilenet_v1_0.25_96_int8.tflite"


def _cfg(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_models_dir_config_then_env_then_user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEVISION_MODELS_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert paths.models_dir(load_config()) == tmp_path / "cache/edgevision/models"
    monkeypatch.setenv("EDGEVISION_MODELS_DIR", str(tmp_path / "env"))
    assert paths.models_dir(load_config()) == tmp_path / "env"
    cfg = load_config(overrides={"models.dir": str(tmp_path / "cfg")})
    assert paths.models_dir(cfg) == tmp_path / "cfg"
    assert paths.derived_dir(cfg) == tmp_path / "cfg/derived"
    assert paths.profile_path(cfg) == tmp_path / "cfg/derived/profile.json"
    cfg = load_config(
        overrides={"models.dir": str(tmp_path / "cfg"), "scheduler.derived_dir": str(tmp_path / "d")}
    )
    assert paths.derived_dir(cfg) == tmp_path / "d" and paths.profile_path(cfg) == tmp_path / "d/profile.json"


def test_data_dir_and_what_lives_in_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEVISION_DATA_DIR", str(tmp_path / "env"))
    assert paths.data_dir(load_config()) == tmp_path / "env"
    cfg = load_config(overrides={"recorder.data_dir": str(tmp_path / "cfg")})
    assert paths.data_dir(cfg) == tmp_path / "cfg"
    assert paths.events_index(paths.data_dir(cfg)) == tmp_path / "cfg/events.db"
    assert paths.mqtt_outbox(paths.data_dir(cfg)) == tmp_path / "cfg/mqtt-outbox.db"


@pytest.mark.parametrize(
    ("flag", "env", "config", "expected"),
    [
        (None, None, None, None),
        (None, None, "/cfg", "/cfg"),
        (None, "/env", "/cfg", "/env"),
        ("/flag", "/env", "/cfg", "/flag"),
        ("/flag", None, None, "/flag"),
    ],
)
def test_model_mirror_flag_then_env_then_config(
    monkeypatch: pytest.MonkeyPatch,
    flag: str | None,
    env: str | None,
    config: str | None,
    expected: str | None,
) -> None:
    if env is None:
        monkeypatch.delenv("EDGEVISION_MODEL_MIRROR", raising=False)
    else:
        monkeypatch.setenv("EDGEVISION_MODEL_MIRROR", env)
    cfg = load_config(overrides={"models.mirror": config})
    assert paths.model_mirror(cfg, flag) == expected


def test_models_fetch_honours_models_dir_and_mirror_of_the_config(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """No --mirror, no EDGEVISION_MODEL_MIRROR, EDGEVISION_MODELS_DIR elsewhere: the config file decides."""
    dest = tmp_path / "from-config"
    elsewhere = tmp_path / "env-models"
    env = dict(env, EDGEVISION_MODELS_DIR=str(elsewhere))
    cfg = _cfg(tmp_path, f"models:\n  dir: {dest}\n  mirror: {SHARED_MODELS}\n")
    r = run_cli(["models", "fetch", "--config", str(cfg), VWW], env)
    assert r.returncode == 0, r.stderr
    assert (dest / VWW_FILE).is_file() and not elsewhere.exists()
    assert f"(from mirror {SHARED_MODELS}" in r.stdout
    r = run_cli(["models", "verify", "--config", str(cfg), VWW, "--json"], env)
    assert r.returncode == 0 and f'"file": "{dest / VWW_FILE}"' in r.stdout
    r = run_cli(["models", "list", "--config", str(cfg)], env)
    assert r.returncode == 0 and f"models directory: {dest}" in r.stdout
    r = run_cli(["models", "info", "--config", str(cfg), VWW], env)
    assert r.returncode == 0 and f"installed:    {dest / VWW_FILE}: ok" in r.stdout
    # --models-dir beats models.dir; the mirror still comes from the file
    flagged = tmp_path / "flagged"
    r = run_cli(["models", "fetch", "--config", str(cfg), "--models-dir", str(flagged), VWW], env)
    assert r.returncode == 0, r.stderr
    assert (flagged / VWW_FILE).is_file()


def test_models_fetch_without_a_mirror_in_the_config_does_not_use_one(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """The mirror of the config is really what made the fetch above work: without it the official URL is tried
    (no network here, or a wrong mirror), and nothing is installed from the shared directory."""
    dest = tmp_path / "m"
    bogus = tmp_path / "empty-mirror"
    bogus.mkdir()
    cfg = _cfg(tmp_path, f"models:\n  dir: {dest}\n  mirror: {bogus}\n")
    r = run_cli(["models", "fetch", "--config", str(cfg), "--timeout", "2", VWW], env)
    assert r.returncode != 0 and not (dest / VWW_FILE).exists()


def test_a_bad_config_is_a_config_error_for_models_commands(tmp_path: Path, env: dict[str, str]) -> None:
    cfg = _cfg(tmp_path, "models:\n  dri: /x\n")
    r = run_cli(["models", "list", "--config", str(cfg)], env)
    assert r.returncode == 78 and "c.yaml:2 models.dri: unknown key" in r.stderr
