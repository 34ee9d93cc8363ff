"""Crash matrix for training (issue 25): kill -9 at every write of a checkpoint save, resume.

    OMP_NUM_THREADS=1 .venv/bin/python bench/crash_matrix.py --quick --jobs 2   # 5 seeded runs, ~2 min
    OMP_NUM_THREADS=1 .venv/bin/python bench/crash_matrix.py --jobs 2           # 50 seeded runs

For each seed: the tests' tiny corpus (``synthesize(..., "tiny", seed=0)``, as the
``tiny_corpus`` fixture; built once into bench/out/crash_matrix_corpus, or ``--corpus``) and
the kill -9 test's tiny two-task config (tests/test_crash.py: conformer dim 32, CTC + speaker,
disjoint steps, dynamic weighting, dropout 0.1), ``train.seed`` = the seed, a checkpoint save
at every step (``train.eval_every=1``; ``--steps``, 48), and a dev score that goes up and down:
the trainer's ``evaluate_dev`` is patched in the training process to return a seeded sequence
(about 45% of the evaluations improve on the best, some tie it exactly, the rest are worse), so
both kinds of save happen: ``last/`` alone, and ``last/`` then ``best/``.

1. A reference run, never interrupted, records every filesystem operation of each
   ``Trainer.save()`` (``shutil.rmtree`` of a folder that exists, ``Path.mkdir`` of one that
   does not, ``Path.write_text``, ``Path.rename``, ``Path.replace``, ``torch.save``, safetensors'
   ``save_file``; fsyncs are not counted: a SIGKILL does not drop the page cache, so a kill just
   before or after one leaves the same files) and keeps the model of every step.
   That gives the kill points: "before <operation>" for every operation of the run's first save
   (no checkpoint yet: kind ``first``), of a save that did not improve (``plain``) and of one
   that did (``improving``), "after save" for each kind, and the operations of the repair
   resume makes when ``last/`` holds the best and ``best/`` does not (``checkpoint.repair_best``
   writing ``best/``: kind ``repair``, and "after repair").
2. One chain of ``polyhead train --resume`` processes per seed in one run folder: each process
   is armed with the next kill point in turn and SIGKILLs itself there (``os.kill(getpid(),
   SIGKILL)`` from a wrapper around those functions: src/ is untouched), at the first save of
   the right kind; the next process resumes. After the last point a process resumes to the
   end. Points that cannot come in that chain get a branch each, killed there, then resumed and
   killed after the next save: the first save's points after its ``last/`` is in place (a run
   has one first save: a fresh folder each) and the repair's points (a copy of the chain's
   folder as the kill before ``mkdir best.tmp`` of an improving save left it).
3. After every kill, read-only: the checkpoint resume will take (``find_resumable``) is the
   last one completed before the kill or the one being written, never older, and its weights
   are the reference's of its step (``torch.equal``, via the files' sha256 first); its
   ``best_step`` is the step with the lowest score so far and its ``best`` that score;
   ``best/``, or ``best.old``, or the checkpoint itself holds that step's weights (what
   ``repair_best`` will restore from: "ok", "from best.old", "from last"; none of them: "best
   lost"). The next process must start at that step and its ``repair_best`` must answer what
   was predicted; a resume that exits without reaching its kill point is retried at most twice,
   then the seed stops ("resume loops").
4. At the end: ``train_summary.json`` says all steps and ``best_criterion`` = the lowest
   score; ``best/checkpoint.json`` = {step of the first lowest score, that score};
   ``best/``'s weights = the reference's model of that step; ``last/``'s = the reference's
   last; the evaluation history = the reference's; no ``*.tmp`` or ``*.old`` left.
5. Damaged corpus, per seed: a copy of the corpus with 1% of the train sets' audio files
   overwritten with random bytes (at least one: 1 of the tiny corpus's 60) and one line of
   speech_train's manifest cut short, ``train.lazy_manifests=true``, killed after a save
   mid-run and resumed to the end: it must finish, and ``train_summary.json`` must count the
   malformed line (``malformed_manifest_lines`` = 1). Its ``skipped_batches`` and the
   unreadable utterances the log names ("skipping unusable audio") are reported side by side;
   that the summary does not count those utterances is reported as a gap, not a failure.

Training processes are forked from this process after polyhead and torch are imported
(``--spawn fork``, the default: a start costs about 0.1 s instead of 5-7 s of imports);
``--spawn exec`` runs each as ``python bench/crash_matrix.py --child SPEC`` instead, the same
code in a fresh interpreter. Either way it is ``polyhead.cli.main(["train", ..., "--resume"])``
in a process of its own, killed by SIGKILL. The processes after a seed's reference run take
the features it computed (the same arrays: fbank, no dither) instead of decoding the audio
again (``--no-shared-features``: they decode it). ``--jobs`` runs seeds side by side.

``--break-on-purpose no-repair|delete-first`` checks the checks: the training processes resume
without ``repair_best``, or write checkpoints deleting the old folder before the new one is
renamed in; the matrix must then fail (tests/test_crash_matrix.py). ``--points REGEX`` arms
only the matching kill points.

Prints the matrix (kill point x outcome counts) and writes bench/out/crash_matrix.json. Exit
status 1 on any failure.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import gzip  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import pickle  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
AFTER = "after save"
AFTER_REPAIR = "after repair"
KINDS = ("first", "plain", "improving")
REPAIR_FROM = ("improving", "before mkdir best.tmp")  # the kill whose folder the repair points start from
PROCESS_TIMEOUT_S = 300.0
RESUME_RETRIES = 2


# --- the training process ---------------------------------------------------------------------

def child_main(spec: dict) -> int:
    """One ``polyhead train --resume`` in this process, with the save operations watched.

    spec: argv, run (the run folder), report (JSON lines: start, save, kill events), scores
    ({step: score} for the patched evaluate_dev), first_eval (the step of the run's first
    save), target (None, or {kind: first|plain|improving|any, label, min_step}), keep_weights
    (a folder: every save's last/model.safetensors copied there as <step>.safetensors),
    record_saves (emit each save's operations)."""
    import torch
    from safetensors import torch as st_torch  # noqa: F401 - imported before multitask binds save_file

    import polyhead.model.multitask as multitask
    import polyhead.training.checkpoint as ckpt
    import polyhead.training.trainer as trainer_module
    from polyhead.cli import main

    torch.set_num_threads(1)
    run = Path(spec["run"]).resolve()
    target = spec.get("target")
    first_eval = spec["first_eval"]
    scores = {int(k): v for k, v in spec["scores"].items()}
    report = open(spec["report"], "a", buffering=1)

    def emit(**rec) -> None:
        report.write(json.dumps(rec) + "\n")
        report.flush()

    Trainer = trainer_module.Trainer
    Trainer.evaluate_dev = lambda self: {"dev": {"asr": {"wer": scores[self.step]}}}
    trainer_module.criterion = lambda dev, weights: dev["dev"]["asr"]["wer"]

    current: dict = {"save": None, "depth": 0, "repair": None}

    def rel(p) -> str:
        try:
            return os.path.relpath(Path(p).resolve(), run)
        except ValueError:
            return str(p)

    def maybe_kill(ctx: dict, label: str) -> None:
        if (target and target["label"] == label and target["kind"] in (ctx["kind"], "any")
                and ctx["step"] >= target.get("min_step", 0)):
            emit(event="kill", kind=ctx["kind"], label=label, step=ctx["step"], ops=ctx["ops"])
            report.close()
            os.kill(os.getpid(), signal.SIGKILL)

    def watched(real, label_of):
        def wrapper(*args, **kwargs):
            ctx = current["save"]
            label = label_of(*args, **kwargs) if ctx is not None and not current["depth"] else None
            if label is None:  # outside save(), nested in a watched call, or a no-op
                return real(*args, **kwargs)
            ctx["ops"].append(label)
            maybe_kill(ctx, "before " + label)
            current["depth"] += 1
            try:
                return real(*args, **kwargs)
            finally:
                current["depth"] -= 1
        return wrapper

    P = Path
    shutil.rmtree = watched(shutil.rmtree, lambda path, *a, **k: f"rmtree {rel(path)}" if P(path).exists() else None)
    P.mkdir = watched(P.mkdir, lambda self, *a, **k: None if self.exists() else f"mkdir {rel(self)}")
    P.write_text = watched(P.write_text, lambda self, *a, **k: f"write {rel(self)}")
    P.rename = watched(P.rename, lambda self, t, *a, **k: f"rename {rel(self)} -> {rel(t)}")
    P.replace = watched(P.replace, lambda self, t, *a, **k: f"replace {rel(self)} -> {rel(t)}")
    torch.save = watched(torch.save, lambda obj, f, *a, **k: f"torch.save {rel(f)}")
    multitask.save_file = watched(multitask.save_file, lambda tensors, f, *a, **k: f"save_file {rel(f)}")

    # --break-on-purpose no-repair: resume leaves best/ as it finds it
    real_repair = (lambda run_dir, resumed, model: "ok") if spec.get("break") == "no-repair" else ckpt.repair_best

    def repair_best(run_dir, resumed, model):
        """resume's repair of best/ (it writes best/ when last/ holds the best): its operations
        are kill points too (kind "repair")."""
        ctx = current["save"] = {"kind": "repair", "step": ckpt.read_state(resumed)["step"], "ops": []}
        try:
            current["repair"] = real_repair(run_dir, resumed, model)
        finally:
            current["save"] = None
        maybe_kill(ctx, AFTER_REPAIR)
        return current["repair"]

    ckpt.repair_best = repair_best

    real_save, real_fit = Trainer.save, Trainer.fit

    def save(self, best: bool = False) -> None:
        kind = "first" if self.step == first_eval else ("improving" if best else "plain")
        ctx = current["save"] = {"kind": kind, "step": self.step, "ops": []}
        try:
            real_save(self, best)
        finally:
            current["save"] = None
        emit(event="save", kind=kind, step=self.step, best=best, **({"ops": ctx["ops"]} if spec.get("record_saves") else {}))
        if spec.get("keep_weights"):
            shutil.copyfile(run / "last" / "model.safetensors", Path(spec["keep_weights"]) / f"{self.step}.safetensors")
        maybe_kill(ctx, AFTER)

    def fit(self):
        emit(event="start", step=self.step, repair=current["repair"])
        try:
            return real_fit(self)
        finally:
            if spec.get("dump_features"):  # the reference run: its features, for the processes after it
                with open(spec["dump_features"], "wb") as f:
                    pickle.dump(dict(self.cache.store), f)

    if spec.get("features"):  # what the reference run computed: the same arrays (fbank, no dither)
        from polyhead.data import batching as data_module

        with open(spec["features"], "rb") as f:
            known = pickle.load(f)
        real_get = data_module.FeatureCache.get
        data_module.FeatureCache.get = lambda self, cut: known[cut.id] if cut.id in known else real_get(self, cut)

    Trainer.save, Trainer.fit = save, fit
    if spec.get("break") == "delete-first":  # the old checkpoint removed before the new one is renamed in
        def write_checkpoint(folder, model, state=None, meta=None):
            folder = Path(folder)
            tmp = folder.with_name(folder.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            model.save(tmp)
            if state is not None:
                torch.save(state, tmp / ckpt.STATE_FILE)
            if meta is not None:
                (tmp / ckpt.META_FILE).write_text(json.dumps(meta) + "\n")
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)

        ckpt.write_checkpoint = write_checkpoint
    rc = main(spec["argv"])
    emit(event="end", rc=rc)
    return rc


def spawn(spec: dict, log_path: Path, mode: str, timeout: float = PROCESS_TIMEOUT_S) -> tuple[int | str, float]:
    """Run one training process; its exit code (-9: SIGKILL) or "timeout", and its seconds."""
    start = time.monotonic()
    if mode == "exec":
        spec_path = log_path.with_suffix(".spec.json")
        spec_path.write_text(json.dumps(spec))
        with open(log_path, "wb") as err:
            proc = subprocess.Popen([sys.executable, __file__, "--child", str(spec_path)],
                                    stdout=subprocess.DEVNULL, stderr=err,
                                    env=dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"))
            try:
                return proc.wait(timeout=timeout), time.monotonic() - start
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                return "timeout", time.monotonic() - start
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the training process
        rc = 70
        try:
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 2)
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            rc = child_main(spec)
        except BaseException:  # noqa: BLE001 - whatever happens, this process must not return into the parent's code
            traceback.print_exc()
        finally:
            try:
                sys.stderr.flush()
            finally:
                os._exit(rc if isinstance(rc, int) else 70)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), time.monotonic() - start
        if time.monotonic() - start > timeout:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout", time.monotonic() - start
        time.sleep(0.01)


def events(report: Path, since: int = 0) -> list[dict]:
    if not report.is_file():
        return []
    out = []
    for line in report.read_text().splitlines()[since:]:
        try:
            out.append(json.loads(line))
        except ValueError:
            out.append({"event": "garbled"})
    return out


# --- set-up -----------------------------------------------------------------------------------

def tiny_corpus(path: Path | None) -> Path:
    """The tests' tiny corpus (the ``tiny_corpus`` fixture: preset tiny, seed 0), built once."""
    folder = path or OUT / "crash_matrix_corpus"
    if (folder / "manifests").is_dir():
        return folder
    if path is not None:
        raise SystemExit(f"{path}: not a corpus folder")
    from polyhead.data.synth.build import synthesize

    building = folder.with_name(folder.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    print(f"synthesising the tiny corpus into {folder} ...", flush=True)
    synthesize(building, "tiny", seed=0, workers=2, progress=False)
    building.rename(folder)
    return folder


def write_config(path: Path, corpus: Path, seed: int, steps: int, eval_every: int, **train) -> Path:
    """tests/test_crash.py's tiny two-task config, with a seed and a save at every evaluation."""
    path.write_text(yaml.safe_dump(dict(
        corpus=str(corpus),
        encoder=dict(name="conformer", dim=32, layers=2, heads=2, ff_mult=2, dropout=0.1),
        tasks=dict(asr=dict(head=dict(type="ctc"), target="text", train_sets=["speech_train"]),
                   speaker=dict(head=dict(type="speaker", options=dict(pooling="mean", emb_dim=16)),
                                target="speaker", train_sets=["speaker_train"], crop=1.0)),
        train=dict(dict(step="disjoint", steps=steps, lr=1e-3, max_duration=8.0, eval_every=eval_every,
                        log_every=1, seed=seed, time_budget_s=None, weighting=dict(name="dynamic")), **train))))
    return path


def make_scores(seed: int, steps: int) -> dict[int, float]:
    """A dev score per step that goes up and down: ~45% improve on the best so far, ~7% tie
    it exactly (not an improvement: best/ must keep the earlier step), the rest are worse."""
    rng = random.Random(f"scores-{seed}")
    scores, best = {}, None
    for step in range(1, steps + 1):
        u = rng.random()
        if best is None:
            s = round(rng.uniform(0.6, 0.9), 4)
        elif u < 0.45:
            s = round(max(0.0001, best - rng.uniform(0.001, 0.03)), 4)
        elif u < 0.52:
            s = best
        else:
            s = round(best + rng.uniform(0.001, 0.3), 4)
        scores[step] = s
        best = s if best is None else min(best, s)
    return scores


def best_so_far(scores: dict[int, float], upto: int) -> int:
    """The step whose model best/ must hold after the save of step ``upto``: the first lowest."""
    steps = [s for s in sorted(scores) if s <= upto]
    return min(steps, key=lambda s: (scores[s], s))


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def same_weights(path: Path, ref: Path) -> bool:
    """torch.equal on every tensor (equal files first: the quick answer)."""
    if not Path(path).is_file():
        return False
    if sha(path) == sha(ref):
        return True
    import torch
    from safetensors.torch import load_file

    a, b = load_file(str(path)), load_file(str(ref))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- checks -----------------------------------------------------------------------------------

def read_meta(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "checkpoint.json").read_text())
    except (OSError, ValueError):
        return None


def inspect(run: Path, scores: dict, ref_weights: Path, committed: int | None, in_flight: int) -> dict:
    """What a kill left, read-only: where resume will start, what repair_best will do, and
    every way it is wrong (``failures``). ``committed``: the step of the last save completed
    before the kill (None: none yet); ``in_flight``: the step of the save the kill hit."""
    from polyhead.training import checkpoint as ckpt

    failures = []
    found = ckpt.find_resumable(run)
    if found is None:
        if committed is not None:
            failures.append(f"checkpoint lost: step {committed} was in place, nothing resumable now")
        return {"resume": "scratch", "step": 0, "repair": None, "failures": failures}
    state = ckpt.read_state(found)
    step = state["step"]
    where = "" if found.name == "last" else f"@{found.name}"
    if step == in_flight and step != committed:
        resume = "new" + where
    elif step == committed:
        resume = "previous" + where
    else:
        resume = f"step {step}" + where
        failures.append(f"resumes at step {step}: neither the previous checkpoint ({committed}) nor the one "
                        f"being written ({in_flight})")
    if not same_weights(found / "model.safetensors", ref_weights / f"{step}.safetensors"):
        failures.append(f"{found.name}/ weights differ from the reference's step {step}")
    want, expect = state.get("best_step"), best_so_far(scores, step)
    if want != expect:
        failures.append(f"{found.name} names step {want} as best, the lowest score up to {step} is step {expect}'s")
    if state["best"] != scores[expect]:
        failures.append(f"{found.name} says best {state['best']}, the lowest score is {scores[expect]}")
    best, old = run / "best", run / "best.old"
    if (read_meta(best) or {}).get("step") == want and (best / "model.safetensors").is_file():
        repair, holder = "ok", best
    elif (read_meta(old) or {}).get("step") == want and (old / "model.safetensors").is_file():
        repair, holder = "from best.old", old
    elif step == want:
        repair, holder = "from last", found
    else:
        repair, holder = "best lost", None
        failures.append(f"nothing holds step {want}'s model (best/ says {read_meta(best)})")
    if holder is not None:
        if not same_weights(holder / "model.safetensors", ref_weights / f"{want}.safetensors"):
            failures.append(f"{holder.name}/ does not hold step {want}'s weights")
        if holder is not found and (read_meta(holder) or {}).get("criterion") != scores[want]:
            failures.append(f"{holder.name}/checkpoint.json says {read_meta(holder)}, step {want} scored {scores[want]}")
    return {"resume": resume, "step": step, "repair": repair, "failures": failures}


def final_checks(run: Path, ref_run: Path, ref_weights: Path, scores: dict, steps: int) -> list[str]:
    failures = []
    summary = json.loads((run / "train_summary.json").read_text())
    reference = json.loads((ref_run / "train_summary.json").read_text())
    want = best_so_far(scores, steps)
    if summary["steps"] != steps or summary["stopped"] != "steps":
        failures.append(f"summary: {summary['steps']} steps, stopped {summary['stopped']!r}")
    if summary["best_criterion"] != scores[want]:
        failures.append(f"summary best_criterion {summary['best_criterion']}, lowest score {scores[want]}")
    if read_meta(run / "best") != {"step": want, "criterion": scores[want]}:
        failures.append(f"best/checkpoint.json {read_meta(run / 'best')}, want step {want} criterion {scores[want]}")
    if not same_weights(run / "best" / "model.safetensors", ref_weights / f"{want}.safetensors"):
        failures.append(f"best/ does not hold step {want}'s weights")
    if not same_weights(run / "best" / "model.safetensors", ref_run / "best" / "model.safetensors"):
        failures.append("best/ differs from the uninterrupted run's best/")
    if not same_weights(run / "last" / "model.safetensors", ref_run / "last" / "model.safetensors"):
        failures.append("last/ differs from the uninterrupted run's last/")
    if summary["history"] != reference["history"]:
        failures.append("evaluation history differs from the uninterrupted run's")
    left = sorted(p.name for p in run.iterdir() if p.name.endswith((".tmp", ".old")))
    if left:
        failures.append(f"left over: {left}")
    return failures


# --- one seed ---------------------------------------------------------------------------------

class Seed:
    def __init__(self, args, corpus: Path, seed: int, work: Path):
        self.args, self.seed, self.work = args, seed, work
        self.dir = work / f"seed{seed}"
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.config = write_config(self.dir / "config.yaml", corpus, seed, args.steps, 1)
        self.scores = make_scores(seed, args.steps)
        self.ref_weights = self.dir / "ref_weights"
        self.ref_weights.mkdir()
        self.processes, self.seconds = 0, 0.0
        self.outcomes: list[dict] = []  # per kill: point, outcome, failures
        self.failures: list[str] = []
        self.n = 0
        self.features = None  # set once the reference run has computed them

    def spec(self, run: Path, target: dict | None, **kw) -> dict:
        return dict(argv=["train", "--config", str(self.config), "--run", str(run), "--resume"], run=str(run),
                    report=str(self.dir / "report.jsonl"), scores=self.scores, first_eval=1, target=target,
                    features=self.features, **{"break": self.args.break_on_purpose}, **kw)

    def process(self, run: Path, target: dict | None, **kw) -> tuple[int | str, list[dict], Path]:
        self.n += 1
        log = self.dir / f"p{self.n:03d}.log"
        before = len(events(self.dir / "report.jsonl"))
        rc, seconds = spawn(self.spec(run, target, **kw), log, self.args.spawn)
        self.processes += 1
        self.seconds += seconds
        return rc, events(self.dir / "report.jsonl", before), log

    def reference(self) -> dict[str, list[str]]:
        """The uninterrupted run: its models per step and the operations of each kind of save."""
        self.ref_run = self.dir / "reference"
        rc, evs, log = self.process(self.ref_run, None, record_saves=True, keep_weights=str(self.ref_weights),
                                    dump_features=str(self.dir / "features.pkl"))
        if self.args.shared_features:
            self.features = str(self.dir / "features.pkl")
        if rc != 0:
            raise RuntimeError(f"seed {self.seed}: the reference run failed (rc {rc}): {log.read_text()[-3000:]}")
        templates: dict[str, list[str]] = {}
        for e in evs:
            if e["event"] == "save":
                if e["kind"] not in templates:
                    templates[e["kind"]] = e["ops"]
                elif templates[e["kind"]] != e["ops"]:
                    self.failures.append(f"reference: two {e['kind']} saves with different operations: "
                                         f"{templates[e['kind']]} / {e['ops']}")
        missing = [k for k in KINDS if k not in templates]
        if missing:
            raise RuntimeError(f"seed {self.seed}: the reference run had no {missing} save; more steps needed")
        return templates

    def kill_and_check(self, run: Path, point: tuple[str, str], committed: int | None) -> tuple[str, dict]:
        """One process armed with ``point``: "killed" (with what the kill left, from
        ``inspect``), "finished" (the run ended before the point came), or "failed". The
        returned dict always holds the process's ``events``, ``rc`` and ``log``."""
        kind, label = point
        rc, evs, log = self.process(run, {"kind": kind, "label": label})
        kill = next((e for e in evs if e["event"] == "kill"), None)
        proc = {"rc": rc, "log": log, "events": evs}
        if rc == 0 and kill is None:
            return "finished", proc
        if rc != -signal.SIGKILL or kill is None:
            return "failed", proc
        # the checkpoint in place before the save in flight: this process's last save, else the one it resumed from
        saved = [e["step"] for e in evs if e["event"] == "save" and e["step"] != kill["step"]]
        found = inspect(run, self.scores, self.ref_weights, saved[-1] if saved else committed, kill["step"])
        return "killed", dict(found, kill_step=kill["step"], **proc)

    def resumed(self, run: Path, expect: dict, point: tuple[str, str] | None, committed: int | None):
        """The next process after a kill, armed with ``point`` (None: to the end). It must
        start at the step ``expect`` says, with the repair it predicts (a process killed inside
        its resume's repair, kind "repair", is checked by its kill's step); a process that
        exits other than by its kill or at the end is retried, RESUME_RETRIES times at most,
        then it is a loop. Returns (status, process info, problems)."""
        for attempt in range(1 + RESUME_RETRIES):
            if point is None:
                rc, evs, log = self.process(run, None)
                status, info = ("finished" if rc == 0 else "failed"), {"rc": rc, "log": log, "events": evs}
            else:
                status, info = self.kill_and_check(run, point, committed)
            if status == "failed":
                expect["failures"].append(f"resume attempt {attempt + 1} failed (rc {info['rc']}): {_tail(info['log'])}")
                continue
            problems = []
            start = next((e for e in info["events"] if e["event"] == "start"), None)
            want_repair = expect["repair"] if expect["resume"] != "scratch" else None
            if point is not None and point[0] == "repair":
                if info.get("kill_step") != expect["step"]:
                    problems.append(f"killed in the repair at step {info.get('kill_step')}, expected {expect['step']}")
            elif start is None or start["step"] != expect["step"]:
                problems.append(f"resumed at step {start and start['step']}, expected {expect['step']}")
            elif start["repair"] != want_repair:
                problems.append(f"repair_best answered {start['repair']!r}, predicted {want_repair!r}")
            return status, info, problems
        return "loop", info, [f"resume loops: {1 + RESUME_RETRIES} attempts in a row failed"]

    def run_chain(self, templates: dict[str, list[str]]) -> None:
        run = self.dir / "chain"
        points = [(k, "before " + op) for k in KINDS for op in templates[k]] + [(k, AFTER) for k in KINDS]
        points.sort(key=lambda p: KINDS.index(p[0]))  # first, then plain, then improving; template order within
        repair = templates["improving"][templates["improving"].index(REPAIR_FROM[1][len("before "):]):]
        repair_points = [("repair", "before " + op) for op in repair] + [("repair", AFTER_REPAIR)]
        wanted = self.args.points
        if wanted:
            repair_points = [p for p in repair_points if re.search(wanted, f"{p[0]} / {p[1]}")]
            points = [p for p in points if re.search(wanted, f"{p[0]} / {p[1]}")
                      or (p == REPAIR_FROM and repair_points)]  # the repair points start from its folder
        committed, pending = None, None  # the step resumable before the process; the last kill's record
        branches, snapshot = [], None
        queue = list(points)
        while queue:
            point = queue.pop(0)
            if pending is None:
                status, info = self.kill_and_check(run, point, committed)
            else:
                status, info, problems = self.resumed(run, pending["found"], point, committed)
                self._record(pending, problems)
                pending = None
            if status == "finished":
                self.outcomes += [{"point": p, "outcome": "not reached (run ended)", "failures": []}
                                  for p in [point, *(q for q in queue if q[0] != "first")]]
                branches += [q for q in queue if q[0] == "first"]
                break
            if status != "killed":
                self._unexpected(point, status, info)
                return
            pending = {"point": point, "found": info}
            committed = info["step"] or None
            if committed is not None and queue and queue[0][0] == "first":
                # last/ is in place: the first save's other points need fresh folders (a run has one first save)
                branches += [q for q in queue if q[0] == "first"]
                queue = [q for q in queue if q[0] != "first"]
            if point == REPAIR_FROM and not info["failures"] and info["repair"] == "from last":
                # last/ names this step as best, best/ the one before: resume will re-create best/
                snapshot = {"dir": self.dir / "snapshot", "found": info}
                shutil.copytree(run, snapshot["dir"])
        if pending is not None:
            status, info, problems = self.resumed(run, pending["found"], None, committed)
            self._record(pending, problems)
            if status != "finished":
                self._unexpected(("final", "resume to the end"), status, info)
                return
        self.final = final_checks(run, self.ref_run, self.ref_weights, self.scores, self.args.steps)
        self.failures += [f"end of run: {f}" for f in self.final]
        for i, point in enumerate(branches):
            self.branch(point, f"branch{i}")
        for i, point in enumerate(repair_points):
            if snapshot is None:
                self.outcomes.append({"point": point, "outcome": "not reached (no snapshot)", "failures": []})
            else:
                self.branch(point, f"repair{i}", snapshot)

    def branch(self, point: tuple[str, str], name: str, snapshot: dict | None = None) -> None:
        """A kill point that cannot come in the chain: in a fresh folder (the first save's points
        after last/ is in place: a run has one first save) or in a copy of ``snapshot`` (the
        repair that resume makes of best/: its points). Killed there, then resumed and killed
        after its next save, whatever its kind, and checked again."""
        run = self.dir / name
        if snapshot is None:
            status, info = self.kill_and_check(run, point, None)
            problems = []
        else:
            shutil.copytree(snapshot["dir"], run)
            expect = dict(snapshot["found"], failures=[])
            status, info, problems = self.resumed(run, expect, point, snapshot["found"]["step"])
            problems = expect["failures"] + problems
        if status != "killed":
            self._unexpected(point, status, info)
            shutil.rmtree(run, ignore_errors=True)
            return
        pending = {"point": point, "found": info}
        after = dict(info, failures=[])
        status, info2, more = self.resumed(run, after, ("any", AFTER), info["step"] or None)
        problems += after["failures"] + more
        if status == "killed":
            problems += [f"after the next save: {f}" for f in info2["failures"]]
        else:
            problems.append(f"the resumed process: {status} (rc {info2.get('rc')}): {_tail(info2.get('log'))}")
        self._record(pending, problems)
        shutil.rmtree(run, ignore_errors=True)

    def _record(self, pending: dict, problems: list[str]) -> None:
        found = pending["found"]
        failures = found["failures"] + problems
        outcome = (f"resume {found['resume']}" + (f", best {found['repair']}" if found["repair"] else "")
                   + (" (resume retried)" if any("resume attempt" in f for f in failures) else ""))
        self.outcomes.append({"point": pending["point"], "outcome": "FAIL" if failures else outcome,
                              "failures": failures, "kill_step": found.get("kill_step")})
        self.failures += [f"{pending['point'][0]} / {pending['point'][1]}: {f}" for f in failures]

    def _unexpected(self, point, status: str, info) -> None:
        detail = _tail(info["log"]) if info and info.get("log") else ""
        self.outcomes.append({"point": point, "outcome": f"FAIL ({status})", "failures": [detail]})
        self.failures.append(f"{point[0]} / {point[1]}: process {status} (rc {info and info.get('rc')}): {detail}")


def _tail(log: Path | None, n: int = 600) -> str:
    if log is None:
        return ""
    try:
        text = Path(log).read_text(errors="replace")
    except OSError:
        return ""
    lines = [line for line in re.split(r"[\r\n]+", text) if line.strip() and not line.startswith("train:")]
    return " | ".join(lines)[-n:]


# --- damaged corpus ---------------------------------------------------------------------------

def damaged_run(args, corpus: Path, seed: int, work: Path) -> dict:
    """1% unreadable audio files and one cut-short manifest line, lazy manifests, one kill."""
    rng = random.Random(f"damage-{seed}")
    folder = work / f"damaged{seed}"
    shutil.rmtree(folder, ignore_errors=True)
    damaged = folder / "corpus"
    # the audio linked (25 MB copied per seed otherwise); the files made unreadable are replaced
    shutil.copytree(corpus.resolve(), damaged, copy_function=lambda src, dst: os.symlink(os.path.abspath(src), dst))
    for manifest in (damaged / "manifests").iterdir():
        manifest.unlink()
        shutil.copyfile(corpus / "manifests" / manifest.name, manifest)
    audio = set()
    manifests = {}
    for name in ("speech_train", "speaker_train"):
        path = damaged / "manifests" / f"{name}_cuts.jsonl.gz"
        with gzip.open(path, "rt") as f:
            manifests[name] = (path, f.readlines())
        for line in manifests[name][1]:
            for source in re.findall(r'"source":\s*"([^"]+)"', line):
                audio.add(source)
    audio = sorted(audio)
    n_bad = max(1, round(0.01 * len(audio)))
    bad = rng.sample(audio, n_bad)
    for source in bad:
        p = damaged / source
        size = p.stat().st_size
        p.unlink()
        p.write_bytes(os.urandom(max(64, size)))  # not audio at all: the decoder refuses it
    path, lines = manifests["speech_train"]
    cut_line = rng.randrange(len(lines))
    lines[cut_line] = lines[cut_line][: len(lines[cut_line]) // 2] + "\n"
    with gzip.open(path, "wt") as f:
        f.writelines(lines)
    steps = args.damaged_steps
    config = write_config(folder / "config.yaml", damaged, seed, steps, args.damaged_eval_every,
                          lazy_manifests=True)
    scores = make_scores(seed, steps)
    run = folder / "run"
    kill_after = rng.randrange(1, steps // args.damaged_eval_every) * args.damaged_eval_every
    base = dict(argv=["train", "--config", str(config), "--run", str(run), "--resume"], run=str(run),
                report=str(folder / "report.jsonl"), scores=scores, first_eval=args.damaged_eval_every)
    rc1, s1 = spawn(dict(base, target={"kind": "any", "label": AFTER, "min_step": kill_after}),
                    folder / "p1.log", args.spawn)
    rc2, s2 = spawn(dict(base, target=None), folder / "p2.log", args.spawn)
    logs = (folder / "p1.log").read_text(errors="replace") + (folder / "p2.log").read_text(errors="replace")
    unreadable_logged = sorted(set(re.findall(r"skipping unusable audio \(\d+ so far\): (\S+): cannot load audio", logs)))
    malformed_logged = len(re.findall(r": not a cut, line skipped", logs))
    result = {"seed": seed, "audio_files": len(audio), "unreadable_files": bad, "cut_short_line": cut_line + 1,
              "kill_after_save_of_step": kill_after, "rc": [rc1, rc2], "seconds": round(s1 + s2, 1),
              "unreadable_utterances_logged": unreadable_logged, "malformed_line_warnings": malformed_logged,
              "failures": []}
    if rc1 != -signal.SIGKILL:
        result["failures"].append(f"the first process was not killed after a save (rc {rc1}): {_tail(folder / 'p1.log')}")
    if rc2 != 0:
        result["failures"].append(f"resume failed (rc {rc2}): {_tail(folder / 'p2.log')}")
        return result
    summary = json.loads((run / "train_summary.json").read_text())
    result.update({k: summary.get(k) for k in ("steps", "stopped", "skipped_batches", "malformed_manifest_lines")})
    result["summary_counts_unreadable_utterances"] = any("unreadable" in k or "utter" in k or "bad_audio" in k for k in summary)
    if summary["steps"] != steps or summary["stopped"] != "steps":
        result["failures"].append(f"{summary['steps']} steps, stopped {summary['stopped']!r}")
    if summary.get("malformed_manifest_lines") != 1:
        result["failures"].append(f"malformed_manifest_lines {summary.get('malformed_manifest_lines')}, want 1")
    if not args.keep:
        shutil.rmtree(damaged, ignore_errors=True)
    return result


# --- main -------------------------------------------------------------------------------------

_JOB = None  # (args, corpus, work): set before the seeds run (and the pool forks)


def run_seed(seed: int) -> dict:
    args, corpus, work = _JOB
    t0 = time.monotonic()
    s, templates = Seed(args, corpus, seed, work), None
    try:
        templates = s.reference()
        s.run_chain(templates)
    except RuntimeError as e:
        s.failures.append(str(e))
    d = None if args.no_damaged else damaged_run(args, corpus, seed, work)
    killed = sum(1 for o in s.outcomes if not o["outcome"].startswith("not reached"))
    record = {"seed": seed, "kills": killed, "processes": s.processes,
              "improving_steps": sum(1 for st in s.scores if best_so_far(s.scores, st) == st),
              "best_step": best_so_far(s.scores, args.steps), "failures": s.failures,
              "seconds": round(time.monotonic() - t0, 1), "process_seconds": round(s.seconds, 1)}
    if not s.failures and not args.keep:
        shutil.rmtree(s.dir, ignore_errors=True)
    return {"seed": record, "damaged": d, "outcomes": s.outcomes, "templates": templates,
            "failures": [f"seed {seed}: {f}" for f in s.failures]
            + [f"seed {seed} damaged corpus: {f}" for f in (d["failures"] if d else [])]}


def matrix(outcomes: list[dict]) -> tuple[list[tuple], list[str]]:
    per_point: dict[tuple, Counter] = defaultdict(Counter)
    order: list[tuple] = []
    for o in outcomes:
        p = tuple(o["point"])
        if p not in per_point:
            order.append(p)
        per_point[p][o["outcome"]] += 1
    columns = sorted({c for cnt in per_point.values() for c in cnt}, key=lambda c: (c.startswith(("FAIL", "not")), c))
    return [(p, per_point[p]) for p in order], columns


def print_matrix(rows, columns) -> None:
    if not rows:
        print("\n(no kill point reached)")
        return
    short = {c: chr(ord("A") + i) for i, c in enumerate(columns)}
    print("\noutcome columns:")
    for c, s in short.items():
        print(f"  {s} = {c}")
    width = max(len(f"{k} / {label}") for (k, label), _ in rows)
    print(f"\n{'kill point':<{width}} " + " ".join(f"{short[c]:>4}" for c in columns))
    for (k, label), cnt in rows:
        print(f"{k + ' / ' + label:<{width}} " + " ".join(f"{cnt.get(c, 0) or '.':>4}" for c in columns))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="5 seeded runs")
    ap.add_argument("--runs", type=int, default=None, help="seeded runs (default 50, --quick 5)")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None, help="training steps per run, a save at each (default 48)")
    ap.add_argument("--damaged-steps", type=int, default=24)
    ap.add_argument("--damaged-eval-every", type=int, default=4)
    ap.add_argument("--corpus", type=Path, default=None, help="the tiny corpus (default: built into bench/out)")
    ap.add_argument("--spawn", choices=["fork", "exec"], default="fork")
    ap.add_argument("--jobs", type=int, default=1, help="seeds run side by side (each one process at a time)")
    ap.add_argument("--points", default=None, help="only the kill points matching this regular expression "
                    "(on 'KIND / before OPERATION')")
    ap.add_argument("--no-shared-features", dest="shared_features", action="store_false",
                    help="every training process decodes its audio (default: the reference run's features)")
    ap.add_argument("--no-damaged", action="store_true", help="skip the damaged-corpus runs")
    ap.add_argument("--break-on-purpose", choices=["no-repair", "delete-first"], default=None,
                    help="check the checks: resume without repair_best, or a checkpoint write that deletes "
                         "the old folder before renaming the new one in (patched in the training process)")
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the working folder")
    ap.add_argument("--out", type=Path, default=OUT / "crash_matrix.json")
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child_main(json.loads(args.child.read_text()))
    args.runs = args.runs or (5 if args.quick else 50)
    args.steps = args.steps or 48

    import torch

    torch.set_num_threads(1)
    # imported here once, so a forked training process starts with them loaded
    import polyhead.cli  # noqa: F401
    import polyhead.training.trainer  # noqa: F401
    from torch.utils.tensorboard import SummaryWriter  # noqa: F401

    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])  # its first use imports torch._dynamo (2.7 s)

    corpus = tiny_corpus(args.corpus).resolve()
    work = args.work or Path(tempfile.mkdtemp(prefix="crash_matrix_"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    global _JOB
    _JOB = (args, corpus, work)
    seeds, damaged, outcomes, failures, templates = [], [], [], [], None
    todo = range(args.first_seed, args.first_seed + args.runs)
    if args.jobs > 1:
        import multiprocessing

        pool = multiprocessing.get_context("fork").Pool(args.jobs, maxtasksperchild=1)
        results = pool.imap(run_seed, todo)
    else:
        pool, results = None, map(run_seed, todo)
    for r in results:
        seeds.append(r["seed"])
        outcomes += r["outcomes"]
        failures += r["failures"]
        templates = templates or r["templates"]
        d = r["damaged"]
        line = (f"seed {r['seed']['seed']}: {r['seed']['kills']} kills, {r['seed']['processes']} processes, "
                f"{len(r['seed']['failures'])} failures")
        if d:
            damaged.append(d)
            line += (f"; damaged corpus: rc {d['rc']}, malformed_manifest_lines {d.get('malformed_manifest_lines')}, "
                     f"skipped_batches {d.get('skipped_batches')}, unreadable utterances logged "
                     f"{len(d['unreadable_utterances_logged'])}, {len(d['failures'])} failures")
        print(f"{line} ({r['seed']['seconds']:.0f} s)", flush=True)
    if pool is not None:
        pool.close()
        pool.join()
    rows, columns = matrix(outcomes)
    if templates:
        canon = [(k, "before " + op) for k in KINDS for op in templates[k]] + [(k, AFTER) for k in KINDS]
        canon.sort(key=lambda p: KINDS.index(p[0]))
        rows.sort(key=lambda r: (("first", "plain", "improving", "repair").index(r[0][0]) if r[0][0] in KINDS + ("repair",) else 9,
                                 canon.index(r[0]) if r[0] in canon else 0))
    print_matrix(rows, columns)
    finished = [d for d in damaged if d["rc"][-1] == 0]
    bad_files = sum(len(d["unreadable_files"]) for d in damaged)
    logged = sum(len(d["unreadable_utterances_logged"]) for d in damaged)
    gaps = []
    if finished and not any(d.get("summary_counts_unreadable_utterances") for d in finished):
        gaps.append(f"unreadable utterances are skipped and named in the log ({logged} of the {bad_files} damaged "
                    "files were drawn) but train_summary.json does not count them: it has skipped_batches "
                    "(batches with no usable audio at all) and malformed_manifest_lines only")
    if damaged:
        print(f"\ndamaged corpus (lazy manifests, {damaged[0]['audio_files'] if damaged else 0} train audio files, "
              f"{len(damaged[0]['unreadable_files']) if damaged else 0} unreadable, 1 line cut short; killed after a "
              f"save, resumed): finished {len(finished)}/{len(damaged)}; malformed_manifest_lines "
              f"{dict(Counter(d.get('malformed_manifest_lines') for d in damaged))}; skipped_batches "
              f"{dict(Counter(d.get('skipped_batches') for d in damaged))}; unreadable utterances named in the log "
              f"{logged} (of {bad_files} files made unreadable)")
    for g in gaps:
        print("  GAP", g)
    kills = sum(1 for o in outcomes if not o["outcome"].startswith("not reached"))
    print(f"\n{args.runs} seeded runs ({'quick' if args.quick else 'full'}), {kills} kills at "
          f"{len(rows)} kill points, {sum(s['processes'] for s in seeds)} training processes "
          f"({args.spawn}), {time.time() - started:.0f} s; failures: {len(failures)}")
    for f in failures[:40]:
        print("  FAIL", f)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "quick": args.quick, "runs": args.runs, "steps": args.steps, "spawn": args.spawn,
        "points": args.points, "break_on_purpose": args.break_on_purpose, "shared_features": args.shared_features,
        "seconds": round(time.time() - started, 1), "kills": kills, "failures": failures,
        "kill_points": {k: templates[k] + [AFTER] for k in KINDS} if templates else None,
        "matrix": [{"kind": k, "point": label, "outcomes": dict(cnt)} for (k, label), cnt in rows],
        "seeds": seeds, "damaged_corpus": damaged, "gaps": gaps, "jobs": args.jobs, "work": str(work) if args.keep else None,
        "load_average": os.getloadavg()}, indent=2) + "\n")
    print(f"wrote {args.out}")
    if not args.keep and args.work is None and not failures:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
