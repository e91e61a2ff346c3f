"""Small animated images of trained agents, for the README: one per env and algorithm of a committed grid.

    MUJOCO_GL=egl python -m benchmarks.videos docs/benchmarks/medium [--seed 1] [--missing]
    # or: bash benchmark.sh videos ...

For every <env>/<algo>/seed<k>/actor.pt of our algorithms in the folder (the final actor a grid exported),
records one deterministic evaluation episode exactly as a user would, with
`<algo>_continuous.py --checkpoint actor.pt --capture-video --eval-episodes 1 --seed k` (in a scratch folder,
so nothing lands in videos/), then turns the first SECONDS of its mp4 into an animated WebP: FPS frames a
second, WIDTH pixels wide, lossy. Written to <folder>/videos/<env>-<algo>.webp; each is checked to stay under
MAX_BYTES (about 1 MB), and its size printed. With --missing, only the actors that have no image yet (those of
runs finished since the last recording); without it, all of them again.
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECONDS, FPS, WIDTH, QUALITY = 4.0, 20, 240, 60
MAX_BYTES = 1_000_000


def record(actor: Path, algo: str, seed: int, scratch: Path) -> Path:
    """The mp4 of one deterministic episode of a saved actor, recorded by the training script itself."""
    command = [sys.executable, str(ROOT / f"{algo}_continuous.py"), "--checkpoint", str(actor.resolve()),
               "--capture-video", "--eval-episodes", "1", "--seed", str(seed)]  # fmt: skip
    env = {"MUJOCO_GL": "egl", **os.environ}
    subprocess.run(command, cwd=scratch, env=env, check=True, stdout=subprocess.DEVNULL)
    (video,) = scratch.glob("videos/*/*.mp4")
    return video


def to_webp(video: Path, out: Path) -> int:
    """The first SECONDS of `video` as an animated WebP at FPS frames a second, WIDTH wide; its size in bytes."""
    import imageio.v2 as imageio  # noqa: PLC0415 (benchmark-only dependencies, installed with moviepy)
    from PIL import Image  # noqa: PLC0415

    reader = imageio.get_reader(video)
    source_fps = reader.get_meta_data()["fps"]
    every = max(1, round(source_fps / FPS))
    frames = []
    for i, frame in enumerate(reader):
        if i >= SECONDS * source_fps:
            break
        if i % every == 0:
            image = Image.fromarray(frame)
            frames.append(image.resize((WIDTH, round(image.height * WIDTH / image.width)), Image.LANCZOS))
    reader.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    duration = round(1000 * every / source_fps)  # ms a frame: real time
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=duration, loop=0, quality=QUALITY)
    return out.stat().st_size


def to_record(folder: Path, seed: int, missing: bool = False) -> list[tuple[Path, Path]]:
    """(actor.pt, the image it makes) for each env and algorithm of ours in `folder`; with `missing`, only
    those whose image is not there yet."""
    actors = sorted(a for a in folder.glob(f"*/*/seed{seed}/actor.pt") if a.parent.parent.name in ("td3", "sac"))
    pairs = [(a, folder / "videos" / f"{a.parent.parent.parent.name}-{a.parent.parent.name}.webp") for a in actors]
    return [(actor, out) for actor, out in pairs if not (missing and out.exists())]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.videos", description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="a committed grid, e.g. docs/benchmarks/medium")
    parser.add_argument("--seed", type=int, default=1, help="whose final actor to record")
    parser.add_argument("--missing", action="store_true", help="only the actors that have no image yet")
    args = parser.parse_args(argv)
    if not to_record(args.folder, args.seed):
        print(f"error: no {args.folder}/<env>/<td3|sac>/seed{args.seed}/actor.pt", file=sys.stderr)
        return 1
    todo = to_record(args.folder, args.seed, args.missing)
    if not todo:
        print(f"every actor of seed {args.seed} in {args.folder} has its image already (drop --missing to redo them)")
    too_big = []
    for actor, out in todo:
        with tempfile.TemporaryDirectory() as scratch:
            size = to_webp(record(actor, actor.parent.parent.name, args.seed, Path(scratch)), out)
        print(f"{out}: {size / 1e3:.0f} kB")
        too_big += [out] if size > MAX_BYTES else []
    if too_big:
        print(f"error: over {MAX_BYTES / 1e6:g} MB: {', '.join(map(str, too_big))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
