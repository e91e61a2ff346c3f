"""A benchmark grid's results: a markdown table and learning curves, from its runs' result files or logs.

    python -m benchmarks.aggregate runs/grid/quick [--out DIR]     # or: bash benchmark.sh aggregate runs/grid/quick
    python -m benchmarks.aggregate docs/benchmarks/medium          # the committed results of a grid

Reads every run folder <grid>/<env>/<algo>/seed<k>/: its result.json (benchmarks/results.py; what a grid that
commits its results keeps in git) or else its TensorBoard event files. Only finished runs are results (a
result.json, or a DONE marker, written when the run exited 0); the others are listed as unfinished and never
mixed in. For a preset's grid, the runs it has not finished yet are listed too, and the table says it is
partial. Writes to DIR (default: the grid folder) and prints the table:

- results.md: per env and algorithm, the final deterministic evaluation return (`eval/episodic_return` at the
  last step: the mean over that run's evaluation episodes) as mean ± std over seeds (sample std, ddof 1), the
  interquartile mean (IQM) with a 95% bootstrap confidence interval, and each seed's value; then where and when
  each run ran (UTC start and end, minutes, commit, CPU and torch threads, from its result.json or DONE). With a
  references.json in the grid's folder (published returns and their sources), a second table sets each of our
  rows beside Stable-Baselines3's seed 1 and that return, and says whether the return lies outside our CI.
- curves.png: one panel per env, TD3, SAC and any Stable-Baselines3 rows (dashed) on the same axes; the line is
  the mean over seeds of the evaluation return at the evaluation steps all seeds share, the band spans the
  seeds' minimum to maximum.

IQM (Agarwal et al. 2021, "Deep RL at the Edge of the Statistical Precipice", arXiv 2108.13264): the mean of
the middle 50% of the seeds' values. With n sorted values, value i stands for the quantile interval
[i/n, (i+1)/n]; the IQM averages over [0.25, 0.75], so each value weighs by how much of its interval lies
inside. When 0.25·n is a whole number this is scipy.stats.trim_mean(x, 0.25); otherwise the values at the
edges count in part (n=3: weights 1/6, 2/3, 1/6), so the IQM is defined for any number of seeds ≥ 1.
The confidence interval is the 2.5 and 97.5 percentiles of the IQM of 10,000 resamples of the seeds (with
replacement, fixed rng seed). Resampling happens within each (env, algorithm) cell: the stratified bootstrap
of Agarwal et al. with a single task per cell.

Why not their library, rliable: 1.2.0 pulls in arch, pandas, scipy and seaborn, and with our pins its arch fails
to import under pandas 3 (it needs pandas<3). Where 0.25·n is whole its IQM and ours are the same number and the
CIs agree to the bootstrap's noise (tests/test_aggregate.py compares them, against rliable itself when it is
installed); for other n it uses scipy.stats.trim_mean, which cuts int(0.25·n) values from each end: none of
3 seeds, so its IQM of 3 seeds is their plain mean.
"""

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks import grid as grids
from benchmarks import results
from benchmarks.grid import ALGORITHMS, DONE, PEERS

EVAL_TAG = results.EVAL_TAG
COLORS = {"td3": "tab:blue", "sac": "tab:orange", "sb3-td3": "tab:green", "sb3-sac": "tab:red"}
REFERENCES = "references.json"  # optional, in the grid's folder: published returns to set the table beside
LABELS = {"td3": "TD3", "sac": "SAC", "sb3-td3": "SB3 TD3", "sb3-sac": "SB3 SAC"}


# ----------------------------------------------------------------------------- statistics


def iqm_weights(n: int) -> np.ndarray:
    """Weight of each of n sorted values in the IQM: the share of its quantile interval inside [0.25, 0.75]."""
    edges = np.arange(n + 1) / n
    inside = np.clip(np.minimum(edges[1:], 0.75) - np.maximum(edges[:-1], 0.25), 0.0, None)
    return inside / 0.5


