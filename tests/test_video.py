"""Video: timing, audio and size kept through ``scl-lle enhance clip.mp4``; temporal smoothing against flicker."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scl_lle.apps.smoothing import CurveSmoother
from scl_lle.apps.video import VideoReadError, enhance_video, read_video_frames
from scl_lle.cli import main
from scl_lle.evaluation.metrics import flicker

av = pytest.importorskip("av", reason="PyAV is not installed (pip install 'scl-lle[video]')")

WIDTH, HEIGHT = 96, 64
CPU = ["--device", "cpu", "--threads", "1"]  # tiny frames: one thread is fastest, and fair to a busy machine
LAMP = (slice(44, 52), slice(70, 78))  # a lamp that blinks every 3 frames


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    """``--threads`` sets PyTorch's process-wide thread count; give the other tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _write_clip(
    path: Path,
    *,
    frames: int = 48,
    fps: int = 24,
    video_codec: str = "libx264",
    audio_codec: str | None = "aac",
    audio_rate: int = 48_000,
    seed: int = 0,
) -> np.ndarray:
    """A dark scene: textured background, a dim object moving sideways, a blinking lamp, and the light level
    stepping up by 1.8x halfway; sensor noise on every frame; a 440 Hz tone as audio. Returns the frames."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    background = 0.03 + 0.05 * xx / WIDTH + 0.02 * np.sin(yy / 5.0) * np.cos(xx / 7.0)
    written = []
    with av.open(str(path), "w") as container:
        video = container.add_stream(video_codec, rate=fps)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        if video_codec == "libx264":
            video.options = {"crf": "10"}
        audio = None
        if audio_codec:
            audio = container.add_stream(audio_codec, rate=audio_rate)
            audio.layout = "mono"
        for t in range(frames):
            frame = np.repeat(background[..., None], 3, axis=2) * np.array([0.9, 1.0, 1.1])
            if (t // 3) % 2:
                frame[LAMP] = 0.9
            left = 4 + int(30 * abs(np.sin(t / 8)))
            frame[20:36, left : left + 16] = (0.35, 0.3, 0.2)
            if t >= frames // 2:
                frame *= 1.8
            frame += rng.normal(0.0, 0.015, frame.shape)
            pixels = np.clip(np.round(frame * 255), 0, 255).astype(np.uint8)
            written.append(pixels)
            picture = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            picture.pts = t
            container.mux(video.encode(picture))
        container.mux(video.encode(None))
        if audio is not None:
            samples = frames * audio_rate // fps
            tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(samples) / audio_rate)).astype(np.float32)
            fmt = audio.codec_context.codec.audio_formats[0].name
            for start in range(0, samples, 1024):
                chunk = tone[None, start : start + 1024]
                if fmt == "s16":
                    chunk = np.round(chunk * 32767).astype(np.int16)
                piece = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format=fmt, layout="mono")
                piece.sample_rate, piece.pts = audio_rate, start
                container.mux(audio.encode(piece))
            container.mux(audio.encode(None))
    return np.stack(written)


def _probe(path: Path) -> dict[str, object]:
    """Stream facts: size, frames decoded, frame rate, durations, audio codec and packet bytes."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        info: dict[str, object] = {
            "size": (video.codec_context.width, video.codec_context.height),
            "rate": video.average_rate,
            "video_seconds": float(video.duration * video.time_base) if video.duration else None,
            "container_seconds": container.duration / 1e6 if container.duration else None,
            "audio": None,
        }
        info["frames"] = sum(1 for _ in container.decode(video=0))
    with av.open(str(path)) as container:
        if container.streams.audio:
            stream = container.streams.audio[0]
            packets = [bytes(p) for p in container.demux(stream) if p.size]
            info["audio"] = (stream.codec_context.name, stream.sample_rate, packets)
            info["audio_seconds"] = float(stream.duration * stream.time_base) if stream.duration else None
    return info


