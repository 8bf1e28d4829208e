"""Command-line client: one encrypted prediction end to end, with every stage's time and size.

    .venv/bin/python -m lib.cli predict --mnist-index 0 [--idx-dir ../shared/data/mnist] [--repeat 3]
    .venv/bin/python -m lib.cli predict --image digit.png

Settings come from the environment (see lib/settings.py). Errors print their message and exit 2.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lib.digits import DigitInput
from lib.errors import DemoError, InvalidInput
from lib.formatting import format_bytes, format_factor, format_seconds
from lib.preprocess import load_image_file, to_mnist
from lib.schemes import DEFAULT_SCHEME, SCHEME_NAMES
from lib.session import EncryptedSession, Prediction
from lib.settings import AppSettings

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IDX_DIR = PROJECT_ROOT.parent / "shared" / "data" / "mnist"


def _mnist_digit(index: int, idx_dir: Path) -> tuple[np.ndarray, int]:
    """Test-set digit ``index`` as 784 floats in [0, 1], and its label."""
    from lib.mnist_data import load_idx_folder

    try:
        images, labels = load_idx_folder(idx_dir, split="t10k")
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"Could not read the MNIST test set from {idx_dir}: {exc}") from None
    if not 0 <= index < len(labels):
        raise InvalidInput(f"--mnist-index must be between 0 and {len(labels) - 1}, got {index}.")
    return np.asarray(images[index], dtype=np.float32).reshape(-1), int(labels[index])


def _print_prediction(number: int, count: int, prediction: Prediction) -> None:
    print(
        f"\nprediction {number}/{count}: {prediction.label}   total {format_seconds(prediction.total_s)}"
        f"   (server key cache: {prediction.key_cache})"
    )
    print("  scores: " + "  ".join(f"{digit}:{score:+.3f}" for digit, score in enumerate(prediction.scores)))
    print("  stages:")
    for stage in prediction.stages:
        print(f"    {stage.name:<22} {stage.source:<6} {format_seconds(stage.seconds):>10}")
    print(
        "  sizes: "
        + ", ".join(f"{name.removesuffix('_bytes')} {format_bytes(n)}" for name, n in prediction.sizes.items())
    )


def cmd_predict(args: argparse.Namespace) -> int:
    """Start a session, run ``--repeat`` predictions on one digit, delete the keys at the end."""
    if args.image is not None:
        pixels, truth = to_mnist(load_image_file(args.image)), None
        print(f"image: {args.image}")
    elif args.gallery_index is not None:
        digit = DigitInput.from_gallery(args.gallery_index)
        pixels, truth = digit.pixels, digit.true_label
        print(f"held-out gallery digit #{args.gallery_index} (real MNIST, never trained on), true label: {truth}")
    else:
        pixels, truth = _mnist_digit(args.mnist_index, Path(args.idx_dir))
        print(f"MNIST test digit #{args.mnist_index}, true label: {truth}")

    settings = AppSettings.load()
    print(f"storage: {settings.blob_endpoint}/{settings.blob_container}   service: {settings.scoring_url}")

    def progress(message: str, fraction: float) -> None:
        print(f"  [{fraction:4.0%}] {message}", file=sys.stderr)

    with EncryptedSession.start(settings, progress, scheme=args.scheme) as session:
        setup = session.setup_timings_s
        print(
            f"scheme {args.scheme}, key id {session.key_id}: public keys {format_bytes(session.key_bytes)}, "
            f"keygen {format_seconds(setup['keygen'])}, upload {format_seconds(setup['upload'])}"
        )
        totals: list[float] = []
        for number in range(1, args.repeat + 1):
            prediction = session.predict(pixels)
            totals.append(prediction.total_s)
            _print_prediction(number, args.repeat, prediction)
        if truth is not None:
            verdict = "correct" if prediction.label == truth else "WRONG"
            print(f"\ntrue label {truth}, predicted {prediction.label}: {verdict}")
        if len(totals) > 1:
            warm = statistics.median(totals[1:])
            print(
                f"cold {format_seconds(totals[0])}, warm median {format_seconds(warm)} "
                f"({format_factor(totals[0] / warm)})"
            )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lib.cli", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    predict = sub.add_parser("predict", help="encrypt a digit, score it remotely, decrypt the result")
    source = predict.add_mutually_exclusive_group(required=True)
    source.add_argument("--mnist-index", type=int, metavar="N", help="digit N of the MNIST test set")
    source.add_argument("--image", type=Path, metavar="PATH", help="an image file of a digit")
    source.add_argument(
        "--gallery-index", type=int, metavar="N", help="digit N of the app's held-out gallery (ships with the app)"
    )
    predict.add_argument(
        "--idx-dir",
        default=str(DEFAULT_IDX_DIR),
        metavar="DIR",
        help="MNIST IDX folder (default: %(default)s)",
    )
    predict.add_argument(
        "--repeat", type=int, default=1, metavar="K", help="predictions to run (cold, then warm)"
    )
    predict.add_argument(
        "--scheme", choices=SCHEME_NAMES, default=DEFAULT_SCHEME, help="encryption scheme (default: %(default)s)"
    )
    predict.set_defaults(func=cmd_predict)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "repeat", 1) < 1:
        print("error: --repeat must be at least 1", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except DemoError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
