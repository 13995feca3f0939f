"""One training loop for teachers and for distilled students.

- CPU or CUDA (automatic mixed precision on CUDA when `train.amp`).
- Data parallel under `torchrun` (DistributedDataParallel; gloo on CPU, nccl on CUDA). Every
  step takes the same global batch of `train.batch_size` samples in every configuration; each
  of the W processes takes the share `batch[rank::W]` and scales its mean loss by
  share/global*W, so the averaged gradient equals the one-process gradient on the whole batch.
  (BatchNorm statistics are per process, as in any DDP run without SyncBatchNorm.)
  The exception is a term over the structure of the batch (`pkdot`): each process computes it
  on its own share, so under DDP it sees batches of batch_size / W samples (no gather).
- Several teachers (MT-PKDOT): every step runs them all and the loss terms see the one with the
  lowest cross-entropy on the batch (summed over the processes, so every process picks the
  same); the share of batches each teacher was picked is recorded per epoch. Terms with
  `reference_paths()` read those modules on the first teacher. With one teacher the run, its
  checkpoint fingerprint and resuming are as before.
- Terms with a `prepare` step (pkdot's hallucination net) run it on the training set, through
  the first teacher, before distillation; a resumed run restores its result from the checkpoint.
- Metrics of every epoch appended to `metrics.jsonl`; the best epoch by the validation metric is
  kept (`best.pt`); `checkpoint-last.pt` (model, loss adapters, optimiser, schedule, RNG,
  history) is written atomically after every epoch, so Ctrl-C or a crash keeps the last good
  epoch and rerunning the same command resumes from it.
- A loss that is not finite stops the run with a TrainingError naming the epoch, step and terms.
- Checkpoints hold tensors, numbers and strings only: `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgekd.artifacts import atomic_write_bytes, atomic_write_text
from edgekd.config import TrainSection
from edgekd.distill.losses import KDOutputs, WeightedLoss
from edgekd.errors import ConfigError, TrainingError, did_you_mean
from edgekd.models import arch_description, load_state_checked
from edgekd.models.neurons import LIF, take_margin_penalties

CHECKPOINT = "checkpoint-last.pt"
BEST = "best.pt"
METRICS = "metrics.jsonl"


# ---------------------------------------------------------------- data as tensors


@dataclass
class TensorData:
    """A dataset's arrays as tensors: inputs by modality name, labels, per-sample meta."""

    inputs: dict[str, Tensor]
    labels: Tensor
    classes: list[str]
    meta: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, idx: Tensor | np.ndarray) -> TensorData:
        idx_t = torch.as_tensor(idx, dtype=torch.long)
        idx_np = idx_t.numpy()
        return TensorData({k: v[idx_t] for k, v in self.inputs.items()}, self.labels[idx_t], self.classes,
                          {k: np.asarray(v)[idx_np] for k, v in self.meta.items()})


def tensors_for(dataset: Any, names: Iterable[str]) -> TensorData:
    """The named modalities of an `edgekd.data.api.Dataset` as float32 tensors.

    Skeleton modalities missing from the dataset (bones, motions) are derived from the joints
    with `edgekd.data.graphs.skeleton_modalities`."""
    names = list(dict.fromkeys(names))
    x = dict(dataset.x)
    missing = [n for n in names if n not in x]
    if missing and "joints" in x:
        from edgekd.data.graphs import skeleton_modalities

        if dataset.layout is None:
            raise ConfigError("skeleton dataset has no joint layout", hint="the reader must set Dataset.layout")
        x.update({k: v for k, v in skeleton_modalities(x["joints"], dataset.layout).items() if k not in x})
        missing = [n for n in names if n not in x]
    if missing:
        raise ConfigError(
            f"the model needs input '{missing[0]}', the {dataset.task} data has {', '.join(sorted(x))}",
            hint="pick a model for this task and data source",
        )
    inputs = {n: torch.from_numpy(np.ascontiguousarray(x[n], dtype=np.float32)) for n in names}
    meta = {k: np.asarray(v) for k, v in (dataset.meta or {}).items()}
    return TensorData(inputs, torch.from_numpy(np.asarray(dataset.y, dtype=np.int64)), list(dataset.classes), meta)


# ---------------------------------------------------------------- distributed


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(pref: str) -> torch.device:
    if pref == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("train.device = 'cuda' but no CUDA device is available", hint="use device = 'auto' or 'cpu'")
        return torch.device("cuda")
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device("cpu")


