"""Results (wire contract v1, DESIGN §3): the ``result`` field of a reply-stream entry, and
tracked videos' output (DESIGN §13): the ``frame`` and ``done`` fields of a video's output
stream. Each type reads the JSON as strictly as the worker's own types (a required key of the
wrong type is refused, unknown keys are ignored) and writes it back in the contract's shape.

Error and warning codes are plain strings: a code a newer worker added reads as itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field as dc_field
from typing import Any, Dict, List, Optional, Union

from . import _check as c

__all__ = [
    "ERROR_CODES",
    "WARNING_CODES",
    "ErrorBody",
    "ResultWarning",
    "Timings",
    "Person",
    "JobResult",
    "TrackedPerson",
    "VideoFrame",
    "TrackInfo",
    "VideoTimings",
    "VideoDone",
    "ShapeError",
]

ShapeError = c.ShapeError

#: The contract's closed set of error codes (a newer worker may add more: read them as is).
ERROR_CODES = (
    "invalid_json",
    "unsupported_version",
    "invalid_job",
    "missing_image",
    "invalid_base64",
    "invalid_image",
    "image_too_large",
    "invalid_box",
    "too_many_deliveries",
)
#: The warning codes of an ``ok`` result.
WARNING_CODES = ("non_finite_output",)

_u32 = c.unsigned(32)
_u64 = c.unsigned(64)
_matrix = c.array(c.numbers(3), 3)


def _loads(text: Union[str, bytes]) -> Any:
    return json.loads(text)


@dataclass
class ErrorBody:
    """Why a job failed: a stable code and a message for people."""

    code: str
    message: str

    @classmethod
    def from_dict(cls, d: Any, what: str = "error") -> "ErrorBody":
        d = c.obj(d, what)
        return cls(code=c.field(d, "code", c.string, what), message=c.field(d, "message", c.string, what))

    def to_dict(self) -> Dict[str, Any]:
        return {"code": self.code, "message": self.message}


@dataclass
class ResultWarning:
    """What an ``ok`` result leaves out (a person with a non-finite output), and why."""

    code: str
    message: str

    @classmethod
    def from_dict(cls, d: Any, what: str = "warning") -> "ResultWarning":
        d = c.obj(d, what)
        return cls(code=c.field(d, "code", c.string, what), message=c.field(d, "message", c.string, what))

    def to_dict(self) -> Dict[str, Any]:
        return {"code": self.code, "message": self.message}


@dataclass
class Timings:
    """Where a job's time went, milliseconds."""

    queue_wait: float = 0.0
    decode: float = 0.0
    inference: float = 0.0
    total: float = 0.0

    @classmethod
    def from_dict(cls, d: Any, what: str = "timings_ms") -> "Timings":
        d = c.obj(d, what)
        return cls(**{k: c.field(d, k, c.number, what) for k in ("queue_wait", "decode", "inference", "total")})

    def to_dict(self) -> Dict[str, Any]:
        return {"queue_wait": self.queue_wait, "decode": self.decode, "inference": self.inference, "total": self.total}


