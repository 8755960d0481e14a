"""A study's report, written from its finished runs whenever asked (a study
stopped early is reported as far as it went): `results.md` and the study's
figure in its folder; and the wording every report shares."""

import os


def write_report(study, context):
    """Writes `study`'s results.md (its table, under `context`: what was run,
    where and when) and its figure into its folder; returns their names."""
    with open(os.path.join(study.output_dir, "results.md"), "w") as f:
        f.write(study.markdown(context))
    study.draw(os.path.join(study.output_dir, study.figure))
    return ["results.md", study.figure]


def opening(title, context):
    """The lines a results.md opens with: its title and the context, one item a key."""
    return [f"# Study `{title}`", ""] + [f"- {k}: {v}" for k, v in context.items()]


def percent(fraction):
    return f"{100 * fraction:.2f}%"


def counted(n, noun):
    """'1 run', '3 runs'."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
