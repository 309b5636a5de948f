"""What the blocking and the asyncio clients share: the values they return, reading stream
entries into them, checking a video before any frame is sent, frame sources, progress and
duplicate tracking. No I/O on Redis here."""

from __future__ import annotations

import json
import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import (
    Any,
    Callable,
    Dict,
    Hashable,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

from .job import Frame, Job, JobError, Video, check_boxes, normalize_include
from .keys import MAX_ID_BYTES, Keys, Layout
from .results import JobResult, VideoDone, VideoFrame

#: Frames per pipelined round trip.
CHUNK = 64
#: Entries per XRANGE page / XREAD.
PAGE = 500
#: The longest a single blocking XREAD waits, seconds (a wait is made of such slices, so a
#: deadline is kept and a connection with a socket timeout of a few seconds is not cut).
BLOCK_SLICE = 1.0
#: Image file names a directory of frames is read for (any case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
#: How many job ids :meth:`Client.results` remembers to drop duplicates.
DEDUPE_WINDOW = 100_000

#: An image: its bytes, or the path of a JPEG/PNG file.
Image = Union[bytes, bytearray, memoryview, str, "os.PathLike[str]"]


@dataclass(frozen=True)
class Unreadable:
    """A stream entry that cannot be read as what its stream holds: no such field, not UTF-8,
    or not of the contract's shape. Returned in its place, never raised, so a reader's cursor
    moves past it."""

    #: The stream.
    stream: str
    #: The entry's id.
    entry_id: str
    #: What is wrong with it.
    reason: str

    def __str__(self) -> str:
        return f"{self.stream} entry {self.entry_id}: {self.reason}"


@dataclass
class Reply:
    """One entry of a reply stream: a result, or why it cannot be read."""

    #: The reply stream it was read from.
    stream: str
    #: The result's own stream entry id (a cursor), readable or not.
    entry_id: str
    #: The entry's ``job_id`` field; empty when the job or the field was unreadable.
    job_id: str
    #: The result, when the entry holds a readable one.
    result: Optional[JobResult] = None
    #: Why the entry cannot be read, when it cannot.
    error: Optional[Unreadable] = None

    @property
    def ok(self) -> bool:
        """Whether the entry was readable (not whether the job succeeded: see
        ``result.status``)."""
        return self.result is not None


@dataclass
class VideoEntry:
    """One entry of a video's output stream: a tracked frame, the video's end, or why it
    cannot be read."""

    stream: str
    entry_id: str
    frame: Optional[VideoFrame] = None
    done: Optional[VideoDone] = None
    error: Optional[Unreadable] = None


@dataclass
class VideoOutput:
    """A tracked video's whole output."""

    video_id: str
    #: The stream it was read from.
    stream: str
    #: The tracked frames, in frame order.
    frames: List[VideoFrame]
    #: How the video ended: ``ok``, or ``expired`` with the frames it got.
    done: VideoDone
    #: Entries before the end that could not be read (which video they were for is unknown).
    unreadable: List[Unreadable] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        """``{"video_id", "stream", "done", "frames", "unreadable"}``, JSON-ready."""
        return {
            "video_id": self.video_id,
            "stream": self.stream,
            "done": self.done.to_dict(),
            "frames": [f.to_dict() for f in self.frames],
            "unreadable": [str(u) for u in self.unreadable],
        }


@dataclass
class SubmittedVideo:
    """What :meth:`Client.submit_video` added: pass it to :meth:`Client.wait_video`."""

    video_id: str
    #: How many frames the video has.
    frames: int
    fps: float
    #: The shard it went to.
    shard: int
    #: The stream its tracked output will be written to.
    output: str
    #: The stream its frames' own results go to.
    results: str
    #: The frames' job entry ids, in frame order.
    entry_ids: List[str]
    #: The last entry of ``results`` before the first frame was added: the video's results
    #: come after it.
    since: str = "0-0"


@dataclass(frozen=True)
class VideoProgress:
    """How far a video is: frames answered (distinct frame numbers with a result on the
    frames' results stream), of which failed, out of ``total`` (``None`` when unknown)."""

    video_id: str
    answered: int
    failed: int
    total: Optional[int]
    #: Whether the video's ``done`` entry is there (the last call).
    done: bool = False


class WaitTimeout(TimeoutError):
    """No ``done`` entry for the video within the wait; ``progress`` says how far it got."""

    def __init__(self, video_id: str, stream: str, timeout: float, progress: Optional[VideoProgress]) -> None:
        got = ""
        if progress is not None:
            of = f" of {progress.total}" if progress.total is not None else ""
            got = f" ({progress.answered}{of} frames answered)"
        super().__init__(f"video {video_id!r}: no `done` entry on {stream} within {timeout:g} s{got}")
        self.video_id = video_id
        self.stream = stream
        self.progress = progress


@dataclass
class ModelInfo:
    """The hash ``{prefix}:model``: what the workers run, and what a renderer needs besides
    the results."""

    #: The model's ``meta()`` (name, dtype, ...).
    meta: Dict[str, Any]
    #: The detector's ``meta()``, when one is configured.
    detector: Optional[Dict[str, Any]] = None
    #: Mesh faces: 13776 triangles of vertex indices.
    faces: Optional[List[List[int]]] = None
    #: The 24-joint kinematic tree.
    parents: Optional[List[int]] = None
    joint_names: Optional[List[str]] = None
    #: The names of the 44 ``keypoints_3d`` / ``keypoints_2d``.
    keypoint_names: Optional[List[str]] = None
    #: ``smpl``, or ``synthetic`` for the test models.
    topology: Optional[str] = None
    #: Every field of the hash, its JSON read (the text where it is not JSON).
    fields: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        """The known fields that are set, as ``schemas/model.schema.json`` describes them."""
        d: Dict[str, Any] = {"meta": self.meta}
        for name in ("detector", "faces", "parents", "joint_names", "keypoint_names", "topology"):
            value = getattr(self, name)
            if value is not None:
                d[name] = value
        return d


class VideoResults:
    """One video's results (:meth:`Client.video_results`)."""

    def __init__(self, results: List[JobResult], unreadable: List[Unreadable]) -> None:
        #: Ordered by ``frame_number`` (results without one last), one per job.
        self.results = results
        #: Every entry of the stream(s) that could not be read.
        self.unreadable = unreadable

    def __repr__(self) -> str:
        return f"VideoResults({len(self.results)} results, {len(self.unreadable)} unreadable)"


# --- reading entries ---------------------------------------------------------------------


def text(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, (bytes, bytearray)) else str(v)


def _field_text(stream: str, entry_id: str, fields: Mapping[Any, Any], name: str) -> Optional[str]:
    """The UTF-8 text of field ``name``, ``None`` when absent; :class:`Unreadable` raised
    when it is not UTF-8."""
    v = fields.get(name.encode(), fields.get(name))
    if v is None:
        return None
    if isinstance(v, (bytes, bytearray)):
        try:
            return bytes(v).decode("utf-8")
        except UnicodeDecodeError as e:
            raise _Bad(f"`{name}` is not UTF-8: {e}") from None
    return str(v)


class _Bad(Exception):
    pass


def read_reply(stream: str, entry_id: Any, fields: Mapping[Any, Any]) -> Reply:
    """One reply-stream entry as a :class:`Reply`."""
    eid = text(entry_id)
    try:
        job_id = _field_text(stream, eid, fields, "job_id") or ""
    except _Bad as e:
        return Reply(stream, eid, "", error=Unreadable(stream, eid, str(e)))
    try:
        raw = _field_text(stream, eid, fields, "result")
        if raw is None:
            raise _Bad("no `result` field")
        try:
            result = JobResult.from_json(raw)
        except (ValueError, RecursionError) as e:
            raise _Bad(f"`result` is not a result: {e}") from None
    except _Bad as e:
        return Reply(stream, eid, job_id, error=Unreadable(stream, eid, str(e)))
    return Reply(stream, eid, job_id, result=result)


def read_video_entry(stream: str, entry_id: Any, fields: Mapping[Any, Any]) -> VideoEntry:
    """One video-output entry as a :class:`VideoEntry`."""
    eid = text(entry_id)
    try:
        raw = _field_text(stream, eid, fields, "frame")
        if raw is not None:
            try:
                return VideoEntry(stream, eid, frame=VideoFrame.from_json(raw))
            except (ValueError, RecursionError) as e:
                raise _Bad(f"`frame` is not a video frame: {e}") from None
        raw = _field_text(stream, eid, fields, "done")
        if raw is not None:
            try:
                return VideoEntry(stream, eid, done=VideoDone.from_json(raw))
            except (ValueError, RecursionError) as e:
                raise _Bad(f"`done` is not a video's end: {e}") from None
        raise _Bad("neither a `frame` nor a `done` field")
    except _Bad as e:
        return VideoEntry(stream, eid, error=Unreadable(stream, eid, str(e)))


def xread_entries(reply: Any) -> List[Tuple[str, List[Tuple[Any, Mapping[Any, Any]]]]]:
    """XREAD's answer as ``[(stream, [(id, fields), ...]), ...]`` (RESP2 or RESP3 shape)."""
    if not reply:
        return []
    out = []
    if isinstance(reply, dict):
        for stream, v in reply.items():
            entries = v[0] if v and isinstance(v[0], list) else v
            out.append((text(stream), [(e[0], e[1] or {}) for e in entries]))
    else:
        for stream, entries in reply:
            out.append((text(stream), [(e[0], e[1] or {}) for e in entries]))
    return out


def exclusive(after: str) -> str:
    """The XRANGE start for entries after ``after`` (``-`` or empty: from the beginning)."""
    return "-" if after in ("", "-", "0", "0-0") else f"({after}"


def xread_id(after: str) -> str:
    """The XREAD id for entries after ``after``."""
    return "0-0" if after in ("", "-", "0") else after


def model_info(raw: Mapping[Any, Any]) -> Optional[ModelInfo]:
    if not raw:
        return None
    fields: Dict[str, Any] = {}
    for k, v in raw.items():
        s = text(v)
        try:
            fields[text(k)] = json.loads(s)
        except ValueError:
            fields[text(k)] = s
    meta = fields.get("meta")
    return ModelInfo(
        meta=meta if isinstance(meta, dict) else {},
        detector=fields.get("detector") if isinstance(fields.get("detector"), dict) else None,
        faces=fields.get("faces"),
        parents=fields.get("parents"),
        joint_names=fields.get("joint_names"),
        keypoint_names=fields.get("keypoint_names"),
        topology=fields.get("topology") if isinstance(fields.get("topology"), str) else None,
        fields=fields,
    )


# --- duplicates and progress --------------------------------------------------------------


class Seen:
    """The last ``capacity`` keys seen, to drop duplicate results (a job answered twice after
    a worker crashed: same ``job_id``)."""

    def __init__(self, capacity: int = DEDUPE_WINDOW) -> None:
        self.capacity = capacity
        self._keys: "OrderedDict[Hashable, None]" = OrderedDict()

    def first(self, reply: Reply) -> bool:
        """Whether ``reply`` is the first answer to its job (an unreadable entry always is)."""
        r = reply.result
        if r is None:
            return True
        key: Hashable = r.job_id if r.job_id is not None else ("entry", reply.stream, r.entry_id)
        if key in self._keys:
            return False
        self._keys[key] = None
        if len(self._keys) > self.capacity:
            self._keys.popitem(last=False)
        return True


class Progress:
    """Counts a video's frames answered from the entries of its frames' results stream."""

    def __init__(self, video_id: str, total: Optional[int], callback: Optional[Callable[[VideoProgress], Any]]) -> None:
        self.video_id = video_id
        self.total = total
        self.callback = callback
        self.answered: Set[int] = set()
        self.failed: Set[int] = set()
        self._prefix = (video_id + ":").encode("utf-8")

    def snapshot(self, done: bool = False) -> VideoProgress:
        return VideoProgress(self.video_id, len(self.answered), len(self.failed), self.total, done)

    def see(self, stream: str, entries: Iterable[Tuple[Any, Mapping[Any, Any]]]) -> bool:
        """Reads ``entries``; whether any frame was newly answered. Only entries whose
        ``job_id`` is ``<video_id>:...`` are parsed."""
        before = len(self.answered)
        for entry_id, fields in entries:
            jid = fields.get(b"job_id", fields.get("job_id"))
            if jid is None:
                continue
            jid_b = jid if isinstance(jid, (bytes, bytearray)) else str(jid).encode("utf-8")
            if not bytes(jid_b).startswith(self._prefix):
                continue
            reply = read_reply(stream, entry_id, fields)
            r = reply.result
            if r is None or r.video_id != self.video_id or r.frame_number is None:
                continue
            if self.total is not None and r.frame_number >= self.total:
                continue
            self.answered.add(r.frame_number)
            if r.status != "ok":
                self.failed.add(r.frame_number)
        return len(self.answered) != before

    def report(self, done: bool = False) -> None:
        if self.callback is not None:
            self.callback(self.snapshot(done))


class VideoCollector:
    """Collects a video's output entries until its ``done``."""

    def __init__(self, video_id: str, stream: str) -> None:
        self.video_id = video_id
        self.stream = stream
        self.frames: List[VideoFrame] = []
        self.unreadable: List[Unreadable] = []
        self.after = "0-0"

    def see(self, entries: Iterable[Tuple[Any, Mapping[Any, Any]]]) -> Optional[VideoOutput]:
        """Reads ``entries``; the whole output once the video's ``done`` is among them."""
        for entry_id, fields in entries:
            e = read_video_entry(self.stream, entry_id, fields)
            self.after = e.entry_id
            if e.frame is not None:
                if e.frame.video_id == self.video_id:
                    self.frames.append(e.frame)
            elif e.done is not None:
                if e.done.video_id == self.video_id:
                    return VideoOutput(self.video_id, self.stream, self.frames, e.done, self.unreadable)
            elif e.error is not None:
                self.unreadable.append(e.error)
        return None


# --- videos --------------------------------------------------------------------------------


@dataclass
class VideoPlan:
    """A video checked before any frame is sent."""

    video_id: str
    frames: int
    fps: float
    keys: Keys
    output: str
    video: Video
    include: Tuple[str, ...]
    frame_reply_to: Optional[str]

    def job(self, n: int) -> Job:
        return Job(
            job_id=f"{self.video_id}:{n}",
            video_id=self.video_id,
            frame_number=n,
            reply_to=self.frame_reply_to,
            include=self.include,
            video=self.video,
        )


def plan_video(
    layout: Layout,
    video_id: str,
    frames: int,
    fps: float,
    include: Union[Iterable[str], str, None],
    reply_to: Optional[str],
    frame_reply_to: Optional[str],
) -> VideoPlan:
    """Checks a video as the workers will (raises :class:`JobError` before anything is sent)."""
    if frames < 1:
        raise JobError("invalid_job", f"video {video_id!r} has no frames")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not (math.isfinite(fps) and fps > 0):
        raise JobError("invalid_job", f"fps must be a finite number above 0, got {fps!r}")
    if not isinstance(video_id, str):
        raise JobError("invalid_job", f"the video id must be a string, got {type(video_id).__name__}")
    longest = len(video_id.encode("utf-8")) + 1 + len(str(frames - 1))
    if not video_id or longest > MAX_ID_BYTES:
        raise JobError(
            "invalid_job",
            f"the video id must be 1 byte or more, and leave room for `:<frame>` in a job id of "
            f"at most {MAX_ID_BYTES} bytes (video {video_id[:40]!r}...: {longest})",
        )
    keys = layout.video_keys(video_id)
    output = keys.video_output(video_id, reply_to)
    if output is None:
        raise JobError("invalid_job", f"reply_to {reply_to!r} is not under {keys.results}")
    if frame_reply_to is not None and not keys.accepts_reply_to(frame_reply_to):
        raise JobError("invalid_job", f"frame_reply_to {frame_reply_to!r} is not under {keys.results}")
    video = Video(frames=frames, fps=float(fps), reply_to=reply_to)
    video.check()
    return VideoPlan(video_id, frames, float(fps), keys, output, video, normalize_include(include), frame_reply_to)


def check_frame(layout: Layout, frame: Frame) -> Keys:
    """Checks a frame as a worker will (raises :class:`JobError`); the keys of its shard."""
    job = frame.job
    check_boxes(job.boxes)
    if not frame.image and job.image_base64 is None:
        raise JobError("missing_image", f"job {job.job_id!r} has no image")
    keys = layout.keys_for(job.video_id, job.job_id)
    job.check(has_raw_image=bool(frame.image))
    if job.reply_to is not None and not keys.accepts_reply_to(job.reply_to):
        raise JobError(
            "invalid_job",
            f"job {job.job_id!r}: reply_to {job.reply_to!r} is not {keys.results} or under it "
            f"(shard {keys.shard})",
        )
    if job.video is not None and job.video.reply_to is not None and not keys.accepts_reply_to(job.video.reply_to):
        raise JobError("invalid_job", f"job {job.job_id!r}: video.reply_to {job.video.reply_to!r} is not under {keys.results}")
    return keys


# --- frame sources -------------------------------------------------------------------------


def is_image(item: Any) -> bool:
    return isinstance(item, (bytes, bytearray, memoryview, str, os.PathLike))


def load_image(item: Any) -> bytes:
    """An image's bytes: the bytes given, or the file's."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    if isinstance(item, (str, os.PathLike)):
        with open(item, "rb") as f:
            return f.read()
    raise TypeError(f"an image is bytes or a file path, got {type(item).__name__}")


def directory_frames(path: Union[str, "os.PathLike[str]"]) -> List[Path]:
    """The image files (.jpg, .jpeg, .png) of a directory, in name order."""
    d = Path(path)
    files = sorted((p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()), key=lambda p: p.name)
    if not files:
        raise ValueError(f"{d}: no .jpg, .jpeg or .png files")
    return files


def frame_source(frames: Any, count: Optional[int]) -> Tuple[int, Iterator[Any], bool]:
    """``(n, items, exact)``: how many frames the video has, the images (bytes or paths, read
    a chunk at a time), and whether ``items`` holds at least ``n`` for sure (a sized source)
    or may run out early (an iterator with ``count`` given).

    ``frames`` is a directory (its images in name order), a sequence of images (bytes or
    paths), or any iterable of them. An iterable whose length is unknown is read whole into a
    list first (the ``video`` object of every frame needs the number of frames), unless
    ``count`` says how many frames to take from it."""
    if isinstance(frames, (str, os.PathLike)):
        p = Path(frames)
        if p.is_dir():
            frames = directory_frames(p)
        elif p.exists():
            raise ValueError(
                f"{p} is a file, not a directory of frames: extract its frames first "
                "(hmr2_client.extract_frames, or `python -m hmr2_client submit`)"
            )
        else:
            raise FileNotFoundError(f"{p}: no such directory")
    elif isinstance(frames, (bytes, bytearray, memoryview)):
        raise TypeError("frames: a directory, or a sequence or iterable of images (bytes or file paths), not one image")
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"count must be an integer >= 0, got {count!r}")
    if isinstance(frames, Sequence):
        n = len(frames) if count is None else count
        if n > len(frames):
            raise ValueError(f"count={count} but only {len(frames)} frames were given")
        return n, iter(frames[:n]), True
    if not isinstance(frames, Iterable):
        raise TypeError(f"frames: a directory, or a sequence or iterable of images, got {type(frames).__name__}")
    if count is None:
        items = list(frames)
        return len(items), iter(items), True
    return count, iter(frames), False


def short_error(video_id: str, announced: int, came: int) -> JobError:
    last = f"frames 0 to {came - 1} are queued" if came else "no frame is queued"
    return JobError(
        "invalid_job",
        f"video {video_id!r}: {announced} images were announced, {came} came ({last}; the video "
        "will expire unfinished)",
    )


def parse_urls(url: Union[str, Sequence[str]]) -> List[str]:
    """One URL, several separated by commas (as ``HMR2_REDIS__URL``), or a list."""
    urls = [u.strip() for u in (url.split(",") if isinstance(url, str) else url)]
    urls = [u for u in urls if u]
    if not urls:
        raise ValueError("no Redis URL given")
    return urls
