"""First and last frames of a segment (the last one seeds the next shot, so it must be exact) and
what the segment is, from one read in this process.

A GPU host does this after every shot. It used to start an ffmpeg for the frames and an ffprobe
for the facts: with the ~200 libraries Debian's ffmpeg links, the two starts alone cost about
0.2 CPU s a shot, most of a host's work between one shot and the next. Decoding in this process
(PyAV) carries none of the risk of hostile input: every segment was written by SheetReel's own
encoder (`ffmpeg.encode_args`; a provider's download is conformed by ffmpeg before it is one)."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from connectors.ffmpeg import MediaInfo
from storage import atomic
from storage.errors import MediaError

if TYPE_CHECKING:
    import av

# The last frame is always among those decoded from this far before the end.
TAIL_SECONDS = 1.0
# JPEG (JFIF) means full-range BT.601. The segments are tagged BT.709: converting the matrix (not
# only the range) keeps saturated colours from shifting at every link of the chain. Bicubic is
# ffmpeg's own choice for the chroma.
_JPEG_PIXELS = dict(format="yuvj444p", dst_colorspace="ITU601", dst_color_range="JPEG", interpolation="BICUBIC")


def extract_first_last(video: Path, first: Path, last: Path | None) -> MediaInfo:
    """Write both frames (only the first when `last` is None: a provider gave its own last frame)
    and return what the video is, as ffprobe would say it."""
    import av  # here, not at import: every process that imports the runner would pay for it

    what = f"first and last frames of {video.name}"
    try:
        with av.open(str(video), format="mp4") as box:
            if not box.streams.video:
                raise MediaError(f"{what} failed: the file has no video stream")
            stream = box.streams.video[0]
            head = next(box.decode(stream), None)
            if head is None:
                raise MediaError(f"{what} failed: no frame decodes")
            first_jpeg, tail = _jpeg(head), head
            if last is not None:
                if box.duration and box.duration > TAIL_SECONDS * av.time_base:
                    # Seeks to the keyframe before that point: a 5 s segment is not decoded in full.
                    box.seek(box.duration - int(TAIL_SECONDS * av.time_base), backward=True, any_frame=False)
                for frame in box.decode(stream):
                    tail = frame
            info = _info(box, stream, video, av.time_base)
    except (av.FFmpegError, OSError, ValueError) as e:
        raise MediaError(f"{what} failed: {e}") from e
    atomic.write_bytes(first, first_jpeg)
    if last is not None:
        atomic.write_bytes(last, _jpeg(tail))
    return info


def write_jpeg(rgb: np.ndarray, out: Path) -> None:
    """An RGB picture as a frame is written (full-range 4:4:4, about ffmpeg's -q:v 2), atomically."""
    atomic.write_bytes(out, _encode(Image.fromarray(np.ascontiguousarray(rgb))))


def _jpeg(frame: av.VideoFrame) -> bytes:
    ycbcr = frame.to_ndarray(channel_last=True, src_color_range=frame.color_range or "MPEG", **_JPEG_PIXELS)
    # Handed to the JPEG encoder as YCbCr, as ffmpeg's is: no round trip through RGB.
    return _encode(Image.frombytes("YCbCr", (frame.width, frame.height), ycbcr.tobytes()))


def _encode(picture: Image.Image) -> bytes:
    jpeg = io.BytesIO()
    picture.save(jpeg, format="JPEG", quality=95, subsampling=0)
    return jpeg.getvalue()


def _info(box, stream, video: Path, per_second: int) -> MediaInfo:
    audio = box.streams.audio[0] if box.streams.audio else None
    duration = box.duration / per_second if box.duration else float((stream.duration or 0) * (stream.time_base or 0))
    rate: Fraction | None = stream.average_rate
    return MediaInfo(
        duration=duration,
        width=stream.codec_context.width,
        height=stream.codec_context.height,
        video_codec=stream.codec_context.name,
        audio_codec=audio.codec_context.name if audio else None,
        pix_fmt=stream.codec_context.pix_fmt,
        video_streams=len(box.streams.video),
        audio_streams=len(box.streams.audio),
        size=video.stat().st_size,
        fps=float(rate) if rate else None,
    )
