"""A `TrainConfig` as a flagfile of the training app.

`python -m apps.train --flagfile=FILE` trains the configuration the file was
written from: every field is written except those left unset (None) and
those the configuration ignores (`TrainConfig.ignored_fields`, which the
app refuses when given). Floats are written exactly (`repr`), and existing
dataset folders and TFDS data_dirs as absolute paths. Without a preset the
file says `--nomodel_defaults`, so that a field left unset stays unset
rather than taking a ResNet's recipe.
"""

import os

from sngm_keras.dataset_names import DATASETS


def _path(value):
    expanded = os.path.expanduser(value)
    return os.path.abspath(expanded) if os.path.exists(expanded) else value


def flagfile_text(config, header=()):
    """The flagfile's text; `header` lines become comments at its top."""
    lines = [f"# {line}" for line in header]
    if config.preset is None:  # the file holds the whole configuration: no model's recipe fills it in
        lines.append("--nomodel_defaults")
    ignored = config.ignored_fields()
    for name, value in config.to_dict().items():
        if value is None or name in ignored:
            continue
        if name == "data_dir" or (name == "dataset" and value not in DATASETS):
            value = _path(value)
        if isinstance(value, bool):
            lines.append(f"--{name}" if value else f"--no{name}")
        elif isinstance(value, (list, tuple)):
            lines.append(f"--{name}={','.join(str(v) for v in value)}")
        elif isinstance(value, float):
            lines.append(f"--{name}={value!r}")
        else:
            lines.append(f"--{name}={value}")
    return "\n".join(lines) + "\n"
