"""Offline segments: slow zoom or pan over the still image, rendered by ffmpeg's zoompan.

Chained shots move one camera over the opening image (`next_view` says where each shot ends):
shot 7 samples the original picture, not a crop of a crop of it, and a zoom that continues
across shots keeps getting closer instead of restarting from a re-encoded frame."""

from __future__ import annotations

from connectors import ffmpeg
from connectors.video.camera import PAN_ZOOM, ZOOM_AMOUNT, next_view
from connectors.video.protocol import SegmentRequest, SharedGenerator, View
from storage.storyboard import Camera

# zoompan crops at whole-pixel offsets of its input, and in a chroma-subsampled format it rounds
# them to even pixels. Working in yuv444p on a canvas twice the output size makes each step a
# half pixel on screen, which is what keeps the motion smooth. Measured against an exact
# float-precision render, frame-to-frame error wobble: yuv420p 1x 1.41, 2x 0.76, 3x 0.34;
# yuv444p 2x 0.22 -- at about the cost of yuv420p 2x.
OVERSAMPLE = 2
WORK_PIX_FMT = "yuv444p"


MAX_CANVAS = 2048  # the widest canvas a deep zoom renders from (cost grows with it)


class KenBurnsGenerator(SharedGenerator):
    name = "kenburns"
    moves_over_origin = True

    def generate(self, req: SegmentRequest) -> None:
        over_origin = req.origin is not None and req.view is not None
        source = req.origin if over_origin else req.image
        ffmpeg.check_image(source)
        # ffmpeg itself turns EXIF-rotated phone photos upright (autorotate), before our filters.
        filters = _view_filters(req) if over_origin else _motion_filters(req)
        graph = ",".join([*filters, f"format={ffmpeg.PIX_FMT}", "setsar=1"])
        ffmpeg.run_to(
            req.out,
            lambda tmp: [
                ffmpeg.FFMPEG, "-i", str(source), "-map", "0:v:0", "-vf", graph,
                "-frames:v", str(req.frame_count), *ffmpeg.encode_args(req.fps), str(tmp),
            ],
            what=f"Ken Burns segment for shot {req.shot.index + 1}",
        )


def _motion_filters(req: SegmentRequest) -> list[str]:
    if req.shot.camera is Camera.static:
        # Nothing moves, so one frame at output size, repeated, is all it takes (and ~3x cheaper).
        repeat = [f"loop=loop={req.frame_count - 1}:size=1", f"settb=1/{req.fps}", "setpts=N"]
        return [*_cover_filters(req.width, req.height), *repeat]
    return [*_cover_filters(req.width * OVERSAMPLE, req.height * OVERSAMPLE), _zoompan(req)]


def _cover_filters(cw: int, ch: int) -> list[str]:
    """Scale and centre-crop any input so it exactly covers a cw x ch canvas."""
    return [
        # Only the first frame matters, should the "image" be an animation or a video.
        "trim=end_frame=1",
        f"scale={cw}:{ch}:force_original_aspect_ratio=increase:flags=bicubic"
        ":out_color_matrix=bt709:out_range=tv",
        f"crop={cw}:{ch}",
        # One colour conversion here; zoompan then only rescales within the same format.
        f"format={WORK_PIX_FMT}",
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
        Camera.static: ("1", "0", "0"),  # normally served by the cheaper loop instead
    }
    return moves[camera]


def _view_filters(req: SegmentRequest) -> list[str]:
    return view_motion(req.view or View(), req.shot.camera, req.width, req.height, req.frame_count, req.fps)


def view_motion(start: View, camera: Camera, width: int, height: int, frames: int, fps: int) -> list[str]:
    """Filters that take a still to `frames` frames moving from `start` to where `camera` ends, over
    the picture covered to the output's aspect at a size where even the closest view is oversampled."""
    end = next_view(start, camera)
    canvas = min(MAX_CANVAS, width * OVERSAMPLE / min(start.size, end.size))
    cw = int(canvas) // 2 * 2
    ch = int(round(cw * height / width)) // 2 * 2
    p = _progress(frames)
    # Zoom geometrically (a steady feel of approach), the centre linearly: both monotonic.
    s0, ratio = start.size, end.size / start.size
    cx0, cy0 = start.x + start.size / 2, start.y + start.size / 2
    cx1, cy1 = end.x + end.size / 2, end.y + end.size / 2
    z = f"1/({s0:.6f}*pow({ratio:.6f},{p}))"
    x = f"iw*({cx0:.6f}+{cx1 - cx0:.6f}*{p})-iw/zoom/2"
    y = f"ih*({cy0:.6f}+{cy1 - cy0:.6f}*{p})-ih/zoom/2"
    zoompan = f"zoompan=z='{z}':x='{x}':y='{y}':d={frames}:s={width}x{height}:fps={fps}"
    return [*_cover_filters(cw, ch), zoompan]
