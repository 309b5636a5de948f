"""Jobs (wire contract v1, DESIGN §3, §13): building what a producer sends, and reading a job
the way the worker reads it.

A job is one entry of ``{prefix}:jobs`` with a ``job`` field (UTF-8 JSON) and, preferably, an
``image`` field with the raw JPEG/PNG bytes (a third smaller than base64, no base64 work on
either side). :meth:`Frame.fields` builds those fields; :func:`parse_job` applies the worker's
rules to a ``job`` field and says which error code the worker would answer.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from ._check import kind as _kind
from .keys import MAX_ID_BYTES

__all__ = [
    "VERSION",
    "INCLUDES",
    "MAX_BOXES",
    "MAX_JOB_BYTES",
    "Box",
    "Video",
    "Job",
    "Frame",
    "JobError",
    "parse_job",
]

#: The contract version this package speaks.
VERSION = 1
#: The optional outputs a job may ask for in ``include``.
INCLUDES: Tuple[str, ...] = ("vertices",)
#: The worker's default ``limits.max_boxes``.
MAX_BOXES = 32
#: The worker's default ``limits.max_job_bytes``: the base64 text of the largest accepted image
#: (20 MiB) plus 1 MiB.
MAX_JOB_BYTES = 4 * -(-20_971_520 // 3) + (1 << 20)

#: A person box ``(x1, y1, x2, y2)`` in pixels.
Box = Tuple[float, float, float, float]


class JobError(ValueError):
    """A job the worker would refuse: ``code`` is the error code of its answer
    (``invalid_job``, ``invalid_json``, ``missing_image``, ``invalid_box``,
    ``unsupported_version``), ``message`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Video:
    """The ``video`` object of a frame of a tracked video (DESIGN §13): every frame of the
    video carries the same one."""

    #: How many frames the video has (at least 1); frame numbers run from 0 to ``frames - 1``.
    frames: int
    #: Frames per second (finite, above 0).
    fps: float
    #: The stream for the video's tracked output; ``None`` for ``<results>:video:<video_id>``.
    reply_to: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        """The JSON object, keys in the contract's order."""
        d: Dict[str, Any] = {"frames": int(self.frames), "fps": float(self.fps)}
        if self.reply_to is not None:
            d["reply_to"] = self.reply_to
        return d

    def check(self) -> None:
        """Raises :class:`JobError` when the worker would refuse this object."""
        if isinstance(self.frames, bool) or not isinstance(self.frames, int) or self.frames < 1:
            raise JobError("invalid_job", f"`video.frames` must be an integer >= 1, got {self.frames!r}")
        if isinstance(self.fps, bool) or not isinstance(self.fps, (int, float)):
            raise JobError("invalid_job", f"`video.fps` must be a number > 0, got {self.fps!r}")
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise JobError("invalid_job", f"`video.fps` must be a number > 0, got {self.fps!r}")
        if self.reply_to is not None:
            _check_id("video.reply_to", self.reply_to)


def _check_id(key: str, value: object) -> None:
    if not isinstance(value, str):
        raise JobError("invalid_job", f"`{key}` must be a string, got {_kind(value)}")
    n = len(value.encode("utf-8"))
    if n == 0 or n > MAX_ID_BYTES:
        raise JobError("invalid_job", f"`{key}` must be 1 to {MAX_ID_BYTES} bytes")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def normalize_include(include: Union[Iterable[str], str, None]) -> Tuple[str, ...]:
    """``include`` as the contract writes it: known names only, each once, in a fixed order.
    Raises :class:`JobError` (``invalid_job``) for a name the worker does not know."""
    if include is None:
        return ()
    names = [include] if isinstance(include, str) else list(include)
    for name in names:
        if name not in INCLUDES:
            raise JobError(
                "invalid_job",
                f"unknown `include` item {name!r} (known: {', '.join(INCLUDES)})",
            )
    return tuple(n for n in INCLUDES if n in names)


@dataclass
class Job:
    """A job: what one stream entry asks of a worker (the image travels beside it in a
    :class:`Frame`).

    >>> Job("clip-7:16", video_id="clip-7", frame_number=16,
    ...     video=Video(frames=120, fps=29.97)).to_json()
    '{"v":1,"job_id":"clip-7:16","video_id":"clip-7","frame_number":16,"video":{"frames":120,"fps":29.97}}'
    """

    #: Unique id (1 to 256 bytes); results are keyed by it.
    job_id: str
    #: Echoed back in the result; routes the job to its shard.
    video_id: Optional[str] = None
    #: Echoed back in the result.
    frame_number: Optional[int] = None
    #: The image inside the JSON, standard base64 (only when the entry has no ``image``).
    image_base64: Optional[str] = None
    #: Person boxes ``(x1, y1, x2, y2)`` in pixels; empty: the worker finds the people.
    boxes: List[Box] = field(default_factory=list)
    #: The stream that receives the result; ``None`` for the shard's results stream.
    reply_to: Optional[str] = None
    #: Optional heavy outputs (``("vertices",)``).
    include: Tuple[str, ...] = ()
    #: Set on every frame of a tracked video.
    video: Optional[Video] = None

    def to_dict(self, image_base64: Optional[str] = None, *, own_image: bool = True) -> Dict[str, Any]:
        """The JSON object, keys in the contract's order (as the Rust client writes them):
        ``v``, ``job_id``, then every optional key that is set (empty ``boxes`` and
        ``include`` left out), ``video`` last. ``image_base64`` overrides the job's own; with
        ``own_image=False`` the job's own is left out."""
        d: Dict[str, Any] = {"v": VERSION, "job_id": self.job_id}
        if self.video_id is not None:
            d["video_id"] = self.video_id
        if self.frame_number is not None:
            d["frame_number"] = int(self.frame_number)
        b64 = image_base64 if image_base64 is not None else (self.image_base64 if own_image else None)
        if b64 is not None:
            d["image_base64"] = b64
        if self.boxes:
            d["boxes"] = [[float(c) for c in b] for b in self.boxes]
        if self.reply_to is not None:
            d["reply_to"] = self.reply_to
        include = normalize_include(self.include)
        if include:
            d["include"] = list(include)
        if self.video is not None:
            d["video"] = self.video.to_dict()
        return d

    def to_json(self) -> str:
        """The ``job`` field's text (compact JSON, UTF-8 unescaped)."""
        return _dumps(self.to_dict())

    def check(self, has_raw_image: bool = True, max_boxes: int = MAX_BOXES) -> None:
        """Raises :class:`JobError` when the worker would refuse this job (whatever its
        prefix: whether ``reply_to`` lies under the shard's results stream is checked by the
        client, which knows the layout)."""
        parse_job(self.to_json().encode("utf-8"), has_raw_image, max_boxes=max_boxes)


@dataclass
class Frame:
    """A job and its JPEG/PNG bytes: one stream entry to add."""

    job: Job
    #: JPEG or PNG bytes; empty when the job carries ``image_base64`` itself.
    image: bytes = b""

    def fields(self, raw: bool = True) -> List[Tuple[str, bytes]]:
        """The stream fields: ``job`` and, when ``raw``, ``image`` with the bytes (the job's
        own ``image_base64`` left out); otherwise the bytes go inside the JSON as
        ``image_base64``. A frame without bytes sends the job's own ``image_base64``."""
        if not self.image and self.job.image_base64 is not None:
            return [("job", self.job.to_json().encode("utf-8"))]
        if raw:
            text = _dumps(self.job.to_dict(own_image=False))
            return [("job", text.encode("utf-8")), ("image", bytes(self.image))]
        b64 = base64.b64encode(self.image).decode("ascii")
        return [("job", _dumps(self.job.to_dict(b64)).encode("utf-8"))]


# --- reading a job as the worker does -------------------------------------------------------

_KNOWN = ("v", "job_id", "video_id", "frame_number", "image_base64", "boxes", "reply_to", "include", "video")
_VIDEO_KNOWN = ("frames", "fps", "reply_to")
#: serde_json's nesting limit.
_MAX_DEPTH = 128


class _Obj(dict):  # type: ignore[type-arg]
    """A JSON object that remembers its repeated keys."""

    repeated: Tuple[str, ...] = ()


def _object(pairs: List[Tuple[str, Any]]) -> _Obj:
    obj = _Obj()
    seen = []
    for k, v in pairs:
        if k in obj:
            seen.append(k)
            continue
        obj[k] = v
    obj.repeated = tuple(seen)
    return obj


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _float(text: str) -> float:
    x = float(text)
    if not math.isfinite(x):
        raise ValueError("number out of range")
    return x


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            deepest = max(deepest, d)
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            deepest = max(deepest, d)
            stack.extend((x, d + 1) for x in v)
    return deepest


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and -(2**63) <= x < 2**64


def _as_u64(x: Any) -> Optional[int]:
    return x if _is_int(x) and x >= 0 else None


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)




def _describe(x: Any) -> str:
    """A number as the worker writes it in a message, anything else by its kind."""
    if _is_int(x):
        return str(x)
    if _is_number(x):
        text = format(Decimal(repr(float(x))), "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return text
    return _kind(x)


def _optional_id(key: str, obj: Dict[str, Any]) -> Optional[str]:
    value = obj.get(key)
    if value is None:
        return None
    _check_id(key, value)
    return str(value)


def _boxes(value: Any, max_boxes: int) -> List[Box]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise JobError("invalid_box", f"`boxes` must be an array of [x1, y1, x2, y2], got {_kind(value)}")
    if len(value) > max_boxes:
        raise JobError("invalid_box", f"{len(value)} boxes, at most {max_boxes} allowed")
    out: List[Box] = []
    for i, b in enumerate(value):
        if not isinstance(b, list) or len(b) != 4:
            raise JobError("invalid_box", f"box {i} is not an array of 4 numbers")
        if not all(_is_number(c) for c in b):
            raise JobError("invalid_box", f"box {i} has a non-numeric coordinate")
        out.append((float(b[0]), float(b[1]), float(b[2]), float(b[3])))
    return out


def _include(value: Any) -> Tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise JobError("invalid_job", f"`include` must be an array, got {_kind(value)}")
    names = []
    for item in value:
        if not isinstance(item, str):
            raise JobError("invalid_job", "`include` items must be strings")
        if item not in INCLUDES:
            raise JobError("invalid_job", f'unknown `include` item "{item[:40]}" (known: "vertices")')
        names.append(item)
    return tuple(n for n in INCLUDES if n in names)


def _video(value: Any) -> Optional[Video]:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise JobError("invalid_job", f"`video` must be an object, got {_kind(value)}")
    if "frames" not in value:
        raise JobError("invalid_job", "`video.frames` is required")
    frames = _as_u64(value["frames"])
    if frames is None or frames < 1:
        raise JobError("invalid_job", f"`video.frames` must be an integer >= 1, got {_describe(value['frames'])}")
    if "fps" not in value:
        raise JobError("invalid_job", "`video.fps` is required")
    fps = value["fps"]
    if not _is_number(fps) or not (math.isfinite(float(fps)) and float(fps) > 0):
        raise JobError("invalid_job", f"`video.fps` must be a number > 0, got {_describe(fps)}")
    reply_to = _optional_id("video.reply_to", {"video.reply_to": value.get("reply_to")})
    return Video(frames=frames, fps=float(fps), reply_to=reply_to)


def parse_job(
    raw: Union[bytes, str],
    has_raw_image: bool = False,
    *,
    max_job_bytes: int = MAX_JOB_BYTES,
    max_boxes: int = MAX_BOXES,
) -> Job:
    """Reads a ``job`` field as the worker does (its default limits unless given): the job, or
    :class:`JobError` with the error code the worker would answer. ``has_raw_image`` says
    whether the entry carries an ``image`` field (then ``image_base64`` is ignored). Whether
    ``reply_to`` lies under the shard's results stream depends on the layout: see
    :meth:`hmr2_client.Keys.accepts_reply_to`."""
    data = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
    if len(data) > max_job_bytes:
        raise JobError("invalid_job", f"job field is {len(data)} bytes, the limit is {max_job_bytes}")
    try:
        text = data.decode("utf-8")
        obj = json.loads(text, object_pairs_hook=_object, parse_constant=_constant, parse_float=_float)
    except (ValueError, RecursionError) as e:
        raise JobError("invalid_json", f"job field is not valid UTF-8 JSON: {e}") from None
    if not isinstance(obj, dict):
        raise JobError("invalid_json", "job field is not valid UTF-8 JSON: the job must be a JSON object")
    if _depth(obj) > _MAX_DEPTH:
        raise JobError("invalid_json", "job field is not valid UTF-8 JSON: recursion limit exceeded")
    repeated = [k for k in getattr(obj, "repeated", ()) if k in _KNOWN]
    video_obj = obj.get("video")
    if not repeated and isinstance(video_obj, _Obj):
        repeated = [k for k in video_obj.repeated if k in _VIDEO_KNOWN]
    if repeated:
        raise JobError("invalid_json", f"job field is not valid UTF-8 JSON: duplicate field `{repeated[0]}`")

    if "v" in obj:
        v = obj["v"]
        if not (_is_int(v) and v < 2**63):
            raise JobError("invalid_job", f"`v` must be an integer, got {_kind(v)}")
        if v != VERSION:
            raise JobError("unsupported_version", f"unsupported contract version {v} (this worker speaks v1)")
    if "job_id" not in obj:
        raise JobError("invalid_job", "`job_id` is required")
    job_id = obj["job_id"]
    if not isinstance(job_id, str):
        raise JobError("invalid_job", f"`job_id` must be a string, got {_kind(job_id)}")
    if job_id == "":
        raise JobError("invalid_job", "`job_id` is empty")
    if len(job_id.encode("utf-8")) > MAX_ID_BYTES:
        raise JobError("invalid_job", f"`job_id` is {len(job_id.encode('utf-8'))} bytes, at most {MAX_ID_BYTES} allowed")
    video_id = _optional_id("video_id", obj)
    reply_to = _optional_id("reply_to", obj)
    frame_number = obj.get("frame_number")
    if frame_number is not None and _as_u64(frame_number) is None:
        raise JobError("invalid_job", f"`frame_number` must be an integer >= 0, got {_kind(frame_number)}")
    image_base64 = obj.get("image_base64")
    if image_base64 is not None and not isinstance(image_base64, str):
        raise JobError("invalid_job", f"`image_base64` must be a string, got {_kind(image_base64)}")
    if image_base64 is None and not has_raw_image:
        raise JobError("missing_image", "job has neither an `image` field nor `image_base64`")
    boxes = _boxes(obj.get("boxes"), max_boxes)
    include = _include(obj.get("include"))
    video = _video(obj.get("video"))
    if video is not None:
        if video_id is None:
            raise JobError("invalid_job", "`video_id` is required when `video` is present")
        if frame_number is None:
            raise JobError("invalid_job", "`frame_number` is required when `video` is present")
        if frame_number >= video.frames:
            raise JobError(
                "invalid_job",
                f"`frame_number` must be below `video.frames` ({video.frames}), got {frame_number}",
            )
    return Job(
        job_id=job_id,
        video_id=video_id,
        frame_number=frame_number,
        image_base64=None if has_raw_image else image_base64,
        boxes=boxes,
        reply_to=reply_to,
        include=include,
        video=video,
    )



def check_boxes(boxes: Optional[Sequence[Sequence[float]]]) -> List[Box]:
    """``boxes`` as a list of 4-float tuples; raises :class:`JobError` (``invalid_box``) for a
    box that is not 4 finite numbers."""
    out: List[Box] = []
    for i, b in enumerate(boxes or ()):
        coords = list(b)
        if len(coords) != 4 or not all(_is_number(c) and math.isfinite(c) for c in coords):
            raise JobError("invalid_box", f"box {i} is not 4 finite numbers: {coords!r}")
        out.append((float(coords[0]), float(coords[1]), float(coords[2]), float(coords[3])))
    return out
