"""Bench: compose() against one hand-written ffmpeg command, MoviePy, and plain concatenation.

    python bench/compose.py [--moviepy-python /tmp/benchvenv/bin/python] [--repeat 3]

Makes 7 synthetic 5 s 720x1280 segments, an SRT with 7 Chinese cues, a music file and uses
the landscape-story logo; then times, in one run:
  (a) compose() with logo + burned subtitles + music (probes, loudness pass, encode, cover);
  (b) one hand-written ffmpeg command with the same filters and encoder settings -- the
      practical limit for this output (it skips the probing and measuring (a) has to do);
  (c) MoviePy making the same film (skipped when MoviePy cannot be imported here and no
      --moviepy-python interpreter that has it is given);
  (d) compose() of the same segments with nothing visual: the stream-copy path.
Not a test: numbers depend on the machine. Targets: a/b <= 1.15, c/a >= 5, d >= 20x real time.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# Run as a script, Python puts bench/ first on the path, where bench/sync.py would shadow the
# sync package for anything that imports it.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from connectors import ffmpeg
from pipeline.compose import compose
from pipeline.compose_plan import ASS_PLAY_RES_Y, ComposeSpec, LogoSpec, SubtitleSpec

WIDTH, HEIGHT, FPS = 720, 1280, 24
SEGMENTS, SEGMENT_SECONDS = 7, 5.0
LOGO = Path(__file__).resolve().parent.parent / "templates" / "landscape-story" / "logo.png"
CUES = ["清晨的山谷醒来了", "溪水绕过石头向前流", "风吹过金色的草地", "花瓣上停着一滴露珠",
        "远处传来几声鸟鸣", "夕阳把天空染成紫色", "今天的故事就到这里"]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-compose-") as tmp:
        work = Path(tmp)
        segments, srt, music = _make_inputs(work)
        spec = _full_spec(segments, srt, music)
        total = spec.total_duration
        result = compose(spec, work / "a.mp4", work)  # warm-up; also yields the music gain for (b), (c)
        gain = spec.loudness_lufs - (result.levels.music or spec.loudness_lufs)

        plain = spec.model_copy(update={"logo": None, "subtitles": None, "music": None})
        movie = _moviepy_runner(args.moviepy_python, spec, work, gain)
        a, b, d, c = _best_interleaved(args.repeat, [
            lambda: compose(spec, work / "a.mp4", work),
            lambda: ffmpeg.run(_hand_written(spec, work, gain), what="hand-written command"),
            lambda: compose(plain, work / "d.mp4", work),
            movie,
        ])

        print(f"SheetReel compose bench: {SEGMENTS} x {SEGMENT_SECONDS:g} s segments, {WIDTH}x{HEIGHT} @ {FPS} fps "
              f"= {total:g} s of video; x264 preset {spec.preset} crf {spec.crf}; {os.cpu_count()} CPUs; "
              f"best of {args.repeat}")
        assert a is not None and b is not None and d is not None
        print(f"(a) compose: logo + burned subtitles + music   {a:7.2f} s  ({total / a:5.1f}x real time)")
        print(f"(b) one hand-written ffmpeg command            {b:7.2f} s  ({total / b:5.1f}x real time)")
        if c is not None:
            print(f"(c) MoviePy, same film                         {c:7.2f} s  ({total / c:5.1f}x real time)")
        print(f"(d) compose: plain concat (stream copy)        {d:7.2f} s  ({total / d:5.1f}x real time)")
        print(f"a/b = {a / b:.3f}   (target <= 1.15)")
        print(f"c/a = {c / a:.2f}   (target >= 5)" if c is not None else "c/a = n/a (MoviePy skipped)")
        print(f"d   = {total / d:.1f}x real time   (target >= 20x)")
        for name in ("a.mp4", "b.mp4", "c.mp4", "d.mp4"):
            if (work / name).is_file():
                info = ffmpeg.probe(work / name)
                print(f"    {name}: {info.duration:.3f} s, {info.video_codec}/{info.audio_codec}, {info.size / 1e6:.1f} MB")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--moviepy-python", type=Path, help="an interpreter with moviepy installed, for (c)")
    p.add_argument("--repeat", type=int, default=3, help="rounds of (a), (b), (d); the best of each is reported")
    return p


def _best_interleaved(repeat: int, jobs: list[Callable[[], object] | None]) -> list[float | None]:
    """Fastest wall time of each job; rounds alternate the jobs so that load from other
    processes on the machine hits all of them alike. The last job (MoviePy, slow) runs in the
    first round only; None jobs are skipped."""
    best: list[float | None] = [None] * len(jobs)
    for round_ in range(max(1, repeat)):
        for i, job in enumerate(jobs):
            if job is None or (round_ > 0 and i == len(jobs) - 1):
                continue
            start = time.perf_counter()
            job()
            took = time.perf_counter() - start
            best[i] = min(took, best[i] or took)
    return best


def _make_inputs(work: Path) -> tuple[list[Path], Path, Path]:
    segments = []
    for k in range(SEGMENTS):
        seg = work / f"seg{k}.mp4"
        source = f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS},hue=h={k * 50}"
        ffmpeg.run_to(seg, lambda tmp, s=source: [
            ffmpeg.FFMPEG, "-f", "lavfi", "-i", s, "-t", f"{SEGMENT_SECONDS}", *ffmpeg.encode_args(FPS), str(tmp),
        ], what="bench segment")
        segments.append(seg)
    blocks = [f"{k + 1}\n{_stamp(k * SEGMENT_SECONDS + 0.3)} --> {_stamp(k * SEGMENT_SECONDS + 4.7)}\n{text}\n"
              for k, text in enumerate(CUES)]
    srt = work / "subs.srt"
    srt.write_text("\n".join(blocks), encoding="utf-8")
    music = work / "music.m4a"
    chord = ";".join(f"sine=f={f}:d=12[s{i}]" for i, f in enumerate((220, 277.18, 329.63)))
    ffmpeg.run_to(music, lambda tmp: [
        ffmpeg.FFMPEG, "-filter_complex", f"{chord};[s0][s1][s2]amix=inputs=3,tremolo=f=0.5:d=0.4",
        "-c:a", "aac", "-b:a", "160k", str(tmp),
    ], what="bench music")
    return segments, srt, music


def _stamp(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def _full_spec(segments: list[Path], srt: Path, music: Path) -> ComposeSpec:
    return ComposeSpec(
        segments=segments, durations=[SEGMENT_SECONDS] * SEGMENTS, width=WIDTH, height=HEIGHT, fps=FPS,
        logo=LogoSpec(path=LOGO, position="bottom-right", margin=24, scale=0.12, opacity=0.8),
        subtitles=SubtitleSpec(srt=srt), music=music, loudness_lufs=-14.0, cover_at=1.0,
    )


def _hand_written(spec: ComposeSpec, work: Path, gain_db: float) -> list[str]:
    """What one would type for the same output, knowing the music's gain in advance."""
    listing = work / "b.concat.txt"
    listing.write_text("".join(f"file '{s}'\n" for s in spec.segments), encoding="utf-8")
    assert spec.logo is not None and spec.subtitles is not None
    d = spec.total_duration
    units = ASS_PLAY_RES_Y / HEIGHT  # libass sizes SRT styles on a 288-line canvas
    style = (f"FontName=Noto Sans CJK SC,FontSize={0.045 * ASS_PLAY_RES_Y:.2f},PrimaryColour=&H00FFFFFF,"
             f"OutlineColour=&H00000000,BorderStyle=1,Outline={2 * units:.2f},Shadow=0,Alignment=2,"
             f"MarginV={round(48 * units)}")
    fmt = "aformat=sample_fmts=fltp:sample_rates=48000:channel_layouts=stereo"
    graph = (
        f"[1:v]scale={round(WIDTH * 0.12)}:-1:flags=lanczos,format=rgba,colorchannelmixer=aa=0.8[logo];"
        f"[0:v][logo]overlay=x=main_w-overlay_w-24:y=main_h-overlay_h-24:format=yuv420:eval=init,"
        f"subtitles=filename={spec.subtitles.srt}:charenc=UTF-8:force_style='{style}',format=yuv420p[v];"
        f"[2:a]atrim=duration={d},asetpts=PTS-STARTPTS,{fmt},volume={gain_db:.2f}dB,"
        f"afade=t=in:st=0:d=1,afade=t=out:st={d - 1.5}:d=1.5,alimiter=limit=0.891:level=0:latency=1,"
        f"{fmt},apad=whole_dur={d},atrim=duration={d}[a]"
    )
    return [
        "ffmpeg", "-f", "concat", "-safe", "0", "-i", str(listing), "-i", str(spec.logo.path),
        "-stream_loop", "-1", "-t", f"{d + 0.5}", "-i", str(spec.music),
        "-filter_complex", graph, "-map", "[v]", "-map", "[a]",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-profile:v", "high", "-pix_fmt", "yuv420p",
        "-r", str(FPS), "-fps_mode", "cfr", "-g", str(2 * FPS), *ffmpeg.COLOR_TAGS,
        "-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2",
        "-map_metadata", "-1", "-movflags", "+faststart", str(work / "b.mp4"),
    ]


