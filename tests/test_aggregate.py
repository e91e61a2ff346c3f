"""benchmarks/aggregate.py: the IQM and its bootstrap CI, and the table and curves of a grid written here."""

import math
import shutil
from datetime import UTC, datetime

import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

from benchmarks import aggregate, grid
from benchmarks import results as result_files

# (env, algo, seed) -> eval/episodic_return by step; the finished runs of the grid written below
FINISHED = {
    ("Pendulum-v1", "td3", 1): {1000: -900.0, 2000: -300.0},
    ("Pendulum-v1", "td3", 2): {1000: -700.0, 2000: -150.0},
    ("Pendulum-v1", "td3", 3): {1000: -800.0, 1500: -500.0, 2000: -120.0},  # one extra evaluation
    ("Pendulum-v1", "sac", 1): {1000: -600.0, 2000: 30.0},
    ("Pendulum-v1", "sac", 2): {1000: -600.0, 2000: 100.0},
    ("Pendulum-v1", "sac", 3): {1000: -600.0, 2000: 10.0},
    ("Pendulum-v1", "sac", 4): {1000: -600.0, 2000: 20.0},
    ("Hopper-v5", "td3", 1): {5000: 300.0, 10000: 1234.5},
}
UNFINISHED = ("Pendulum-v1", "td3", 4)  # logged, but no DONE marker: must never count
WALL_SECONDS = 120.0


def write_run(grid_dir, env_id, algo, seed, curve, done=True):
    run_dir = grid_dir / env_id / algo / f"seed{seed}"
    writer = SummaryWriter(str(run_dir))
    for step, value in curve.items():
        writer.add_scalar(aggregate.EVAL_TAG, value, step)
        writer.add_scalar("charts/SPS", 100.0, step)
    writer.close()
    if done:
        now = datetime.now(UTC)
        grid.write_done(run_dir, ["python", f"{algo}_continuous.py"], now, now, WALL_SECONDS)
    return run_dir


@pytest.fixture(scope="module")
def fake_grid(tmp_path_factory):
    grid_dir = tmp_path_factory.mktemp("runs") / "fake"
    for (env_id, algo, seed), curve in FINISHED.items():
        write_run(grid_dir, env_id, algo, seed, curve)
    write_run(grid_dir, *UNFINISHED, {1000: 1e6, 2000: 1e6}, done=False)
    write_run(grid_dir, "Hopper-v5", "sac", 1, {}, done=True)  # finished, but never evaluated
    return grid_dir


@pytest.fixture(scope="module")
def results(fake_grid, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    return out, aggregate.aggregate(fake_grid, out)


def cell(fake_grid, env_id, algo) -> aggregate.Cell:
    finished, _ = aggregate.find_runs(fake_grid)
    (found,) = [c for c in aggregate.cells(finished) if (c.env_id, c.algo) == (env_id, algo)]
    return found


# ----------------------------------------------------------------------------- IQM


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([5.0], 5.0),
        ([3.0, 1.0], 2.0),
        ([1.0, 2.0, 10.0], (1 + 4 * 2 + 10) / 6),  # weights 1/6, 2/3, 1/6
        ([4.0, 1.0, 3.0, 2.0], 2.5),  # trim_mean(x, 0.25): the middle two
        ([1.0, 2.0, 3.0, 4.0, 100.0], 0.3 * 2 + 0.4 * 3 + 0.3 * 4),  # weights 0, .3, .4, .3, 0
        ([0.0, 1.0, 2.0, 3.0, 4.0, 100.0], (1 + 2 * 2 + 2 * 3 + 4) / 6),  # weights 0, 1/6, 1/3, 1/3, 1/6, 0
        ([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 100.0], 3.5),  # trim_mean(x, 0.25): 2, 3, 4, 5
    ],
)
def test_iqm_hand_computed(values, expected):
    assert aggregate.iqm(values) == pytest.approx(expected, rel=1e-12)
    assert aggregate.iqm(values[::-1]) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("n", range(1, 21))