def setup_distributed(device_pref: str) -> DistEnv:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_pref)
    if world <= 1:
        return DistEnv(device=device)
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    created = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        created = True
    return DistEnv(rank=rank, world_size=world, device=device, initialized_here=created)


def _all_reduce_sum(values: Tensor, env: DistEnv) -> Tensor:
    if env.distributed:
        import torch.distributed as dist

        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def _sync_buffers(module: nn.Module, env: DistEnv) -> None:
    if env.distributed:
        import torch.distributed as dist

        for buf in module.buffers():
            dist.broadcast(buf, src=0)


# ---------------------------------------------------------------- model calls and feature capture


def call_model(model: nn.Module, inputs: Mapping[str, Tensor], steps: bool = False) -> tuple[Tensor, Tensor | None]:
    """(logits (N, K), per-step logits (N, T, K) or None) of a model on its named inputs."""
    args = [inputs[n] for n in model.input_names]
    if steps and hasattr(model, "forward_steps"):
        per_step = model.forward_steps(*args)
        return per_step.mean(dim=1), per_step
    return model(*args), None


class FeatureCapture:
    """Forward hooks that keep the outputs of modules addressed by path (e.g. 'units.3')."""

    def __init__(self, model: nn.Module, paths: Sequence[str], role: str):
        self.features: dict[str, Tensor] = {}
        self._handles = []
        modules = dict(model.named_modules())
        for path in paths:
            if path not in modules:
                names = [n for n in modules if n]
                raise ConfigError(
                    f"{role} has no module '{path}'{did_you_mean(path, names)}",
                    hint=f"{role} modules include: {', '.join(names[:12])}{' ...' if len(names) > 12 else ''}",
                )
            self._handles.append(modules[path].register_forward_hook(self._hook(path)))

    def _hook(self, path: str) -> Callable[..., None]:
        def keep(_m: nn.Module, _inputs: Any, output: Any) -> None:
            self.features[path] = output if isinstance(output, Tensor) else output[0]

        return keep

    def take(self) -> dict[str, Tensor]:
        out, self.features = self.features, {}
        return out

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


class StudentWithLoss(nn.Module):
    """The trainable part (student + loss terms with their adapters), wrapped by DDP as one module."""

    def __init__(self, student: nn.Module, loss: WeightedLoss):
        super().__init__()
        self.student = student
        self.loss = loss
        self.capture = FeatureCapture(student, loss.student_paths(), "student")
        margins = [n for n, m in student.named_modules() if isinstance(m, LIF) and m.params.spike_margin > 0]
        if margins and "spike_margin" not in loss.terms:
            raise ConfigError(f"the student's LIF layer '{margins[0]}' has lif.spike_margin > 0 but the losses have "
                              "no 'spike_margin' term", hint="add [[losses]] name = 'spike_margin' (with a weight), "
                              "or drop lif.spike_margin")

    def forward(self, inputs: dict[str, Tensor], labels: Tensor, teacher: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        logits, steps = call_model(self.student, inputs, steps=self.loss.needs_steps)
        out = KDOutputs(labels=labels, student_logits=logits, student_steps=steps,
                        student_features=self.capture.take(), spike_margins=take_margin_penalties(self.student),
                        **teacher)
        total, parts = self.loss(out)
        return total, parts, logits


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def predict(model: nn.Module, data: TensorData, batch_size: int = 128, device: torch.device | str = "cpu") -> np.ndarray:
    """Logits (N, K) of `model` over `data`, in eval mode."""
    was_training = model.training
    model.eval()
    outs = []
    try:
        for start in range(0, len(data), batch_size):
            batch = {k: v[start : start + batch_size].to(device) for k, v in data.inputs.items()}
            logits, _ = call_model(model, batch)
            outs.append(logits.float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(outs).numpy() if outs else np.zeros((0, len(data.classes)), dtype=np.float32)


def evaluate(model: nn.Module, data: TensorData, batch_size: int = 128, device: torch.device | str = "cpu",
             group_keys: Sequence[str] = ()) -> dict[str, Any]:
    """accuracy (WAR), uar and accuracy per group (e.g. lighting), flat keys for JSON/metrics."""
    from edgekd.tasks.metrics import classification_report

    logits = predict(model, data, batch_size, device)
    groups = {k: data.meta[k] for k in group_keys if k in data.meta}
    report = classification_report(data.labels.numpy(), logits, data.classes, groups)
    flat: dict[str, Any] = {"accuracy": report["accuracy"], "uar": report["uar"]}
    for key in groups:
        for value, acc in report[f"accuracy_by_{key}"].items():
            flat[f"accuracy_{key}_{value}"] = acc
    return flat


# ---------------------------------------------------------------- training


@dataclass
class FitResult:
    best_metric: float
    best_epoch: int
    epochs_run: int
    history: list[dict[str, Any]]
    best_metrics: dict[str, Any]
    resumed_from: int | None = None
    prepared: dict[str, dict[str, Any]] = field(default_factory=dict)  # per term: what its prepare step measured


def _optimizer(params: Iterable[nn.Parameter], cfg: TrainSection) -> torch.optim.Optimizer:
    params = list(params)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _lr_at(epoch: int, cfg: TrainSection) -> float:
    if cfg.schedule == "constant" or cfg.epochs <= 1:
        return cfg.lr
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * epoch / cfg.epochs))


