"""The README and the docs pages stay honest: their links, anchors and images resolve, the flags they show each
script exist, the lines the README names in the scripts are where it says, its Python examples run as written, and
its install and test commands are the ones CI uses."""

import re
from pathlib import Path

import pytest

from tests.helpers import ALGORITHMS

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README = (ROOT / "README.md").read_text()


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def flags_of(module) -> set[str]:
    """Every flag of the script (tests/test_runs.py checks that --help shows each): --x, and --no-x for a boolean."""
    fields = module.Args.__dataclass_fields__.values()
    names = {f.name.replace("_", "-") for f in fields}
    booleans = {"--no-" + f.name.replace("_", "-") for f in fields if f.type in (bool, "bool")}
    return {"--" + n for n in names} | booleans | {"--help"}


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_links_anchors_and_images_resolve(page):
    text = page.read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r'src="([^"]+)"', text)
    for target in targets:
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name} links to {path}, which does not exist"
        if anchor:
            assert anchor in anchors(linked), f"{page.name} links to {path}#{anchor}, which is no heading there"


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_every_flag_shown_for_a_script_exists(name):
    flags = flags_of(ALGORITHMS[name])
    text = "\n".join(page.read_text() for page in PAGES)
    commands = re.findall(rf"{name}_continuous\.py((?: +[^\s`|#]+)+)", text)
    shown = {flag for command in commands for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", command)}
    assert shown, f"no command line for {name}_continuous.py found"
    assert shown <= flags, f"the docs show flags that {name}_continuous.py does not have: {shown - flags}"


def test_part_one_lines_are_where_the_readme_says():
    claim = re.search(r"TD3's starts at line (\d+) and Part I ends at line (\d+); SAC's at (\d+) and (\d+)", README)
    assert claim, "the README names where each loop starts and Part I ends"
    for name, (start, end) in zip(["td3", "sac"], [claim.groups()[:2], claim.groups()[2:]], strict=True):
        lines = (ROOT / f"{name}_continuous.py").read_text().splitlines()
        assert lines[int(start) - 1].lstrip().startswith("while run.global_step"), f"{name}: the loop starts elsewhere"
        assert lines[int(end) - 1].strip() == "return run.finish()", f"{name}: Part I ends elsewhere"
        assert "Part II" in "\n".join(lines[int(end) : int(end) + 4]), f"{name}: Part II does not follow"


def test_python_examples_that_use_the_scripts_run_as_written(monkeypatch):
    monkeypatch.chdir(ROOT)  # the examples' paths are relative to a checkout
    examples = [code for code in re.findall(r"```python\n(.*?)```", README, re.DOTALL) if "_continuous" in code]
    assert examples
    for code in examples:
        exec(compile(code, "README.md", "exec"), {})


def test_install_and_test_commands_are_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -r requirements.txt" in README, "the quick start installs the runtime requirements"
    assert "pip install --quiet -r requirements-benchmark.txt" in ci and "python -m pytest" in ci
    assert ".venv/bin/pip install -r requirements-benchmark.txt && .venv/bin/python -m pytest" in README
    assert "-r requirements.txt" in (ROOT / "requirements-benchmark.txt").read_text(), "CI installs both"


def test_the_results_table_is_the_one_the_aggregate_wrote():
    """The README's Results table is a copy of the table `bash benchmark.sh aggregate docs/benchmarks/medium` writes
    (its section beside SB3 and the published returns), row for row, with its sources and its count of runs."""
    results = (ROOT / "docs" / "benchmarks" / "medium" / "results.md").read_text()
    section = results.split("## Beside Stable-Baselines3 and the published returns", 1)[1].split("\n## ", 1)[0]
    table = "\n".join(line for line in section.splitlines() if line.startswith("|"))
    sources = "\n".join(line for line in section.splitlines() if line.startswith("- "))
    assert table.count("\n") > 2 and sources, "results.md has no table beside the published returns"
    readme = README.split("## Results", 1)[1].split("\n## ", 1)[0]
    assert table in readme and sources in readme, "the README's table differs from results.md's: copy it again"
    if partial := re.search(r"\*\*Partial: (\d+) of the preset's (\d+) runs", results):
        assert f"**Partial: {partial[1]} of the grid's {partial[2]} runs are in**" in readme
    else:
        assert "Partial" not in readme, "the grid is complete: the README should not call it partial"
