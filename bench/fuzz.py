"""Fuzzing benchmark: generated inputs against every input surface, counted by outcome.

    OMP_NUM_THREADS=1 .venv/bin/python bench/fuzz.py --examples 10000
    OMP_NUM_THREADS=1 .venv/bin/python bench/fuzz.py --engine atheris --examples 2000 --targets audio config

Targets (tests/fuzz_targets.py, shared with the CI subset in tests/test_fuzz.py): audio decoding,
lhotse / NeMo / Kaldi manifests, trial lists, configs with overrides, HTTP uploads. --examples is
the total, split evenly. hypothesis generates structured inputs and mutations of valid ones;
atheris (pip install atheris) mutates raw bytes guided by coverage, one child process per target.
Prints a table and writes bench/out/fuzz.json: inputs, accepted, rejected with a clear error,
crashes (with the first few, for reproduction), and the slowest single input.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import fuzz_targets as ft  # noqa: E402

KEEP_CRASHES = 5  # per target, in the report
SLOW_S = 10.0  # one input taking longer than this counts as a hang


class Tally:
    def __init__(self, name: str):
        self.name, self.inputs, self.accepted, self.rejected = name, 0, 0, 0
        self.crashes, self.examples, self.slowest = 0, [], 0.0

    def run(self, target, item) -> None:
        start = time.perf_counter()
        try:
            outcome = target.check(item)
        except Exception as e:  # noqa: BLE001 - every other outcome is what we are counting
            outcome = None
            self.crashes += 1
            if len(self.examples) < KEEP_CRASHES:
                self.examples.append({"input": repr(item)[:400], "error": f"{type(e).__name__}: {e}"[:400],
                                      "where": traceback.format_exc().strip().splitlines()[-3:]})
        elapsed = time.perf_counter() - start
        self.slowest = max(self.slowest, elapsed)
        self.inputs += 1
        if outcome == ft.ACCEPTED:
            self.accepted += 1
        elif outcome == ft.REJECTED:
            self.rejected += 1
        if elapsed > SLOW_S and outcome is not None:
            self.crashes += 1
            self.examples.append({"input": repr(item)[:400], "error": f"took {elapsed:.1f} s"})

    def row(self) -> dict:
        return {"target": self.name, "inputs": self.inputs, "accepted": self.accepted, "rejected": self.rejected,
                "crashes": self.crashes, "slowest_s": round(self.slowest, 3), "crash_examples": self.examples}


def run_hypothesis(target, n: int, seed: int) -> Tally:
    from hypothesis import HealthCheck, Phase, given, seed as hseed, settings

    tally = Tally(target.name)

    @hseed(seed)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(target.strategy())
    def one(item):
        tally.run(target, item)

    one()
    return tally


def atheris_child(name: str, runs: int, workdir: str, out: str) -> None:
    """Runs inside its own process: atheris.Fuzz() never returns, so counts go to a file."""
    import atheris

    # Coverage for polyhead's own code only: instrumenting torch or lhotse takes minutes.
    with atheris.instrument_imports(include=["polyhead"]):
        import polyhead.audio  # noqa: F401
        import polyhead.config  # noqa: F401
        import polyhead.data.corpus  # noqa: F401
        import polyhead.data.readers  # noqa: F401
    target = next(t for t in ft.TARGETS if t.name == name)(Path(workdir))
    tally = Tally(name)

    def one(data: bytes) -> None:
        tally.run(target, target.from_bytes(data))
        if tally.inputs % 50 == 0 or tally.inputs >= runs:
            Path(out).write_text(json.dumps(tally.row()))

    corpus = Path(workdir) / f"seeds_{name}"
    corpus.mkdir(exist_ok=True)
    for i, seed in enumerate(SEEDS.get(name, [])):
        (corpus / f"seed{i}").write_bytes(seed)
    atheris.Setup([sys.argv[0], f"-runs={runs}", "-max_len=4096", "-seed=1", str(corpus)], one)
    atheris.Fuzz()


def _seeds() -> dict[str, list[bytes]]:
    """Valid inputs for atheris to start mutating from."""
    from polyhead.config import CONFIG_DIR

    wav = ft.sine_wav(0.3)
    return {
        "audio": [wav, ft.sine_wav(0.3, 44100, channels=2), ft.sine_wav(0.3, fmt="FLAC")],
        "trials": [b"1 a b\n0 a c\n", b"a b target\nb c nontarget\n"],
        "config": [(CONFIG_DIR / "scratch.yaml").read_bytes() + b"\x00train.lr=3e-4"],
        "nemo": [b'{"audio_filepath": "a.wav", "duration": 1.0, "text": "hi"}\n'],
        "kaldi": [b"utt1 a.wav\x00\x00utt1 hello\x00utt1 s1"],
        "http": [wav],
    }


SEEDS: dict[str, list[bytes]] = {}


def run_atheris(target_cls, n: int, workdir: Path) -> Tally:
    out = workdir / f"atheris_{target_cls.name}.json"
    cmd = [sys.executable, __file__, "--atheris-child", target_cls.name, "--examples", str(n),
           "--workdir", str(workdir), "--child-out", str(out)]
    subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tally = Tally(target_cls.name)
    if out.is_file():
        tally.__dict__.update({k: v for k, v in json.loads(out.read_text()).items() if k != "target"})
        tally.examples = tally.__dict__.pop("crash_examples", [])
        tally.slowest = tally.__dict__.pop("slowest_s", 0.0)
    else:  # the child died before reporting: that is a crash of its own
        tally.crashes, tally.examples = 1, [{"error": "atheris child died before reporting"}]
    return tally


@contextlib.contextmanager
def _quiet_native_stderr():
    """libmpg123 and libsndfile print a warning for most damaged files straight to fd 2:
    thousands of lines that bury the table. Python's own errors are counted, not printed."""
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=10_000, help="generated inputs in total")
    parser.add_argument("--targets", nargs="*", default=[t.name for t in ft.TARGETS])
    parser.add_argument("--engine", choices=["hypothesis", "atheris"], default="hypothesis")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "fuzz.json"))
    parser.add_argument("--atheris-child", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.atheris_child:
        SEEDS.update(_seeds())
        atheris_child(args.atheris_child, args.examples, args.workdir, args.child_out)
        return

    import logging

    logging.disable(logging.WARNING)  # readers warn about every skipped entry: millions of lines
    targets = [t for t in ft.TARGETS if t.name in args.targets]
    per_target = -(-args.examples // len(targets))
    rows, start = [], time.time()
    with tempfile.TemporaryDirectory() as tmp, _quiet_native_stderr():
        for target_cls in targets:
            t0 = time.time()
            if args.engine == "atheris":
                tally = run_atheris(target_cls, per_target, Path(tmp))
            else:
                tally = run_hypothesis(target_cls(Path(tmp)), per_target, args.seed)
            row = tally.row() | {"seconds": round(time.time() - t0, 1)}
            rows.append(row)
            print(f"{row['target']:8s} {row['inputs']:7d} inputs {row['accepted']:6d} accepted "
                  f"{row['rejected']:6d} rejected {row['crashes']:4d} crashes  {row['seconds']:7.1f} s", flush=True)
    total = {k: sum(r[k] for r in rows) for k in ("inputs", "accepted", "rejected", "crashes")}
    report = {"engine": args.engine, "seed": args.seed, "wall_s": round(time.time() - start, 1),
              "threads": os.environ.get("OMP_NUM_THREADS"), "total": total, "targets": rows}
    table = ["| target | inputs | accepted | rejected (clear error) | crashes | slowest input (s) |",
             "|---|---:|---:|---:|---:|---:|"]
    table += [f"| {r['target']} | {r['inputs']} | {r['accepted']} | {r['rejected']} | {r['crashes']} | "
              f"{r['slowest_s']} |" for r in rows]
    table.append(f"| **all** | {total['inputs']} | {total['accepted']} | {total['rejected']} | "
                 f"{total['crashes']} | |")
    print("\n".join(table))
    print(f"wall time {report['wall_s']} s")
    for r in rows:
        for ex in r["crash_examples"]:
            print(f"CRASH {r['target']}: {ex['error']}\n    input: {ex.get('input', '')[:200]}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
