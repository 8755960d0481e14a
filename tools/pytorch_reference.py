"""The paper's CIFAR-10 setting in PyTorch, its platform, for the first updates.

An independent check of what `apps.train` does at the start of a Table 2 run:
the ResNet-20 most PyTorch CIFAR code uses (He et al.'s option-A shortcuts,
`kaiming_normal_` on convolutions and the classifier, as in the repository
github.com/akamaster/pytorch_resnet_cifar10), BatchNorm in every block,
`torch.optim.SGD` (the paper's MSGD: weight decay on every parameter) or
Algorithm 1, B = 4096 as 32 accumulated micro-batches of 128 (each loss
divided by their number, Ott et al.; each micro-batch normalized with its own
statistics), random crop and flip, 45,000 training images drawn at random.
It logs every update's mean training loss and gradient norm, and the test
accuracy after each epoch, to compare with the `history.csv` of an
`apps.train` run of the same preset (its epoch means). It needs PyTorch
(`pip install torch`), which the project does not; the data is an image
folder with train/<class>/ and test/<class>/ (what `apps.train --dataset=`
reads).

    python -m tools.pytorch_reference --data=DIR --optimizer=msgd --learning_rate=0.4 --updates=22 --output=msgd.json
"""

import json
import os
import platform
import time

from absl import flags

from apps._cli import fail, run

FLAGS = flags.FLAGS
flags.DEFINE_string("data", None, "Image folder with train/<class>/ and test/<class>/.")
flags.DEFINE_enum("optimizer", "msgd", ["msgd", "sngm"], "torch.optim.SGD with momentum, or Algorithm 1.")
flags.DEFINE_float("learning_rate", 0.4, "Constant learning rate (the first updates of the paper's schedules).")
flags.DEFINE_float("momentum", 0.9, "Momentum beta.")
flags.DEFINE_float("weight_decay", 1e-4, "L2 added to the gradient of every parameter.")
flags.DEFINE_integer("batch_size", 4096, "Examples per update.", lower_bound=1)
flags.DEFINE_integer("micro_batch_size", 128, "Examples per forward/backward pass.", lower_bound=1)
flags.DEFINE_integer("updates", 22, "Updates to run.", lower_bound=1)
flags.DEFINE_integer("train_size", 45_000, "Training images drawn at random (the app holds 5,000 out).", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of initialization, data order and augmentation.")
flags.DEFINE_string("output", "pytorch_reference.json", "JSON log.")
FLAG_NAMES = (
    "optimizer",
    "learning_rate",
    "momentum",
    "weight_decay",
    "batch_size",
    "micro_batch_size",
    "updates",
    "train_size",
    "seed",
)


def check_flags():
    if FLAGS.data is None:
        fail("--data: required, an image folder with train/<class>/ and test/<class>/")
    if not os.path.isdir(FLAGS.data):
        fail(f"--data: {FLAGS.data} is not a folder")
    if FLAGS.batch_size % FLAGS.micro_batch_size:
        fail(f"--micro_batch_size: {FLAGS.micro_batch_size} does not divide --batch_size={FLAGS.batch_size}")
    if FLAGS.learning_rate <= 0:
        fail(f"--learning_rate: must be > 0, got {FLAGS.learning_rate}")
    if not 0 <= FLAGS.momentum < 1:
        fail(f"--momentum: must be in [0, 1), got {FLAGS.momentum}")
    if os.path.exists(FLAGS.output):
        fail(f"--output: {FLAGS.output} exists; choose another name")


def load_folder():
    """The folder as `apps.train --dataset=` reads it (classes sorted, files
    sorted in each), a layout or image mistake as one line."""
    from sngm_keras.data import DataError, load_arrays

    try:
        return load_arrays(FLAGS.data)
    except DataError as error:
        fail(f"--data: {error}")


def build_resnet20(torch, num_classes):
    nn, F = torch.nn, torch.nn.functional

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.extra = cout - cin  # option A: subsample and pad the channels with zeros

        def forward(self, x):
            out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
            shortcut = x
            if self.extra:
                shortcut = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.extra // 2, self.extra // 2))
            return F.relu(out + shortcut)

    class ResNet20(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            blocks, cin = [], 16
            for cout, stride in ((16, 1), (32, 2), (64, 2)):
                for i in range(3):
                    blocks.append(Block(cin, cout, stride if i == 0 else 1))
                    cin = cout
            self.blocks = nn.Sequential(*blocks)
            self.linear = nn.Linear(64, num_classes)
            for module in self.modules():
                if isinstance(module, (nn.Linear, nn.Conv2d)):
                    nn.init.kaiming_normal_(module.weight)

        def forward(self, x):
            out = self.blocks(F.relu(self.bn1(self.conv1(x))))
            return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))

    return ResNet20()