@dataclass
class Person:
    """One person's outputs in one frame (coordinates in the full frame)."""

    #: ``[x1, y1, x2, y2]`` in pixels.
    box: List[float]
    #: ``job``, ``detector`` or ``frame`` (the whole-frame box).
    box_source: str
    #: The detector's confidence (0-1); only when ``box_source`` is ``detector``.
    score: Optional[float]
    #: Centre of the square crop, pixels.
    box_center: List[float]
    #: Side of the square crop, pixels.
    box_size: float
    #: Weak-perspective camera ``[s, tx, ty]`` of the crop.
    pred_cam: List[float]
    #: Camera translation ``[tx, ty, tz]`` in the full frame.
    pred_cam_t_full: List[float]
    #: Focal length used for the full frame, pixels.
    focal_length: float
    #: Root rotation, 3x3.
    global_orient: List[List[float]]
    #: 23 joint rotations, 3x3 each.
    body_pose: List[List[List[float]]]
    #: 10 SMPL shape coefficients.
    betas: List[float]
    #: 44 joints ``[x, y, z]``, metres, camera frame.
    keypoints_3d: List[List[float]]
    #: 44 joints ``[u, v]``, pixels of the full frame.
    keypoints_2d: List[List[float]]
    #: 6890 mesh vertices ``[x, y, z]``; only when the job asked for them.
    vertices: Optional[List[List[float]]] = None

    @classmethod
    def from_dict(cls, d: Any, what: str = "person") -> "Person":
        d = c.obj(d, what)
        return cls(
            box=c.field(d, "box", c.numbers(4), what),
            box_source=c.field(d, "box_source", c.one_of("job", "detector", "frame"), what, default="job"),
            score=c.field(d, "score", c.number, what, default=None, nullable=True),
            box_center=c.field(d, "box_center", c.numbers(2), what),
            box_size=c.field(d, "box_size", c.number, what),
            pred_cam=c.field(d, "pred_cam", c.numbers(3), what),
            pred_cam_t_full=c.field(d, "pred_cam_t_full", c.numbers(3), what),
            focal_length=c.field(d, "focal_length", c.number, what),
            global_orient=c.field(d, "global_orient", _matrix, what),
            body_pose=c.field(d, "body_pose", c.array(_matrix), what),
            betas=c.field(d, "betas", c.numbers(), what),
            keypoints_3d=c.field(d, "keypoints_3d", c.array(c.numbers(3)), what),
            keypoints_2d=c.field(d, "keypoints_2d", c.array(c.numbers(2)), what),
            vertices=c.field(d, "vertices", c.array(c.numbers(3)), what, default=None, nullable=True),
        )

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"box": self.box, "box_source": self.box_source}
        if self.score is not None:
            d["score"] = self.score
        d.update(
            box_center=self.box_center,
            box_size=self.box_size,
            pred_cam=self.pred_cam,
            pred_cam_t_full=self.pred_cam_t_full,
            focal_length=self.focal_length,
            global_orient=self.global_orient,
            body_pose=self.body_pose,
            betas=self.betas,
            keypoints_3d=self.keypoints_3d,
            keypoints_2d=self.keypoints_2d,
        )
        if self.vertices is not None:
            d["vertices"] = self.vertices
        return d


@dataclass
class JobResult:
    """One result: the ``result`` field of a reply-stream entry."""

    #: Contract version (1).
    v: int
    #: The job's ``job_id``; ``None`` when the job was unreadable.
    job_id: Optional[str]
    #: The job's stream entry id: identifies the job even when its JSON was unreadable.
    entry_id: str
    #: ``ok`` or ``error``.
    status: str
    video_id: Optional[str] = None
    frame_number: Optional[int] = None
    #: Why the job failed; only when ``status`` is ``error``.
    error: Optional[ErrorBody] = None
    #: ``[width, height]`` of the decoded image.
    image_size: Optional[List[int]] = None
    #: The people found, by detector score or in the job's box order.
    people: List[Person] = dc_field(default_factory=list)
    #: How many people the detector found before the ``max_boxes`` cap (when it ran).
    detected: Optional[int] = None
    #: What an ``ok`` result leaves out, and why.
    warnings: List[ResultWarning] = dc_field(default_factory=list)
    timings_ms: Timings = dc_field(default_factory=Timings)
    #: The worker that ran the job (``host/pid``).
    worker: str = ""
    #: The device it ran on (``cuda:0``, ``cpu``).
    device: str = ""
    #: The model that ran.
    model: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def from_dict(cls, d: Any, what: str = "result") -> "JobResult":
        d = c.obj(d, what)
        return cls(
            v=c.field(d, "v", c.signed, what),
            job_id=c.field(d, "job_id", c.string, what, default=None, nullable=True),
            entry_id=c.field(d, "entry_id", c.string, what),
            status=c.field(d, "status", c.one_of("ok", "error"), what),
            video_id=c.field(d, "video_id", c.string, what, default=None, nullable=True),
            frame_number=c.field(d, "frame_number", _u64, what, default=None, nullable=True),
            error=c.field(d, "error", ErrorBody.from_dict, what, default=None, nullable=True),
            image_size=c.field(d, "image_size", c.array(_u32, 2), what, default=None, nullable=True),
            people=c.field(d, "people", c.array(Person.from_dict), what, default=list),
            detected=c.field(d, "detected", _u32, what, default=None, nullable=True),
            warnings=c.field(d, "warnings", c.array(ResultWarning.from_dict), what, default=list),
            timings_ms=c.field(d, "timings_ms", Timings.from_dict, what, default=Timings),
            worker=c.field(d, "worker", c.string, what, default=""),
            device=c.field(d, "device", c.string, what, default=""),
            model=c.field(d, "model", c.string, what, default=""),
        )

    @classmethod
    def from_json(cls, text: Union[str, bytes]) -> "JobResult":
        """Reads the JSON text of a ``result`` field; :class:`ShapeError` (a ``ValueError``)
        when it is not a v1 result."""
        return cls.from_dict(_loads(text))

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"v": self.v, "job_id": self.job_id, "entry_id": self.entry_id}
        if self.video_id is not None:
            d["video_id"] = self.video_id
        if self.frame_number is not None:
            d["frame_number"] = self.frame_number
        d["status"] = self.status
        if self.error is not None:
            d["error"] = self.error.to_dict()
        if self.image_size is not None:
            d["image_size"] = self.image_size
        d["people"] = [p.to_dict() for p in self.people]
        if self.detected is not None:
            d["detected"] = self.detected
        if self.warnings:
            d["warnings"] = [w.to_dict() for w in self.warnings]
        d["timings_ms"] = self.timings_ms.to_dict()
        d.update(worker=self.worker, device=self.device, model=self.model)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)