def _fingerprint(student: nn.Module, losses: Sequence[Any], cfg: TrainSection, seed: int,
                 teachers: Sequence[nn.Module] = ()) -> str:
    train = cfg.model_dump(exclude={"device", "num_workers", "amp"})
    terms = [t.model_dump() if hasattr(t, "model_dump") else dict(t) for t in losses]
    desc = arch_description(student)
    what: dict[str, Any] = {"arch": desc["arch"], "params": desc["params"], "losses": terms, "train": train, "seed": seed}
    if len(teachers) > 1:  # one teacher: the fingerprint of earlier runs, so they still resume
        what["teachers"] = [{k: v for k, v in arch_description(t).items() if k in ("arch", "params")} for t in teachers]
    return json.dumps(what, sort_keys=True, default=str)


def _save_torch(path: Path, obj: Any) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _cpu_state(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _batches(n: int, batch_size: int, seed: int, epoch: int) -> list[Tensor]:
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(n, generator=gen)
    return [perm[i : i + batch_size] for i in range(0, n, batch_size)]


@contextlib.contextmanager
def _progress(enabled: bool, total: int, description: str) -> Iterator[Callable[[str], None]]:
    if not enabled:
        yield lambda _text: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[info]}"), transient=True) as prog:
        task = prog.add_task(description, total=total, info="")
        yield lambda text: prog.update(task, advance=1, info=text)


