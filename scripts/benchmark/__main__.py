"""``python -m scripts.benchmark``: options, the local stack, the run, the report and the charts."""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from scripts.benchmark import __doc__ as overview
from scripts.benchmark.mixed import (
    DEFAULT_PREDICTIONS,
    DEFAULT_REPLICAS,
    DEFAULT_SESSIONS,
    parse_replicas,
    parse_sessions,
)
from scripts.benchmark.results import AGREEMENT_DIGITS, WORKERS, Digits, Measured
from scripts.benchmark.stoppable import run_stoppable
from scripts.benchmark.targets import AGREEMENT_SCHEMES
from service.shared.model_files import MODEL_DIR

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FIGURES = ROOT / "artifacts" / "benchmark"


def parse_schemes(text: str, known: Sequence[str]) -> list[str]:
    """'ei,ckks' -> ['ei', 'ckks'] in the given order, without repeats; unknown names raise ValueError."""
    names: list[str] = []
    for raw in text.split(","):
        name = raw.strip().lower()
        if not name:
            continue
        if name not in known:
            raise ValueError(f"unknown scheme {name!r}; known: {', '.join(known)}")
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("no scheme given")
    return names


def build_parser(known: Sequence[str]) -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.benchmark", description=(overview or "").split("\n\n")[0].replace("``", "")
    )
    parser.add_argument(
        "--schemes",
        default=",".join(known),
        help=f"comma-separated schemes to measure (default {','.join(known)})",
    )
    parser.add_argument("--warm", type=int, default=5, help="warm repetitions per path (default 5)")
    parser.add_argument(
        "--skip-reference",
        action="store_true",
        help="do not run the seed's EIServer.predict (about 20 s); no ratios then",
    )
    parser.add_argument(
        "--reference-runs", type=int, default=1, help="EIServer.predict runs (about 20 s each)"
    )
    parser.add_argument(
        "--throughput-seconds",
        type=float,
        default=5.0,
        help="length of each scheme's throughput window, after warm-up; 0 skips it (default 5)",
    )
    parser.add_argument(
        "--throughput-clients",
        type=int,
        default=8,
        help="concurrent HTTP clients for the throughput (default 8)",
    )
    parser.add_argument(
        "--accuracy-digits",
        type=int,
        default=10,
        help=f"real MNIST test digits sent over HTTP per scheme (default 10; {AGREEMENT_DIGITS} for a scheme "
        "with an agreement target)",
    )
    figures = parser.add_mutually_exclusive_group()
    figures.add_argument(
        "--figures",
        type=Path,
        default=DEFAULT_FIGURES,
        metavar="DIR",
        help="folder for the PNG and SVG charts (default artifacts/benchmark/)",
    )
    figures.add_argument("--no-figures", action="store_true", help="do not write the charts")
    mixed = parser.add_argument_group(
        "mixed load",
        "--mixed runs only the mixed load of issue 10 instead: concurrent sessions of every scheme, each "
        "its own key pair in its own process, on one replica (the plain service) and on the local twin",
    )
    mixed.add_argument("--mixed", action="store_true", help="run the mixed-load benchmark instead")
    mixed.add_argument(
        "--replicas",
        default=",".join(str(n) for n in DEFAULT_REPLICAS),
        help="topologies, comma-separated: 1 = the plain service, N >= 2 = N replicas behind nginx (default 1,2)",
    )
    mixed.add_argument(
        "--sessions",
        default=",".join(f"{name}={count}" for name, count in DEFAULT_SESSIONS.items()),
        help="concurrent sessions per scheme (default bfv=6,ckks=6,ei=4)",
    )
    mixed.add_argument(
        "--predictions",
        type=int,
        default=DEFAULT_PREDICTIONS,
        help=f"timed predictions per session, back to back (default {DEFAULT_PREDICTIONS})",
    )
    mixed.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="at most this many untimed warm-up requests per session; each stops early once its key is "
        "in every worker's cache (default: 3 per gunicorn worker behind the URL)",
    )
    mixed.add_argument(
        "--samples",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write every request's figures (times, status, server timings) as JSON to FILE",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Options, checked; ``--schemes`` becomes a list."""
    from lib.schemes import SCHEME_NAMES

    parser = build_parser(SCHEME_NAMES)
    args = parser.parse_args(argv)
    try:
        args.schemes = parse_schemes(args.schemes, SCHEME_NAMES)
    except ValueError as exc:
        parser.error(str(exc))
    if min(args.warm, args.reference_runs, args.throughput_clients, args.accuracy_digits) < 1:
        parser.error("--warm, --reference-runs, --throughput-clients and --accuracy-digits must be >= 1")
    try:
        args.replicas = parse_replicas(args.replicas)
        args.sessions = parse_sessions(args.sessions, SCHEME_NAMES)
    except ValueError as exc:
        parser.error(str(exc))
    if args.predictions < 1 or (args.warmup is not None and args.warmup < 0):
        parser.error("--predictions must be >= 1 and --warmup >= 0")
    return args


def run(args: argparse.Namespace) -> int:
    """Start the stack, measure every scheme (and the reference), print the report, write the charts."""
    from lib.blob_store import PublicKeyStore
    from lib.reference import load_reference_model
    from lib.settings import AppSettings
    from scripts.benchmark.cpu import CpuMeter
    from scripts.benchmark.measure import Bench, load_digits
    from scripts.benchmark.report import render
    from scripts.local_stack import LocalStack, free_port
    from service.scoring import ScoringService, load_model
    from service.settings import ServiceSettings
    from service.shared.network_model import load_network

    coef, intercept = load_model(MODEL_DIR)
    agreement = AGREEMENT_SCHEMES.intersection(args.schemes)
    count = max(args.accuracy_digits, AGREEMENT_DIGITS if agreement else 0)
    whole = load_digits(10_000)  # read once: the first digits go over HTTP, all of them set plaintext accuracy
    test_set = whole if whole.source == "MNIST test set" else None
    digits = Digits(whole.images[:count], whole.labels[:count], whole.source) if test_set is not None else load_digits(count)
    results: dict[str, Measured] = {}
    reference: Measured | None = None

    with contextlib.ExitStack() as cleanup:
        stack_dir = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="benchmark-"))
        azurite_port = free_port()
        env = dict(os.environ, ALLOWED_BLOB_HOSTS=f"127.0.0.1:{azurite_port}")
        print(f"starting Azurite and the scoring service ({WORKERS} workers) on free ports ...", flush=True)
        stack = LocalStack(
            azurite_port=azurite_port,
            scoring_port=free_port(),
            workers=WORKERS,
            stack_dir=Path(stack_dir),
            env=env,
        )
        cleanup.callback(stack.stop)  # registered before start: a Ctrl-C while starting stops it too
        stack.start()
        settings = AppSettings(blob_connection_string=stack.connection_string, scoring_url=stack.scoring_url)
        store = PublicKeyStore(settings.blob_connection_string, settings.blob_container)
        store.ensure_container()

        os.environ["ALLOWED_BLOB_HOSTS"] = env["ALLOWED_BLOB_HOSTS"]  # for the in-process service
        service = ScoringService(coef, intercept, ServiceSettings.from_env(), network=load_network(MODEL_DIR))
        cleanup.callback(service.close)
        service.wait_ready()

        meter = CpuMeter(proc.pid for proc in (stack.azurite_proc, stack.scoring_proc) if proc is not None)
        run_start = meter.snapshot()
        bench = Bench(
            settings=settings,
            store=store,
            service=service,
            model=load_reference_model(),
            digits=digits,
            meter=meter,
            warm=args.warm,
            throughput_seconds=args.throughput_seconds,
            throughput_clients=args.throughput_clients,
            reference_runs=args.reference_runs,
            accuracy_digits=args.accuracy_digits,
            test_set=test_set,
        )
        for name in args.schemes:
            results[name] = bench.scheme(name)
        if not args.skip_reference:
            reference = bench.reference(coef, intercept)
        other_cpu = meter.other_share(run_start)
        print("stopping the local stack ...", flush=True)

    print(
        render(
            results,
            reference,
            digits,
            warm=args.warm,
            clients=args.throughput_clients,
            reference_runs=args.reference_runs,
            other_cpu=other_cpu,
        )
    )
    if not args.no_figures:
        from scripts.benchmark.figures import write_figures

        paths = write_figures(args.figures, reference, list(results.values()))
        print(f"\ncharts: {', '.join(str(path) for path in paths)}")
    return 0


