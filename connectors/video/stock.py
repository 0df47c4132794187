"""Stock footage: real dynamic clips from a local, tagged library, trimmed and scaled to the shot.

Library layout (any depth; .mp4, .mov, .webm):

    landscape/sea/clip1.mp4         tags from folders: landscape, sea
    landscape/sea/clip1.mp4.json    optional sidecar: {"tags": ["waves", "blue"]}
    animals/tags.json               optional, for every clip under animals/: {"tags": ["pets"]}

Choices are reproducible: every ranking is a sha256 of (project, seed, clip), never Python's
randomised hash() nor the file system's listing order, so adding a clip does not reshuffle
the picks of other shots.

Which clips a video already uses is per-project state. `StockGenerator.for_project(id)` returns
a bound generator that remembers its picks (and may be given the picks of an earlier run), so
one project never shows the same clip twice while another project is unaffected.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from connectors import ffmpeg
from connectors.video.protocol import SegmentRequest
from storage.errors import MediaError, Permanent

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".webm"})
FOLDER_TAGS_FILE = "tags.json"


@dataclass(frozen=True)
class StockClip:
    path: Path
    key: str  # the path inside the library, "/"-separated: what `used` holds
    tags: frozenset[str]


class StockLibrary:
    def __init__(self, root: Path):
        self.root = Path(root)

    def clips(self) -> list[StockClip]:
        """Every clip, scanned afresh so clips added while running are seen."""
        if not self.root.is_dir():
            return []
        found = []
        for path in sorted(self.root.rglob("*")):
            rel = path.relative_to(self.root)
            if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file() and not _hidden(rel):
                found.append(StockClip(path, rel.as_posix(), self._tags(path, rel)))
        return found

    def pick(self, tags: Iterable[str], used: set[str], seed: int | str) -> Path:
        return self.choose(tags, used, seed).path

    def choose(self, tags: Iterable[str], used: set[str], seed: int | str) -> StockClip:
        """The unused clip sharing most tags with the shot; ties (and no match) broken by seed.

        A used clip comes back only when every clip has been used.
        """
        clips = self.clips()
        if not clips:
            raise Permanent(
                f"素材库为空：请把视频片段（mp4/mov/webm）放进 {self.root} "
                f"(stock library is empty: put clips in {self.root}, or set STOCK_LIBRARY_DIR)"
            )
        wanted = {_norm(t) for t in tags} - {""}
        fresh = [c for c in clips if c.key not in used] or clips
        return max(fresh, key=lambda c: (len(c.tags & wanted), _rank(seed, c.key)))

    def _tags(self, path: Path, rel: Path) -> frozenset[str]:
        tags = {_norm(part) for part in rel.parent.parts}
        for folder in [self.root, *(self.root / p for p in _prefixes(rel.parent))]:
            tags |= _sidecar_tags(folder / FOLDER_TAGS_FILE)
        tags |= _sidecar_tags(path.with_name(path.name + ".json"))
        return frozenset(tags - {""})


class StockGenerator:
    moves_over_origin = False
    uses_gpu = False

    def __init__(self, library: StockLibrary, name: str = "stock", *, project_id: str = "", used: Iterable[str] = ()):
        self.library = library
        self.name = name
        self.project_id = project_id
        self.used: set[str] = set(used)
        self.picks: dict[int, str] = {}  # shot index -> clip key, for the caller to record

    def for_project(self, project_id: str, used_clips: Iterable[str] = ()) -> StockGenerator:
        """A generator bound to one project; `used_clips` restores the clip keys an earlier run picked."""
        return StockGenerator(self.library, self.name, project_id=project_id, used=used_clips)

    def generate(self, req: SegmentRequest) -> str:
        # A shot redone keeps the clips of the other shots out, not its own earlier pick.
        earlier = self.picks.pop(req.shot.index, None)
        others = self.used - ({earlier} if earlier else set())
        clip = self.library.choose(req.shot.stock_tags, others, f"{self.project_id}:{req.seed}")
        _render(clip, req, f"{self.project_id}:{req.seed}:{clip.key}")
        self.used = others | {clip.key}
        self.picks[req.shot.index] = clip.key
        log.info("shot %d uses stock clip %s", req.shot.index + 1, clip.key)
        return clip.key


def _render(clip: StockClip, req: SegmentRequest, seed: str) -> None:
    length = _duration(clip)
    shot = req.frame_count / req.fps
    # A clip longer than the shot gives a window starting anywhere it fits; a shorter one loops.
    start = _fraction(seed) * (length - shot) if length > shot else 0.0
    graph = f"setpts=PTS-STARTPTS,fps={req.fps},{ffmpeg.conform_filter(req.width, req.height)}"
    ffmpeg.run_to(
        req.out,
        lambda tmp: [
            ffmpeg.FFMPEG, "-ss", f"{start:.3f}", "-stream_loop", "-1", *ffmpeg.only(ffmpeg.VIDEO_FORMATS),
            "-i", str(clip.path),
            "-map", "0:v:0", "-vf", graph, "-frames:v", str(req.frame_count),
            *ffmpeg.encode_args(req.fps), str(tmp),
        ],
        what=f"stock clip {clip.key} for shot {req.shot.index + 1}",
    )


def _duration(clip: StockClip) -> float:
    try:
        info = ffmpeg.probe(clip.path, ffmpeg.VIDEO_FORMATS)
    except MediaError as e:
        raise MediaError(f"stock clip {clip.key} cannot be read", e.stderr_tail) from e
    if not info.video_streams or info.duration <= 0:
        raise MediaError(f"stock clip {clip.key} has no video")
    return info.duration


def _sidecar_tags(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        tags = data["tags"]
        if not isinstance(tags, list):
            raise TypeError("tags is not a list")
    except (OSError, ValueError, KeyError, TypeError) as e:
        # One bad sidecar must not stop every stock shot; its clips keep their folder tags.
        log.warning("ignoring stock tags file %s: %s (expected {\"tags\": [...]})", path, e)
        return set()
    return {_norm(str(t)) for t in tags}


def _prefixes(folder: Path) -> list[Path]:
    parts = folder.parts
    return [Path(*parts[: i + 1]) for i in range(len(parts))]


def _hidden(rel: Path) -> bool:
    # Our own partial files, editors' and macOS's dot files.
    return any(part.startswith(".") for part in rel.parts)


def _norm(tag: str) -> str:
    return tag.strip().lower()


def _rank(seed: int | str, key: str) -> bytes:
    return hashlib.sha256(f"{seed}|{key}".encode()).digest()


def _fraction(seed: str) -> float:
    return int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big") / 2**64