def fit(
    student: nn.Module,
    train_data: TensorData,
    val_data: TensorData,
    cfg: TrainSection,
    losses: Sequence[Any],
    teacher: nn.Module | Sequence[nn.Module] | None = None,
    out_dir: str | Path | None = None,
    seed: int = 0,
    group_keys: Sequence[str] = (),
    resume: bool = True,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> FitResult:
    """Train `student` with the loss terms `losses` (LossTerm-like: name, weight, params).

    `teacher` (frozen, eval mode) is required when a term needs it; a list of teachers is the
    multi-teacher mode (per batch the one with the lowest cross-entropy). With `out_dir`, writes
    metrics.jsonl, best.pt and checkpoint-last.pt there and resumes from the last checkpoint.
    On return the student holds the weights of the best epoch."""
    env = setup_distributed(cfg.device)
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))  # stdout stays for --json
    say = log if env.is_main else (lambda _msg: None)
    device = env.device
    loss = WeightedLoss(list(losses))
    loss.check_batch(cfg.batch_size, env.world_size)
    teachers: list[nn.Module] = [] if teacher is None else (
        list(teacher) if isinstance(teacher, (list, tuple)) else [teacher])
    if loss.needs_teacher and not teachers:
        need = [n for n, t in loss.terms.items() if t.needs_teacher]
        raise ConfigError(f"loss term '{need[0]}' needs a teacher, none was given",
                          hint="distill with a trained teacher (edgekd distill --teacher RUN_DIR), or use only 'ce'")
    if cfg.metric not in ("accuracy", "uar"):
        raise ConfigError(f"train.metric = '{cfg.metric}' is not a validation metric{did_you_mean(cfg.metric, ['accuracy', 'uar'])}",
                          hint="use 'accuracy' or 'uar'")
    if len(train_data) < env.world_size:
        raise ConfigError(f"{len(train_data)} training samples for {env.world_size} processes")
    torch.manual_seed(seed)
    student.to(device)
    use_teacher = bool(teachers) and loss.needs_teacher
    captures: list[FeatureCapture] = []
    reference_capture = None
    picks = torch.zeros(len(teachers), dtype=torch.float64)  # batches per teacher in this epoch
    if use_teacher:
        for i, t in enumerate(teachers):
            t.to(device).eval()
            for p in t.parameters():
                p.requires_grad_(False)
            captures.append(FeatureCapture(t, loss.teacher_paths(), "teacher" if len(teachers) == 1 else f"teacher {i + 1}"))
        reference_capture = FeatureCapture(teachers[0], loss.reference_paths(), "teacher" if len(teachers) == 1 else "teacher 1")
    module = StudentWithLoss(student, loss).to(device)
    amp = cfg.amp and device.type == "cuda"

    def teacher_outputs(inputs: dict[str, Tensor], labels: Tensor, count: bool = True) -> dict[str, Any]:
        if not use_teacher:
            return {}
        outs = []
        with torch.no_grad(), torch.autocast(device.type, enabled=amp):
            for t, cap in zip(teachers, captures):
                logits, steps = call_model(t, inputs, steps=loss.needs_steps)
                outs.append({"teacher_logits": logits.float(), "teacher_steps": None if steps is None else steps.float(),
                             "teacher_features": cap.take()})
        pick = 0
        if len(outs) > 1:
            ce = torch.stack([F.cross_entropy(o["teacher_logits"], labels, reduction="sum") for o in outs]).double().cpu()
            pick = int(torch.argmin(_all_reduce_sum(ce, env)))
            if count:
                picks[pick] += 1
        return {**outs[pick], "reference_features": reference_capture.take()}

    def to_device(data: TensorData, idx: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        return {k: v[idx].to(device, non_blocking=True) for k, v in data.inputs.items()}, data.labels[idx].to(device)

    # Build shape-dependent loss parts (feature adapters) on a first batch, before the optimiser.
    first = torch.arange(min(len(train_data), max(2, cfg.batch_size)))
    with torch.no_grad():
        inputs, labels = to_device(train_data, first)
        t_out = teacher_outputs(inputs, labels, count=False)
        logits, steps = call_model(student, inputs, steps=loss.needs_steps)
        loss.build(KDOutputs(labels=labels, student_logits=logits, student_steps=steps,
                             student_features=module.capture.take(), spike_margins=take_margin_penalties(student),
                             **t_out))
    module.to(device)
    out = Path(out_dir) if out_dir is not None else None
    resuming = out is not None and resume and (out / CHECKPOINT).exists()
    prepared: dict[str, dict[str, Any]] = {}
    if use_teacher and loss.preparers and not resuming:
        def reference_batches() -> Iterator[tuple[int, dict[str, Tensor]]]:
            for idx in _batches(len(train_data), max(cfg.batch_size, 64), seed, -1):
                batch, _ = to_device(train_data, idx)
                with torch.no_grad(), torch.autocast(device.type, enabled=amp):
                    call_model(teachers[0], batch)
                yield len(idx), reference_capture.take()

        for term in loss.preparers:
            message = term.prepare(reference_batches, seed=seed)
            if message:
                say(message)
            if getattr(term, "prepared", None):
                prepared[term.name] = dict(term.prepared)
        module.to(device)
    model: nn.Module = module
    if env.distributed:
        model = nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = _optimizer((p for p in module.parameters() if p.requires_grad), cfg)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    fingerprint = _fingerprint(student, losses, cfg, seed, teachers if use_teacher else ())
    history: list[dict[str, Any]] = []
    best_metric, best_epoch, best_metrics = -math.inf, -1, {}
    best_state: dict[str, Tensor] | None = None
    start_epoch, resumed_from = 0, None
    if resuming:
        ckpt = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=True)
        if ckpt.get("fingerprint") != fingerprint:
            raise TrainingError(
                f"{out / CHECKPOINT} was written by a run with other settings (architecture, losses, training or seed)",
                hint="write to another output directory, or start over with --no-resume",
            )
        load_state_checked(student, ckpt["student"], str(out / CHECKPOINT))
        loss.load_state_dict(ckpt["loss"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if amp and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["rng"])
        history = json.loads(ckpt["history"])
        best_metric, best_epoch = float(ckpt["best_metric"]), int(ckpt["best_epoch"])
        best_metrics = json.loads(ckpt["best_metrics"])
        start_epoch = resumed_from = int(ckpt["epoch"]) + 1
        if (out / BEST).exists():
            best_state = torch.load(out / BEST, map_location="cpu", weights_only=True)
        say(f"resuming from epoch {start_epoch} ({out / CHECKPOINT}); best so far {cfg.metric} {best_metric:.4f} at epoch {best_epoch}")
    elif out is not None and env.is_main and (out / METRICS).exists():
        (out / METRICS).unlink()

    epoch = start_epoch
    try:
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.time()
            lr = _lr_at(epoch, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            model.train()
            for t in teachers if use_teacher else ():
                t.eval()
            picks.zero_()
            batches = [b for b in _batches(len(train_data), cfg.batch_size, seed, epoch) if len(b) >= env.world_size]
            sums = torch.zeros(2 + len(loss.terms), dtype=torch.float64)  # samples, correct, terms...
            with _progress(progress and env.is_main, len(batches), f"epoch {epoch + 1}/{cfg.epochs}") as advance:
                for step, global_idx in enumerate(batches):
                    local = global_idx[env.rank :: env.world_size]
                    inputs, labels = to_device(train_data, local)
                    t_out = teacher_outputs(inputs, labels)
                    with torch.autocast(device.type, enabled=amp):
                        total, parts, logits = model(inputs, labels, t_out)
                    finite = torch.tensor([float(torch.isfinite(total.detach()).all())])
                    if float(_all_reduce_sum(finite, env)) < env.world_size:
                        terms = ", ".join(f"{k}={float(v):.4g}" for k, v in parts.items())
                        kept = f"; the last good checkpoint (epoch {epoch}) is in {out}" if out is not None and epoch > 0 else ""
                        raise TrainingError(
                            f"loss is not finite at epoch {epoch + 1}, step {step + 1} (total={float(total):.4g}; {terms}){kept}",
                            hint="lower train.lr, check the data for NaN/inf values, or turn off train.amp",
                        )
                    share = len(local) * env.world_size / len(global_idx)
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(total * share).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    n = len(local)
                    sums[0] += n
                    sums[1] += float((logits.argmax(1) == labels).sum())
                    for i, v in enumerate(parts.values()):
                        sums[2 + i] += float(v.detach()) * n
                    advance(f"loss {float(total.detach()):.4f}")
            sums = _all_reduce_sum(sums, env)
            _sync_buffers(student, env)  # BN running statistics of rank 0, so every rank evaluates the same model
            val = evaluate(student, val_data, max(cfg.batch_size, 64), device, group_keys)
            record: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, "train_accuracy": float(sums[1] / sums[0])}
            record["loss"] = float(sum(loss.weights[k] * sums[2 + i] / sums[0] for i, k in enumerate(loss.terms)))
            for i, k in enumerate(loss.terms):
                record[f"loss_{k}"] = float(sums[2 + i] / sums[0])
            if use_teacher and len(teachers) > 1:
                for i in range(len(teachers)):
                    record[f"teacher_{i + 1}_picked"] = float(picks[i] / max(float(picks.sum()), 1.0))
            record.update({f"val_{k}": v for k, v in val.items()})
            record["seconds"] = round(time.time() - t0, 3)
            history.append(record)
            improved = val[cfg.metric] > best_metric
            if improved:
                best_metric, best_epoch, best_metrics = float(val[cfg.metric]), epoch + 1, dict(val)
                best_state = _cpu_state(student)
            if out is not None and env.is_main:
                if improved:
                    _save_torch(out / BEST, best_state)
                atomic_write_text(out / METRICS, "".join(json.dumps(r) + "\n" for r in history))
                _save_torch(out / CHECKPOINT, {
                    "fingerprint": fingerprint, "epoch": epoch, "student": _cpu_state(student),
                    "loss": _cpu_state(loss), "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict() if amp else {}, "rng": torch.get_rng_state(),
                    "history": json.dumps(history), "best_metric": best_metric, "best_epoch": best_epoch,
                    "best_metrics": json.dumps(best_metrics),
                })
            say(f"epoch {epoch + 1}/{cfg.epochs}  loss {record['loss']:.4f}  train acc {record['train_accuracy']:.3f}  "
                f"val {cfg.metric} {val[cfg.metric]:.3f}  ({record['seconds']:.1f}s)" + ("  *" if improved else ""))
            if env.distributed:
                import torch.distributed as dist

                dist.barrier()
    except KeyboardInterrupt:
        if out is not None and (out / CHECKPOINT).exists():
            say(f"interrupted in epoch {epoch + 1}; the last good checkpoint ({out / CHECKPOINT}) is kept: "
                "rerun the same command to resume")
        raise
    finally:
        module.capture.remove()
        for cap in captures + ([reference_capture] if reference_capture is not None else []):
            cap.remove()
        if env.initialized_here:
            import torch.distributed as dist

            dist.destroy_process_group()

    # The student leaves with the best epoch's weights.
    student.to("cpu")
    if best_state is not None:
        load_state_checked(student, best_state, "best epoch")
    return FitResult(best_metric=best_metric, best_epoch=best_epoch, epochs_run=len(history), history=history,
                     best_metrics=best_metrics, resumed_from=resumed_from, prepared=prepared)
