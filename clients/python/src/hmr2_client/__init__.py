"""A producer client for hmr2-worker (wire contract v1): add frames and whole tracked videos
to the queue, wait for a video's tracked output, read per-frame results, read the model's
information. One Redis or a Redis Cluster, blocking (:class:`Client`) or asyncio
(:class:`hmr2_client.aio.AsyncClient`).

>>> from hmr2_client import Client
>>> client = Client.connect("redis://127.0.0.1:6379")          # doctest: +SKIP
>>> video = client.submit_video("clip-7", "frames/", fps=30)    # doctest: +SKIP
>>> out = client.wait_video(video, timeout=600)                 # doctest: +SKIP
>>> [p.track_id for p in out.frames[0].people]                  # doctest: +SKIP
[1, 2]
"""

from ._core import (
    ModelInfo,
    Reply,
    SubmittedVideo,
    Unreadable,
    VideoEntry,
    VideoOutput,
    VideoProgress,
    VideoResults,
    WaitTimeout,
)
from .client import Client
from .frames import FfmpegError, extract_frames, probe_fps
from .job import INCLUDES, MAX_BOXES, VERSION, Frame, Job, JobError, Video, parse_job
from .keys import MAX_ID_BYTES, Keys, Layout, routing_key, shard_of
from .results import (
    ERROR_CODES,
    WARNING_CODES,
    ErrorBody,
    JobResult,
    Person,
    ResultWarning,
    ShapeError,
    Timings,
    TrackedPerson,
    TrackInfo,
    VideoDone,
    VideoFrame,
    VideoTimings,
)

__version__ = "0.1.0"

__all__ = [
    "Client",
    "ERROR_CODES",
    "ErrorBody",
    "FfmpegError",
    "Frame",
    "INCLUDES",
    "Job",
    "JobError",
    "JobResult",
    "Keys",
    "Layout",
    "MAX_BOXES",
    "MAX_ID_BYTES",
    "ModelInfo",
    "Person",
    "Reply",
    "ResultWarning",
    "ShapeError",
    "SubmittedVideo",
    "Timings",
    "TrackInfo",
    "TrackedPerson",
    "Unreadable",
    "VERSION",
    "Video",
    "VideoDone",
    "VideoEntry",
    "VideoFrame",
    "VideoOutput",
    "VideoProgress",
    "VideoResults",
    "VideoTimings",
    "WARNING_CODES",
    "WaitTimeout",
    "extract_frames",
    "parse_job",
    "probe_fps",
    "routing_key",
    "shard_of",
]
