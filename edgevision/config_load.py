"""Reading a config file safely: bounded in size, depth and node count, no aliases, no duplicate keys.

A config file is input the service trusts with its life (exit 78 stops systemd restarting it), so reading one
must never hang, exhaust memory or crash with a traceback, whatever the file is:

* only a regular file is read (a FIFO, a device such as ``/dev/zero`` or a directory is refused after an
  ``open(O_NONBLOCK)`` + ``fstat``, which never blocks), and never more than :data:`MAX_BYTES` + 1 bytes;
* YAML is composed by :class:`_BoundedLoader`, a ``SafeLoader`` whose ``compose_node`` refuses aliases
  (``*name``: an alias bomb expands a few hundred bytes into gigabytes), nesting deeper than
  :data:`MAX_DEPTH` (PyYAML's composer recurses) and more than :data:`MAX_NODES` nodes, and builds no number
  longer than :data:`MAX_NUMBER_CHARS` (YAML 1.1's base 60, ``1:59:59``, costs time quadratic in its length);
* a mapping that repeats a key is an error (``file:line key: duplicate key``), never "last one wins"; so is a
  merge key (``<<: {...}``), whose keys the mapping's own would override without a word;
* a string value holding a NUL character (``"\\0"``) is an error (as a path it would crash the run);
* ``${NAME}`` in a string value is replaced by the environment variable ``NAME`` (``$${`` is a literal
  ``${``); an unset variable is an error with ``file:line``, and so are variables that would add more than
  :data:`MAX_BYTES` to the config. Inside :func:`expanding_from` the variables are
  another environment's (``service install`` checks a config with the one its unit will give);
* secret ``*_file`` keys (:data:`SECRET_FILE_KEYS`, e.g. ``mqtt.password_file``) are replaced by the content
  of the file they name (one regular file of at most :data:`MAX_SECRET_BYTES`, trailing newline stripped;
  a relative path is relative to the config file), so no secret has to sit in the YAML itself.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgevision.errors import ConfigError
from edgevision.safe_read import read_bounded

MAX_BYTES = 1 << 20  # a real config is a few KB; 1 MiB leaves room for long zone lists and comments
MAX_DEPTH = 32  # the schema nests at most 6 deep (recorder.zones[i][j][k])
MAX_NODES = 20_000
MAX_SECRET_BYTES = 64 << 10
MAX_NUMBER_CHARS = 100  # a number longer than this is no setting (and a base-60 one takes quadratic time)

#: ``section.key_file`` -> ``section.key``: the value is read from the named file.
SECRET_FILE_KEYS: dict[tuple[str, str], str] = {
    ("mqtt", "password_file"): "password",
    ("mqtt", "username_file"): "username",
    ("web", "token_file"): "token",
    ("source", "url_file"): "url",
}

_ENVIRON: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar("environ", default=None)
_ENV = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\{")
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"

Path_ = tuple[Any, ...]


class _Refused(yaml.YAMLError):
    def __init__(self, mark: Any, message: str, path: Path_ | None = None) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message
        self.path = path


class _BoundedLoader(yaml.SafeLoader):
    """``SafeLoader`` with limits enforced while the node tree is composed (before anything is built)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0
        self.paths: dict[int, Path_] = {}  # id(node) -> key path, filled by _walk for messages

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(
                event.start_mark, f"YAML aliases are not allowed in a config file (*{event.anchor})"
            )
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _Refused(event.start_mark, f"more than {MAX_NODES} values; this is not a config file")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(event.start_mark, f"nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # PyYAML's scalar constructors raise ValueError, not a YAMLError, for a date such as 2001-13-45, an
        # integer of more than 4300 digits or ``!!float 1e``.
        kind = node.tag.rsplit(":", 1)[-1]
        if kind in ("int", "float") and len(node.value) > MAX_NUMBER_CHARS:  # base 60 (1:59:59) is quadratic
            path = self.paths.get(id(node))
            raise _Refused(node.start_mark, f"a number of more than {MAX_NUMBER_CHARS} characters", path)
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:
            reason = str(exc).split(";")[0]  # not "use sys.set_int_max_str_digits()"
            raise _Refused(
                node.start_mark, f"not a valid {kind}: {reason}", self.paths.get(id(node))
            ) from None


@dataclass
class RawConfig:
    """A parsed config file: plain data plus the line of every key path (for ``file:line`` messages)."""

    origin: str
    data: dict[str, Any] = field(default_factory=dict)
    lines: dict[Path_, int] = field(default_factory=dict)


def _dotted(path: Path_) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


@contextlib.contextmanager
def expanding_from(environ: Mapping[str, str]) -> Iterator[None]:
    """Configs read inside this block expand ``${NAME}`` from ``environ``, not from this process's environment."""
    token = _ENVIRON.set(environ)
    try:
        yield
    finally:
        _ENVIRON.reset(token)


def _expand(value: str, where: str, room: list[int]) -> str:
    """``value`` with its variables expanded; ``room[0]``, the characters expansions may still add to the
    config, shrinks by what they add (a 1 MiB file of ``${LONG_VARIABLE}`` would otherwise grow to gigabytes)."""
    environ = _ENVIRON.get()
    environ = os.environ if environ is None else environ

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$${":
            return "${"
        name = m.group(1)
        if name is None:
            raise ConfigError(f"{where}: malformed '${{' (use ${{NAME}}, or $${{ for a literal '${{')")
        if name not in environ:
            raise ConfigError(f"{where}: environment variable {name} is not set")
        room[0] -= len(environ[name])
        if room[0] < 0:
            raise ConfigError(f"{where}: environment variables expand the config past {MAX_BYTES} characters")
        return environ[name]

    return _ENV.sub(sub, value)


def _walk(
    node: yaml.Node,
    path: Path_,
    origin: str,
    lines: dict[Path_, int],
    paths: dict[int, Path_],
    room: list[int],
) -> None:
    """Record lines (and each node's key path), refuse duplicate and non-scalar keys, expand ``${ENV}`` within
    ``room`` (see :func:`_expand`; depth is bounded by the loader)."""
    lines.setdefault(path, node.start_mark.line + 1)
    paths[id(node)] = path
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key, value in node.value:
            line = key.start_mark.line + 1
            if not isinstance(key, yaml.ScalarNode):
                raise ConfigError(f"{origin}:{line} {_dotted(path)}: a key must be a plain value")
            if key.tag == _MERGE_TAG:  # its keys would be overridden by the mapping's own, silently
                raise ConfigError(f"{origin}:{line} {_dotted(path)}: YAML merge keys (<<) are not allowed")
            child = (*path, key.value)
            if key.value in seen:
                raise ConfigError(
                    f"{origin}:{line} {_dotted(child)}: duplicate key (first at line {seen[key.value]})"
                )
            seen[key.value] = line
            lines[child] = line
            _walk(value, child, origin, lines, paths, room)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, i), origin, lines, paths, room)
    elif isinstance(node, yaml.ScalarNode) and node.tag == _STR_TAG:
        where = f"{origin}:{node.start_mark.line + 1} {_dotted(path)}"
        if "\0" in node.value:  # "\0" in a double-quoted string: every path, host or name breaks on it later
            raise ConfigError(f"{where}: contains a NUL character (\\0)")
        if "$" in node.value:
            node.value = _expand(node.value, where, room)


