"""Pictures of a video before and after it is made, for the row's 预览 and 分镜预览 cells.

Before any GPU time: the plan's animatic (the opening image moved by each shot's camera, at the
planned durations, each shot's line written on it) and its contact sheet (one tile per shot: where
that shot's camera lands). After the segments: the contact sheet of their real first and last
frames. One ffmpeg call each, skipped when its inputs have not changed.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

from connectors import ffmpeg
from connectors.video.camera import next_view
from connectors.video.kenburns import view_motion
from connectors.video.protocol import View
from pipeline.compose_plan import filter_arg
from pipeline.templates import TemplateConfig
from pipeline.text_width import wrap
from storage import atomic
from storage.errors import MediaError
from storage.storyboard import Shot, Storyboard

TILE_LONG_SIDE = 480  # pixels: the animatic's long side, and each tile's
ANIMATIC_FPS = 8  # enough to judge pacing; a 35 s plan renders in a few seconds
GAP = 8  # pixels between tiles and around the sheet
BACKGROUND = "0x202020"
LABEL_LINES = 2
VERSION = "1"  # part of the cache key: a change of the drawing redraws old previews


@dataclass(frozen=True)
class Grid:
    """Where tile i of a contact sheet lies: row-major, `columns` across, GAP apart and around."""

    columns: int
    rows: int
    tile_width: int
    tile_height: int

    @classmethod
    def of(cls, tiles: int, template: TemplateConfig, group: int = 1) -> Grid:
        """A near-square sheet; with `group`, a row holds whole groups (a shot's first and last frame)."""
        width, height = tile_size(template)
        groups = math.ceil(tiles / group)
        per_row = max(1, min(groups, round(math.sqrt(groups * height / (width * group)))))
        columns = per_row * group
        return cls(columns, math.ceil(tiles / columns), width, height)

    @property
    def size(self) -> tuple[int, int]:
        return (GAP + self.columns * (self.tile_width + GAP), GAP + self.rows * (self.tile_height + GAP))

    def box(self, i: int) -> tuple[int, int, int, int]:
        row, column = divmod(i, self.columns)
        return (GAP + column * (self.tile_width + GAP), GAP + row * (self.tile_height + GAP),
                self.tile_width, self.tile_height)


def tile_size(template: TemplateConfig) -> tuple[int, int]:
    """The template's aspect at TILE_LONG_SIDE, in even pixels."""
    scale = TILE_LONG_SIDE / max(template.width, template.height)
    return (round(template.width * scale / 2) * 2, round(template.height * scale / 2) * 2)


def plan_previews(board: Storyboard, template: TemplateConfig, image: Path, sheet: Path, animatic: Path,
                  workdir: Path) -> None:
    """The plan's contact sheet and animatic from the opening image, in one ffmpeg call."""
    key = _key(board.model_dump_json(), _template_key(template), _file_digest(image))
    if _fresh(key, sheet, animatic):
        return
    ffmpeg.check_image(image)
    width, height = tile_size(template)
    grid = Grid.of(len(board.shots), template)
    chains = [f"[0:v]split={len(board.shots)}" + "".join(f"[in{k}]" for k in range(len(board.shots)))]
    view = View()
    for shot in board.shots:
        k = shot.index
        frames = max(1, round(shot.duration * ANIMATIC_FPS))
        move = view_motion(view, shot.camera, width, height, frames, ANIMATIC_FPS)
        view = next_view(view, shot.camera)
        labels = _labels(shot, workdir, width, height)
        chains.append(f"[in{k}]{','.join([*move, *labels])},format=yuv420p,setsar=1,split[shot{k}][all{k}]")
        # Where the shot's camera lands: its tile on the sheet.
        chains.append(f"[all{k}]trim=start_frame={frames - 1},setpts=PTS-STARTPTS[end{k}]")
    shots = "".join(f"[shot{k}]" for k in range(len(board.shots)))
    ends = "".join(f"[end{k}]" for k in range(len(board.shots)))
    chains.append(f"{shots}concat=n={len(board.shots)}:v=1:a=0[animatic]")
    chains.append(f"{ends}concat=n={len(board.shots)}:v=1:a=0,{_tile(grid)}[sheet]")
    graph = workdir / "preview_plan.graph"
    atomic.write_text(graph, ";".join(chains))
    ffmpeg.run_to_all([animatic, sheet], lambda tmps: [
        ffmpeg.FFMPEG, "-y", "-i", str(image),
        "-filter_complex_script", str(graph),
        "-map", "[animatic]", *_animatic_args(), str(tmps[0]),
        "-map", "[sheet]", "-frames:v", "1", *ffmpeg.JPEG_ARGS[2:], "-f", "image2", str(tmps[1]),
    ], what="storyboard preview")
    _mark(key, sheet, animatic)


def shots_sheet(board: Storyboard, template: TemplateConfig, frames: list[tuple[Path, Path]], out: Path,
                workdir: Path) -> None:
    """The contact sheet of the made segments: each shot's first and last frame side by side."""
    files = [f for pair in frames for f in pair]
    key = _key(board.model_dump_json(), _template_key(template), *(_file_digest(f) for f in files))
    if _fresh(key, out):
        return
    width, height = tile_size(template)
    grid = Grid.of(len(files), template, group=2)
    chains = []
    for i, _ in enumerate(files):
        shot = board.shots[i // 2]
        labels = _labels(shot, workdir, width, height) if i % 2 == 0 else _tag("尾", workdir, width, height, shot.index)
        chains.append(f"[{i}:v]{ffmpeg.conform_filter(width, height)},{','.join(labels)},format=yuv420p[f{i}]")
    chains.append("".join(f"[f{i}]" for i in range(len(files))) + f"concat=n={len(files)}:v=1:a=0,{_tile(grid)}[sheet]")
    graph = workdir / "preview_shots.graph"
    atomic.write_text(graph, ";".join(chains))
    inputs = [arg for f in files for arg in ("-i", str(f))]
    ffmpeg.run_to(out, lambda tmp: [ffmpeg.FFMPEG, "-y", *inputs, "-filter_complex_script", str(graph),
                                    "-map", "[sheet]", "-frames:v", "1", *ffmpeg.JPEG_ARGS[2:], "-f", "image2",
                                    str(tmp)], what="segments preview")
    _mark(key, out)


def _tile(grid: Grid) -> str:
    return (f"format=yuv444p,tile={grid.columns}x{grid.rows}:padding={GAP}:margin={GAP}:color={BACKGROUND},"
            "scale=out_color_matrix=bt601:out_range=pc,format=yuvj444p")


def _animatic_args() -> list[str]:
    return ["-c:v", ffmpeg.VIDEO_CODEC, "-preset", "veryfast", "-crf", "30", "-pix_fmt", ffmpeg.PIX_FMT,
            "-r", str(ANIMATIC_FPS), "-an", "-map_metadata", "-1", "-movflags", "+faststart", "-f", "mp4"]


def _labels(shot: Shot, workdir: Path, width: int, height: int) -> list[str]:
    """The shot's number in the corner and its line (the narration, else the prompt) along the foot."""
    size = _font_size(width, height)
    columns = max(8, int((width - 2 * GAP) / (size * 0.5)))
    text = "\n".join(wrap(shot.narration or shot.prompt, columns, LABEL_LINES))
    line = _text_file(workdir, f"line{shot.index}", text)
    return [*_tag("", workdir, width, height, shot.index),
            f"drawtext=textfile={filter_arg(str(line))}:font={filter_arg(_font())}:fontsize={size}"
            f":fontcolor=white:box=1:boxcolor=black@0.55:boxborderw={GAP // 2}:line_spacing={GAP // 2}"
            f":x=(w-text_w)/2:y=h-text_h-{GAP * 2}"]


def _tag(suffix: str, workdir: Path, width: int, height: int, index: int) -> list[str]:
    size = round(_font_size(width, height) * 1.4)
    tag = _text_file(workdir, f"tag{index}{'last' if suffix else ''}", f"{index + 1}{suffix}")
    return [f"drawtext=textfile={filter_arg(str(tag))}:font={filter_arg(_font())}:fontsize={size}:fontcolor=white"
            f":box=1:boxcolor=black@0.6:boxborderw={GAP // 2}:x={GAP}:y={GAP}"]


def _font_size(width: int, height: int) -> int:
    return max(10, round(min(width, height) * 0.065))


def _font() -> str:
    return "Noto Sans CJK SC"


def _text_file(workdir: Path, name: str, text: str) -> Path:
    # A text file, not text=: a line may hold any character, and drawtext's escaping is a trap.
    path = workdir / f"preview_{name}.txt"
    atomic.write_text(path, text)
    return path.resolve()


def _template_key(template: TemplateConfig) -> str:
    return f"{template.width}x{template.height}"


def _file_digest(path: Path) -> str:
    try:
        return ffmpeg.file_sha256(path)
    except FileNotFoundError:
        raise MediaError(f"preview input missing: {path.name}") from None


def _key(*parts: str) -> str:
    return hashlib.sha256("\n".join((VERSION, *parts)).encode()).hexdigest()[:32]


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".key")


def _fresh(key: str, *outputs: Path) -> bool:
    return all(out.is_file() and _stamp(out).is_file() and _stamp(out).read_text() == key for out in outputs)


def _mark(key: str, *outputs: Path) -> None:
    for out in outputs:
        atomic.write_text(_stamp(out), key)
