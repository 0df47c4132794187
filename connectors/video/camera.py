"""The offline camera's path over the opening image, shot by shot: pure, so a resumed run and the
renderer agree on where every shot starts and ends."""

from __future__ import annotations

from connectors.video.protocol import View
from storage.storyboard import Camera

ZOOM_AMOUNT = 0.18  # a zoom_in comes 1.18x closer (a zoom_out goes as far back)
PAN_ZOOM = 1.15  # pans run over the margin that this zoom leaves around the view


def next_view(view: View, camera: Camera) -> View:
    """Where a shot that starts at `view` and moves by `camera` ends."""
    cx, cy, size = view.x + view.size / 2, view.y + view.size / 2, view.size
    if camera is Camera.zoom_in:
        size = size / (1 + ZOOM_AMOUNT)
    elif camera is Camera.zoom_out:
        size = min(1.0, size * (1 + ZOOM_AMOUNT))
    elif camera is not Camera.static:
        size = min(size, 1 / PAN_ZOOM)  # a pan needs room beside the view
        dx, dy = {Camera.pan_right: (1, 0), Camera.pan_left: (-1, 0), Camera.pan_down: (0, 1),
                  Camera.pan_up: (0, -1)}[camera]
        travel = 0.15 * size
        room = _room(cx if dx else cy, size, dx or dy)
        if room < travel / 3:  # at the edge already: come closer to make room
            size = size / PAN_ZOOM
            room = _room(cx if dx else cy, size, dx or dy)
        step = min(travel, room)
        cx, cy = cx + dx * step, cy + dy * step
    half = size / 2
    cx, cy = min(max(cx, half), 1 - half), min(max(cy, half), 1 - half)
    return View(x=max(0.0, cx - half), y=max(0.0, cy - half), size=size)


def _room(centre: float, size: float, direction: int) -> float:
    return max(0.0, (1 - size / 2 - centre) if direction > 0 else (centre - size / 2))