def parse_yaml(text: str, origin: str) -> RawConfig:
    """Compose, check and construct one YAML document (see the module docstring for the limits)."""
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        lines: dict[Path_, int] = {}
        if node is not None:
            _walk(node, (), origin, lines, loader.paths, [MAX_BYTES])
            data = loader.construct_document(node)
        else:
            data = None
    except _Refused as exc:
        where = f"{origin}:{exc.mark.line + 1}" if exc.mark else origin
        if exc.path is not None:
            where += f" {_dotted(exc.path)}"
        raise ConfigError(f"{where}: {exc.message}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{origin}:{mark.line + 1}" if mark else origin
        raise ConfigError(f"{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
    finally:
        loader.dispose()
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}:1: the top level of a config file must be a mapping of sections")
    return RawConfig(origin, data, lines)


def _read_secret(raw: RawConfig, base: Path) -> None:
    for (section, key), target in SECRET_FILE_KEYS.items():
        sec = raw.data.get(section)
        if not isinstance(sec, dict) or key not in sec:
            continue
        where = f"{raw.origin}:{raw.lines.get((section, key), 1)} {section}.{key}"
        value = sec.pop(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: must be a file path")
        if sec.get(target) is not None:
            raise ConfigError(f"{where}: set either {section}.{target} or {section}.{key}, not both")
        path = Path(value) if os.path.isabs(value) else base / value
        try:
            data = read_bounded(path, MAX_SECRET_BYTES, "secret file")
            text = data.decode("utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{where}: {path}: file not found") from None
        except OSError as exc:
            raise ConfigError(f"{where}: {path}: cannot read: {exc.strerror}") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{where}: {path}: {exc}") from None
        if "\0" in text:  # as a YAML value's: a URL or path with it crashes the run
            raise ConfigError(f"{where}: {path}: contains a NUL character (\\0)")
        sec[target] = text.rstrip("\r\n")
        raw.lines[(section, target)] = raw.lines.get((section, key), 1)


def read_config_file(path: Path) -> RawConfig:
    """Read and parse ``path`` within the limits; every failure is a :class:`ConfigError` naming the file."""
    try:
        data = read_bounded(path, MAX_BYTES, "config file")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text ({exc.reason})") from None
    raw = parse_yaml(text, str(path))
    _read_secret(raw, path.parent)
    return raw
