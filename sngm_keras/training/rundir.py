"""The files of a run in its `model_dir`, written so that a kill never leaves
a half-written file behind and a different run never overwrites them.

    config.json          the run's configuration (checked on every start)
    checkpoints/         epoch-NNNN.weights.h5 (model + optimizer) and state.json
    history.csv          one row per epoch
    validation.csv       every evaluation of the held-out validation split
                         (with --validation_size), several per epoch
    logs/                TensorBoard
    summary.json         final figures, written last
    curves.png           training loss and test accuracy against epochs (#grad/n)
    final.keras          the trained model (without the micro-batch wrapper)
"""

import csv
import io
import json
import os

from sngm_keras.training.config import ConfigError

HISTORY_FIELDS = (
    "epoch", "updates", "grad_per_n", "learning_rate", "train_loss", "train_accuracy",
    "test_loss", "test_accuracy", "validation_loss", "validation_accuracy", "gradient_norm", "skipped_steps",
    "epoch_seconds", "wall_seconds",
)
VALIDATION_FIELDS = ("updates", "epoch", "grad_per_n", "validation_loss", "validation_accuracy")
OUTPUT_NAMES = ("checkpoints", "history.csv", "validation.csv", "summary.json", "final.keras", "curves.png")


def write_atomic(path, text):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def first_difference(recorded, wanted):
    """The first key (sorted) whose value differs between two settings dicts, or None."""
    differing = sorted(k for k in set(wanted) | set(recorded) if wanted.get(k) != recorded.get(k))
    return differing[0] if differing else None


def read_json(path):
    with open(path) as f:
        return json.load(f)


class RunDir:
    def __init__(self, path):
        self.path = os.path.abspath(os.path.expanduser(path))
        self.checkpoints = os.path.join(self.path, "checkpoints")
        self.config = os.path.join(self.path, "config.json")
        self.history = os.path.join(self.path, "history.csv")
        self.validation = os.path.join(self.path, "validation.csv")
        self.summary = os.path.join(self.path, "summary.json")
        self.curves = os.path.join(self.path, "curves.png")
        self.final_model = os.path.join(self.path, "final.keras")
        self.logs = os.path.join(self.path, "logs")
        self.state = os.path.join(self.checkpoints, "state.json")

    def claim(self, config):
        """Records `config` here, or checks it matches the run already here."""
        os.makedirs(self.checkpoints, exist_ok=True)
        wanted = config.result_fields()
        if os.path.exists(self.config):
            # A setting added to TrainConfig after this run started ran at its default.
            recorded = {**type(config)().result_fields(), **read_json(self.config)}
            k = first_difference(recorded, wanted)
            if k is not None:
                raise ConfigError(
                    "model_dir",
                    f"{self.path} holds a run with other settings ({k}: {recorded.get(k)!r} there, "
                    f"{wanted.get(k)!r} now); use another --model_dir",
                )
            return
        foreign = [n for n in OUTPUT_NAMES if n != "checkpoints" and os.path.exists(os.path.join(self.path, n))]
        if foreign or os.listdir(self.checkpoints):
            raise ConfigError(
                "model_dir", f"{self.path} holds results of an unknown run ({(foreign or ['checkpoints'])[0]}); "
                "use another --model_dir"
            )
        write_atomic(self.config, json.dumps(wanted, indent=2, sort_keys=True))

    def completed_summary(self):
        if os.path.exists(self.summary):
            summary = read_json(self.summary)
            if summary.get("complete"):
                return summary
        return None

    # -- checkpoints ---------------------------------------------------------

    def load_state(self):
        """The last checkpoint's state ({"epoch", "weights", ...}) or None."""
        if not os.path.exists(self.state):
            return None
        state = read_json(self.state)
        if not os.path.exists(os.path.join(self.checkpoints, state["weights"])):
            raise ConfigError("model_dir", f"checkpoint {state['weights']} named in {self.state} is missing")
        return state

    def save_checkpoint(self, model, state, write=True):
        """Weights and optimizer of epoch `state["epoch"]`, then the state that
        points to them, then the older files: a kill at any moment leaves the
        previous checkpoint or the new one, complete."""
        name = f"epoch-{state['epoch']:04d}.weights.h5"
        if not write:  # a non-chief worker: take part in the save, keep nothing
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                model.save_weights(os.path.join(tmp, name))
            return
        tmp = os.path.join(self.checkpoints, f"tmp-{os.getpid()}-{name}")
        model.save_weights(tmp)
        os.replace(tmp, os.path.join(self.checkpoints, name))
        write_atomic(self.state, json.dumps(dict(state, weights=name), indent=2))
        for old in os.listdir(self.checkpoints):
            if old.endswith(".weights.h5") and old != name:
                os.remove(os.path.join(self.checkpoints, old))

    def weights_path(self, state):
        return os.path.join(self.checkpoints, state["weights"])

    # -- history -------------------------------------------------------------

    def read_history(self):
        return _read_csv(self.history)

    def write_history(self, rows):
        _write_csv(self.history, HISTORY_FIELDS, rows)

    def read_validation(self):
        return _read_csv(self.validation)

    def write_validation(self, rows):
        _write_csv(self.validation, VALIDATION_FIELDS, rows)


def _read_csv(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_csv(path, fields, rows):
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, out.getvalue())
