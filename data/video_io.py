"""Video files as uint8 RGB frames, through PyAV (FFmpeg): decode frames at timestamps, encode frames to mp4.

Decoding takes whatever FFmpeg in PyAV's wheel reads (AV1 through libdav1d, H.264, HEVC, ...). Encoding
writes LeRobot's two codecs with LeRobot's settings (yuv420p, a keyframe every 2 frames, crf 30):
``libsvtav1`` (AV1, LeRobot's default) or ``h264`` (libx264). Both are lossy: a decoded frame differs from
the frame written by a few grey levels.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np

CODECS = {"libsvtav1": "libsvtav1", "h264": "libx264"}  # LeRobot's vcodec name -> PyAV's encoder
TOLERANCE_S = 1e-4  # LeRobot's tolerance_s: a frame belongs to a timestamp if its time is this close


class VideoError(ValueError):
    """A video file that is missing, unreadable, or has no frame at a requested time."""


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 image resized to ``size`` = (height, width) with area averaging (swscale)."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    return frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")


class VideoReader:
    """Frames of one video file at requested times, decoded forward once (reopened only to go back)."""

    def __init__(self, path: str | Path, size: tuple[int, int] | None = None) -> None:
        self.path = Path(path)
        self.size = size
        if not self.path.is_file():
            raise VideoError(f"{self.path}: video file not found")
        self._container: av.container.InputContainer | None = None
        self._frames: Iterator[av.VideoFrame] | None = None
        self._pending: av.VideoFrame | None = None
        self._last_time = -np.inf

    def _open(self) -> None:
        """(Re)open the file and start decoding from its first frame."""
        self.close()
        try:
            self._container = av.open(str(self.path))
            stream = self._container.streams.video[0]
        except (av.error.FFmpegError, IndexError) as exc:
            raise VideoError(f"{self.path}: not a readable video ({exc})") from None
        stream.thread_type = "AUTO"
        self._frames = self._container.decode(stream)
        self._pending, self._last_time = None, -np.inf

    def _next(self) -> av.VideoFrame | None:
        """The next decoded frame, or None at the end of the file."""
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        try:
            return next(self._frames)
        except StopIteration:
            return None
        except av.error.FFmpegError as exc:
            raise VideoError(f"{self.path}: decoding failed ({exc})") from None

    def frames_at(self, times: Sequence[float], tolerance_s: float = TOLERANCE_S) -> np.ndarray:
        """(T, H, W, 3) uint8 frames whose times are within ``tolerance_s`` of ``times`` (ascending)."""
        times = np.asarray(times, dtype=np.float64)
        if self._frames is None or (len(times) and times[0] <= self._last_time - tolerance_s):
            self._open()
        out = []
        for t in times:
            frame = self._next()
            while frame is not None and frame.time < t - tolerance_s:
                frame = self._next()
            if frame is None or abs(frame.time - t) > tolerance_s:
                found = "the file ends before it" if frame is None else f"the nearest frame is at {frame.time:.4f} s"
                raise VideoError(f"{self.path}: no frame at {t:.4f} s ({found}); the video and the data disagree")
            self._last_time = frame.time
            if self.size is None:
                out.append(frame.to_ndarray(format="rgb24"))
            else:
                height, width = self.size
                out.append(frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA"))
        return np.stack(out) if out else np.zeros((0, 0, 0, 3), np.uint8)

    def close(self) -> None:
        """Close the file."""
        if self._container is not None:
            self._container.close()
        self._container, self._frames, self._pending = None, None, None


class VideoWriter:
    """Append (T, H, W, 3) uint8 frames to one mp4 file at ``fps``; frame i is shown at i / fps seconds."""

    def __init__(self, path: str | Path, fps: int, codec: str = "libsvtav1", crf: int = 30) -> None:
        if codec not in CODECS:
            raise VideoError(f"unknown video codec {codec!r}; choose one of {sorted(CODECS)}")
        self.path, self.fps, self.codec, self.crf = Path(path), int(fps), codec, crf
        self._container = av.open(str(self.path), "w")
        self._stream: av.VideoStream | None = None
        self.n_frames = 0
        self.n_bytes = 0  # encoded bytes so far (the file's size without the container's index)

    def _start(self, height: int, width: int) -> None:
        """Add the video stream on the first frames (their size fixes the stream's)."""
        if height % 2 or width % 2:
            raise VideoError(f"{self.path}: frames of {height}x{width} px; yuv420p video needs even sides")
        options = {"g": "2", "crf": str(self.crf)}
        if self.codec == "libsvtav1":
            options["preset"] = "12"
        self._stream = self._container.add_stream(CODECS[self.codec], rate=self.fps, options=options)
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "yuv420p"
        self._stream.time_base = Fraction(1, self.fps)

    def write(self, frames: np.ndarray) -> None:
        """Encode frames (T, H, W, 3) uint8 after the ones written before."""
        if self._stream is None:
            self._start(*frames.shape[1:3])
        for image in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts, frame.time_base = self.n_frames, Fraction(1, self.fps)
            packets = self._stream.encode(frame)
            self._container.mux(packets)
            self.n_bytes += sum(p.size for p in packets)
            self.n_frames += 1

    def close(self) -> None:
        """Flush the encoder and close the file."""
        if self._stream is not None:
            self._container.mux(self._stream.encode(None))
        self._container.close()
