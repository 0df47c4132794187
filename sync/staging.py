"""The opening image and the project folder as a cache of the object store (scale-out mode)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from pipeline.inputs import prepare_opening_image
from pipeline.publish import Publisher
from storage.errors import BadInput
from storage.models import Project, ProjectState, Segment, SegmentState
from storage.paths import ProjectPaths
from sync.rows import ImageRef

# (the image, where it goes, the table of the row it is in: attachments are fetched through that table)
FetchImage = Callable[[ImageRef, Path, str], None]
INPUTS_MARK = ".inputs"  # the input hash the cached folder was made from


def fetch_opening_image(p: Project, paths: ProjectPaths, fetch_image: FetchImage) -> None:
    """Download the row's image beside the project and keep only a decoded, re-encoded copy."""
    if not p.image_ref:
        raise BadInput("首帧图片为空：请在「首帧图片」列上传一张图片，或填写图片链接 (opening image missing)")
    paths.inputs.mkdir(parents=True, exist_ok=True)
    download = paths.inputs / "download"
    fetch_image(ImageRef.model_validate_json(p.image_ref), download, p.table_id)
    try:
        prepare_opening_image(download, paths.opening_image)
    finally:
        download.unlink(missing_ok=True)


def fresh_cache(p: Project, paths: ProjectPaths) -> None:
    """Drop this host's cached copy of the project's folder if it was made from older inputs
    (the row was edited while another host worked on it): the store has the current files."""
    mark = paths.root / INPUTS_MARK
    if mark.is_file() and mark.read_text() == p.input_hash:
        return
    if paths.root.is_dir():
        shutil.rmtree(paths.root)
    paths.root.mkdir(parents=True, exist_ok=True)
    mark.write_text(p.input_hash)


def pull_for_check(publisher: Publisher, paths: ProjectPaths, p: Project, segments: list[Segment]) -> None:
    """Bring what verify-consistency checks from the object store: the stored meta.json (always
    fetched anew: another host may have written a newer one), and each file the DB says exists."""
    paths.meta.unlink(missing_ok=True)
    files = [paths.meta, paths.storyboard]
    for seg in segments:
        if seg.state == SegmentState.done:
            files += [paths.segment(seg.index), paths.last_frame(seg.index)]
    if p.state == ProjectState.completed:
        files += [paths.final_video, paths.cover]
    publisher.pull(*files)
