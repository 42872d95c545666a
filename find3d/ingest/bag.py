"""Reading a rosbag2 without ROS (``rosbags``) and finding its topics by message type.

Every failure of the reader (a truncated or corrupt file, a missing ``metadata.yaml``, a message whose
bytes do not decode) becomes a ``DataError`` naming the bag or topic, so the command never dies with
a storage plugin's traceback. Topic discovery takes the one topic of the wanted type; with several or
none, the error lists every topic of the bag with its type and names the flag that chooses.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from find3d.errors import DataError, InputError

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
ODOMETRY = "nav_msgs/msg/Odometry"

_FIX_CORRUPT = ("the recording is truncated or corrupt; re-record it, or repair a copy of an interrupted one "
                "(`ros2 bag reindex` for sqlite3, `mcap recover` for MCAP)")


def _reader_errors() -> tuple[type[BaseException], ...]:
    """What the storage plugins raise on files they cannot read (imported lazily: rosbags is optional)."""
    import apsw  # rosbags' sqlite3 driver; its errors surface raw when a page is read mid-iteration
    from rosbags.highlevel import AnyReaderError
    from rosbags.rosbag2 import ReaderError

    return (AnyReaderError, ReaderError, apsw.Error, sqlite3.DatabaseError, EOFError, struct.error, OSError)


@dataclass(frozen=True)
class Message:
    """One deserialized message with its topic and the time it was recorded (ns)."""

    topic: str
    log_ns: int
    msg: Any


class Bag:
    """An open rosbag2 (a folder with ``metadata.yaml``, or a single ``.db3`` / ``.mcap`` file)."""

    def __init__(self, path: str | Path) -> None:
        try:
            from rosbags.highlevel import AnyReader
            from rosbags.typesys import Stores, get_typestore
        except ImportError as err:  # the `ros` extra of setup.py
            raise InputError("reading bags needs the `rosbags` package: pip install 'find3d[ros]'.") from err
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"bag {self.path}: not found; pass a rosbag2 folder (with metadata.yaml) or a "
                             ".db3 / .mcap file.")
        if self.path.suffix == ".bag":
            raise InputError(f"bag {self.path}: a ROS 1 bag; convert it with `rosbags-convert` to rosbag2 first.")
        if self.path.is_dir() and not (self.path / "metadata.yaml").is_file():
            raise DataError(f"bag {self.path}: the folder has no metadata.yaml; pass its .db3 / .mcap file "
                            "instead, or recreate the metadata with `ros2 bag reindex`.")
        # Jazzy's definitions decode bags that carry none (sqlite3 bags before version 9); bags that do
        # carry their definitions (MCAP, recent sqlite3) are decoded with their own.
        typestore = get_typestore(Stores.ROS2_JAZZY)
        self._reader = self._guard(lambda: AnyReader([self.path], default_typestore=typestore), "cannot be opened")
        self._guard(self._reader.open, "cannot be opened")
        self.connections = list(self._reader.connections)
        self.types: dict[str, str] = {c.topic: c.msgtype for c in self.connections}
        self.counts: dict[str, int] = {}
        for connection in self.connections:
            self.counts[connection.topic] = self.counts.get(connection.topic, 0) + connection.msgcount

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> Bag:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _guard(self, call: Callable[[], Any], what: str) -> Any:
        try:
            return call()
        except _reader_errors() as err:
            raise DataError(f"bag {self.path}: {what} ({type(err).__name__}: {err}); {_FIX_CORRUPT}.") from err

    def count(self, topics: Collection[str]) -> int:
        """Messages recorded on ``topics`` (from the bag's index; nothing is read)."""
        return sum(self.counts.get(topic, 0) for topic in topics)

    def messages(self, topics: Collection[str]) -> Iterator[Message]:
        """The messages of ``topics`` in recording order, deserialized."""
        connections = [c for c in self.connections if c.topic in topics]
        if not connections:
            return
        stream = self._guard(lambda: self._reader.messages(connections=connections), "cannot be read")
        try:
            while True:
                item = self._guard(lambda: next(stream, None), "cannot be read")
                if item is None:
                    return
                connection, log_ns, raw = item
                yield Message(connection.topic, log_ns, self._decode(raw, connection.msgtype, connection.topic))
        finally:
            stream.close()

    def first(self, topic: str) -> Any:
        """The first message of ``topic`` (None when it has none); used to tell colour from depth streams."""
        stream = self.messages([topic])
        try:
            return next((m.msg for m in stream), None)
        finally:
            stream.close()  # releases the storage's cursor now, not when the generator is collected

    def _decode(self, raw: bytes, msgtype: str, topic: str) -> Any:
        try:
            return self._reader.deserialize(raw, msgtype)
        except (*_reader_errors(), IndexError, ValueError, UnicodeDecodeError) as err:
            raise DataError(f"bag {self.path}: a {msgtype} message on {topic} does not decode "
                            f"({type(err).__name__}: {err}); {_FIX_CORRUPT}.") from err

    def topic_table(self) -> str:
        """Every topic with its type and message count, one per line (for error messages)."""
        if not self.types:
            return "  (the bag has no topics)"
        width, type_width = max(len(t) for t in self.types), max(len(t) for t in self.types.values())
        return "\n".join(f"  {topic:<{width}}  {msgtype:<{type_width}}  ({self.counts.get(topic, 0)} messages)"
                         for topic, msgtype in sorted(self.types.items()))

    def check_type(self, topic: str, wanted: Collection[str], flag: str) -> None:
        """Fail unless ``topic`` exists in the bag with one of the ``wanted`` types."""
        if topic not in self.types:
            raise DataError(f"bag {self.path}: no topic {topic} ({flag}); the bag's topics are:\n"
                            f"{self.topic_table()}\npass {flag} with one of them.")
        if self.types[topic] not in wanted:
            raise DataError(f"bag {self.path}: topic {topic} has type {self.types[topic]}, but {flag} needs "
                            f"{' or '.join(sorted(wanted))}; the bag's topics are:\n{self.topic_table()}\n"
                            f"pass {flag} with a topic of the right type.")

    def choose(self, role: str, flag: str, wanted: Collection[str], given: str,
               candidates: list[str] | None = None, required: bool = True) -> str | None:
        """The topic for ``role``: ``given`` (checked), else the single candidate of the ``wanted`` types.

        ``candidates`` narrows the topics of the wanted types (e.g. Image topics that carry colour, not
        depth). With none, an optional role returns None; several, or none for a required role, fail
        with the bag's topic table and the flag that chooses.
        """
        if given:
            self.check_type(given, wanted, flag)
            return given
        if candidates is None:
            candidates = sorted(t for t, msgtype in self.types.items() if msgtype in wanted)
        if len(candidates) == 1:
            return candidates[0]
        if not candidates and not required:
            return None
        problem = (f"{len(candidates)} {role} topics ({', '.join(candidates)})" if candidates
                   else f"no {role} topic ({' or '.join(sorted(wanted))})")
        raise DataError(f"bag {self.path}: {problem}; the bag's topics are:\n{self.topic_table()}\n"
                        f"choose one with {flag} TOPIC.")
