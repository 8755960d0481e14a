"""A table study (table2, table3, figure1_cpu) as `loop.train_runs` and
`report.write_report` drive it: its runs planned from the presets and the
grids' extensions that its finished runs call for, its folder, the runs
that can start now, the next run to train, its plan as lines, its report."""

from sngm_keras.studies import folder, tables
from sngm_keras.studies.estimate import median_speed, run_cost, runs_left
from sngm_keras.studies.report import counted
from sngm_keras.studies.table_report import curve_groups, results_markdown
from sngm_keras.studies.tables import extend_grids, is_finished, resolve_rates, swept_rows, training_order
from sngm_keras.training.config import ConfigError


class TableStudy:
    figure = "curves.png"

    def __init__(
        self,
        name,
        output_dir,
        epochs_scale=1.0,
        lr_grid=None,
        overrides=None,
        models=None,
        grid_rows=None,
        rows=None,
        max_extensions=None,
    ):
        """Plans the study and checks its folder, writing nothing; raises
        ConfigError. The arguments are `tables.plan`'s; `max_extensions`:
        per swept row (`tables.extend_grids`), by default the number the
        folder's study.json recorded, else 0."""
        overrides = dict(overrides or {})
        if name in tables.VALIDATION_SIZE and "validation_size" not in overrides:
            overrides["validation_size"] = tables.VALIDATION_SIZE[name]
        self.name, self.output_dir = name, output_dir
        self.epochs_scale, self.lr_grid = epochs_scale, lr_grid
        self.grid_rows, self.rows = grid_rows, rows
        self._planned = tables.plan(name, output_dir, epochs_scale, lr_grid, overrides, models, grid_rows, rows)
        folder.check_output(output_dir, name, epochs_scale)
        if max_extensions and not swept_rows(self._planned):
            raise ConfigError("max_extensions", "no row is swept over two rates or more (--lr_grid, --lr_grid_rows)")
        self._given_max_extensions = max_extensions
        self.max_extensions = folder.recorded_max_extensions(output_dir) if max_extensions is None else max_extensions

    @property
    def dataset(self):
        return self._planned[0].config.dataset

    def runs(self):
        """The planned runs with the grids' extensions their finished runs call for."""
        return extend_grids(self._planned, self.max_extensions)

    def configs(self):
        """Every run planned now (a row that takes another's rate at its preset's)."""
        return [r.config for r in self.runs()]

    def claim(self):
        """Records the study in its folder's study.json (`folder.claim_output`)."""
        folder.claim_output(self.output_dir, self.name, self.epochs_scale, self.lr_grid, self._given_max_extensions)

    def ready(self):
        """([(run id, config)] of the runs that can start now, how many runs
        wait for a rate selected on another row, whether the grids may call
        for extensions once the runs have finished)."""
        runs = self.runs()
        resolved = resolve_rates(runs)
        ready = [r for r in training_order(runs) if r.rate_from is None]
        ready += [r for r in resolved if r is not None and r.rate_from is not None]
        ready = [(r.run_id, r.config) for r in ready if not is_finished(r)]
        return ready, sum(r is None for r in resolved), self._extensible(runs) > 0

    def next_run(self, trained):
        """(run id, config) of the next run to train, or None: the rows with
        their own rates first (the presets' rates before the grid's other
        factors, then the extensions those call for), then those that take a
        selected rate; none of the ids in `trained`."""
        runs = self.runs()
        own = [r for r in training_order(runs) if r.rate_from is None]
        resolved = [r for r in resolve_rates(runs) if r is not None]
        for run in own + resolved:
            if run.run_id not in trained and not is_finished(run):
                return run.run_id, run.config
        return None

    def _extensible(self, runs):
        """How many more grid extensions the unfinished rows may still call for."""
        return sum(
            self.max_extensions - sum(r.extends_grid for r in row)
            for row in swept_rows(runs)
            if not all(is_finished(r) for r in row)
        )

    def describe(self, dry_run=False, images_per_second=None):
        """The plan as lines: every run, finished or to run; for a dry run,
        the time the runs left take and the extensions that may follow."""
        runs = self.runs()
        resolved = resolve_rates(runs)
        lines = [f"study {self.name}: {counted(len(runs), 'run')} into {self.output_dir}"]
        for planned, run in zip(runs, resolved):
            c = (run or planned).config
            state = "finished" if run and is_finished(run) else "to run"
            rate = f"lr={c.learning_rate:<8g}" if run else f"lr=that selected for {planned.rate_from}"
            lines.append(
                f"  {(run or planned).run_id:40s} {c.optimizer:5s} B={c.batch_size:<5d} {rate} "
                f"epochs={c.epochs:<4d} {state}{' (extension)' if planned.extends_grid else ''}"
            )
        if dry_run:
            lines += _estimate([run or planned for planned, run in zip(runs, resolved)], images_per_second)
            if more := self._extensible(runs):
                lines.append(f"plus up to {counted(more, 'grid extension')} as the grids finish")
        return lines

    def markdown(self, context):
        resolved = resolve_rates(self.runs())
        context = dict(
            context,
            epochs_scale=self.epochs_scale,
            lr_grid=self.lr_grid,
            lr_grid_rows=",".join(self.grid_rows or self.rows or ["all"]),
        )
        if self.max_extensions:
            context["max_extensions"] = self.max_extensions
        if self.rows:
            context["rows"] = ",".join(self.rows)
        runs = [r for r in resolved if r is not None]
        return results_markdown(self.name, runs, context, waiting=len(resolved) - len(runs))

    def draw(self, path):
        """The learning curves of each row's selected run (none before a run has finished)."""
        groups = curve_groups([r for r in resolve_rates(self.runs()) if r is not None])
        if groups:
            from sngm_keras.training.curves import plot_curves

            plot_curves(groups, path)


def _estimate(runs, images_per_second):
    """The time the runs left take, per model, at `images_per_second` or the
    speed its finished runs measured (a run that takes another row's rate
    costs the same at any rate)."""
    left, finished = {}, {}
    for planned in runs:
        summary = folder.finished(planned.config)
        (finished if summary else left).setdefault(planned.group, []).append(summary or planned.config)
    lines = []
    for model, configs in left.items():
        speed = images_per_second or median_speed(finished.get(model, []))
        costs = [run_cost(c) for c in configs]
        if speed is None or None in costs:
            why = "its dataset's size is not known" if None in costs else "no finished run to measure its speed from"
            lines.append(f"estimate for {model}: none ({why}); give --images_per_second for one")
            continue
        source = "given" if images_per_second else "measured"
        lines.append(
            f"estimate for {model}: {sum(costs) / speed / 3600:.1f} h for {runs_left(len(configs))} at "
            f"{speed:.0f} training images/s ({source})"
        )
    return lines
