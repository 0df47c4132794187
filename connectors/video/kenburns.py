"""Offline segments: slow zoom or pan over the still image, rendered by ffmpeg's zoompan."""

from __future__ import annotations

from pathlib import Path

from connectors.video.protocol import SegmentRequest
from pipeline import ffmpeg
from pipeline.models import Camera
from storage.errors import MediaError

# zoompan crops at integer pixel offsets of its input; working on a canvas twice the output size
# turns each one-pixel step into half a pixel on screen, which is what makes the motion smooth
# instead of jittery. 2x costs ~0.6 s per 5 s of 720x1280; 3x was 2.5 times slower for no
# visible gain.
OVERSAMPLE = 2
ZOOM_AMOUNT = 0.18  # zoom_in ends (zoom_out starts) at 1.18x
PAN_ZOOM = 1.15  # pans run over the margin that this zoom leaves around the crop

# EXIF orientation -> filters that turn the stored pixels upright (ffmpeg 5.1 does not apply
# EXIF orientation to still images by itself, and phone photos rely on it).
ORIENTATION_FILTERS = {
    "2": ["hflip"],
    "3": ["hflip", "vflip"],
    "4": ["vflip"],
    "5": ["transpose=cclock_flip"],
    "6": ["transpose=clock"],
    "7": ["transpose=clock_flip"],
    "8": ["transpose=cclock"],
}


class KenBurnsGenerator:
    name = "kenburns"

    def generate(self, req: SegmentRequest) -> None:
        upright = _upright_filters(req.image)
        graph = ",".join([*upright, *_cover_filters(req), _zoompan(req), "setsar=1"])
        ffmpeg.run_to(
            req.out,
            lambda tmp: [
                ffmpeg.FFMPEG, "-i", str(req.image), "-map", "0:v:0", "-vf", graph,
                "-frames:v", str(req.frame_count), *ffmpeg.encode_args(req.fps), str(tmp),
            ],
            what=f"Ken Burns segment for shot {req.shot.index + 1}",
        )


def _upright_filters(image: Path) -> list[str]:
    if not image.is_file():
        raise MediaError(f"image {image.name} cannot be decoded: file does not exist")
    try:
        frame = ffmpeg.probe_first_frame(image)
    except MediaError as e:
        raise MediaError(f"image {image.name} cannot be decoded", e.stderr_tail) from e
    return ORIENTATION_FILTERS.get(frame.tags.get("Orientation", "1"), [])


def _cover_filters(req: SegmentRequest) -> list[str]:
    """Scale and centre-crop any input so it exactly covers the oversampled canvas."""
    cw, ch = req.width * OVERSAMPLE, req.height * OVERSAMPLE
    return [
        # Only the first frame matters, should the "image" be an animation or a video.
        "trim=end_frame=1",
        f"scale={cw}:{ch}:force_original_aspect_ratio=increase:flags=bicubic"
        ":out_color_matrix=bt709:out_range=tv",
        f"crop={cw}:{ch}",
        # Converting once here means zoompan rescales yuv420p to yuv420p for every frame.
        f"format={ffmpeg.PIX_FMT}",
        "setsar=1",
    ]


def _zoompan(req: SegmentRequest) -> str:
    z, x, y = _motion(req.shot.camera, _progress(req.frame_count))
    return (
        f"zoompan=z='{z}':x='{x}':y='{y}':d={req.frame_count}"
        f":s={req.width}x{req.height}:fps={req.fps}"
    )


def _progress(frames: int) -> str:
    """0 -> 1 over the shot, eased in and out so chained shots do not start or stop abruptly."""
    if frames <= 1:
        return "0"
    return f"(1-cos(PI*on/{frames - 1}))/2"


def _motion(camera: Camera, p: str) -> tuple[str, str, str]:
    centre_x, centre_y = "(iw-iw/zoom)/2", "(ih-ih/zoom)/2"
    travel_x, travel_y = "(iw-iw/zoom)", "(ih-ih/zoom)"
    pan = f"{PAN_ZOOM}"
    moves = {
        Camera.zoom_in: (f"1+{ZOOM_AMOUNT}*{p}", centre_x, centre_y),
        Camera.zoom_out: (f"1+{ZOOM_AMOUNT}*(1-{p})", centre_x, centre_y),
        # The camera moves right, so the crop window slides right across the picture.
        Camera.pan_right: (pan, f"{travel_x}*{p}", centre_y),
        Camera.pan_left: (pan, f"{travel_x}*(1-{p})", centre_y),
        Camera.pan_down: (pan, centre_x, f"{travel_y}*{p}"),
        Camera.pan_up: (pan, centre_x, f"{travel_y}*(1-{p})"),
        Camera.static: ("1", "0", "0"),
    }
    return moves[camera]