def iqm(values) -> float:
    """Interquartile mean of any number ≥ 1 of values (fractional weights at the quartiles)."""
    values = np.sort(np.asarray(values, dtype=float))
    return float(values @ iqm_weights(len(values)))


def iqm_ci(values, resamples: int = 10_000, confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the IQM, resampling the values (seeds) with replacement."""
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)  # fixed: the same runs always give the same table
    samples = np.sort(rng.choice(values, size=(resamples, len(values))), axis=1)
    stats = samples @ iqm_weights(len(values))
    low, high = np.percentile(stats, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(low), float(high)


# ----------------------------------------------------------------------------- reading a grid


@dataclass
class Run:
    env_id: str
    algo: str
    seed: int
    curve: dict[int, float]  # eval step -> mean return of that evaluation
    wall_seconds: float | None = None
    record: dict = field(default_factory=dict)  # its result.json or DONE: start, end, commit, machine, ...

    @property
    def budget(self) -> int:
        return max(self.curve)

    @property
    def final(self) -> float:
        return self.curve[self.budget]


@dataclass
class Cell:
    """All finished seeds of one (env, algorithm, budget)."""

    env_id: str
    algo: str
    budget: int
    runs: list[Run] = field(default_factory=list)

    @property
    def finals(self) -> np.ndarray:
        return np.array([run.final for run in self.runs])


def eval_curve(run_dir: Path) -> dict[int, float]:
    """step -> eval/episodic_return of one run (the last value logged at a step wins)."""
    return results.scalars(run_dir).get(EVAL_TAG, {})


def find_runs(grid: Path) -> tuple[list[Run], list[tuple[Path, str]]]:
    """(finished runs, [(run folder, why it is left out)]) of the layout <env>/<algo>/seed<k>/."""
    finished, unfinished = [], []
    for run_dir in sorted(grid.glob("*/*/seed*")):
        seed = run_dir.name.removeprefix("seed")
        if not run_dir.is_dir() or not seed.isdigit():
            continue
        if (run_dir / results.RESULT).exists():  # exported: read it, not the logs
            result = json.loads((run_dir / results.RESULT).read_text())
            curve = dict(zip(result["eval"]["steps"], result["eval"]["mean"], strict=True))
            wall = result["wall_seconds"]
            finished.append(Run(run_dir.parents[1].name, run_dir.parent.name, int(seed), curve, wall, result))
            continue
        if not (run_dir / DONE).exists():
            unfinished.append((run_dir, "no DONE marker: interrupted, failed or still running"))
            continue
        curve = eval_curve(run_dir)
        if not curve:
            unfinished.append((run_dir, f"DONE, but no {EVAL_TAG} logged"))
            continue
        done = json.loads((run_dir / DONE).read_text())
        finished.append(
            Run(run_dir.parents[1].name, run_dir.parent.name, int(seed), curve, done.get("wall_seconds"), done)
        )
    return finished, unfinished


def cells(runs: list[Run]) -> list[Cell]:
    """Runs grouped by env, algorithm and budget (different budgets are never averaged), TD3 before SAC."""
    grouped: dict[tuple[str, str, int], Cell] = {}
    for run in sorted(runs, key=lambda r: r.seed):
        key = (run.env_id, run.algo, run.budget)
        grouped.setdefault(key, Cell(*key)).runs.append(run)
    order = {algo: i for i, algo in enumerate(ALGORITHMS + PEERS)}
    return sorted(grouped.values(), key=lambda c: (c.env_id, order.get(c.algo, len(order)), c.algo, c.budget))


# ----------------------------------------------------------------------------- the table


def cell_stats(cell: Cell) -> dict:
    """The numbers of one table row."""
    finals = cell.finals
    walls = [run.wall_seconds for run in cell.runs if run.wall_seconds is not None]
    return {
        "seeds": len(finals),
        "mean": float(finals.mean()),
        "std": float(finals.std(ddof=1)) if len(finals) > 1 else None,  # undefined for one seed
        "iqm": iqm(finals),
        "ci": iqm_ci(finals),
        "per_seed": {run.seed: run.final for run in cell.runs},
        "minutes": float(np.mean(walls)) / 60 if walls else None,
    }


def markdown_table(table_cells: list[Cell]) -> str:
    lines = [
        "| env | algorithm | seeds | budget (steps) | final eval return, mean ± std | IQM [95% CI] "
        "| per seed (seed: return) | minutes per run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for cell in table_cells:
        s = cell_stats(cell)
        std = "–" if s["std"] is None else f"{s['std']:.1f}"
        per_seed = ", ".join(f"{seed}: {value:.1f}" for seed, value in s["per_seed"].items())
        minutes = "–" if s["minutes"] is None else f"{s['minutes']:.1f}"
        name = LABELS.get(cell.algo, cell.algo)
        lines.append(
            f"| {cell.env_id} | {name} | {s['seeds']} | {cell.budget:,} | {s['mean']:.1f} ± {std} "
            f"| {s['iqm']:.1f} [{s['ci'][0]:.1f}, {s['ci'][1]:.1f}] | {per_seed} | {minutes} |"
        )
    return "\n".join(lines)


def reference_table(table_cells: list[Cell], references: dict) -> list[str]:
    """Our algorithms env by env, beside Stable-Baselines3's seed 1 and the published return of the grid's
    references.json; the last column (from 3 seeds on): below if that return lies above our IQM's 95% CI."""
    peers = {(c.env_id, c.algo): {run.seed: run.final for run in c.runs} for c in table_cells if c.algo in PEERS}
    lines = ["| env | algorithm | IQM [95% CI] | mean ± std (seeds) | SB3, seed 1 | reference | ours vs reference |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for cell in (c for c in table_cells if c.algo in ALGORITHMS):
        s = cell_stats(cell)
        std = "–" if s["std"] is None else f"{s['std']:.1f}"
        sb3 = peers.get((cell.env_id, f"sb3-{cell.algo}"), {}).get(1)
        ref = references["returns"].get(cell.env_id, {}).get(cell.algo)
        where = "–"
        if ref and s["seeds"] >= 3:
            where = "below" if ref["mean"] > s["ci"][1] else "above" if ref["mean"] < s["ci"][0] else "inside CI"
        published = "–"
        if ref:
            published = f"{ref['mean']:g}" + (f" ± {ref['std']:g}" if "std" in ref else "") + f" ({ref['source']})"
        lines.append(f"| {cell.env_id} | {LABELS[cell.algo]} | {s['iqm']:.1f} [{s['ci'][0]:.1f}, {s['ci'][1]:.1f}] "
                     f"| {s['mean']:.1f} ± {std} ({s['seeds']}) | {'–' if sb3 is None else f'{sb3:.1f}'} "
                     f"| {published} | {where} |")  # fmt: skip
    sources = [f"- {key}: {text}" for key, text in references["sources"].items()]
    return ["", "## Beside Stable-Baselines3 and the published returns", "", references["about"], "", *lines, "",
            *sources]  # fmt: skip


def missing_runs(grid_name: str, finished: list[Run]) -> tuple[int, dict[tuple[str, str], list[int]]]:
    """For a preset's grid: (how many runs it has, {(env, algo): seeds not finished}); (0, {}) otherwise."""
    if grid_name not in grids.PRESETS:
        return 0, {}
    planned = grids.preset_runs(grid_name, grids.PRESETS[grid_name])
    have = {(run.env_id, run.algo, run.seed) for run in finished}
    missing: dict[tuple[str, str], list[int]] = {}
    for spec in planned:
        if (spec.env_id, spec.algo, spec.seed) not in have:
            missing.setdefault((spec.env_id, spec.algo), []).append(spec.seed)
    return len(planned), missing


def where_and_when(finished: list[Run]) -> list[str]:
    """One table row per run that recorded it: when (UTC), how long, from which commit, on what machine."""
    lines, unknown = [], False
    for run in sorted((r for r in finished if "start" in r.record), key=lambda r: r.record["start"]):
        start, end = (run.record[key].replace("T", " ").removesuffix("Z")[:16] for key in ("start", "end"))
        end = end[11:] if end[:10] == start[:10] else end
        history = run.record.get("attempt_history") or [run.record]
        start = start if history[0].get("start") else f"?, {start}"  # earlier attempts recorded without a start
        commit = commits(run.record)
        unknown = unknown or "?" in commit or start.startswith("?")
        machine = run.record.get("machine") or {}
        threads = machine.get("torch_threads") or "default"
        cores = machine.get("cores", "–")
        where = f"{machine.get('cpu', '–')}, {cores} core{'' if cores == 1 else 's'}, torch threads: {threads}"
        minutes = f"{run.wall_seconds / 60:.1f}" if run.wall_seconds is not None else "–"
        lines.append(f"| {run.env_id} | {LABELS.get(run.algo, run.algo)} | {run.seed} | {start}–{end} | {minutes} "
                     f"| {commit} | {where} |")  # fmt: skip
    if not lines:
        return []
    header = ["| env | algorithm | seed | ran (UTC) | minutes | commit | machine |", "|---|---|---|---|---|---|---|"]
    note = (
        "A run stopped and resumed ran from its first attempt's start and lists its attempts' commits in turn; "
        "?: attempts recorded without their start or commit (its minutes count them)."
    )
    return ["", "## Where and when each run ran", "", *header, *lines, *(["", note] if unknown else [])]


def commits(record: dict) -> str:
    """The commit a run ran from, or each of its attempts' commits in turn ("+changes": with uncommitted changes)."""
    attempts, unknown = (record["attempt_history"], "?") if record.get("attempt_history") else ([record], "–")
    labels = [(a.get("commit") or unknown)[:7] + ("+changes" if a.get("uncommitted_changes") else "") for a in attempts]
    return ", ".join(label for i, label in enumerate(labels) if i == 0 or label != labels[i - 1])


def results_markdown(grid: Path, table_cells: list[Cell], unfinished: list[tuple[Path, str]], finished=()) -> str:
    planned, missing = missing_runs(grid.name, list(finished))
    parts = [f"# Benchmark grid `{grid.name}`", ""]
    if missing:
        left = sum(len(seeds) for seeds in missing.values())
        parts += [f"**Partial: {planned - left} of the preset's {planned} runs have finished** (the rest are listed "
                  "below); each row says which seeds it has.", ""]  # fmt: skip
    parts += [
        "Final deterministic evaluation return (the mean over the evaluation episodes at the last step) of every "
        "finished run; mean ± sample std over seeds; IQM with a 95% percentile bootstrap CI over seeds "
        "(10,000 resamples). Minutes per run: mean wall time of the seeds (all attempts of a run).",
        "",
        markdown_table(table_cells),
    ]
    if (grid / REFERENCES).exists():
        try:
            parts += reference_table(table_cells, json.loads((grid / REFERENCES).read_text()))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise SystemExit(
                f"error: {grid / REFERENCES} is not a references file ({type(err).__name__}: {err}); "
                "it needs about, sources and returns: {env: {algo: {mean, std?, source}}}"
            ) from None
    parts += where_and_when(list(finished))
    if unfinished:
        parts += ["", f"## Unfinished runs ({len(unfinished)}), left out of the table and the curves", ""]
        parts += [f"- `{run_dir}`: {why}" for run_dir, why in unfinished]
    if missing:
        parts += ["", "## Not finished yet", ""]
        parts += [f"- {env_id} {LABELS.get(algo, algo)}: seed{'s' if len(seeds) > 1 else ''} "
                  f"{', '.join(map(str, seeds))}" for (env_id, algo), seeds in missing.items()]  # fmt: skip
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- the curves


def mean_curve(runs: list[Run]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, min, max) over seeds, at the evaluation steps every seed has."""
    steps = np.array(sorted(set.intersection(*(set(run.curve) for run in runs))))
    values = np.array([[run.curve[step] for step in steps] for run in runs])  # [seeds, steps]
    return steps, values.mean(axis=0), values.min(axis=0), values.max(axis=0)


def steps_label(x: float, _position=None) -> str:
    return f"{x / 1e6:g}M" if x >= 1e6 else f"{x / 1e3:g}k" if x >= 1e3 else f"{x:g}"


def panel_grid(panels: int) -> tuple[int, int]:
    """Rows and columns for this many panels: at most three a row, the rows as even as they go (four: 2 x 2)."""
    rows = -(-panels // 3)
    return rows, -(-panels // rows)


def plot_curves(grid_name: str, table_cells: list[Cell], path: Path) -> bool:
    """One panel per env (about 4 inches each), every algorithm on the same axes; False without matplotlib."""
    try:
        import matplotlib  # noqa: PLC0415 (a benchmark-only dependency: the table works without it)
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.ticker import FuncFormatter  # noqa: PLC0415

    envs = list(dict.fromkeys(cell.env_id for cell in table_cells))
    rows, columns = panel_grid(len(envs))
    fig, axes = plt.subplots(rows, columns, figsize=(max(5.0, 4.2 * columns), 3.4 * rows + 0.4), squeeze=False)
    for ax, env_id in zip(axes.flat, envs, strict=False):
        env_cells = [cell for cell in table_cells if cell.env_id == env_id]
        several_budgets = len({cell.budget for cell in env_cells}) > 1
        for cell in env_cells:
            steps, mean, low, high = mean_curve(cell.runs)
            label = f"{LABELS.get(cell.algo, cell.algo)} ({len(cell.runs)} seed{'s' if len(cell.runs) > 1 else ''})"
            label += f", {steps_label(cell.budget)} steps" if several_budgets else ""
            color = COLORS.get(cell.algo)
            style = {"linestyle": "--" if cell.algo in PEERS else "-", "marker": "o" if len(steps) == 1 else None}
            ax.plot(steps, mean, color=color, label=label, linewidth=1.8, **style)
            ax.fill_between(steps, low, high, color=color, alpha=0.2, linewidth=0)
        ax.set_title(env_id)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("evaluation return")
        ax.xaxis.set_major_formatter(FuncFormatter(steps_label))
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    for ax in axes.flat[len(envs) :]:
        ax.set_visible(False)
    fig.suptitle(f"{grid_name}: deterministic evaluation return\nline: mean over seeds, shaded: min–max over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------- command line


def aggregate(grid: Path, out: Path) -> tuple[str, bool]:
    """Write results.md and curves.png for a grid folder; (the markdown, whether curves.png was written)."""
    if not grid.is_dir():
        raise SystemExit(f"error: {grid} is not a folder (expected runs/grid/<name>)")
    finished, unfinished = find_runs(grid)
    if not finished:
        left = f"; {len(unfinished)} unfinished" if unfinished else ""
        raise SystemExit(f"error: no finished runs (with {DONE}) under {grid}/<env>/<algo>/seed<k>/{left}")
    table_cells = cells(finished)
    text = results_markdown(grid, table_cells, unfinished, finished)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text)
    return text, plot_curves(grid.name, table_cells, out / "curves.png")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bash benchmark.sh aggregate", description=__doc__.split("\n")[0])
    parser.add_argument("grid", type=Path, help="a grid folder, runs/grid/<name>")
    parser.add_argument("--out", type=Path, help="where results.md and curves.png go (default: the grid folder)")
    args = parser.parse_args(argv)
    out = args.out or args.grid
    text, plotted = aggregate(args.grid, out)
    print(text, end="")
    if not plotted:
        raise SystemExit(f"error: wrote {out / 'results.md'}, but curves.png needs matplotlib: "
                         "pip install -r requirements-benchmark.txt")  # fmt: skip
    print(f"wrote {out / 'results.md'} and {out / 'curves.png'}")


if __name__ == "__main__":
    main(sys.argv[1:])
