"""The ``fastcnn`` command: ``fastcnn train``, ``fastcnn eval CHECKPOINT``,
``fastcnn predict CHECKPOINT IMAGES...``, ``fastcnn export CHECKPOINT --onnx FILE``,
``fastcnn summary CHECKPOINT``, ``fastcnn info``.

``fastcnn train`` with no arguments trains LeNet-5 on the MNIST subset shipped in the
package and writes the checkpoint, the best epoch's checkpoint (lowest test loss), the
history (JSON) and its plot (PNG) into ``./fastcnn-run``. ``--resume`` continues a run with
the settings its checkpoint saved. Every usage error (bad values, missing data, an unwritable output
directory, a checkpoint of another model) is a ``UsageError``: one line on stderr and exit
status 2. Any other exception is a bug and propagates with its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

import fastcnn
from fastcnn import data, distributed, models, nn, optim, train
from fastcnn.data import Dataset
from fastcnn.data.cifar import holds_cifar10
from fastcnn.data.image_files import load_images

__all__ = ["UsageError", "main"]

MODELS = ("lenet5", "improved-lenet5", "simple", "resnet20", "mobilenet")
DATASETS = {"mnist": data.MNIST, "cifar10": data.CIFAR10}  # what --data DIR can hold
# The (mean, std) a dataset is normalised with, per channel, when it has usual constants
# (torchvision's, for CIFAR-10); any other is normalised with its training pixels' statistics
# (_pixel_stats), as MNIST always was.
USUAL_NORMALIZE = {"cifar10": [list(data.CIFAR10_MEAN), list(data.CIFAR10_STD)]}
CHECKPOINT_NAME = "checkpoint.npz"
BEST_NAME = "best.npz"  # the checkpoint of the epoch with the lowest test loss
HISTORY_NAME = "history.json"
PLOT_NAME = "history.png"


class UsageError(Exception):
    """A mistake in the command line or in the files it names: one line, exit status 2.

    The CLI raises it for its own checks, and translates the documented errors fastcnn
    raises for bad data or checkpoints into it where they can happen (``_usage_errors``);
    nothing else becomes a UsageError, so a bug keeps its traceback.
    """


# The advice in fastcnn's messages names Python arguments; a CLI user needs the flags.
IN_FLAGS = (
    ("pass download=True", "pass --download"),  # MNIST, CIFAR10: files not found
    ("point root at", "point --data at"),
    ("labels must be 0 .. num_classes - 1", "labels must be 0 or more"),  # image lists
)


def in_flags(message: str) -> str:
    """``message`` with the Python argument names of ``IN_FLAGS`` put as the CLI's flags."""
    for python, flags in IN_FLAGS:
        message = message.replace(python, flags)
    return message