def run_mixed(args: argparse.Namespace) -> int:
    """The mixed load on each topology in turn (each its own stack), then the report; 1 if a target failed."""
    from lib.reference import load_reference_model
    from scripts.benchmark.measure import load_digits
    from scripts.benchmark.mixed_run import default_warmup, run_topology
    from scripts.benchmark.report import mixed_report
    from scripts.benchmark.targets import all_met, evaluate_load

    most_warmups = max(default_warmup(n) if args.warmup is None else args.warmup for n in args.replicas)
    digits = load_digits(sum(args.sessions.values()) * (most_warmups + args.predictions))
    print(f"mixed load on {digits.images.shape[0]} digits of the {digits.source}", flush=True)
    model = load_reference_model()
    topologies = [
        run_topology(replicas, args.sessions, args.predictions, args.warmup, digits, model)
        for replicas in args.replicas
    ]
    print(mixed_report(topologies))
    if args.samples is not None:
        from scripts.benchmark.mixed import samples_json

        args.samples.parent.mkdir(parents=True, exist_ok=True)
        args.samples.write_text(samples_json(topologies), encoding="utf-8")
        print(f"\nsamples: {args.samples}")
    ran = [t for t in topologies if not t.skipped]
    return 0 if ran and all(all_met(evaluate_load(t.loads)) for t in ran) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options and run, stopping everything started on Ctrl-C, SIGTERM or SIGHUP."""
    args = parse_args(argv)
    return run_stoppable(lambda: run_mixed(args) if args.mixed else run(args))


if __name__ == "__main__":
    raise SystemExit(main())
