"""The apps' flags for `TrainConfig`'s fields, declared from the fields
themselves: name, type, default and help text (`config.help_of`), so that
train, tune and reproduce share one declaration of each."""

import typing

from absl import flags

from apps._cli import fail
from sngm_keras.training.config import TrainConfig, help_of

FLAGS = flags.FLAGS
_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float, str: flags.DEFINE_string}


def define_config_flags(names, defaults=None, helps=None, help_suffix=""):
    """Declares a flag for each of TrainConfig's fields `names`, with the
    field's type, default and help; `defaults` and `helps` replace some of
    them by name (a default of None: "the run's own"), `help_suffix` is
    added to every help text."""
    hints = typing.get_type_hints(TrainConfig)
    fields = TrainConfig.__dataclass_fields__
    defaults = defaults or {}
    for name in names:
        value = defaults.get(name, fields[name].default)
        text = (helps or {}).get(name, help_of(name)) + help_suffix
        kind = hints[name]
        if typing.get_origin(kind) is tuple:
            flags.DEFINE_list(name, None if value is None else [str(v) for v in value], text)
            continue
        kinds = [k for k in typing.get_args(kind) if k is not type(None)] or [kind]
        _DEFINE[kinds[0]](name, value, text)


def given_config_values(names):
    """{field: value} of the flags among `names` that were given on the
    command line, as TrainConfig takes them (a list of whole numbers as a
    tuple; a bad one is a one-line error)."""
    values = {name: FLAGS[name].value for name in names if FLAGS[name].present}
    hints = typing.get_type_hints(TrainConfig)
    for name, value in values.items():
        if typing.get_origin(hints[name]) is tuple:
            try:
                values[name] = tuple(int(v) for v in value)
            except ValueError:
                fail(f"--{name}: not a list of integers: {','.join(value)}")
    return values
