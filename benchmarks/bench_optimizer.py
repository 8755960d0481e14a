"""Time one optimizer update on the variable sets of ResNet-56 and ResNet-50
(also resnet20 and twoconv, with --models).

SNGM, LARS and Keras Lamb against Keras SGD(momentum=0.9), with XLA and
without, interleaved in one process; medians of repeats, printed as ratios
to SGD under the same compilation, and written as JSON.

    python -m benchmarks.bench_optimizer --repeats=7 --steps=20 --output=bench_optimizer.json

With KERAS_BACKEND=jax it times one jitted `stateless_apply` instead (JAX
is always XLA), on whatever device JAX has: the way to measure a GPU where
TensorFlow is not installed.
"""

import json
import os
import platform
import random
import statistics
import time

from absl import flags

from apps._cli import fail, run

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["resnet56", "resnet50"], "Variable sets to time (names of sngm_keras.models).")
flags.DEFINE_integer("repeats", 7, "Timed repeats per configuration (the median is reported).", lower_bound=1)
flags.DEFINE_integer("steps", 20, "Updates per timed repeat.", lower_bound=1)
flags.DEFINE_string("output", "bench_optimizer.json", "Where to write the JSON results.")

MODEL_INPUTS = {
    "resnet56": ((32, 32, 3), 10),
    "resnet50": ((224, 224, 3), 1000),
    "resnet20": ((32, 32, 3), 10),
    "twoconv": ((32, 32, 3), 10),
}


def optimizers():
    import keras

    import sngm_keras

    return {
        "sgd": lambda: keras.optimizers.SGD(0.1, momentum=0.9),
        "sgd_wd": lambda: keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=1e-4),
        "sngm": lambda: sngm_keras.SNGM(0.1, momentum=0.9),
        "sngm_wd": lambda: sngm_keras.SNGM(0.1, momentum=0.9, weight_decay=1e-4),
        "msgd_wd": lambda: sngm_keras.MSGD(0.1, momentum=0.9, weight_decay=1e-4),
        "lars": lambda: sngm_keras.LARS(0.1, momentum=0.9, weight_decay=1e-4),
        "lamb": lambda: keras.optimizers.Lamb(0.01),
    }


def make_step(make_optimizer, shapes, xla):
    """A function that runs one update and returns a value to wait on."""
    import keras

    rng = np.random.default_rng(0)
    variables = [keras.Variable(rng.normal(size=s).astype("float32") * 0.05) for s in shapes]
    grads = [rng.normal(size=s).astype("float32") * 1e-3 for s in shapes]
    optimizer = make_optimizer()
    optimizer.build(variables)
    step = (
        _jax_step(optimizer, variables, grads)
        if keras.backend.backend() == "jax"
        else _tf_step(optimizer, variables, grads, xla)
    )
    step()  # trace, compile and warm up
    step()
    return step


def _tf_step(optimizer, variables, grads, xla):
    import tensorflow as tf

    grads = [tf.constant(g) for g in grads]

    @tf.function(jit_compile=xla)
    def step():
        optimizer.apply(grads, variables)
        return optimizer.iterations

    return step


def _jax_step(optimizer, variables, grads):
    # JAX is always XLA: one jitted stateless update, its buffers donated so
    # it updates in place as a training step does.
    import functools

    import jax

    grads = [jax.numpy.asarray(g) for g in grads]
    state = [[v.value for v in optimizer.variables], [v.value for v in variables]]

    # The gradients are an argument, not a closure: as constants XLA would
    # fold the norm at compile time.
    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def apply(optimizer_values, trainable_values, gradients):
        trainable_values, optimizer_values = optimizer.stateless_apply(optimizer_values, gradients, trainable_values)
        return optimizer_values, trainable_values

    def step():
        state[0], state[1] = apply(*state, grads)
        return state[1][0]

    return step


def time_steps(step, n):
    start = time.perf_counter()
    for _ in range(n):
        out = step()
    np.asarray(out)  # wait for the last update
    return (time.perf_counter() - start) / n


def main():
    import keras

    from sngm_keras.models import build_model

    for name in FLAGS.models:
        if name not in MODEL_INPUTS:
            fail(f"--models: unknown {name!r}; choose from {', '.join(MODEL_INPUTS)}")
    backend = keras.backend.backend()
    compile_modes = (True,) if backend == "jax" else (False, True)
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "backend": backend,
        "devices": _devices(backend),
        "steps": FLAGS.steps,
        "repeats": FLAGS.repeats,
        "models": {},
    }
    for name in FLAGS.models:
        input_shape, classes = MODEL_INPUTS[name]
        model = build_model(name, classes, input_shape)
        shapes = [tuple(v.shape) for v in model.trainable_weights]
        params = sum(int(np.prod(s)) for s in shapes)
        del model
        configs = {
            (opt, xla): make_step(make, shapes, xla) for opt, make in optimizers().items() for xla in compile_modes
        }
        samples = {key: [] for key in configs}
        order, shuffle = list(configs), random.Random(0)
        for _ in range(FLAGS.repeats):  # interleaved, in a new order each round
            shuffle.shuffle(order)
            for key in order:
                samples[key].append(time_steps(configs[key], FLAGS.steps))
        rows = {}
        for (opt, xla), times in samples.items():
            # Ratios paired within each round (drift of the machine cancels),
            # the median over rounds reported.
            ratio = statistics.median(t / s for t, s in zip(times, samples[("sgd", xla)]))
            rows[f"{opt}{'_xla' if xla else ''}"] = {"ms": statistics.median(times) * 1e3, "ratio_to_sgd": ratio}
        results["models"][name] = {"variables": len(shapes), "parameters": params, "results": rows}
        print(f"\n{name}: {len(shapes)} variables, {params:,} parameters")
        print(f"{'optimizer':12s} {'XLA':>5s} {'ms/update':>10s} {'x SGD':>7s}")
        for opt, xla in samples:
            row = rows[f"{opt}{'_xla' if xla else ''}"]
            print(f"{opt:12s} {'yes' if xla else 'no':>5s} {row['ms']:10.3f} {row['ratio_to_sgd']:7.3f}")
    with open(FLAGS.output, "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nwritten {FLAGS.output}")


def _devices(backend):
    if backend == "jax":
        import jax

        return [str(d) for d in jax.devices()]
    import tensorflow as tf

    return [d.name for d in tf.config.list_logical_devices()]


import numpy as np  # noqa: E402  (after the absl flags, used in main)

if __name__ == "__main__":
    run(main)