@contextlib.contextmanager
def _usage_errors(*types: type[BaseException], context: str = "") -> Iterator[None]:
    """Turn the listed exception types, raised inside the block, into a UsageError (its
    advice in flags: ``in_flags``)."""
    try:
        yield
    except types as error:
        raise UsageError(f"{context}{in_flags(str(error))}") from error


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line (and still exit status 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _positive_float(text):
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _unit_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def _class_list(text):
    """``0-4`` or ``0,1,2`` -> sorted list of ints."""
    classes = set()
    try:
        for part in text.split(","):
            low, _, high = part.partition("-")
            classes.update(range(int(low), int(high or low) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected class labels such as 0-4 or 0,1,2, got {text!r}"
        ) from None
    if not classes or min(classes) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative class labels, got {text!r}")
    return sorted(classes)


# ------------------------------------------------------------------------------ data


def _add_data_options(parser):
    group = parser.add_argument_group("data")
    group.add_argument(
        "--data",
        default="embedded",
        metavar="embedded|DIR",
        help="'embedded' (the 6,000/1,000-image MNIST subset in the package, the default) or "
        "a directory with the four MNIST IDX files or the CIFAR-10 binary batches "
        "(cifar-10-batches-bin/ or its .bin files)",
    )
    group.add_argument(
        "--dataset",
        choices=DATASETS,
        help="what --data DIR holds (default: cifar10 if it holds CIFAR-10 .bin files, else "
        "mnist); needed to --download CIFAR-10 into an empty DIR",
    )
    group.add_argument(
        "--download", action="store_true", help="download the dataset into DIR if missing"
    )
    group.add_argument(
        "--image-list",
        metavar="FILE",
        help="train on the images listed in FILE ('relative/path label' lines) instead",
    )
    group.add_argument(
        "--test-image-list",
        metavar="FILE",
        help="test images for --image-list (default: hold out 10%% of the training list)",
    )
    group.add_argument(
        "--image-size",
        type=_positive_int,
        default=28,
        help="image-list images are resized to this height and width (default 28)",
    )
    group.add_argument("--rgb", action="store_true", help="read image-list images as RGB")
    group.add_argument(
        "--classes", type=_class_list, help="keep only these classes, e.g. 0-4 (labels kept)"
    )
    group.add_argument(
        "--limit", type=_positive_int, help="use only the first N images of each split"
    )
    group.add_argument("--batch-size", type=_positive_int, default=32, help="default 32")


class Splits:
    """The data of a run: training and test sets, where they came from, the class count,
    and the dataset's usual ``normalize`` (mean, std) if it has one (else computed)."""

    def __init__(
        self,
        train: Dataset | None,
        test: Dataset,
        source: str,
        num_classes: int,
        normalize: list[Any] | None = None,
    ) -> None:
        self.train, self.test, self.source, self.num_classes = train, test, source, num_classes
        self.normalize = normalize


def _dataset_name(args):
    """Which dataset --data names: --dataset if given, else what the directory holds."""
    if args.data == "embedded":
        if args.dataset not in (None, "mnist"):
            raise UsageError(
                f"--dataset {args.dataset} needs --data DIR: the embedded subset is MNIST"
            )
        return "embedded"
    if not os.path.isdir(args.data):
        raise UsageError(f"--data {args.data!r} is neither 'embedded' nor an existing directory")
    if args.dataset is not None:
        return args.dataset
    # The two layouts share no file name; a directory with neither is MNIST, so that its
    # error (or --download) is MNIST's, as before CIFAR-10 was known.
    return "cifar10" if holds_cifar10(args.data) else "mnist"


def _dataset_splits(args, test_only):
    name = _dataset_name(args)
    if name == "embedded":
        load, source, dataset_class = data.embedded_mnist, "embedded MNIST subset", data.MNIST
    else:
        dataset_class = DATASETS[name]
        source = f"{dataset_class.__name__} in {args.data}"

        def load(train):
            return dataset_class(args.data, train=train, download=args.download)

    # Missing, damaged or undownloadable files (DownloadError is an OSError).
    with _usage_errors(OSError, ValueError):
        train_set = None if test_only else load(True)
        test_set = load(False)
    normalize = USUAL_NORMALIZE.get(name)
    return Splits(train_set, test_set, source, dataset_class.num_classes, normalize)


def _image_list_splits(args, seed, test_only):
    options = {"size": (args.image_size, args.image_size), "mode": "RGB" if args.rgb else "L"}
    source = f"image list {args.image_list}"
    listed = _image_list(args.image_list, options)
    if args.test_image_list:
        test_set = _image_list(args.test_image_list, options)
        classes = max(listed.num_classes, test_set.num_classes)
        return Splits(None if test_only else listed, test_set, source, classes)
    if test_only:
        return Splits(None, listed, source, listed.num_classes)
    n_test = max(1, len(listed) // 10)
    if len(listed) - n_test < 1:
        raise UsageError(f"{args.image_list}: too few images to hold out a test split")
    train_set, test_set = data.random_split(listed, [len(listed) - n_test, n_test], seed=seed)
    return Splits(train_set, test_set, source + " (10% held out for testing)", listed.num_classes)


def _image_list(list_file, options):
    # A missing or unreadable list or image (OSError), a malformed line or image
    # (ValueError), Pillow not installed (ImportError).
    with _usage_errors(OSError, ValueError, ImportError):
        return data.ImageListDataset(list_file, **options)


def _restrict(dataset, args):
    if dataset is None:
        return None
    if args.classes is not None:
        with _usage_errors(ValueError, context="--classes: "):  # none of them in the data
            dataset = data.filter_classes(dataset, args.classes)
    if args.limit is not None and args.limit < len(dataset):
        dataset = data.Subset(dataset, np.arange(args.limit))
    return dataset


def load_splits(args: argparse.Namespace, seed: int = 0, test_only: bool = False) -> Splits:
    """The ``Splits`` the data options describe (no training set if ``test_only``)."""
    if args.image_list:
        if args.dataset is not None:
            raise UsageError(f"--dataset {args.dataset} is for --data DIR, not --image-list")
        splits = _image_list_splits(args, seed, test_only)
    else:
        splits = _dataset_splits(args, test_only)
    splits.train, splits.test = _restrict(splits.train, args), _restrict(splits.test, args)
    if args.classes is not None:
        splits.num_classes = max(args.classes) + 1
    return splits


# ----------------------------------------------------------------------------- model


def build_model(config: dict[str, Any], rng: np.random.Generator | None = None) -> nn.Module:
    """The network a checkpoint's ``config`` describes.

    Raises
    ------
    UsageError
        The config names an unknown model, or sizes the model cannot take (LeNet-5 needs
        28x28 or 32x32 images, the improved LeNet-5 at least 8x8).
    """
    name, channels, size, classes = (
        config["model"],
        config["in_channels"],
        config["image_size"],
        config["num_classes"],
    )
    if name not in MODELS:
        raise UsageError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    # The constructors' ValueErrors are about these sizes (LeNet5's input_size, an image
    # too small for ImprovedLeNet5's pools or SimpleConvNet's convolution and pool).
    with _usage_errors(ValueError, context=f"--model {name}: "):
        if name == "lenet5":
            return models.LeNet5(channels, classes, input_size=size, rng=rng)
        if name == "improved-lenet5":
            return models.ImprovedLeNet5(channels, classes, input_size=size, rng=rng)
        if name == "resnet20":
            return models.ResNet20(classes, channels, rng=rng)
        if name == "mobilenet":
            return models.MobileNetCIFAR(classes, channels, rng=rng)
        return models.SimpleConvNet((channels, size, size), output_size=classes, rng=rng)


def _checkpoint_config(state, path):
    """The model config ``fastcnn train`` stored in a checkpoint's extra entry."""
    config = state["extra"].get("config") if isinstance(state.get("extra"), dict) else None
    keys = {"model", "in_channels", "image_size", "num_classes", "normalize"}
    if not isinstance(config, dict) or not keys <= set(config):
        raise UsageError(
            f"checkpoint {path!r} was not written by 'fastcnn train' (it has no model "
            "config); evaluate it from Python with fastcnn.train.evaluate"
        )
    return config


def _model_config(args, splits):
    images, _ = splits.train.gather([0])
    channels, height, _ = images.shape[1:]
    return {
        "model": args.model,
        "in_channels": int(channels),
        "image_size": int(height),
        "num_classes": int(splits.num_classes),
        "normalize": splits.normalize or _pixel_stats(splits.train),
        "augment": bool(args.augment),
    }


def _pixel_stats(dataset, chunk=10000):
    """Mean and standard deviation of the training pixels: inputs are normalised with them."""
    total = total_sq = 0.0
    for start in range(0, len(dataset), chunk):
        images, _ = dataset.gather(np.arange(start, min(start + chunk, len(dataset))))
        total += images.sum(dtype=np.float64)
        total_sq += np.square(images, dtype=np.float64).sum()
    count = len(dataset) * images[0].size
    mean = total / count
    return [float(mean), float(max(np.sqrt(max(total_sq / count - mean**2, 0.0)), 1e-6))]


def _scheduler(args, optimizer, steps_per_epoch):
    epochs = args.epochs
    if args.schedule == "cosine":
        return optim.CosineAnnealingLR(optimizer, T_max=epochs)
    if args.schedule == "step":  # a tenth of the rate after each third of the epochs
        return optim.StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.1)
    if args.schedule == "multistep":  # a tenth at half and at three quarters of the epochs
        milestones = sorted({max(1, epochs // 2), max(1, 3 * epochs // 4)})
        return optim.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    if args.schedule == "onecycle":  # --lr is the peak; stepped after every batch
        return optim.OneCycleLR(
            optimizer, max_lr=args.lr, epochs=epochs, steps_per_epoch=steps_per_epoch
        )
    if args.schedule == "plateau":  # a tenth when the test loss stalls for 2 epochs
        return optim.ReduceLROnPlateau(optimizer, factor=0.1, patience=2)
    return None


def _optimizer(args, model):
    if args.optimizer == "adam":
        return optim.Adam(model.parameters(), lr=args.lr)
    if args.optimizer == "rmsprop":
        return optim.RMSprop(model.parameters(), lr=args.lr)
    return optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)


# -------------------------------------------------------------------------- settings

# Every flag of 'fastcnn train' but these is a setting of the run: its checkpoint keeps it
# (as JSON, in extra["settings"]) and --resume restores it, so it need not be repeated; one
# given again must agree (but see _may_change). These are about one invocation instead.
PER_INVOCATION = ("out", "resume", "threads", "no_progress", "log_every", "download", "summary")


def _may_change(name, saved):
    """--epochs may extend a resumed run whose learning rate does not depend on it (the
    cosine and step schedules are planned for the epochs; cosine would restart at 0)."""
    return name == "epochs" and saved.get("schedule") == "none"


def _defer_defaults(parser):
    """Make the settings' flags default to None, so that a flag given can be told from a
    default; keep their defaults for _fill_settings, which applies them after parsing."""
    defaults = vars(parser.parse_args([]))  # every flag, with its default
    names = [name for name in defaults if name not in (*PER_INVOCATION, "run")]
    kept = {name: defaults[name] for name in names}
    parser.set_defaults(**dict.fromkeys(names), deferred_defaults=kept)


def _flag(name, value):
    """A setting as a command line gives it: ``--lr 0.05``, ``--rgb``, ``no --limit``."""
    flag = "--" + name.replace("_", "-")
    if value is None or value is False:
        return f"no {flag}"
    if value is True:
        return flag
    return f"{flag} {','.join(map(str, value)) if isinstance(value, list) else value}"


def _fill_settings(args, saved):
    """Give each deferred setting its value: the flag given, else the resumed run's
    (``saved``), else the default. A given flag that contradicts ``saved`` is refused."""
    for name, default in args.deferred_defaults.items():
        given = getattr(args, name)
        if given is None:
            setattr(args, name, saved.get(name, default))
        elif name in saved and _as_json(given) != saved[name] and not _may_change(name, saved):
            flag = "--" + name.replace("_", "-")
            why = ""
            if name == "epochs":
                why = (
                    f" (its {saved.get('schedule')} schedule is planned for {saved[name]} "
                    "epochs; only a run with --schedule none can be extended)"
                )
            raise UsageError(
                f"--resume: {_flag(name, given)} contradicts the resumed run's "
                f"{_flag(name, saved[name])}, saved in its checkpoint{why}; leave out {flag} "
                "to continue the run as it was, or train a new run into another --out"
            )


def _as_json(value):
    """``value`` as it comes back from the checkpoint's JSON (a tuple as a list, ...)."""
    return json.loads(json.dumps(value))


def _settings(args):
    """What the checkpoint keeps of the command line, as JSON."""
    return json.dumps({name: getattr(args, name) for name in args.deferred_defaults})


def _saved_settings(state):
    """The settings of the run whose checkpoint ``state`` is; an older fastcnn saved none
    but the model's name."""
    extra = state.get("extra") if isinstance(state.get("extra"), dict) else {}
    if "settings" in extra:
        return json.loads(extra["settings"])
    config = extra.get("config")
    return {"model": config["model"]} if isinstance(config, dict) and "model" in config else {}


# ----------------------------------------------------------------------------- train


def _prepare_out_dir(out):
    """Create ``out`` and prove it is writable before spending time on training."""
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        raise UsageError(f"cannot write to --out {out!r}: {error.strerror or error}") from None


def augmentation(config: dict[str, Any]) -> data.RandomTransform | data.Compose:
    """What ``--augment`` applies to the training images, before normalisation: for colour
    images (CIFAR-10) the usual random 32x32 crop of the image padded by 4 (an eighth of the
    size) and a horizontal flip; for grayscale ones (MNIST) rotations of up to 10 degrees and
    shifts of up to a tenth of the size, but no flip, which would turn digits into others."""
    size = config["image_size"]
    if config["in_channels"] == 3:
        return data.Compose(
            [data.RandomCrop(size, padding=max(1, size // 8)), data.RandomHorizontalFlip()]
        )
    return data.RandomAffine(10, translate=(0.1, 0.1))


def _loaders(args, splits, config, shard=None):
    transform = data.Normalize(*config["normalize"])
    train_transform = transform
    if config.get("augment"):
        train_transform = data.Compose([augmentation(config), transform])
    train_loader = data.DataLoader(
        splits.train, args.batch_size, shuffle=True, seed=args.seed, transform=train_transform,
        shard=shard,
    )  # fmt: skip
    test_loader = data.DataLoader(splits.test, 500, transform=transform)
    return train_loader, test_loader


def _print_result(values, prefix="test"):
    print(
        f"{prefix} top-1: {100 * values['accuracy']:.2f}%  top-5: {100 * values['top5']:.2f}%  "
        f"loss: {values['loss']:.4f}"
    )


def _write_outputs(history, out):
    written = [os.path.join(out, name) for name in (CHECKPOINT_NAME, BEST_NAME)]
    written = [path for path in written if os.path.exists(path)]
    written.append(os.path.join(out, HISTORY_NAME))
    history.save_json(written[-1])
    try:
        history.plot(os.path.join(out, PLOT_NAME))
        written.append(os.path.join(out, PLOT_NAME))
    except ImportError as error:
        print(f"fastcnn: note: no plot written: {error}", file=sys.stderr)
    print("wrote " + ", ".join(written))


def _check_resume(args, checkpoint):
    if args.resume and not os.path.isfile(checkpoint):
        raise UsageError(
            f"--resume: there is no checkpoint {checkpoint!r} to resume from; train without "
            "--resume, or point --out at the directory of the run to continue"
        )


def _callbacks(args, resumed):
    """Keep the best epoch's checkpoint, unless resuming a run of an older fastcnn, whose
    checkpoint has no callback state to continue from."""
    if resumed is not None and "callbacks" not in resumed:
        return []
    return [train.ModelCheckpoint(os.path.join(args.out, BEST_NAME), monitor="val_loss")]


def _start_data_parallel(args):
    """Under ``mpiexec -n N`` (N > 1): start MPI; returns (rank, world size), else None."""
    launched = distributed.launched_world_size()
    if launched is None or launched == 1:
        return None
    if args.accumulate not in (None, 1):  # (None: not given; resumed settings come later)
        raise UsageError(
            f"--accumulate {args.accumulate} under mpiexec: the ranks already split each "
            "batch; use --accumulate N in one process to replay N ranks"
        )
    try:
        distributed.init()
    except (ImportError, RuntimeError) as error:  # no mpi4py, or the mpiexec of another MPI
        raise UsageError(str(error)) from None
    return distributed.get_rank(), distributed.get_world_size()


def run_train(args: argparse.Namespace) -> int:
    shard = _start_data_parallel(args)
    if shard is not None and shard[0] != 0:  # only rank 0 prints and writes files
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
            return _train(args, shard)
    return _train(args, shard)


def _train(args, shard):
    checkpoint = os.path.join(args.out, CHECKPOINT_NAME)
    _check_resume(args, checkpoint)
    resumed = _read_checkpoint(checkpoint) if args.resume else None
    _fill_settings(args, {} if resumed is None else _saved_settings(resumed))
    if shard is not None and args.accumulate != 1:  # resuming a one-process replay on ranks
        if args.accumulate != shard[1]:
            raise UsageError(
                f"--resume: the run was saved with --accumulate {args.accumulate}; resume it "
                f"on {args.accumulate} MPI ranks, or in one process"
            )
        args.accumulate = 1  # its blocks are the ranks now: the same arithmetic
    main_rank = shard is None or shard[0] == 0
    if main_rank:
        _prepare_out_dir(args.out)
    if args.threads is not None:
        fastcnn.set_num_threads(args.threads)
    splits = load_splits(args, seed=args.seed)
    assert splits.train is not None  # load_splits gives one unless test_only
    # the loss's setting travels with the model's, so that eval reports the same loss
    config = {**_model_config(args, splits), "label_smoothing": args.label_smoothing}
    model = build_model(config, rng=np.random.default_rng(args.seed))
    optimizer = _optimizer(args, model)
    model_name = type(model).__name__
    if args.summary and main_rank:
        print(fastcnn.summary(model, _input_shape(config)))
    if shard is not None:
        model = distributed.DistributedDataParallel(model)
    train_loader, test_loader = _loaders(args, splits, config, shard)
    ranks = "" if shard is None else f"{shard[1]} MPI ranks x "
    print(
        f"training {model_name} on the {splits.source}: {len(splits.train)} training "
        f"and {len(splits.test)} test images, {args.epochs} epochs, batch {args.batch_size}, "
        f"{args.optimizer} lr {args.lr} ({args.schedule} schedule"
        f"{'' if args.clip_grad is None else f', gradients clipped to norm {args.clip_grad}'}), "
        f"{ranks}{fastcnn.get_num_threads()} threads"
    )
    started = time.perf_counter()
    # What the user can cause inside fit: a diverging run (too high a --lr), and with
    # --resume a damaged checkpoint or one of another model, optimizer or schedule.
    resume_errors = (fastcnn.CheckpointError, train.IncompatibleCheckpointError)
    with _usage_errors(train.NonFiniteLossError, *resume_errors):
        history = train.fit(
            model, nn.CrossEntropyLoss(label_smoothing=args.label_smoothing), optimizer,
            train_loader, test_loader,
            epochs=args.epochs, scheduler=_scheduler(args, optimizer, len(train_loader)),
            progress=not args.no_progress, checkpoint=checkpoint, resume=args.resume,
            extra={"config": config, "settings": _settings(args)}, log_every=args.log_every,
            clip_grad_norm=args.clip_grad, callbacks=_callbacks(args, resumed),
            accumulate=args.accumulate,
        )  # fmt: skip
    final = {k[len("val_") :]: v for k, v in history.epochs[-1].items() if k.startswith("val_")}
    _print_result(final)
    print(f"training took {time.perf_counter() - started:.1f} s")
    if main_rank:
        _write_outputs(history, args.out)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    if args.threads is not None:
        fastcnn.set_num_threads(args.threads)
    model, config = _load_model(args.checkpoint)
    # Image-list images are read as the model was trained: same size, same colour mode.
    args.image_size, args.rgb = config["image_size"], config["in_channels"] == 3
    splits = load_splits(args, test_only=True)
    _check_eval_data(splits, config, args.checkpoint)
    transform = data.Normalize(*config["normalize"])
    loader = data.DataLoader(splits.test, args.batch_size, transform=transform)
    # checkpoints from before --label-smoothing have none
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.get("label_smoothing", 0.0))
    values = train.evaluate(model, loader, loss_fn)
    print(
        f"{type(model).__name__} from {args.checkpoint} on {len(splits.test)} test images of "
        f"the {splits.source}"
    )
    _print_result(values)
    return 0


def _read_checkpoint(path):
    """The state of a training checkpoint (``train.load_checkpoint``), or a UsageError."""
    # A missing or damaged file, bare weights instead of a training checkpoint, or a name
    # without the .npz/.safetensors suffix that picks the format (ValueError).
    loading_errors = (FileNotFoundError, ValueError, fastcnn.CheckpointError)
    try:
        with _usage_errors(*loading_errors):
            return train.load_checkpoint(path)
    except OSError as error:  # a directory, no permission
        raise UsageError(f"cannot read checkpoint {path!r}: {error.strerror or error}") from None


def _input_shape(config):
    """(channels, height, width) of the images the model of ``config`` takes."""
    return (config["in_channels"], config["image_size"], config["image_size"])


def _load_model(path):
    """The model a checkpoint of 'fastcnn train' holds, and its config."""
    state = _read_checkpoint(path)
    config = _checkpoint_config(state, path)
    model = build_model(config)
    with _usage_errors(train.IncompatibleCheckpointError):  # weights of another model
        train.restore_model(path, model, state)
    return model, config


def _check_eval_data(splits, config, path):
    """The test images must be those the model takes, their labels among its classes."""
    images, _ = splits.test.gather([0])
    shape = tuple(int(n) for n in images.shape[1:])
    size = config["image_size"]
    expected = (config["in_channels"], size, size)
    if shape != expected:
        raise UsageError(
            f"checkpoint {path!r} holds a model of {'x'.join(map(str, expected))} images, but "
            f"the --data images are {'x'.join(map(str, shape))}: evaluate it on data like the "
            "data it was trained on"
        )
    largest = int(np.max(splits.test.labels))
    if largest >= config["num_classes"]:
        raise UsageError(
            f"the test data has label {largest}, but the model of {path!r} has only "
            f"{config['num_classes']} classes (0 to {config['num_classes'] - 1}); pass "
            "--classes to keep the classes it knows"
        )


def run_predict(args: argparse.Namespace) -> int:
    if args.threads is not None:
        fastcnn.set_num_threads(args.threads)
    model, config = _load_model(args.checkpoint)
    k = _check_top_k(args.top_k, config["num_classes"], args.checkpoint)
    size = config["image_size"]
    # A missing path (OSError), a bad image or IDX file (ValueError), no Pillow (ImportError).
    with _usage_errors(OSError, ValueError, ImportError):
        names, images = load_images(args.images, (config["in_channels"], size, size))
    # The model sees what it saw in training: the same decoding (load_images), the same
    # normalisation; train.predict runs it in eval mode, in batches.
    logits = train.predict(model, data.Normalize(*config["normalize"])(images), args.batch_size)
    classes, probabilities = _top_k(logits, k)
    try:
        for name, row_classes, row_probabilities in zip(names, classes, probabilities, strict=True):
            print(_prediction_line(name, row_classes, row_probabilities, args.json))
        sys.stdout.flush()  # here, so that a closed pipe is caught here, not at exit
    except BrokenPipeError:  # the reader stopped early (| head): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


def _check_top_k(top_k, num_classes, path):
    """``--top-k``, by default 3 capped at the model's class count."""
    if top_k is None:
        return min(3, num_classes)
    if top_k > num_classes:
        raise UsageError(
            f"--top-k {top_k} is more than the {num_classes} classes of the model in {path!r}; "
            f"choose 1 to {num_classes}"
        )
    return top_k


def _top_k(logits, k):
    """The ``k`` most probable classes of each row, most probable first (ties: lower class
    first), and their probabilities: a softmax of the logits (stable on extreme values)."""
    probabilities = nn.Softmax(dim=1)(logits)
    classes = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return classes, np.take_along_axis(probabilities, classes, axis=1)


def _prediction_line(name, classes, probabilities, as_json):
    """``digit.png: 7 (0.998), 1 (0.001)``, or that as one JSON object."""
    pairs = list(zip(classes.tolist(), probabilities.tolist(), strict=True))
    if as_json:
        top = [{"class": c, "probability": p} for c, p in pairs]
        return json.dumps({"name": name, "top_k": top})
    return f"{name}: " + ", ".join(f"{c} ({p:.3f})" for c, p in pairs)


def run_export(args: argparse.Namespace) -> int:
    model, config = _load_model(args.checkpoint)
    size = config["image_size"]
    dtype = next(model.parameters()).dtype
    example = np.zeros((1, config["in_channels"], size, size), dtype=dtype)
    try:
        # every model build_model makes is exportable: its only ValueError is the opset's
        with _usage_errors(ImportError, ValueError):  # onnx not installed: what to install
            fastcnn.onnx.export(model, example, args.onnx, opset_version=args.opset)
    except OSError as error:  # a missing directory, a directory, no permission
        raise UsageError(f"cannot write --onnx {args.onnx!r}: {error.strerror or error}") from None
    mean, std = (_format_stat(values) for values in config["normalize"])
    print(
        f"wrote {args.onnx}: {type(model).__name__} from {args.checkpoint}; input 'input': "
        f"{dtype} (batch, {config['in_channels']}, {size}, {size}) images normalised as in "
        f"training, (x - {mean}) / {std}; output 'output': "
        f"(batch, {config['num_classes']}) logits"
    )
    return 0


def _format_stat(values):
    """A normalisation mean or std: one number, or one per channel as ``(r, g, b)``."""
    if isinstance(values, list):
        return "(" + ", ".join(f"{value:.6g}" for value in values) + ")"
    return f"{values:.6g}"


def run_summary(args: argparse.Namespace) -> int:
    model, config = _load_model(args.checkpoint)
    print(fastcnn.summary(model, _input_shape(config)))
    return 0


def run_info(args: argparse.Namespace) -> int:
    fastcnn.show_config()
    return 0


# ---------------------------------------------------------------------------- parser


def _train_parser(subparsers):
    parser = subparsers.add_parser(
        "train", help="train a CNN (default: LeNet-5 on the embedded MNIST subset)"
    )
    parser.add_argument("--model", choices=MODELS, default="lenet5", help="default lenet5")
    _add_data_options(parser)
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=_positive_int, default=5, help="default 5")
    group.add_argument(
        "--optimizer", choices=("sgd", "adam", "rmsprop"), default="sgd", help="default sgd"
    )
    group.add_argument("--lr", type=_positive_float, default=0.05, help="default 0.05")
    group.add_argument(
        "--momentum", type=_non_negative_float, default=0.9, help="SGD momentum, default 0.9"
    )
    group.add_argument(
        "--label-smoothing",
        type=_unit_float,
        default=0.0,
        help="CrossEntropyLoss's label_smoothing, in [0, 1] (default 0)",
    )
    group.add_argument(
        "--schedule",
        choices=("cosine", "step", "multistep", "onecycle", "plateau", "none"),
        default="cosine",
        help="learning-rate schedule (default cosine); onecycle steps every batch with --lr "
        "as its peak, plateau cuts the rate tenfold when the test loss stalls for 2 epochs",
    )
    group.add_argument(
        "--clip-grad",
        type=_positive_float,
        metavar="MAX_NORM",
        help="clip the gradients' total 2-norm to MAX_NORM before every step",
    )
    group.add_argument(
        "--seed", type=_non_negative_int, default=0, help="initial weights and data order"
    )
    group.add_argument("--threads", type=_positive_int, help="kernel threads (default: all)")
    group.add_argument(
        "--accumulate",
        type=_positive_int,
        default=1,
        metavar="N",
        help="split each batch into N blocks and average their gradients: the bits of "
        "'mpiexec -n N fastcnn train' in one process (default 1)",
    )
    group.add_argument(
        "--out", default="fastcnn-run", help="output directory (default ./fastcnn-run)"
    )
    group.add_argument(
        "--resume",
        action="store_true",
        help="continue the run whose checkpoint is in --out, with the settings it was started "
        "with (model, data, optimizer, epochs, ...)",
    )
    group.add_argument(
        "--summary", action="store_true", help="print the model's layers before training"
    )
    group.add_argument(
        "--augment",
        action="store_true",
        help="random training augmentation: rotations and shifts for grayscale images "
        "(MNIST), crops and flips for colour ones (CIFAR-10)",
    )
    group.add_argument("--no-progress", action="store_true", help="print only the results")
    group.add_argument(
        "--log-every", type=_positive_int, default=50, help="batches between progress lines"
    )
    parser.set_defaults(run=run_train)
    _defer_defaults(parser)  # last: after every flag


def _summary_parser(subparsers):
    parser = subparsers.add_parser(
        "summary", help="print the layers, shapes and sizes of a checkpoint's model"
    )
    parser.add_argument("checkpoint", help="the checkpoint file (e.g. fastcnn-run/checkpoint.npz)")
    parser.set_defaults(run=run_summary)


def _eval_parser(subparsers):
    parser = subparsers.add_parser("eval", help="test a checkpoint written by 'fastcnn train'")
    parser.add_argument("checkpoint", help="the checkpoint file (e.g. fastcnn-run/checkpoint.npz)")
    _add_data_options(parser)
    parser.add_argument("--threads", type=_positive_int, help="kernel threads (default: all)")
    parser.set_defaults(run=run_eval)


def _predict_parser(subparsers):
    parser = subparsers.add_parser(
        "predict", help="print the top classes a checkpoint of 'fastcnn train' gives images"
    )
    parser.add_argument("checkpoint", help="the checkpoint file (e.g. fastcnn-run/checkpoint.npz)")
    parser.add_argument(
        "images",
        nargs="+",
        metavar="IMAGES",
        help="image files (PNG, JPEG, ...: needs Pillow), directories of them (sorted by name, "
        "not recursive) and IDX image files (*idx3-ubyte, optionally .gz)",
    )
    parser.add_argument(
        "--top-k",
        type=_positive_int,
        metavar="K",
        help="classes to print per image (default 3, or the class count if fewer)",
    )
    parser.add_argument("--batch-size", type=_positive_int, default=256, help="default 256")
    parser.add_argument("--threads", type=_positive_int, help="kernel threads (default: all)")
    parser.add_argument(
        "--json",
        action="store_true",
        help='one JSON object per line: {"name": ..., "top_k": [{"class": c, "probability": p}]}',
    )
    parser.set_defaults(run=run_predict)


def _export_parser(subparsers):
    parser = subparsers.add_parser(
        "export", help="export a checkpoint written by 'fastcnn train' (to ONNX)"
    )
    parser.add_argument("checkpoint", help="the checkpoint file (e.g. fastcnn-run/checkpoint.npz)")
    parser.add_argument(
        "--onnx", required=True, metavar="FILE", help="write the model as an ONNX file"
    )
    parser.add_argument(
        "--opset", type=_positive_int, default=17, help="ONNX opset version (default 17)"
    )
    parser.set_defaults(run=run_export)


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fastcnn", description="Fast CPU convolutional networks.")
    parser.add_argument("--version", action="version", version=f"fastcnn {fastcnn.__version__}")
    subparsers = parser.add_subparsers(title="commands", dest="command", required=True)
    _train_parser(subparsers)
    _eval_parser(subparsers)
    _predict_parser(subparsers)
    _export_parser(subparsers)
    _summary_parser(subparsers)
    subparsers.add_parser("info", help="how fastcnn was built").set_defaults(run=run_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fastcnn`` console script and of ``python -m fastcnn``."""
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        # A diverging run ends with fit's NonFiniteLossError and its advice, as one line;
        # NumPy's overflow/invalid-value warnings on the way there would only add noise.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return args.run(args)
    except UsageError as error:
        message = " ".join(str(error).split())  # one line, even for multi-line messages
        print(f"fastcnn {args.command}: error: {message}", file=sys.stderr)
        return _end_job(2)
    except KeyboardInterrupt:
        print(f"fastcnn {args.command}: interrupted", file=sys.stderr)
        return _end_job(130)


def _end_job(status: int) -> int:
    """Under MPI, a rank that stops on an error ends the whole job: the other ranks may be
    waiting for it in a collective."""
    if distributed.is_initialized() and distributed.get_world_size() > 1:
        sys.stderr.flush()
        from mpi4py import MPI

        MPI.COMM_WORLD.Abort(status)
    return status
