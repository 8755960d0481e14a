"""The loop of every study: train the run the study names next, let the
finished runs call for more (grid extensions, rows at a selected rate), and
go on until none is left. The study is a `table_study.TableStudy` or a
`batch_scaling_study.BatchScalingStudy`; they answer the same questions:

- `configs()`: every run planned now, as TrainConfigs;
- `next_run(trained)`: the (run id, config) to train next, none of the ids
  in `trained`, or None;
- `ready()`, `describe(...)`, `claim()`, `markdown(context)`, `draw(path)`,
  `figure`, `output_dir`: for the app and `report.write_report`.

How a run is trained (a process of its own, its output shown) is the
caller's: this package prints nothing and starts nothing.
"""


def train_runs(study, train, check):
    """Trains every run `study` needs, in its order: `train(run_id, config)`
    trains (or resumes) one run to its end; `check(configs)` is called with
    the runs that the finished ones newly called for, before any of them is
    trained (the runs planned at the start are the caller's to check). Each
    run is trained at most once: a run its trainer left unfinished is left
    for the next invocation."""
    known = {config.model_dir for config in study.configs()}
    trained = set()
    while (run := study.next_run(trained)) is not None:
        train(*run)
        trained.add(run[0])
        new = [config for config in study.configs() if config.model_dir not in known]
        if new:
            check(new)
            known.update(config.model_dir for config in new)
