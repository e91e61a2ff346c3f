"""benchmarks/videos.py: an mp4 becomes a small animated WebP (real time, fixed width, the first seconds)."""

import numpy as np
import pytest

from benchmarks import videos

imageio = pytest.importorskip("imageio.v2")
Image = pytest.importorskip("PIL.Image")


@pytest.mark.parametrize(("seconds", "fps"), [(2.0, 50), (6.0, 30)])
def test_a_video_becomes_a_real_time_webp_of_its_first_seconds(tmp_path, seconds, fps):
    video = tmp_path / "episode.mp4"
    with imageio.get_writer(video, fps=fps, macro_block_size=1) as writer:
        for i in range(round(seconds * fps)):  # a bright square moving right, one pixel a frame
            frame = np.zeros((96, 128, 3), dtype=np.uint8)
            frame[40:56, i % 112 : i % 112 + 16] = 255
            writer.append_data(frame)
    size = videos.to_webp(video, tmp_path / "out" / "episode.webp")
    image = Image.open(tmp_path / "out" / "episode.webp")
    image.load()  # reads the first frame, and its duration
    every = round(fps / videos.FPS)  # 50 fps: every 2nd frame (25 a second); 30 fps: every 2nd (15 a second)
    kept = min(seconds, videos.SECONDS) * fps / every
    assert image.size == (videos.WIDTH, videos.WIDTH * 96 // 128)
    assert image.n_frames == kept
    assert image.info["duration"] == round(1000 * every / fps)  # shown in real time
    assert size == (tmp_path / "out" / "episode.webp").stat().st_size < videos.MAX_BYTES