def test_iqm_weights_sum_to_one_and_are_the_trimmed_mean_when_a_quarter_of_n_is_whole(n):
    weights = aggregate.iqm_weights(n)
    assert weights.sum() == pytest.approx(1.0) and (weights >= 0).all()
    np.testing.assert_allclose(weights, weights[::-1], atol=1e-15)
    if n % 4 == 0:
        trimmed = np.r_[np.zeros(n // 4), np.full(n // 2, 2 / n), np.zeros(n // 4)]
        np.testing.assert_allclose(weights, trimmed, atol=1e-15)


def test_bootstrap_ci_is_ordered_contains_the_iqm_and_is_reproducible():
    values = [-300.0, -150.0, -120.0, -400.0, 50.0]
    low, high = aggregate.iqm_ci(values)
    assert min(values) <= low < aggregate.iqm(values) < high <= max(values)
    assert aggregate.iqm_ci(values) == (low, high)
    assert aggregate.iqm_ci([7.0]) == (7.0, 7.0)
    # the same resamples, one at a time: the CI is the 2.5 and 97.5 percentiles of their IQMs
    resamples = np.random.default_rng(0).choice(values, size=(10_000, len(values)))
    reference = np.percentile([aggregate.iqm(sample) for sample in resamples], [2.5, 97.5])
    np.testing.assert_allclose((low, high), reference, rtol=1e-12)


# rliable 1.2.0 (Agarwal et al.'s library; with arch 7.2.0, pandas 2.3.3, numpy 2.4.6), one task, seeds as runs:
# metrics.aggregate_iqm(x[:, None]) and library.get_interval_estimates({"a": x[:, None]}, iqm, reps=50_000)
RLIABLE = {
    (2410.0, 3336.0, 1954.0, 7697.0): (2873.0, (1954.0, 7697.0)),
    (300.4, 156.4, 290.0, 194.9, 281.6, 226.0, 248.9, 234.2): (247.675, (202.675, 285.8)),
}


@pytest.mark.parametrize("values", list(RLIABLE))
def test_iqm_and_its_ci_agree_with_rliable_when_a_quarter_of_the_seeds_is_whole(values):
    expected_iqm, (low, high) = RLIABLE[values]
    assert aggregate.iqm(values) == pytest.approx(expected_iqm, rel=1e-12)
    ours = aggregate.iqm_ci(values, resamples=50_000)
    tolerance = 0.01 * (max(values) - min(values))  # two bootstraps with their own random resamples
    assert ours == pytest.approx((low, high), abs=tolerance)


def test_with_three_seeds_rliable_trims_nothing_and_we_weigh_the_edges():
    """scipy's trim_mean, which rliable's IQM calls, cuts int(0.25 n) values from each end: none of 3, so its
    "IQM" of 3 seeds is their mean (rliable 1.2.0 gave -150.633). Ours keeps the middle 50% of the quantiles."""
    values = [-175.4, -118.4, -158.1]
    assert np.mean(values) == pytest.approx(-150.633, abs=1e-3)
    assert aggregate.iqm(values) == pytest.approx((-175.4 + 4 * -158.1 - 118.4) / 6)


def test_against_rliable_itself_when_it_is_installed():
    rliable = pytest.importorskip("rliable.library", reason="rliable is optional (pip install rliable 'pandas<3')")
    metrics = pytest.importorskip("rliable.metrics")
    rng = np.random.default_rng(1)
    for n in (4, 8, 12):
        values = rng.normal(1000, 300, n)
        _, ci = rliable.get_interval_estimates(
            {"a": values[:, None]}, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=50_000
        )
        assert aggregate.iqm(values) == pytest.approx(metrics.aggregate_iqm(values[:, None]), rel=1e-12)
        expected = pytest.approx(tuple(ci["a"][:, 0]), abs=0.01 * np.ptp(values))
        assert aggregate.iqm_ci(values, resamples=50_000) == expected


# ----------------------------------------------------------------------------- the grid's table and curves


def test_numbers_of_each_row(fake_grid):
    td3 = aggregate.cell_stats(cell(fake_grid, "Pendulum-v1", "td3"))
    assert td3["seeds"] == 3 and td3["per_seed"] == {1: -300.0, 2: -150.0, 3: -120.0}
    assert td3["mean"] == pytest.approx(-190.0)
    assert td3["std"] == pytest.approx(math.sqrt((110**2 + 40**2 + 70**2) / 2))  # sample std over seeds
    assert td3["iqm"] == pytest.approx((-300 + 4 * -150 - 120) / 6)
    assert td3["ci"][0] <= td3["iqm"] <= td3["ci"][1]
    assert td3["minutes"] == pytest.approx(WALL_SECONDS / 60)

    sac = aggregate.cell_stats(cell(fake_grid, "Pendulum-v1", "sac"))
    assert sac["mean"] == pytest.approx(40.0) and sac["iqm"] == pytest.approx(25.0)
    assert sac["std"] == pytest.approx(math.sqrt(5000 / 3))

    hopper = aggregate.cell_stats(cell(fake_grid, "Hopper-v5", "td3"))
    assert (hopper["seeds"], hopper["mean"], hopper["std"], hopper["iqm"]) == (1, 1234.5, None, 1234.5)
    assert hopper["ci"] == (1234.5, 1234.5)


def test_results_md_table_and_unfinished_runs(fake_grid, results):
    out, (text, _) = results
    assert (out / "results.md").read_text() == text
    td3 = aggregate.cell_stats(cell(fake_grid, "Pendulum-v1", "td3"))
    table = text.split("\n## ")[0]  # the results table, before the sections that follow it
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows == [
        "| Hopper-v5 | TD3 | 1 | 10,000 | 1234.5 ± – | 1234.5 [1234.5, 1234.5] | 1: 1234.5 | 2.0 |",
        f"| Pendulum-v1 | TD3 | 3 | 2,000 | -190.0 ± 96.4 | -170.0 [{td3['ci'][0]:.1f}, {td3['ci'][1]:.1f}] "
        "| 1: -300.0, 2: -150.0, 3: -120.0 | 2.0 |",
        f"| Pendulum-v1 | SAC | 4 | 2,000 | 40.0 ± 40.8 | 25.0 [{aggregate.iqm_ci([30, 100, 10, 20])[0]:.1f}, "
        f"{aggregate.iqm_ci([30, 100, 10, 20])[1]:.1f}] | 1: 30.0, 2: 100.0, 3: 10.0, 4: 20.0 | 2.0 |",
    ]
    unfinished = text.split("## Unfinished runs (2)")[1]
    assert f"{fake_grid}/Pendulum-v1/td3/seed4`: no DONE marker" in unfinished
    assert f"{fake_grid}/Hopper-v5/sac/seed1`: DONE, but no eval/episodic_return logged" in unfinished
    assert "1000000" not in text


def test_curves_png_is_written(results):
    pytest.importorskip("matplotlib")
    out, (_, plotted) = results
    png = (out / "curves.png").read_bytes()
    assert plotted
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


@pytest.mark.parametrize(("panels", "grid"), [(1, (1, 1)), (3, (1, 3)), (4, (2, 2)), (5, (2, 3)), (7, (3, 3))])
def test_panels_fill_rows_of_at_most_three_evenly(panels, grid):
    assert aggregate.panel_grid(panels) == grid


def test_curves_use_the_steps_every_seed_has(fake_grid):
    steps, mean, low, high = aggregate.mean_curve(cell(fake_grid, "Pendulum-v1", "td3").runs)
    assert steps.tolist() == [1000, 2000]
    np.testing.assert_allclose(mean, [-800.0, -190.0])
    np.testing.assert_allclose(low, [-900.0, -300.0])
    np.testing.assert_allclose(high, [-700.0, -120.0])


def test_main_prints_the_table(fake_grid, tmp_path, capsys):
    aggregate.main([str(fake_grid), "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert out.startswith((tmp_path / "results.md").read_text())
    assert out.endswith(f"wrote {tmp_path / 'results.md'} and {tmp_path / 'curves.png'}\n")


def test_a_grid_without_finished_runs_is_an_error(tmp_path):
    write_run(tmp_path / "g", *UNFINISHED, {1000: 1.0}, done=False)
    with pytest.raises(SystemExit, match=r"no finished runs .*; 1 unfinished"):
        aggregate.aggregate(tmp_path / "g", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- committed results


def table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| ")]


def test_committed_result_files_give_the_table_the_logs_give(fake_grid, results, tmp_path):
    copy = tmp_path / "fake"
    shutil.copytree(fake_grid, copy)
    for run_dir in copy.glob("*/*/seed*"):
        if (run_dir / grid.DONE).exists() and aggregate.eval_curve(run_dir):
            result_files.export(run_dir, tmp_path / "committed" / run_dir.relative_to(copy))
    text, _ = aggregate.aggregate(tmp_path / "committed", tmp_path / "out")
    assert table_rows(text) == table_rows(results[1][0])


def write_result(grid_dir, env_id, algo, seed, final):
    """A committed result.json of a 300k-step run that ended at `final`."""
    folder = grid_dir / env_id / algo / f"seed{seed}"
    folder.mkdir(parents=True)
    curve = {"steps": [10_000, 300_000], "mean": [100.0, final], "std": [1.0, 2.0]}
    result_files.write_json(folder / result_files.RESULT, {"eval": curve, "wall_seconds": 1800.0})


def test_a_presets_committed_grid_says_it_is_partial_and_what_is_missing(tmp_path):
    for algo, final in [("td3", 900.0), ("sb3-td3", 800.0)]:
        write_result(tmp_path / "medium", "Hopper-v5", algo, 1, final)
    text, _ = aggregate.aggregate(tmp_path / "medium", tmp_path / "out")
    assert "**Partial: 2 of the preset's 54 runs have finished**" in text
    assert table_rows(text)[1:] == [
        "| Hopper-v5 | TD3 | 1 | 300,000 | 900.0 ± – | 900.0 [900.0, 900.0] | 1: 900.0 | 30.0 |",
        "| Hopper-v5 | SB3 TD3 | 1 | 300,000 | 800.0 ± – | 800.0 [800.0, 800.0] | 1: 800.0 | 30.0 |",
    ]
    missing = text.split("## Not finished yet")[1].strip().splitlines()
    assert "- Hopper-v5 TD3: seeds 2, 3, 4, 5" in missing and "- Hopper-v5 SAC: seeds 1, 2, 3, 4, 5" in missing
    assert "- Hopper-v5 SB3 SAC: seed 1" in missing and "- Ant-v5 SB3 TD3: seed 1" in missing
    assert "- Humanoid-v5 SAC: seeds 1, 2, 3" in missing and "Humanoid-v5 SB3" not in text
    assert len(missing) == 17  # 4 envs × (TD3, SAC, SB3 TD3, SB3 SAC) and Humanoid's TD3 and SAC, less Hopper's SB3 TD3


def test_the_results_say_where_and_when_each_run_ran(tmp_path):
    runs = [("sac", "2026-11-30T15:59:46Z", "2026-11-30T17:27:52Z", 5286.0, False, "1"),
            ("td3", "2026-11-22T23:40:00Z", "2026-11-23T00:21:00Z", 2442.0, True, None)]  # fmt: skip
    for algo, start, end, wall, changes, threads in runs:
        folder = tmp_path / "medium" / "Ant-v5" / algo / "seed1"
        folder.mkdir(parents=True)
        machine = {"cpu": "AMD EPYC", "cores": 2, "torch_threads": threads}
        record = {"eval": {"steps": [300_000], "mean": [700.0], "std": [1.0]}, "wall_seconds": wall, "start": start,
                  "end": end, "commit": "354e229abc", "uncommitted_changes": changes, "machine": machine}  # fmt: skip
        result_files.write_json(folder / result_files.RESULT, record)
    text, _ = aggregate.aggregate(tmp_path / "medium", tmp_path / "out")
    section = text.split("## Where and when each run ran")[1].split("##")[0]
    assert table_rows(section)[1:] == [  # by start time; the end's date only when it differs
        "| Ant-v5 | TD3 | 1 | 2026-11-22 23:40–2026-11-23 00:21 | 40.7 | 354e229+changes "
        "| AMD EPYC, 2 cores, torch threads: default |",
        "| Ant-v5 | SAC | 1 | 2026-11-30 15:59–17:27 | 88.1 | 354e229 | AMD EPYC, 2 cores, torch threads: 1 |",
    ]
    assert "?" not in text


def test_a_resumed_run_lists_each_attempts_commit_in_turn():
    def attempt(commit, changes=False, start="2026-12-01T08:52:00Z"):
        return {"start": start, "wall_seconds": 1.0, "commit": commit, "uncommitted_changes": changes}

    one = {"commit": "d873408abc", "uncommitted_changes": False}
    assert aggregate.commits(one) == "d873408" and aggregate.commits({"commit": None}) == "–"
    history = [attempt("3b3f7dbabc"), attempt("d873408abc"), attempt("d873408abc"), attempt("d873408abc", True)]
    assert aggregate.commits({**one, "attempt_history": history}) == "3b3f7db, d873408, d873408+changes"
    older = [attempt(None, start=None), attempt(None, start=None), attempt("d873408abc")]  # older attempts files
    assert aggregate.commits({**one, "attempt_history": older}) == "?, d873408"
    when = {"start": "2026-12-01T08:52:00Z", "end": "2026-12-01T12:06:00Z"}
    run = aggregate.Run("Hopper-v5", "sac", 2, {300_000: 900.0}, 60.0, {**one, **when, "attempt_history": history})
    assert "| 2026-12-01 08:52–12:06 | 1.0 | 3b3f7db, d873408, d873408+changes |" in aggregate.where_and_when([run])[5]
    # attempts recorded without a start come first: the start shown is of the first attempt recorded with one
    run = aggregate.Run("Hopper-v5", "sac", 2, {300_000: 900.0}, 60.0, {**one, **when, "attempt_history": older})
    section = aggregate.where_and_when([run])
    assert "| ?, 2026-12-01 08:52–12:06 | 1.0 | ?, d873408 |" in section[5] and "?: attempts recorded" in section[-1]


def test_the_table_beside_the_references_says_which_lie_outside_our_ci(tmp_path):
    finals = {("Hopper-v5", "td3"): [900.0, 1000.0, 1100.0], ("Hopper-v5", "sb3-td3"): [800.0],
              ("Hopper-v5", "sac"): [3000.0], ("Ant-v5", "td3"): [1800.0, 2000.0, 2200.0],
              ("Ant-v5", "sac"): [400.0, 500.0, 600.0], ("Humanoid-v5", "td3"): [5000.0, 5100.0, 5200.0]}  # fmt: skip
    for (env_id, algo), values in finals.items():
        for seed, final in enumerate(values, start=1):
            write_result(tmp_path / "medium", env_id, algo, seed, final)
    hopper = {"td3": {"mean": 1500, "std": 200, "source": "v9"}, "sac": {"mean": 1000, "source": "v9"}}
    ant = {"td3": {"mean": 2100, "source": "v9"}, "sac": {"mean": 399.5, "source": "v9"}}
    references = {"about": "Published at 300k.", "sources": {"v9": "a paper, 10 seeds"},
                  "returns": {"Hopper-v5": hopper, "Ant-v5": ant}}  # fmt: skip
    result_files.write_json(tmp_path / "medium" / aggregate.REFERENCES, references)
    text, _ = aggregate.aggregate(tmp_path / "medium", tmp_path / "out")
    section = text.split("## Beside Stable-Baselines3 and the published returns")[1].split("## Where")[0]
    assert "Published at 300k." in section and "- v9: a paper, 10 seeds" in section

    def ci(env_id, algo):
        low, high = aggregate.iqm_ci(finals[env_id, algo])
        return f"[{low:.1f}, {high:.1f}]"

    assert table_rows(section)[1:] == [  # SB3 rows only as a column; one seed: no verdict; no reference: none
        f"| Ant-v5 | TD3 | 2000.0 {ci('Ant-v5', 'td3')} | 2000.0 ± 200.0 (3) | – | 2100 (v9) | inside CI |",
        f"| Ant-v5 | SAC | 500.0 {ci('Ant-v5', 'sac')} | 500.0 ± 100.0 (3) | – | 399.5 (v9) | above |",
        f"| Hopper-v5 | TD3 | 1000.0 {ci('Hopper-v5', 'td3')} | 1000.0 ± 100.0 (3) | 800.0 | 1500 ± 200 (v9) | below |",
        "| Hopper-v5 | SAC | 3000.0 [3000.0, 3000.0] | 3000.0 ± – (1) | – | 1000 (v9) | – |",
        f"| Humanoid-v5 | TD3 | 5100.0 {ci('Humanoid-v5', 'td3')} | 5100.0 ± 100.0 (3) | – | – | – |",
    ]


@pytest.mark.parametrize(
    "text", ["{not json", '{"about": "x", "sources": {}}', '{"about": "x", "sources": {}, "returns": []}']
)
def test_a_broken_references_file_is_one_line(tmp_path, text):
    write_result(tmp_path / "medium", "Hopper-v5", "td3", 1, 900.0)
    (tmp_path / "medium" / aggregate.REFERENCES).write_text(text)
    with pytest.raises(SystemExit, match=r"^error: .*references.json is not a references file \(\w+: "):
        aggregate.aggregate(tmp_path / "medium", tmp_path / "out")
