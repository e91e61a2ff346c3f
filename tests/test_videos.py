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


def test_missing_records_only_the_actors_without_an_image(tmp_path):
    for run in ["Hopper-v5/td3", "Hopper-v5/sac", "Ant-v5/sac", "Ant-v5/sb3-sac"]:  # SB3's runs: no actor of ours
        (tmp_path / run / "seed1").mkdir(parents=True)
        (tmp_path / run / "seed1" / "actor.pt").touch()
    (tmp_path / "Hopper-v5" / "td3" / "seed2").mkdir()
    (tmp_path / "Hopper-v5" / "td3" / "seed2" / "actor.pt").touch()
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "Hopper-v5-td3.webp").touch()
    everything = [(tmp_path / run / "seed1" / "actor.pt", tmp_path / "videos" / f"{run.replace('/', '-')}.webp")
                  for run in ["Ant-v5/sac", "Hopper-v5/sac", "Hopper-v5/td3"]]  # fmt: skip
    assert videos.to_record(tmp_path, seed=1) == everything
    assert videos.to_record(tmp_path, seed=1, missing=True) == everything[:2]
    seed2 = (tmp_path / "Hopper-v5" / "td3" / "seed2" / "actor.pt", tmp_path / "videos" / "Hopper-v5-td3.webp")
    assert videos.to_record(tmp_path, seed=2) == [seed2]
    assert videos.to_record(tmp_path, seed=2, missing=True) == []  # one image per env and algorithm, of any seed
