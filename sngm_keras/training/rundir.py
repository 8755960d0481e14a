"""The files of a run in its `model_dir`, written so that a kill never leaves
a half-written file behind and a different run never overwrites them.

    config.json          the run's configuration (checked on every start)
    checkpoints/         epoch-NNNN.weights.h5 (model + optimizer) of the last epoch,
                         update-NNNNNNNNN.weights.h5 within epochs (--checkpoint_every,
                         a stop on SIGTERM or Ctrl-C), each with its .state.json;
                         state.json (the newest's state), and backend: the
                         backend of a run not on TensorFlow
    history.csv          one row per epoch
    validation.csv       every evaluation of the held-out validation split
                         (with --validation_size), several per epoch
    logs/                TensorBoard
    summary.json         final figures, written last
    curves.png           training loss and test accuracy against epochs (#grad/n),
                         and curves.pdf
    noise_scale.png      the gradient noise scale over training (when measured),
                         and noise_scale.pdf
    final.keras          the trained model (without the micro-batch wrapper)
"""

import csv
import hashlib
import io
import json
import os

from sngm_keras.training.config import NOT_SETTINGS, ConfigError

HISTORY_FIELDS = (
    "epoch",
    "updates",
    "grad_per_n",
    "learning_rate",
    "batch_size",
    "train_loss",
    "train_accuracy",
    "test_loss",
    "test_accuracy",
    "validation_loss",
    "validation_accuracy",
    "gradient_norm",
    "skipped_steps",
    "epoch_seconds",
    "wall_seconds",
    "gradient_noise_scale",
    "gradient_sq_norm_ema",
    "gradient_variance_ema",
)
VALIDATION_FIELDS = ("updates", "epoch", "grad_per_n", "validation_loss", "validation_accuracy")
OUTPUT_NAMES = (
    "checkpoints",
    "history.csv",
    "validation.csv",
    "summary.json",
    "final.keras",
    "curves.png",
    "curves.pdf",
    "noise_scale.png",
    "noise_scale.pdf",
)
# What a run writes; a folder holding anything else belongs to someone else.
RUN_NAMES = OUTPUT_NAMES + ("config.json", "logs")


_WEIGHTS_SUFFIX = ".weights.h5"
_STATE_SUFFIX = ".state.json"  # each checkpoint's state, beside its weights


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path, text):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def describe_position(state):
    """Where a checkpoint's `state` stands, in words: "epoch 2, batch 61 of
    351" within an epoch, "the end of epoch 1" at one."""
    if state.get("batch"):
        return f"epoch {state['epoch'] + 1}, batch {state['batch']} of {state['steps_per_epoch']}"
    return f"the end of epoch {state['epoch']}"


def differences(recorded, wanted, ignore=()):
    """The keys (sorted) whose values differ between two settings dicts."""
    return sorted(k for k in set(wanted) | set(recorded) if k not in ignore and wanted.get(k) != recorded.get(k))