def _tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255


def test_flicker_is_mean_absolute_change_of_mean_brightness() -> None:
    means = torch.tensor([0.1, 0.2, 0.1, 0.2])
    assert flicker(means).item() == pytest.approx(0.1)
    assert flicker(means, relative=True).item() == pytest.approx(0.1 / 0.15)
    frames = means.view(4, 1, 1, 1).expand(4, 3, 5, 7)
    assert flicker(frames).item() == pytest.approx(0.1)
    assert flicker(torch.full((6,), 0.3)).item() == 0.0
    with pytest.raises(ValueError, match="two frames"):
        flicker(torch.tensor([0.5]))


def test_smoother_averages_static_regions_and_follows_changes() -> None:
    torch.manual_seed(0)
    frames = torch.full((12, 3, 32, 32), 0.2)
    frames[6:, :, :, :16] *= 2.0  # the left half gets brighter at frame 6; the right half never changes
    maps = torch.rand(12, 24, 32, 32) * 0.2 + 0.4  # per-frame estimates jitter around 0.5
    smoothed = CurveSmoother(0.9, cell=8)(frames, maps)
    assert torch.equal(smoothed[0], maps[0])  # the first frame starts afresh
    right = (..., slice(None), slice(20, None))  # away from the blend across the boundary
    assert smoothed[1:6][right].std(dim=0).mean() < 0.4 * maps[1:6][right].std(dim=0).mean()
    assert torch.equal(smoothed[6][..., :12], maps[6][..., :12])  # changed cells take the new maps at once
    assert not torch.equal(smoothed[6][right], maps[6][right])  # unchanged cells keep averaging
    assert torch.equal(CurveSmoother(0.0)(frames, maps), maps)  # 0 turns it off
    with pytest.raises(ValueError):
        CurveSmoother(1.0)


def test_exposure_gain_is_held_per_shot_and_restarts_at_a_cut() -> None:
    frames = torch.full((10, 3, 32, 32), 0.1)
    frames[3, :, :8, :8] = 0.9  # a bright object passes in one corner: the same shot
    frames[6:] = torch.rand(4, 3, 32, 32) * 0.6 + 0.3  # a cut to another scene
    smoother = CurveSmoother(0.9, cell=8)
    smoother(frames, torch.zeros(10, 24, 32, 32))
    gains = torch.tensor([2.0, 2.0, 2.0, 1.0, 2.0, 2.0, 0.5, 0.5, 0.5, 0.5])  # frame 3's own solve jumps
    held = smoother.smooth_gains(gains)
    assert held[0] == 2.0 and abs(held[3] - 2.0) < 0.15  # the passing object barely moves the shot's gain
    assert held[6] == 0.5  # the new shot starts from its own gain at once
    assert torch.equal(CurveSmoother(0.0).smooth_gains(gains), gains)


@pytest.mark.parametrize(
    ("suffix", "video_codec", "audio_codec", "fps"),
    [(".mp4", "libx264", "aac", 24), (".mkv", "mpeg4", "pcm_s16le", 25)],
)
def test_enhance_video_keeps_size_timing_and_audio(
    tmp_path: Path,
    weights_file: Path,
    capsys: pytest.CaptureFixture[str],
    suffix: str,
    video_codec: str,
    audio_codec: str,
    fps: int,
) -> None:
    clip = tmp_path / f"clip{suffix}"
    _write_clip(clip, frames=24, fps=fps, video_codec=video_codec, audio_codec=audio_codec)
    out = tmp_path / "out"
    args = ["enhance", str(clip), "-o", str(out), "-w", str(weights_file), *CPU, "--video-batch", "5"]
    assert main(args) == 0
    assert "frame/s" in capsys.readouterr().err  # the progress bar shows frames per second
    before, after = _probe(clip), _probe(out / clip.name)
    assert after["size"] == before["size"] == (WIDTH, HEIGHT)
    assert after["frames"] == before["frames"] == 24
    assert after["rate"] == before["rate"] == Fraction(fps)
    assert after["video_seconds"] == pytest.approx(before["video_seconds"], abs=1e-6)
    assert after["container_seconds"] == pytest.approx(before["container_seconds"], abs=1 / fps)
    assert after["audio"] is not None
    assert after["audio"] == before["audio"]  # same codec and rate, packet for packet: copied, not re-encoded
    assert after["audio_seconds"] == pytest.approx(before["audio_seconds"], abs=1e-6)
    with av.open(str(out / clip.name)) as container:  # same codec family and pixel format
        context = container.streams.video[0].codec_context
        assert (context.name, context.pix_fmt) == ({"libx264": "h264"}.get(video_codec, video_codec), "yuv420p")


