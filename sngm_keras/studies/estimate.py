"""How long a study's runs left take: each run's work in training images, at
a speed given or measured by the finished runs."""

from sngm_keras.dataset_names import SPLIT_SIZES


def run_cost(config):
    """A run's work in training images: its training examples plus its
    evaluations (forward passes, about a third of a training step each);
    None for a dataset whose size is not known before loading it."""
    if config.dataset not in SPLIT_SIZES:
        return None
    train, test = SPLIT_SIZES[config.dataset]
    evaluated = config.validations_per_epoch * config.validation_size + test / config.eval_every
    return config.epochs * (train - config.validation_size + evaluated / 3)


def median_speed(summaries):
    """The median training speed (images/s) of finished runs, or None."""
    rates = sorted(s["examples_per_second"] for s in summaries if s and s.get("examples_per_second"))
    return rates[len(rates) // 2] if rates else None


def runs_left(count):
    return "the run left" if count == 1 else f"the {count} runs left"