def describe_differences(recorded, wanted, keys, show=repr, prefix="--"):
    """`--a: 1 there, 2 now; --b: ...` for the differing `keys`."""
    return "; ".join(f"{prefix}{k}: {show(recorded.get(k))} there, {show(wanted.get(k))} now" for k in keys)


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
        self.noise_scale_plot = os.path.join(self.path, "noise_scale.png")
        self.final_model = os.path.join(self.path, "final.keras")
        self.logs = os.path.join(self.path, "logs")
        self.state = os.path.join(self.checkpoints, "state.json")

    def check(self, config):
        """Reads, never writes: raises ConfigError unless `config` may run
        here (a new or empty folder, the remains of a start that finished no
        epoch, or the same run)."""
        if not os.path.isdir(self.path):
            return
        shown = config.model_dir
        others = sorted(n for n in os.listdir(self.path) if n not in RUN_NAMES)
        if os.path.exists(self.config):
            if self.has_progress():
                # A setting added to TrainConfig after this run started ran at its default.
                recorded = {**type(config)().result_fields(), **read_json(self.config)}
                wanted = config.result_fields()
                keys = differences(recorded, wanted, ignore=NOT_SETTINGS)
                if keys:
                    raise ConfigError(
                        "model_dir",
                        f"{shown} holds a run with other settings ({describe_differences(recorded, wanted, keys)}); "
                        "use another --model_dir",
                    )
            return
        if others:
            raise ConfigError(
                "model_dir",
                f"{shown} holds files that are not a run's ({', '.join(others[:3])}"
                f"{', ...' if len(others) > 3 else ''}); use a new or empty --model_dir",
            )
        foreign = [n for n in OUTPUT_NAMES if n != "checkpoints" and os.path.exists(os.path.join(self.path, n))]
        if foreign or self.has_progress():
            raise ConfigError(
                "model_dir",
                f"{shown} holds results of an unknown run ({(foreign or ['checkpoints'])[0]}); use another --model_dir",
            )

    def has_progress(self):
        """Whether a run here finished an epoch (a checkpoint, history or summary)."""
        if any(os.path.exists(p) for p in (self.history, self.summary, self.final_model)):
            return True
        return os.path.isdir(self.checkpoints) and any(
            n.endswith(".weights.h5") or n == "state.json" for n in os.listdir(self.checkpoints)
        )

    def claim(self, config):
        """Checks as `check` does, then records `config` here. The first write
        into the folder; a file system refusal is a ConfigError."""
        self.check(config)
        try:
            os.makedirs(self.checkpoints, exist_ok=True)
            if not (os.path.exists(self.config) and self.has_progress()):
                # A new run, or one whose start left no finished epoch.
                write_atomic(self.config, json.dumps(config.result_fields(), indent=2, sort_keys=True))
        except OSError as error:
            raise ConfigError("model_dir", f"{config.model_dir} is not writable ({error.strerror or error})") from None

    def finished_summary(self, max_updates=None):
        """The summary when the run trained all its epochs, or when it
        stopped at (or past) `max_updates` updates; else None."""
        if os.path.exists(self.summary):
            summary = read_json(self.summary)
            if summary.get("complete") or (max_updates and summary.get("updates", 0) >= max_updates):
                return summary
        return None

    # -- checkpoints ---------------------------------------------------------

    def load_state(self):
        """The state ({"epoch", "batch", "weights", ...}) of the newest
        complete checkpoint, or None. A checkpoint whose weights file is
        missing or not the one written (a copy cut short, a full disk) is
        passed over for the one before it; `passed_over` in the state names
        those."""
        if not os.path.exists(self.state):
            return None
        newest = read_json(self.state)
        candidates = sorted(
            {c["weights"]: c for c in [*self._sidecar_states(), newest]}.values(),
            key=lambda c: c.get("updates", 0),
            reverse=True,
        )
        passed_over = []
        for state in candidates:
            if self._complete(state):
                return dict(state, passed_over=passed_over) if passed_over else state
            passed_over.append(state["weights"])
        raise ConfigError("model_dir", f"checkpoint {newest['weights']} named in {self.state} is missing or incomplete")

    def _sidecar_states(self):
        names = [n for n in os.listdir(self.checkpoints) if n.endswith(_STATE_SUFFIX)]
        return [read_json(os.path.join(self.checkpoints, n)) for n in names]

    def _complete(self, state):
        path = self.weights_path(state)
        if not os.path.exists(path):
            return False
        if "weights_sha256" not in state:  # written before checkpoints carried their digest
            return True
        return os.path.getsize(path) == state["weights_bytes"] and _sha256(path) == state["weights_sha256"]

    def save_checkpoint(self, model, state, keep=0):
        """Weights and optimizer after `state["updates"]` updates: at the end
        of epoch `state["epoch"]` as epoch-NNNN.weights.h5, within an epoch
        (`state["batch"]` > 0) as update-NNNNNNNNN.weights.h5; then its state
        beside it and in state.json, then the checkpoints no longer kept (all
        but the last epoch's and the `keep` newest within epochs after it).
        A kill at any moment leaves the checkpoints before it complete."""
        within = state.get("batch", 0) > 0
        name = f"update-{state['updates']:09d}.weights.h5" if within else f"epoch-{state['epoch']:04d}.weights.h5"
        path = os.path.join(self.checkpoints, name)
        tmp = os.path.join(self.checkpoints, f"tmp-{os.getpid()}-{name}")
        model.save_weights(tmp)
        os.replace(tmp, path)
        state = dict(state, weights=name, weights_bytes=os.path.getsize(path), weights_sha256=_sha256(path))
        text = json.dumps(state, indent=2)
        write_atomic(os.path.join(self.checkpoints, name.removesuffix(_WEIGHTS_SUFFIX) + _STATE_SUFFIX), text)
        write_atomic(self.state, text)
        self._prune(keep)

    def _prune(self, keep):
        names = [n for n in os.listdir(self.checkpoints) if n.endswith(_WEIGHTS_SUFFIX) and not n.startswith("tmp-")]
        epochs = sorted(n for n in names if n.startswith("epoch-"))
        last_epoch = epochs[-1] if epochs else None
        kept = {last_epoch} if last_epoch else set()
        state = read_json(self.state)
        within = sorted(n for n in names if n.startswith("update-") and self._after_last_epoch(n, last_epoch))
        kept |= set(within[-keep:] if keep else []) | {state["weights"]}
        for name in names:
            if name not in kept:
                stem = name.removesuffix(_WEIGHTS_SUFFIX)
                for path in (name, stem + _STATE_SUFFIX):
                    if os.path.exists(os.path.join(self.checkpoints, path)):
                        os.remove(os.path.join(self.checkpoints, path))

    def _after_last_epoch(self, name, last_epoch):
        if last_epoch is None:
            return True
        sidecar = os.path.join(self.checkpoints, last_epoch.removesuffix(_WEIGHTS_SUFFIX) + _STATE_SUFFIX)
        updates = read_json(sidecar)["updates"] if os.path.exists(sidecar) else 0
        return int(name.removeprefix("update-").removesuffix(_WEIGHTS_SUFFIX)) > updates

    def check_backend(self, state, backend):
        """A run continues on the backend it started on (its data order and
        checkpoint layout are the backend's). Runs on other backends than
        TensorFlow record theirs in checkpoints/backend (`record_backend`)."""
        path = os.path.join(self.checkpoints, "backend")
        if state:
            recorded = open(path).read().strip() if os.path.exists(path) else "tensorflow"
            if recorded != backend:
                raise ConfigError(
                    "model_dir",
                    f"{self.path} holds a run trained on the {recorded} backend; resume it with "
                    f"KERAS_BACKEND={recorded}, or use another --model_dir",
                )

    def record_backend(self, state, backend):
        path = os.path.join(self.checkpoints, "backend")
        if state:
            return
        if backend != "tensorflow":
            write_atomic(path, backend + "\n")
        elif os.path.exists(path):
            os.remove(path)

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
