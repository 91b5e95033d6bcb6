"""Video clips (.mp4, .avi, ...) as image sources, decoded with PyAV.

A clip is probed once (packets are demuxed, not decoded) to learn every frame's
presentation time; frames are sampled uniformly (``frames_per_clip``, the centre
of N equal segments) or every k seconds (``every_seconds``: the frame on screen
at 0, k, 2k, ... seconds). Timestamps are seconds from the clip's first frame.
The sampled frames of a clip are decoded together, seeking between distant
frames, and kept in the shared byte-bounded cache, so per-item decoding in
tf.data costs one decode per clip, not per frame. Frames are turned upright by
the stream's display rotation (portrait phone clips); display flips are ignored.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from alexkit.errors import DataError, MissingExtraError, one_line
from alexkit.media._common import CACHE, file_key, unreadable
from alexkit.quiet import quiet_read

if TYPE_CHECKING:
    from alexkit.media import MediaOptions

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ogv"}
)

# Decode straight through gaps shorter than this; seek (to the previous keyframe)
# across longer ones. Seeking costs a keyframe decode, so short gaps are cheaper read.
_SEEK_GAP_SECONDS = 2.0


def import_av() -> Any:
    """Import PyAV or raise MissingExtraError naming ``alexkit[video]``."""
    try:
        import av
    except ImportError as exc:
        raise MissingExtraError("reading video clips", "video", "av") from exc
    return av


@dataclass(frozen=True)
class ClipInfo:
    """Presentation timestamps of every frame of a clip's first video stream.

    Attributes:
        pts: sorted frame timestamps in stream time-base units.
        times: seconds from the first frame, one per frame.
    """

    pts: np.ndarray
    times: np.ndarray

    @property
    def num_frames(self) -> int:
        return len(self.pts)


def _probe(path: str) -> ClipInfo:
    with quiet_read(path):
        return _probe_quietly(path)


def _probe_quietly(path: str) -> ClipInfo:
    av = import_av()
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise unreadable("no video stream", path)
            stream = container.streams.video[0]
            stamps = []
            for packet in container.demux(stream):
                if packet.size == 0:  # the flush packet at the end
                    continue
                stamp = packet.pts if packet.pts is not None else packet.dts
                if stamp is not None:
                    stamps.append(stamp)
            time_base = float(stream.time_base)
    except (MissingExtraError, DataError):
        raise
    except Exception as exc:
        raise unreadable(f"cannot read video ({one_line(exc, typed=True)})", path) from exc
    if not stamps:
        raise unreadable("the clip has no video frames", path)
    pts = np.unique(np.asarray(stamps, dtype=np.int64))
    return ClipInfo(pts=pts, times=(pts - pts[0]) * time_base)


def probe_clip(path: str) -> ClipInfo:
    """Frame timestamps of a clip (cached). Raises UnreadableImage for broken clips."""

    def load() -> tuple[ClipInfo, int]:
        info = _probe(path)
        return info, info.pts.nbytes + info.times.nbytes + 64

    return CACHE.get(("clipinfo", *file_key(path)), load)


def sample_frames(info: ClipInfo, options: MediaOptions) -> list[int]:
    """Indices of the frames to use, in order, without repeats.

    ``every_seconds`` wins over ``frames_per_clip``: frame shown at 0, k, 2k, ...
    seconds. Otherwise the centre frame of ``frames_per_clip`` equal segments;
    a clip shorter than that gives all its frames.
    """
    n = info.num_frames
    if options.every_seconds is not None:
        targets = np.arange(0.0, info.times[-1] + 1e-9, options.every_seconds)
        # The frame on screen at time t is the last one starting at or before t.
        idx = np.searchsorted(info.times, targets + 1e-6, side="right") - 1
    else:
        k = options.frames_per_clip
        if n <= k:
            return list(range(n))
        idx = np.floor((np.arange(k) + 0.5) * n / k).astype(np.int64)
    return sorted({int(i) for i in np.clip(idx, 0, n - 1)})


def _upright(frame: Any) -> np.ndarray:
    """RGB pixels as a player shows them: the display-matrix rotation applied.

    Phones store portrait clips as landscape frames plus a rotation; PyAV reports it
    counter-clockwise in degrees, which is what ``np.rot90`` turns by.
    """
    pixels = frame.to_ndarray(format="rgb24")
    turns = int(round((getattr(frame, "rotation", 0) or 0) / 90.0)) % 4
    return np.ascontiguousarray(np.rot90(pixels, turns)) if turns else pixels


def _decode(path: str, info: ClipInfo, indices: list[int]) -> dict[int, np.ndarray]:
    """Decode the frames at ``indices`` as RGB uint8 arrays, one pass through the clip."""
    with quiet_read(path):
        return _decode_quietly(path, info, indices)


def _decode_quietly(path: str, info: ClipInfo, indices: list[int]) -> dict[int, np.ndarray]:
    av = import_av()
    wanted = sorted(set(indices))
    out: dict[int, np.ndarray] = {}
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            gap = int(_SEEK_GAP_SECONDS / float(stream.time_base))
            frames = None
            last = None
            for index in wanted:
                target = int(info.pts[index])
                if frames is None or last is None or last >= target or target - last > gap:
                    # backward=True lands on the keyframe at or before the target.
                    container.seek(target, stream=stream, backward=True, any_frame=False)
                    frames = container.decode(stream)
                    last = None
                found = None
                for frame in frames:
                    stamp = frame.pts if frame.pts is not None else frame.dts
                    if stamp is None:
                        continue
                    last = stamp
                    if stamp >= target:
                        found = frame
                        break
                if found is None:
                    raise unreadable(f"the clip ends before frame {index} (truncated?)", path)
                out[index] = _upright(found)
    except (MissingExtraError, DataError):
        raise
    except Exception as exc:
        raise unreadable(f"cannot decode video ({one_line(exc, typed=True)})", path) from exc
    return out


# Options each clip was last expanded with (this process): decode_member(item) without
# options still decodes the clip's own sample in one pass. Only speed depends on it.
_SAMPLING: dict[str, tuple[int, float | None]] = {}
_CLIP_LOCKS: dict[tuple, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()
# At most this many frames are decoded (and cached) per pass through a clip.
_MAX_FRAMES_PER_PASS = 64


def _clip_lock(key: tuple) -> threading.Lock:
    with _LOCKS_LOCK:
        return _CLIP_LOCKS.setdefault(key, threading.Lock())


def decode_frame(path: str, index: int, options: MediaOptions | None) -> np.ndarray:
    """Frame ``index`` of a clip as (H, W, 3) uint8 RGB.

    A cache miss decodes, in one pass, this frame and the next frames of the clip's
    sample (``options``, else the options the clip was expanded with), up to a
    share of the cache, and caches each frame: in-order access decodes each clip
    about once. Threads asking for frames of one clip wait for one decoder.
    """
    info = probe_clip(path)
    if not 0 <= index < info.num_frames:
        raise unreadable(f"frame {index} out of range (the clip has {info.num_frames})", path)
    fkey = file_key(path)
    cached = CACHE.peek(("frame", *fkey, index))
    if cached is not None:
        return cached
    with _clip_lock(fkey):
        cached = CACHE.peek(("frame", *fkey, index))
        if cached is not None:
            return cached
        if options is not None:
            sampling = (options.frames_per_clip, options.every_seconds)
        else:
            sampling = _SAMPLING.get(fkey[0], (8, None))
        sample = sample_frames(info, _sampling_options(*sampling))
        later = [i for i in sample if i > index]
        frames = _decode(path, info, [index, *later[: _pass_size(path) - 1]])
        for i, frame in frames.items():
            CACHE.put(("frame", *fkey, i), frame, frame.nbytes)
    return frames[index]


def _sampling_options(frames_per_clip: int, every_seconds: float | None) -> MediaOptions:
    from alexkit.media import MediaOptions

    return MediaOptions(frames_per_clip=frames_per_clip, every_seconds=every_seconds)


def _pass_size(path: str) -> int:
    """Frames per decoding pass: a quarter of the cache, at most 64."""
    av = import_av()
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            frame_bytes = max(stream.width * stream.height * 3, 1)
    except Exception:
        return 1
    return int(max(1, min(_MAX_FRAMES_PER_PASS, CACHE.max_bytes // 4 // frame_bytes)))


def expand_clip(path: str, options: MediaOptions) -> list[tuple[str, str]]:
    """``[(f"{path}#frame=i,t=s.sss", "clip:" + path), ...]`` for the sampled frames."""
    info = probe_clip(path)
    _SAMPLING[file_key(path)[0]] = (options.frames_per_clip, options.every_seconds)
    group = f"clip:{path}"
    return [
        (f"{path}#frame={i},t={info.times[i]:.3f}", group) for i in sample_frames(info, options)
    ]
