"""Named configurations: every row of the paper's Tables 2 and 3, Figure 1 at
CPU scale, and the offline demo. Values are `TrainConfig` fields; explicit
flags override them.

Table 2 (CIFAR-10, 160 epochs, weight decay 1e-4, momentum 0.9, micro-batches
of 128 for B = 4096): MSGD uses He et al.'s recipe (divide by 10 at epochs
80 and 120); LARS and SNGM the poly schedule; LARS with warm-up ramps from
0.1 over 5 epochs, power 2; LARS excludes biases and BatchNorm from adaptation,
and a `lars_pytorch` row runs the pytorch-lars code's semantics (all
variables adapted). Table 3 (ImageNet, 90 epochs): MSGD at B = 256
divided by 10 at epochs 30 and 60; SNGM at B = 8192, poly power 2.
"""

_CIFAR = dict(dataset="cifar10", epochs=160, weight_decay=1e-4, momentum=0.9, micro_batch_size=128)
_MSGD_STEP = dict(optimizer="msgd", lr_schedule="step", decay_epochs=(80, 120))
_LARGE = dict(batch_size=4096)

_TABLE2_ROWS = {
    # model: (MSGD B=128 lr, MSGD B=4096 lr, LARS lr, LARS+warm-up lr, SNGM lr)
    "resnet20": (0.1, 0.4, 0.8, 2.4, 1.6),
    "resnet56": (0.1, 0.3, 0.64, 2.8, 1.3),
}


def _table2():
    presets = {}
    for model, (msgd, msgd_large, lars, lars_warm, sngm) in _TABLE2_ROWS.items():
        base = dict(_CIFAR, model=model)
        presets[f"table2_{model}_msgd_b128"] = dict(base, **_MSGD_STEP, batch_size=128, learning_rate=msgd)
        presets[f"table2_{model}_msgd_b4096"] = dict(base, **_MSGD_STEP, **_LARGE, learning_rate=msgd_large)
        presets[f"table2_{model}_lars_b4096"] = dict(
            base, **_LARGE, optimizer="lars", lr_schedule="poly", power=1.1, learning_rate=lars
        )
        # The pytorch-lars code the paper ran (every variable adapted); its rate is
        # the one the study selects for the row above (`tables.RATE_FROM`).
        presets[f"table2_{model}_lars_pytorch_b4096"] = dict(presets[f"table2_{model}_lars_b4096"], pytorch_lars=True)
        presets[f"table2_{model}_lars_warmup_b4096"] = dict(
            base,
            **_LARGE,
            optimizer="lars",
            lr_schedule="poly",
            power=2.0,
            learning_rate=lars_warm,
            warmup_epochs=5,
            warmup_learning_rate=0.1,
        )
        presets[f"table2_{model}_sngm_b4096"] = dict(
            base, **_LARGE, optimizer="sngm", lr_schedule="poly", power=1.1, learning_rate=sngm
        )
    return presets


def _table3():
    base = dict(dataset="imagenet2012", epochs=90, weight_decay=1e-4, momentum=0.9, micro_batch_size=128)
    presets = {}
    for model in ("resnet18", "resnet50"):
        presets[f"table3_{model}_msgd_b256"] = dict(
            base,
            model=model,
            optimizer="msgd",
            lr_schedule="step",
            decay_epochs=(30, 60),
            batch_size=256,
            learning_rate=0.1,
        )
        presets[f"table3_{model}_sngm_b8192"] = dict(
            base, model=model, optimizer="sngm", lr_schedule="poly", power=2.0, batch_size=8192, learning_rate=0.8
        )
    return presets


# Figure 1 sized for a 2-core CPU: the two-conv network on CIFAR-10, equal
# epochs, poly schedule for every method (the paper's Figure 1 uses poly for
# MSGD). Learning rates are starting points; `apps.reproduce --lr_grid`
# sweeps them.
_FIGURE1 = dict(
    dataset="cifar10",
    model="twoconv",
    epochs=10,
    weight_decay=1e-4,
    momentum=0.9,
    lr_schedule="poly",
    power=1.1,
    micro_batch_size=128,
)


def _figure1():
    return {
        "figure1_cpu_msgd_b128": dict(_FIGURE1, optimizer="msgd", batch_size=128, learning_rate=0.025),
        "figure1_cpu_msgd_b4096": dict(_FIGURE1, optimizer="msgd", batch_size=4096, learning_rate=0.1),
        "figure1_cpu_lars_b4096": dict(_FIGURE1, optimizer="lars", batch_size=4096, learning_rate=4.0),
        "figure1_cpu_sngm_b4096": dict(_FIGURE1, optimizer="sngm", batch_size=4096, learning_rate=0.8),
    }


DEMO = dict(
    dataset="sample",
    model="twoconv",
    optimizer="sngm",
    batch_size=500,
    micro_batch_size=100,
    learning_rate=0.2,
    momentum=0.9,
    weight_decay=5e-4,
    lr_schedule="poly",
    power=1.1,
    epochs=30,
)

PRESETS = {"demo": DEMO, **_table2(), **_table3(), **_figure1()}

# The Table 2 row whose rates a CIFAR ResNet without a row of its own takes.
_TABLE2_ROW_OF = {
    "resnet20": "resnet20",
    "resnet32": "resnet20",
    "resnet44": "resnet20",
    "resnet56": "resnet56",
    "resnet110": "resnet56",
}
_TABLE3_ROW_OF = {"resnet18": "resnet18", "resnet34": "resnet18", "resnet50": "resnet50"}


def model_defaults(model, optimizer):
    """The settings a ResNet brings when no preset is given: the paper's
    recipe for `optimizer` on its dataset. CIFAR ResNets take Table 2's row
    (ResNet-32 and -44 ResNet-20's rates, ResNet-110 ResNet-56's); ImageNet
    ResNets Table 3's (ResNet-34 ResNet-18's), where LARS has no row, so
    its batch and schedule are SNGM's and its rate is left to the user.
    Empty for the two-conv network and unknown names (TrainConfig's
    defaults, the demo's, apply)."""
    if model in _TABLE2_ROW_OF:
        row = {"msgd": "msgd_b128", "sngm": "sngm_b4096", "lars": "lars_b4096"}.get(optimizer)
        return dict(PRESETS[f"table2_{_TABLE2_ROW_OF[model]}_{row}"], model=model) if row else {}
    if model in _TABLE3_ROW_OF:
        row = {"msgd": "msgd_b256", "sngm": "sngm_b8192", "lars": "sngm_b8192"}.get(optimizer)
        if row is None:
            return {}
        values = dict(PRESETS[f"table3_{_TABLE3_ROW_OF[model]}_{row}"], model=model, optimizer=optimizer)
        if optimizer == "lars":
            del values["learning_rate"]
        return values
    return {}