@dataclass
class TrackedPerson:
    """One person in one frame of a tracked video: the outputs smoothed along its track."""

    #: The person's track: 1, 2, ... in order of first appearance in the video.
    track_id: int
    #: ``[x1, y1, x2, y2]`` in pixels.
    box: List[float]
    box_source: str
    global_orient: List[List[float]]
    body_pose: List[List[List[float]]]
    #: Constant along the track.
    betas: List[float]
    pred_cam_t_full: List[float]
    focal_length: float
    keypoints_2d: List[List[float]]
    keypoints_3d: List[List[float]]
    #: Filled in (a gap in the track) or replaced (an outlier) by interpolation.
    interpolated: bool
    score: Optional[float] = None
    vertices: Optional[List[List[float]]] = None

    @classmethod
    def from_dict(cls, d: Any, what: str = "person") -> "TrackedPerson":
        d = c.obj(d, what)
        return cls(
            track_id=c.field(d, "track_id", _u32, what),
            box=c.field(d, "box", c.numbers(4), what),
            box_source=c.field(d, "box_source", c.one_of("job", "detector", "frame"), what),
            global_orient=c.field(d, "global_orient", _matrix, what),
            body_pose=c.field(d, "body_pose", c.array(_matrix), what),
            betas=c.field(d, "betas", c.numbers(), what),
            pred_cam_t_full=c.field(d, "pred_cam_t_full", c.numbers(3), what),
            focal_length=c.field(d, "focal_length", c.number, what),
            keypoints_2d=c.field(d, "keypoints_2d", c.array(c.numbers(2)), what),
            keypoints_3d=c.field(d, "keypoints_3d", c.array(c.numbers(3)), what),
            interpolated=c.field(d, "interpolated", c.boolean, what),
            score=c.field(d, "score", c.number, what, default=None, nullable=True),
            vertices=c.field(d, "vertices", c.array(c.numbers(3)), what, default=None, nullable=True),
        )

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"track_id": self.track_id, "box": self.box}
        if self.score is not None:
            d["score"] = self.score
        d.update(
            box_source=self.box_source,
            global_orient=self.global_orient,
            body_pose=self.body_pose,
            betas=self.betas,
            pred_cam_t_full=self.pred_cam_t_full,
            focal_length=self.focal_length,
            keypoints_2d=self.keypoints_2d,
            keypoints_3d=self.keypoints_3d,
            interpolated=self.interpolated,
        )
        if self.vertices is not None:
            d["vertices"] = self.vertices
        return d