def sngm_class(torch):
    class SNGM(torch.optim.Optimizer):
        """Algorithm 1, weight decay added to g: u = beta u + g / ||g||, w = w - lr u."""

        def __init__(self, params, lr, momentum, weight_decay):
            super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

        @torch.no_grad()
        def step(self):
            group = self.param_groups[0]
            grads = [p.grad + group["weight_decay"] * p for p in group["params"]]
            norm = torch.sqrt(sum((g * g).sum() for g in grads))
            for p, g in zip(group["params"], grads, strict=True):
                u = self.state[p].setdefault("u", torch.zeros_like(p))
                u.mul_(group["momentum"]).add_(g / norm)
                p.sub_(group["lr"] * u)

    return SNGM


def main():
    check_flags()
    arrays = load_folder()  # before torch, so that its mistakes show without it
    from sngm_keras.training.provenance import git_commit, package_version, utc_now

    try:
        import torch
    except ImportError:
        fail("PyTorch is not installed: pip install torch")
    import numpy as np

    from sngm_keras.data.constants import CIFAR10_MEAN, CIFAR10_STD

    F = torch.nn.functional
    x, y = arrays.x_train, arrays.y_train.astype(np.int64)
    x_test, y_test = arrays.x_test, arrays.y_test.astype(np.int64)
    torch.manual_seed(FLAGS.seed)
    rng = np.random.default_rng(FLAGS.seed)
    keep = rng.permutation(len(x))[: FLAGS.train_size]
    x, y = x[keep], y[keep]
    # CIFAR-10's standard statistics, as the app normalizes TFDS cifar10.
    mean, std = np.array(CIFAR10_MEAN, np.float32), np.array(CIFAR10_STD, np.float32)

    def tensor(images):
        return torch.from_numpy(np.ascontiguousarray(((images / np.float32(255) - mean) / std).transpose(0, 3, 1, 2)))

    def augment(images):
        n, size = len(images), images.shape[1]
        padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
        rows, cols = rng.integers(0, 9, n), rng.integers(0, 9, n)
        out = np.stack([padded[i, rows[i] : rows[i] + size, cols[i] : cols[i] + size] for i in range(n)])
        flip = rng.random(n) < 0.5
        out[flip] = out[flip, :, ::-1]
        return out

    model = build_resnet20(torch, arrays.num_classes)
    params = list(model.parameters())
    hyper = dict(lr=FLAGS.learning_rate, momentum=FLAGS.momentum, weight_decay=FLAGS.weight_decay)
    optimizer = torch.optim.SGD(params, **hyper) if FLAGS.optimizer == "msgd" else sngm_class(torch)(params, **hyper)
    micro = FLAGS.micro_batch_size
    epoch_images = len(x) // micro * micro  # whole micro-batches, the last update smaller, as the app
    log, update, epoch, started = [], 0, 0, time.time()
    while update < FLAGS.updates:
        epoch += 1
        order = rng.permutation(len(x))[:epoch_images]
        for start in range(0, epoch_images, FLAGS.batch_size):
            batch = order[start : start + FLAGS.batch_size]
            parts = len(batch) // micro
            optimizer.zero_grad()
            losses, correct = [], 0
            for j in range(parts):
                index = batch[j * micro : (j + 1) * micro]
                logits = model(tensor(augment(x[index])))
                labels = torch.from_numpy(y[index])
                loss = F.cross_entropy(logits, labels)
                (loss / parts).backward()
                losses.append(loss.item())
                correct += (logits.argmax(1) == labels).sum().item()
            grad_norm = torch.sqrt(sum((p.grad * p.grad).sum() for p in params)).item()
            optimizer.step()
            update += 1
            log.append(
                dict(
                    update=update,
                    epoch=epoch,
                    train_loss=float(np.mean(losses)),
                    train_accuracy=correct / len(batch),
                    gradient_norm=grad_norm,
                )
            )
            print(json.dumps(log[-1]), flush=True)
            if update >= FLAGS.updates:
                break
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(tensor(x_test[i : i + 1000])) for i in range(0, len(x_test), 1000)])
        model.train()
        labels = torch.from_numpy(y_test)
        log.append(
            dict(
                epoch=epoch,
                test_loss=F.cross_entropy(logits, labels).item(),
                test_accuracy=(logits.argmax(1) == labels).float().mean().item(),
                seconds=round(time.time() - started, 1),
            )
        )
        print(json.dumps(log[-1]), flush=True)
    record = dict(
        flags={name: FLAGS[name].value for name in FLAG_NAMES},
        torch=torch.__version__,
        sngm_keras=package_version(),
        git=git_commit(),
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}",
        finished_utc=utc_now(),
        log=log,
    )
    with open(FLAGS.output, "w") as f:
        json.dump(record, f, indent=1)


if __name__ == "__main__":
    run(main)
