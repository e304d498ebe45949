"""``scl-lle serve``'s kept uploads and jobs: progress, the preview re-rendered without an upload, the full-size
render, bounds and expiry of what is kept, unknown ids, cancellation, and the engine's progress callback."""

from __future__ import annotations

import io
import json
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import http_request as _request
from conftest import write_noise_clip
from scl_lle.apps.serve import EnhanceServer
from scl_lle.apps.serve.jobs import Job
from scl_lle.apps.serve.previews import prepare_preview, render_preview
from scl_lle.apps.serve.work import Engine
from scl_lle.engine.enhancer import Enhancer
from scl_lle.io.picture import Picture

SMALL_LIMITS = {"max_upload_mb": 400_000 / 2**20, "max_pixels": 200_000, "max_video_seconds": 3.0}


@pytest.fixture()
def start(server_factory: Callable[..., EnhanceServer]) -> Callable[..., EnhanceServer]:
    """Make servers (small limits, any free port), closed after the test: random weights, or with
    ``trained=True`` the embedded default model (which brightens dark photos to the exposure asked)."""
    return lambda trained=False, local_weighting=False, **limits: server_factory(
        {**SMALL_LIMITS, **limits}, trained=trained, local_weighting=local_weighting
    )


def _json(app: EnhanceServer, method: str, path: str, body: bytes | None = None, expected: int = 200) -> Any:
    status, _, answer = _request(app, method, path, body)
    assert status == expected, (path, status, answer)
    return json.loads(answer)