def test_videos_and_images_in_one_batch(tmp_path: Path, weights_file: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    _write_clip(folder / "night.mp4", frames=6, audio_codec=None)
    Image.new("RGB", (40, 30), (20, 15, 10)).save(folder / "photo.jpg")
    (folder / "broken.mov").write_bytes(b"\x00\x00\x00\x18ftypqt  " + bytes(range(256)) * 4)
    out = tmp_path / "out"
    code = main(["enhance", str(folder), "-o", str(out), "-w", str(weights_file), *CPU, "-q"])
    assert code == 1  # the broken video is reported; the rest complete
    assert sorted(p.name for p in out.iterdir()) == ["night.mp4", "photo.jpg"]
    assert _probe(out / "night.mp4")["frames"] == 6
    again = ["enhance", str(folder / "night.mp4"), "-o", str(out), "-w", str(weights_file), *CPU, "-q"]
    assert main(again) == 1  # an existing output is not replaced without --overwrite
    as_png = ["--format", "png", "-o", str(tmp_path / "png")]
    code = main(["enhance", str(folder / "night.mp4"), *as_png, "-w", str(weights_file), *CPU, "-q"])
    assert code == 0 and (tmp_path / "png" / "night.mp4").is_file()  # --format is for images; a video stays one


def test_videos_ignore_local_weighting(tmp_path: Path) -> None:
    # Weights that follow each frame's bright regions (the blinking lamp) would make the static background flicker,
    # so a video lifts every region alike whatever --local-weighting says; photos in the same batch do not.
    folder = tmp_path / "in"
    folder.mkdir()
    _write_clip(folder / "night.mp4", frames=6, audio_codec=None)
    photo = np.full((48, 64, 3), 8, np.uint8)
    photo[:, 32:] = 60  # a dark and a brighter half
    Image.fromarray(photo).save(folder / "photo.png")
    outputs = {}
    for name, flags in (("plain", []), ("local", ["--local-weighting"])):
        argv = ["enhance", str(folder), "-o", str(tmp_path / name), *CPU, "-q"]  # the default model: it brightens
        assert main([*argv, "--exposure", "0.4", *flags]) == 0
        outputs[name] = (
            read_video_frames(tmp_path / name / "night.mp4")[0],
            np.asarray(Image.open(tmp_path / name / "photo.png")),
        )
    np.testing.assert_array_equal(outputs["plain"][0], outputs["local"][0])
    assert not np.array_equal(outputs["plain"][1], outputs["local"][1])


def test_video_limits_leave_no_output(tmp_path: Path, weights_file: Path) -> None:
    clip = tmp_path / "clip.mp4"
    _write_clip(clip, frames=12, audio_codec=None)
    target = tmp_path / "out" / "clip.mp4"
    with pytest.raises(VideoReadError, match="more than the limit of 5"):
        enhance_video(clip, target, weights=weights_file, device="cpu", max_frames=5, progress=False)
    with pytest.raises(VideoReadError, match="pixels"):
        enhance_video(clip, target, weights=weights_file, device="cpu", max_pixels=1000, progress=False)
    with pytest.raises(VideoReadError, match=r"limit of 0.2 s"):
        enhance_video(clip, target, weights=weights_file, device="cpu", max_seconds=0.2, progress=False)
    assert not target.exists()
    assert not target.parent.exists() or not any(target.parent.iterdir())  # no temporary file left either


def _background(frames: torch.Tensor) -> torch.Tensor:
    """Mean brightness per frame of the static part: away from the moving object's rows and the lamp."""
    keep = torch.ones(frames.shape[-2:], dtype=torch.bool)
    keep[16:40, :] = False
    keep[40:56, 66:82] = False
    return frames[..., keep].flatten(1).mean(dim=1)


def _flicker_by_half(means: torch.Tensor) -> float:
    """Relative flicker within each half of the clip (the brightness step between them is not flicker)."""
    half = means.shape[0] // 2
    return 0.5 * float(flicker(means[:half], relative=True) + flicker(means[half:], relative=True))


def test_temporal_smoothing_stops_flicker_and_follows_the_step(tmp_path: Path, official_weights: Path) -> None:
    if not official_weights.is_file():
        pytest.skip(f"{official_weights} is absent")
    clip = tmp_path / "clip.mp4"
    _write_clip(clip)
    runs = {}
    for smoothing, exposure in (("0.9", "off"), ("0", "off"), ("0.9", "auto"), ("0", "auto")):
        out = tmp_path / f"out-{smoothing}-{exposure}"
        args = ["enhance", str(clip), "-o", str(out), "-w", str(official_weights), "--fast", *CPU, "-q"]
        assert main([*args, "--temporal-smoothing", smoothing, "--exposure", exposure]) == 0
        runs[smoothing, exposure] = _tensor(read_video_frames(out / clip.name)[0])
    source = _tensor(read_video_frames(clip)[0])
    # The curves' own smoothing, at full strength: the network's maps alone decide the brightness.
    smooth, plain = runs["0.9", "off"], runs["0", "off"]
    step = source.shape[0] // 2
    figures = {
        name: (
            float(flicker(frames, relative=True)),
            _flicker_by_half(_background(frames)),
            float(frames[step].mean() - frames[step - 1].mean()),
        )
        for name, frames in (
            ("input", source),
            ("per-frame", plain),
            ("smoothed", smooth),
            ("auto per-frame", runs["0", "auto"]),
            ("auto smoothed", runs["0.9", "auto"]),
        )
    }
    print("relative flicker (whole frame, static background), step:", figures)
    assert smooth.mean() > 2.5 * source.mean()  # enhanced
    # Per-frame curves make the static background pump with the lamp; smoothing brings it back near the input.
    assert figures["per-frame"][1] > 2.5 * figures["input"][1]
    assert figures["smoothed"][1] < 0.5 * figures["per-frame"][1]
    assert figures["smoothed"][1] < 1.6 * figures["input"][1]
    # The whole-frame flicker stays below the input's (the lamp and the moving object are real changes).
    assert figures["smoothed"][0] < figures["input"][0]
    # The brightness step is followed in the same frame, as far as without smoothing.
    assert figures["smoothed"][2] > 0.9 * figures["per-frame"][2] > 0
    # Auto exposure (the default) holds one gain per shot: lifted like the others, and the static background
    # flickers no more than the input does, while each frame's own solve chases the blinking lamp (it holds
    # every frame's mean at its target, so the background dims when the lamp is on: about 1.5x the input's
    # background flicker, 4x before the fast path's solve read the maps at the sampled pixels exactly).
    auto = runs["0.9", "auto"]
    assert auto.mean() > 2.5 * source.mean()
    assert figures["auto smoothed"][1] < 1.6 * figures["input"][1]
    assert figures["auto smoothed"][1] < 0.8 * figures["auto per-frame"][1]
    assert figures["auto smoothed"][0] < figures["input"][0]