@dataclass
class VideoFrame:
    """One frame of a tracked video (the ``frame`` field of an output-stream entry)."""

    v: int
    video_id: str
    frame_number: int
    #: ``ok``, or ``error`` for a frame whose job failed (then ``error`` says why).
    status: str
    error: Optional[ErrorBody] = None
    people: List[TrackedPerson] = dc_field(default_factory=list)

    @classmethod
    def from_dict(cls, d: Any, what: str = "frame") -> "VideoFrame":
        d = c.obj(d, what)
        return cls(
            v=c.field(d, "v", _u32, what),
            video_id=c.field(d, "video_id", c.string, what),
            frame_number=c.field(d, "frame_number", _u64, what),
            status=c.field(d, "status", c.one_of("ok", "error"), what),
            error=c.field(d, "error", ErrorBody.from_dict, what, default=None, nullable=True),
            people=c.field(d, "people", c.array(TrackedPerson.from_dict), what, default=list),
        )

    @classmethod
    def from_json(cls, text: Union[str, bytes]) -> "VideoFrame":
        return cls.from_dict(_loads(text))

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {
            "v": self.v,
            "video_id": self.video_id,
            "frame_number": self.frame_number,
            "status": self.status,
        }
        if self.error is not None:
            d["error"] = self.error.to_dict()
        d["people"] = [p.to_dict() for p in self.people]
        return d


@dataclass
class TrackInfo:
    """One track of a video: where it runs and how much of it was filled in."""

    track_id: int
    first_frame: int
    last_frame: int
    #: How many frames it is in.
    frames: int
    #: How many of those were interpolated.
    interpolated_frames: int

    @classmethod
    def from_dict(cls, d: Any, what: str = "track") -> "TrackInfo":
        d = c.obj(d, what)
        return cls(
            track_id=c.field(d, "track_id", _u32, what),
            **{k: c.field(d, k, _u64, what) for k in ("first_frame", "last_frame", "frames", "interpolated_frames")},
        )

    def to_dict(self) -> Dict[str, Any]:
        return {
            "track_id": self.track_id,
            "first_frame": self.first_frame,
            "last_frame": self.last_frame,
            "frames": self.frames,
            "interpolated_frames": self.interpolated_frames,
        }


@dataclass
class VideoTimings:
    """Where a video's time went, milliseconds."""

    #: Tracking and smoothing.
    tracking: float = 0.0
    #: From the first frame recorded to the output written.
    total: float = 0.0

    @classmethod
    def from_dict(cls, d: Any, what: str = "timings_ms") -> "VideoTimings":
        d = c.obj(d, what)
        return cls(tracking=c.field(d, "tracking", c.number, what), total=c.field(d, "total", c.number, what))

    def to_dict(self) -> Dict[str, Any]:
        return {"tracking": self.tracking, "total": self.total}


@dataclass
class VideoDone:
    """The last entry of a video's output (the ``done`` field)."""

    v: int
    video_id: str
    #: ``ok``, or ``expired`` (frames stopped coming; the output holds those it got).
    status: str
    frames: int
    ok_frames: int
    error_frames: int
    missing_frames: int
    fps: float
    tracks: List[TrackInfo] = dc_field(default_factory=list)
    timings_ms: VideoTimings = dc_field(default_factory=VideoTimings)

    @classmethod
    def from_dict(cls, d: Any, what: str = "done") -> "VideoDone":
        d = c.obj(d, what)
        return cls(
            v=c.field(d, "v", _u32, what),
            video_id=c.field(d, "video_id", c.string, what),
            status=c.field(d, "status", c.one_of("ok", "expired"), what),
            frames=c.field(d, "frames", _u64, what),
            ok_frames=c.field(d, "ok_frames", _u64, what),
            error_frames=c.field(d, "error_frames", _u64, what),
            missing_frames=c.field(d, "missing_frames", _u64, what),
            fps=c.field(d, "fps", c.number, what),
            tracks=c.field(d, "tracks", c.array(TrackInfo.from_dict), what, default=list),
            timings_ms=c.field(d, "timings_ms", VideoTimings.from_dict, what),
        )

    @classmethod
    def from_json(cls, text: Union[str, bytes]) -> "VideoDone":
        return cls.from_dict(_loads(text))

    def to_dict(self) -> Dict[str, Any]:
        return {
            "v": self.v,
            "video_id": self.video_id,
            "status": self.status,
            "frames": self.frames,
            "ok_frames": self.ok_frames,
            "error_frames": self.error_frames,
            "missing_frames": self.missing_frames,
            "fps": self.fps,
            "tracks": [t.to_dict() for t in self.tracks],
            "timings_ms": self.timings_ms.to_dict(),
        }