def _png(width: int = 64, height: int = 48, value: int = 30, seed: int = 1) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.normal(value, 8.0, (height, width, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _wait(app: EnhanceServer, job: dict[str, Any], seen: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Poll a job until it is done or failed; every state read is appended to ``seen``."""
    deadline = time.monotonic() + 120
    while job["state"] not in ("done", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.02)
        job = _json(app, "GET", f"/api/jobs/{job['id']}")
        if seen is not None:
            seen.append(job)
    return job


def _upload(app: EnhanceServer, body: bytes, query: str = "name=a.png") -> tuple[str, dict[str, Any]]:
    """Upload a file and wait for its first job: (upload id, the finished job)."""
    answer = _json(app, "POST", f"/api/uploads?{query}", body, expected=202)
    job = _wait(app, answer["job"])
    assert job["state"] == "done", job
    return answer["upload"]["id"], job


@pytest.fixture()
def slow_progress(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Every unit of work of a job takes 0.2 s more; the event is set once a job has reported progress."""
    reported = threading.Event()
    original = Job.progress

    def slow(self: Any, done: int, total: int | None) -> None:
        original(self, done, total)
        reported.set()
        if total and done < total:
            time.sleep(0.2)

    monkeypatch.setattr(Job, "progress", slow)
    return reported


# --------------------------------------------------------------------------------------- engine progress
def test_enhancer_reports_tiles_and_a_raising_callback_stops_it(weights_file: Path) -> None:
    enhancer = Enhancer(weights_file, device="cpu", tile=32)
    pixels = np.random.default_rng(0).integers(0, 80, (48, 70, 3), dtype=np.uint8)
    calls: list[tuple[int, int]] = []
    result = enhancer.enhance_array(pixels, "off", progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 6) for i in range(7)]  # 2 rows x 3 columns of 32-pixel tiles, then all done
    assert np.array_equal(result, enhancer.enhance_array(pixels, "off"))  # the callback changes nothing

    class Stop(Exception):
        pass

    def stop(done: int, total: int) -> None:
        if done == 2:
            raise Stop

    with pytest.raises(Stop):
        enhancer.enhance_array(pixels, "off", progress=stop)
    strips: list[tuple[int, int]] = []
    fast = Enhancer(weights_file, device="cpu", tile=32, scale=2)
    fast.enhance_picture(Picture(pixels=pixels), "off", progress=lambda *a: strips.append(a))
    assert strips[-1][0] == strips[-1][1] > 1  # strips with scale > 1, counted the same way


# -------------------------------------------------------------------------------------- jobs and results
def test_photo_upload_is_a_job_with_progress_and_a_kept_preview(
    start: Callable[..., EnhanceServer], slow_progress: threading.Event
) -> None:
    app = start(trained=True)
    photo = _png(64, 48, value=20)
    answer = _json(app, "POST", "/api/uploads?name=night%20shot.png&exposure=0.3", photo, expected=202)
    upload, job = answer["upload"], answer["job"]
    assert upload["kind"] == "photo" and upload["name"] == "night shot.png"
    assert len(upload["id"]) >= 22 and len(job["id"]) >= 22  # secrets.token_urlsafe(16)
    assert job["state"] in ("queued", "running") and job["kind"] == "preview" and job["exposure"] == 0.3
    seen: list[dict[str, Any]] = []
    job = _wait(app, job, seen)
    assert job["state"] == "done" and job["done"] == job["total"] == 3 and job["unit"] == "steps"
    assert {s["state"] for s in seen} >= {"running", "done"}
    assert any(s["state"] == "running" and 0 < s["done"] < 3 for s in seen)  # progress was seen on the way
    status, headers, body = _request(app, "GET", job["result"])
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert _pixels(body).shape == (48, 64, 3)
    assert float(_pixels(body).mean()) / 255 == pytest.approx(0.3, abs=0.02)
    stats = _json(app, "GET", "/api/stats")
    assert (stats["uploads_received"], stats["jobs_started"], stats["kept_uploads"]) == (1, 1, 1)


def test_exposure_changes_rerender_the_kept_preview_without_upload_or_network(
    start: Callable[..., EnhanceServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = start(trained=True)
    upload, _ = _upload(app, _png(64, 48, value=20), "name=a.png&exposure=auto")
    network = []  # any pass of the network: curve maps, or a whole enhancement
    for method in ("curve_maps", "enhance_array"):
        original = getattr(Enhancer, method)
        monkeypatch.setattr(Enhancer, method, lambda *a, _o=original, **k: network.append(1) or _o(*a, **k))
    brightness = {}
    for setting in ("0.3", "0.6", "off", "auto"):
        status, headers, body = _request(app, "GET", f"/api/uploads/{upload}/preview?exposure={setting}")
        assert status == 200, body
        assert headers["Content-Type"] == "image/jpeg" and float(headers["X-Seconds"]) < 5
        brightness[setting] = float(_pixels(body).mean()) / 255
    assert brightness["0.3"] == pytest.approx(0.3, abs=0.02)
    assert brightness["0.6"] == pytest.approx(0.6, abs=0.05)  # the finishing's detail on a noisy picture
    assert brightness["off"] != pytest.approx(brightness["0.3"], abs=0.02)
    assert not network
    stats = _json(app, "GET", "/api/stats")
    assert (stats["uploads_received"], stats["jobs_started"], stats["previews_rendered"]) == (1, 1, 4)
    # another speed mode has no prepared preview yet: 409, and a preview job prepares it (no new upload)
    assert _request(app, "GET", f"/api/uploads/{upload}/preview?exposure=0.3&mode=fast")[0] == 409
    monkeypatch.undo()
    job = _json(app, "POST", f"/api/uploads/{upload}/render?size=preview&mode=fast&exposure=0.3", expected=202)
    assert _wait(app, job["job"])["state"] == "done"
    assert _request(app, "GET", f"/api/uploads/{upload}/preview?exposure=0.3&mode=fast")[0] == 200
    assert _json(app, "GET", "/api/stats")["uploads_received"] == 1


def test_local_weighting_is_a_request_setting(start: Callable[..., EnhanceServer], monkeypatch: pytest.MonkeyPatch):
    # The page's "Regions" control: local_weighting=1 re-renders the kept preview (no upload, no network pass) with
    # the bright half lifted less; the full-size render and /api/enhance take it too; 0 or 1 only.
    app = start(trained=True)
    assert _json(app, "GET", "/api/defaults") == {"mode": "full", "exposure": "auto", "local_weighting": False}
    pixels = np.clip(np.random.default_rng(5).normal(12, 4, (48, 64, 3)), 0, 255).astype(np.uint8)
    pixels[:, 32:] += 60  # a brighter right half
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    upload, first = _upload(app, buffer.getvalue(), "name=a.png&exposure=0.4")
    assert first["local_weighting"] is False
    network = []
    original = Enhancer.curve_maps
    monkeypatch.setattr(Enhancer, "curve_maps", lambda *a, **k: network.append(1) or original(*a, **k))
    shown = {}
    for local in ("0", "1"):
        status, _, body = _request(app, "GET", f"/api/uploads/{upload}/preview?exposure=0.4&local_weighting={local}")
        assert status == 200, body
        shown[local] = _pixels(body).astype(np.float32) / 255
    assert not network and _json(app, "GET", "/api/stats")["jobs_started"] == 1
    assert shown["1"].mean() == pytest.approx(shown["0"].mean(), abs=0.02)  # the same level
    assert shown["1"][:, 36:].mean() < shown["0"][:, 36:].mean() - 0.02  # the bright half lifted less
    job = _json(app, "POST", f"/api/uploads/{upload}/render?size=full&exposure=0.4&local_weighting=1", expected=202)
    job = _wait(app, job["job"])
    assert job["state"] == "done" and job["local_weighting"] is True
    full = _pixels(_request(app, "GET", job["result"])[2]).astype(np.float32) / 255
    for half in (slice(0, 28), slice(36, 64)):  # the download is what the preview showed (JPEG aside)
        assert full[:, half].mean() == pytest.approx(shown["1"][:, half].mean(), abs=0.01)
    status, _, once = _request(app, "POST", "/api/enhance?name=a.png&exposure=0.4&local_weighting=1", buffer.getvalue())
    assert status == 200 and np.abs(_pixels(once).astype(np.float32) / 255 - full).max() <= 1 / 255 + 1e-6
    status, _, body = _request(app, "GET", f"/api/uploads/{upload}/preview?exposure=0.4&local_weighting=yes")
    assert status == 400 and b"local_weighting" in body


def test_serve_local_weighting_is_the_default_of_requests(start: Callable[..., EnhanceServer]) -> None:
    # scl-lle serve --local-weighting: requests that leave the field out get it (and the page starts with it); a
    # request that sets it is its own work (a full-size render with the other setting is a new job).
    app = start(trained=True, local_weighting=True)
    assert _json(app, "GET", "/api/defaults")["local_weighting"] is True
    upload, first = _upload(app, _png(64, 48, value=20), "name=a.png&exposure=0.4")
    assert first["local_weighting"] is True
    jobs = {}
    for local in ("", "&local_weighting=0", "&local_weighting=1"):
        job = _json(app, "POST", f"/api/uploads/{upload}/render?size=full&exposure=0.4{local}", expected=202)
        jobs[local] = _wait(app, job["job"])
    assert jobs[""]["local_weighting"] is True and jobs["&local_weighting=0"]["local_weighting"] is False
    assert len({job["id"] for job in jobs.values()}) == 3  # each a new job: the setting is part of the work
    again = _json(app, "POST", f"/api/uploads/{upload}/render?size=full&exposure=0.4", expected=202)
    assert again["job"]["id"] == jobs["&local_weighting=1"]["id"]  # the default given or left out: the same work


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_preview_render_is_the_engines_apply_curve_maps(weights_file: Path, mode: str) -> None:
    """The quick re-render (kept maps, thumbnail gain, cached finishing base) equals Enhancer.apply_curve_maps."""
    engine = Engine(weights_file, "cpu")
    enhancer = engine.enhancer(mode)
    pixels = np.random.default_rng(3).integers(0, 70, (90, 140, 3), dtype=np.uint8)
    preview = prepare_preview(enhancer, pixels)
    image = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0).float() / 255
    maps = enhancer.curve_maps(image)
    for exposure in ("auto", "off", 0.25, 0.5):
        quick = render_preview(enhancer, preview, exposure)
        assert torch.allclose(quick, enhancer.apply_curve_maps(image, maps, exposure), atol=1e-4), exposure


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_preview_render_with_local_weighting_is_the_engines(mode: str) -> None:
    """With local weighting too (the default model, which brightens, so the weights matter; at the fast mode's
    scale they go on the small maps before the upsampling, as in the engine). One preview serves both settings
    (the page switches between them without a new network pass)."""
    engine = Engine(None, "cpu", "torch")
    plain, local = engine.enhancer(mode), engine.enhancer(mode, local_weighting=True)
    assert local.local_weighting and not plain.local_weighting
    assert local._pool is plain._pool  # the second is a view of the first: no second set of threads or sessions
    pixels = np.random.default_rng(4).integers(0, 30, (90, 140, 3), dtype=np.uint8)
    pixels[:, 70:] += 90  # a brighter right half: a sharp edge in the weights
    preview = prepare_preview(plain, pixels)
    image = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0).float() / 255
    maps = local.curve_maps(image)
    for exposure in ("auto", "off", 0.4):
        for enhancer in (local, plain):
            quick = render_preview(enhancer, preview, exposure)
            assert torch.allclose(quick, enhancer.apply_curve_maps(image, maps, exposure), atol=1e-4), exposure
    weighted, alike = render_preview(local, preview, 0.4), render_preview(plain, preview, 0.4)
    assert (weighted[..., 70:] - alike[..., 70:]).mean() < -0.02  # the bright half lifted less


def test_full_size_render_is_the_engines_result_with_tile_progress(
    start: Callable[..., EnhanceServer], slow_progress: threading.Event
) -> None:
    app = start(trained=True, preview_side=40)
    photo = _png(100, 60, value=25)
    upload, preview_job = _upload(app, photo)
    status, _, body = _request(app, "GET", preview_job["result"])
    assert status == 200 and _pixels(body).shape == (24, 40, 3)  # the preview's long side is preview_side
    enhancer = app.engine.enhancer("full")
    enhancer.tile = 32  # 2 x 4 tiles
    answer = _json(app, "POST", f"/api/uploads/{upload}/render?size=full&exposure=0.35", expected=202)
    seen: list[dict[str, Any]] = []
    job = _wait(app, answer["job"], seen)
    assert job["state"] == "done" and job["kind"] == "full"
    assert (job["done"], job["total"], job["unit"]) == (8, 8, "tiles")
    assert any(0 < s["done"] < 8 and s["seconds_left"] is not None and s["seconds_left"] > 0 for s in seen)
    status, headers, body = _request(app, "GET", job["result"])
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert headers["Content-Disposition"] == 'attachment; filename="a-enhanced.png"'
    assert np.array_equal(_pixels(body), enhancer.enhance_array(_pixels(photo), 0.35))
    # the same render asked again is the same job (nothing redone), a new exposure a new job
    again = _json(app, "POST", f"/api/uploads/{upload}/render?size=full&exposure=0.35", expected=202)
    assert again["job"]["id"] == job["id"] and again["job"]["state"] == "done"
    other = _json(app, "POST", f"/api/uploads/{upload}/render?size=full&exposure=0.5", expected=202)
    assert other["job"]["id"] != job["id"]
    assert _wait(app, other["job"])["state"] == "done"
    assert _request(app, "GET", f"/api/jobs/{job['id']}")[0] == 404  # the replaced result is gone
    assert _json(app, "GET", "/api/stats")["uploads_received"] == 1


def test_a_new_render_cancels_the_one_it_replaces(
    start: Callable[..., EnhanceServer], slow_progress: threading.Event
) -> None:
    app = start(max_queue=2)
    upload, _ = _upload(app, _png(96, 64))
    app.engine.enhancer("full").tile = 16  # 24 tiles of at least 0.2 s each
    slow_progress.clear()
    first = _json(app, "POST", f"/api/uploads/{upload}/render?size=full&exposure=0.3", expected=202)["job"]
    assert slow_progress.wait(30)
    first = _json(app, "GET", f"/api/jobs/{first['id']}")
    assert first["state"] == "running"
    second = _json(app, "POST", f"/api/uploads/{upload}/render?size=full&exposure=0.4", expected=202)["job"]
    assert _request(app, "GET", f"/api/jobs/{first['id']}")[0] == 404  # replaced: forgotten at once
    app.engine.enhancer("full").tile = 512
    assert _wait(app, second)["state"] == "done"
    assert _json(app, "GET", "/api/stats")["jobs_waiting"] == 0
    # both queue slots are free again: two uploads at once are taken
    assert _request(app, "POST", "/api/uploads?name=b.png", _png())[0] == 202
    assert _request(app, "POST", "/api/uploads?name=c.png", _png())[0] == 202


def test_a_full_queue_answers_503_for_uploads_and_renders(
    start: Callable[..., EnhanceServer], slow_progress: threading.Event
) -> None:
    app = start(max_queue=1)
    upload, _ = _upload(app, _png())
    app.engine.enhancer("full").tile = 16
    slow_progress.clear()
    job = _json(app, "POST", f"/api/uploads/{upload}/render?size=full&exposure=0.3", expected=202)["job"]
    assert slow_progress.wait(30)
    status, headers, _ = _request(app, "POST", "/api/uploads?name=b.png", _png())
    assert status == 503 and headers["Retry-After"] == "5" and headers["Connection"] == "close"
    status, headers, _ = _request(app, "POST", f"/api/uploads/{upload}/render?size=full&exposure=0.6")
    assert status == 503 and headers["Retry-After"] == "5"
    app.engine.enhancer("full").tile = 512
    assert _wait(app, job)["state"] == "done"
    assert _request(app, "POST", "/api/uploads?name=c.png", _png())[0] == 202  # the slot was given back


# ---------------------------------------------------------------------------------- unknown, bounded, kept
def test_unknown_ids_are_404_and_requests_from_other_sites_403(start: Callable[..., EnhanceServer]) -> None:
    app = start()
    unknown = secrets.token_urlsafe(16)
    for method, path in [
        ("GET", f"/api/jobs/{unknown}"),
        ("GET", f"/api/jobs/{unknown}/result"),
        ("GET", f"/api/uploads/{unknown}/preview?exposure=0.3"),
        ("GET", f"/api/uploads/{unknown}/before"),
        ("POST", f"/api/uploads/{unknown}/render?size=full"),
        ("DELETE", f"/api/uploads/{unknown}"),
        ("GET", "/api/jobs/../../etc/passwd"),
        ("GET", "/api/uploads/x/other"),
    ]:
        status, _, message = _request(app, method, path)
        assert status == 404, (method, path, status, message)
    upload, job = _upload(app, _png())
    for method, path in [
        ("GET", f"/api/jobs/{job['id']}"),
        ("GET", f"/api/uploads/{upload}/preview?exposure=0.3"),
        ("POST", f"/api/uploads/{upload}/render?size=full"),
        ("DELETE", f"/api/uploads/{upload}"),
    ]:
        assert _request(app, method, path, headers={"Host": "attacker.example"})[0] == 403, path
        cross_site = {"Origin": "http://attacker.example"}
        assert _request(app, method, path, headers=cross_site)[0] == 403, path
    assert _request(app, "POST", f"/api/uploads/{upload}/render?size=huge")[0] == 400
    assert _request(app, "GET", f"/api/uploads/{upload}/preview?exposure=2")[0] == 400
    assert _json(app, "DELETE", f"/api/uploads/{upload}") == {"deleted": upload}
    assert _request(app, "GET", f"/api/jobs/{job['id']}")[0] == 404
    assert _request(app, "GET", f"/api/uploads/{upload}/preview?exposure=0.3")[0] == 404
    assert not any(app.scratch.iterdir())


def test_refused_uploads_keep_nothing(start: Callable[..., EnhanceServer]) -> None:
    app = start()
    for query, body, expected in [
        ("name=tool.exe", _png(), 415),
        ("name=a.png&mode=turbo", _png(), 400),
        ("name=big.png", bytes(500_000), 413),
        ("name=clip.mp4", _png(), 415),  # an image named as a video
    ]:
        status, _, message = _request(app, "POST", f"/api/uploads?{query}", body)
        assert status == expected, (query, status, message)
    answer = _json(app, "POST", "/api/uploads?name=a.png", b"not an image at all", expected=202)
    job = _wait(app, answer["job"])
    assert job["state"] == "failed" and job["status"] == 422 and "cannot use this file" in job["error"]
    assert _request(app, "GET", f"/api/jobs/{job['id']}/result")[0] == 409
    assert _json(app, "GET", "/api/stats")["kept_uploads"] == 1  # kept until it expires or is deleted
    _json(app, "DELETE", f"/api/uploads/{answer['upload']['id']}")
    assert not any(app.scratch.iterdir())


def test_kept_uploads_are_bounded_in_number_and_bytes(start: Callable[..., EnhanceServer]) -> None:
    app = start(max_kept_uploads=2)
    first, _ = _upload(app, _png(seed=1))
    second, _ = _upload(app, _png(seed=2))
    assert _request(app, "GET", f"/api/uploads/{first}/preview?exposure=0.3")[0] == 200  # first: used last
    third, _ = _upload(app, _png(seed=3))  # two are kept: the least recently used (second) goes
    assert _request(app, "GET", f"/api/uploads/{second}/preview?exposure=0.3")[0] == 404
    for kept in (first, third):
        assert _request(app, "GET", f"/api/uploads/{kept}/preview?exposure=0.3")[0] == 200
    assert len(list(app.scratch.iterdir())) == 2
    stats = _json(app, "GET", "/api/stats")
    assert stats["kept_uploads"] == 2 and stats["previews_in_memory"] == 2

    photo = _png(seed=4)
    small = start(max_kept_bytes=int(2.5 * len(photo)))
    ids = [_upload(small, _png(seed=4 + i))[0] for i in range(4)]
    kept = [upload for upload in ids if _request(small, "GET", f"/api/uploads/{upload}/before")[0] == 200]
    assert kept == ids[-2:]
    assert _json(small, "GET", "/api/stats")["kept_bytes"] <= 2.5 * len(photo) + 200


def test_idle_uploads_expire_and_closing_deletes_everything(start: Callable[..., EnhanceServer]) -> None:
    app = start(kept_idle_minutes=10)
    now = [1000.0]
    app.uploads.clock = lambda: now[0]
    old, old_job = _upload(app, _png(seed=1))
    now[0] += 9 * 60
    fresh, _ = _upload(app, _png(seed=2))
    assert _request(app, "GET", f"/api/uploads/{old}/preview?exposure=0.3")[0] == 200  # used: 10 more minutes
    now[0] += 9 * 60
    assert _request(app, "GET", f"/api/uploads/{old}/preview?exposure=0.3")[0] == 200
    now[0] += 10 * 60 + 1
    app.uploads.expire()  # what the job thread does every half minute
    assert _json(app, "GET", "/api/stats")["kept_uploads"] == 0
    assert _request(app, "GET", f"/api/uploads/{old}/preview?exposure=0.3")[0] == 404
    assert _request(app, "GET", f"/api/jobs/{old_job['id']}")[0] == 404
    assert _request(app, "POST", f"/api/uploads/{fresh}/render?size=full")[0] == 404
    assert not any(app.scratch.iterdir())
    _upload(app, _png(seed=3))
    scratch = app.scratch
    assert any(scratch.iterdir())
    app.shutdown()
    app.server_close()
    assert not scratch.exists()


# ------------------------------------------------------------------------------------------------ video
def test_video_progress_in_frames_and_rerender_without_upload(
    start: Callable[..., EnhanceServer], tmp_path: Path
) -> None:
    pytest.importorskip("av", reason="PyAV is not installed (pip install 'scl-lle[video]')")
    clip = write_noise_clip(tmp_path / "clip.mp4", 64, 48, 10, 40)
    app = start()
    answer = _json(app, "POST", "/api/uploads?name=clip.mp4&mode=fast", clip.read_bytes(), expected=202)
    assert answer["upload"]["kind"] == "video" and answer["job"]["kind"] == "video"
    job = _wait(app, answer["job"])
    assert job["state"] == "done", job
    assert (job["done"], job["total"], job["unit"]) == (24, 24, "frames")
    status, headers, _ = _request(app, "GET", job["result"])
    assert status == 200 and headers["Content-Type"] == "video/mp4" and headers["X-Result-Name"] == "clip-enhanced.mp4"
    upload = answer["upload"]["id"]
    assert _request(app, "GET", f"/api/uploads/{upload}/preview?exposure=0.3")[0] == 409  # photos only
    again = _json(app, "POST", f"/api/uploads/{upload}/render?mode=fast&exposure=0.4", expected=202)["job"]
    assert again["kind"] == "video" and again["id"] != job["id"]
    assert _wait(app, again)["state"] == "done"
    # videos lift every region alike: asking for local weighting is the same work, not a new render
    same = _json(app, "POST", f"/api/uploads/{upload}/render?mode=fast&exposure=0.4&local_weighting=1", expected=202)
    assert same["job"]["id"] == again["id"] and same["job"]["local_weighting"] is False
    stats = _json(app, "GET", "/api/stats")
    assert (stats["uploads_received"], stats["jobs_started"]) == (1, 2)