def _moviepy_runner(python: Path | None, spec: ComposeSpec, work: Path, gain_db: float) -> Callable[[], object] | None:
    """(c) as a job: in a child interpreter that has MoviePy, or here; None when neither can."""
    job = _moviepy_job(spec, work, gain_db)
    script = Path(__file__).with_name("moviepy_compose.py")
    if python is not None:
        argv = [str(python), str(script), json.dumps(job, ensure_ascii=False)]
        return lambda: subprocess.run(argv, check=True)
    if importlib.util.find_spec("moviepy") is None:
        print("(c) skipped: moviepy is not importable here; install it into a separate venv and pass "
              "--moviepy-python (e.g. python3 -m venv /tmp/benchvenv && /tmp/benchvenv/bin/pip install moviepy)",
              file=sys.stderr)
        return None
    sys.path.insert(0, str(script.parent))
    from moviepy_compose import render  # type: ignore[import-not-found]
    return lambda: render(job)


def _moviepy_job(spec: ComposeSpec, work: Path, gain_db: float) -> dict[str, object]:
    assert spec.logo is not None and spec.subtitles is not None
    font = subprocess.run(["fc-match", "-f", "%{file}", spec.subtitles.font], capture_output=True, text=True, check=True)
    return {
        "segments": [str(s) for s in spec.segments], "width": WIDTH, "height": HEIGHT, "fps": FPS,
        "logo": str(spec.logo.path), "logo_scale": spec.logo.scale, "logo_opacity": spec.logo.opacity,
        "margin": spec.logo.margin, "srt": str(spec.subtitles.srt), "font_file": font.stdout.strip(),
        "font_px": round(spec.subtitles.font_size * HEIGHT), "outline_px": round(spec.subtitles.outline),
        "margin_v": spec.subtitles.margin_v, "music": str(spec.music), "music_gain_db": gain_db,
        "preset": spec.preset, "crf": spec.crf, "threads": os.cpu_count() or 1, "out": str(work / "c.mp4"),
    }


if __name__ == "__main__":
    sys.exit(main())
