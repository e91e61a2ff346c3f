"""The README stays honest: its links and images resolve, the flags it shows each script exist, and the lines it
names in the scripts are where it says."""

import re
from pathlib import Path

import pytest

from tests.helpers import ALGORITHMS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def flags_of(module) -> set[str]:
    """Every flag the script's --help shows (tests/test_runs.py checks --help against Args): --x, and --no-x too
    for a boolean."""
    fields = module.Args.__dataclass_fields__.values()
    return {"--" + f.name.replace("_", "-") for f in fields} | {
        "--no-" + f.name.replace("_", "-") for f in fields if f.type in (bool, "bool")
    }


def test_links_and_images_resolve():
    targets = re.findall(r"\]\(([^)\s]+)\)", README) + re.findall(r'src="([^"]+)"', README)
    anchors = {
        re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", README, re.M)
    }
    assert targets
    for target in targets:
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        if path:
            assert (ROOT / path).exists(), f"README links to {path}, which does not exist"
        elif anchor:
            assert anchor in anchors, f"README links to #{anchor}, which is no heading"


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_every_flag_shown_for_a_script_exists(name):
    flags = flags_of(ALGORITHMS[name])
    commands = re.findall(rf"{name}_continuous\.py((?: +[^\s`|#]+)+)", README)
    shown = {flag for command in commands for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", command)}
    assert shown, f"no command line for {name}_continuous.py found"
    assert shown <= flags, f"README shows flags that {name}_continuous.py does not have: {shown - flags}"


def test_part_one_lines_are_where_the_readme_says():
    claim = re.search(r"TD3's starts at line (\d+) and Part I ends at line (\d+); SAC's at (\d+) and (\d+)", README)
    assert claim, "the README names where each loop starts and Part I ends"
    for name, (start, end) in zip(["td3", "sac"], [claim.groups()[:2], claim.groups()[2:]], strict=True):
        lines = (ROOT / f"{name}_continuous.py").read_text().splitlines()
        assert lines[int(start) - 1].lstrip().startswith("while run.global_step"), f"{name}: the loop starts elsewhere"
        assert lines[int(end) - 1].strip() == "return run.finish()", f"{name}: Part I ends elsewhere"
        assert "Part II" in "\n".join(lines[int(end) : int(end) + 4]), f"{name}: Part II does not follow"
