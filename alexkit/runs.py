"""Run directories, atomic checkpoints and history files for ``pretrain`` and ``finetune``.

A run directory looks like this::

    RUN/
      config.json        resolved recipe/args, versions, class names, preprocessing,
                         fingerprints of recipe and data (resume refuses a mismatch)
      history.csv        one row per finished epoch (rewritten atomically, never duplicated)
      model.keras        best model so far (by the monitored validation metric)
      last.keras         model after the last finished epoch (pretrain)
      metrics.json       validation report of the best model (written at the end)
      run.lock           PID and host of the process running it (alexkit.runlock)
      logs/train, logs/validation   TensorBoard event files
      checkpoints/
        index.json       names of complete checkpoints, oldest first
        ckpt-000000120/  model.npz, optimizer.npz, [layout.json,] state.json (state.json last)
        frozen-<digest>.npz   a stage's frozen variables, when they differ from the
                         starting weights (written once, shared by that stage's checkpoints)
        best-000012/     the best epoch's model variables (model.npz, [layout.json]), lean
                         like a checkpoint; model.keras is written from it when the run
                         ends (and on Ctrl-C); after a crash, --resume writes it

A checkpoint is written into a hidden temporary folder and renamed into place, then
listed in ``index.json`` (also written atomically), so a ``kill -9`` at any moment leaves
either the previous set of checkpoints or the new one. Loading tries the newest and
falls back to the previous one when a file is missing or truncated.

Lean checkpoints: ``model.npz`` holds only the variables that can change in the stage
(trainable ones, their layers' state, dropout RNG state); ``layout.json`` says which
variables were left out (frozen) and where their values are: ``"initial"`` (the weights
the run starts from, checked by their digest on resume) or a ``frozen-<digest>.npz``
file of the checkpoints folder. A checkpoint without ``layout.json`` (every checkpoint
written before lean checkpoints, and every checkpoint of a stage that trains
everything) holds every variable.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alexkit.errors import CheckpointError
from alexkit.paths import atomic_write_text, write_errno, write_failure
from alexkit.runlock import LOCK_NAME

log = logging.getLogger(__name__)

CONFIG = "config.json"
HISTORY = "history.csv"
MODEL = "model.keras"
LAST_MODEL = "last.keras"
METRICS = "metrics.json"
CHECKPOINTS = "checkpoints"
LOGS = "logs"
LAYOUT = "layout.json"
FROZEN_PREFIX = "frozen-"
BEST_PREFIX = "best-"


class RunDir:
    """A training run's directory and the files in it.

    Args:
        path: the directory.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    config_path = property(lambda self: self.path / CONFIG)
    history_path = property(lambda self: self.path / HISTORY)
    model_path = property(lambda self: self.path / MODEL)
    last_model_path = property(lambda self: self.path / LAST_MODEL)
    metrics_path = property(lambda self: self.path / METRICS)
    checkpoint_dir = property(lambda self: self.path / CHECKPOINTS)
    logs_dir = property(lambda self: self.path / LOGS)

    @classmethod
    def prepare(cls, path: str | os.PathLike, *, resume: bool, force: bool) -> RunDir:
        """Check that ``path`` may be used as asked, and make it exist.

        Args:
            path: the run directory.
            resume: continue the run found there.
            force: delete whatever is there and start afresh.

        Raises:
            CheckpointError: a non-empty directory without ``resume``/``force``, or
                ``resume`` with nothing to resume.
        """
        run = cls(path)
        if resume and force:
            raise CheckpointError("--resume and --force contradict each other; pass only one.")
        exists = run.path.exists()
        if exists and not run.path.is_dir():
            raise CheckpointError(
                f"{run.path} is a file, not a run directory; choose another --out."
            )
        # The run lock (alexkit.runlock) is taken before prepare: it is not content.
        non_empty = exists and any(p.name != LOCK_NAME for p in run.path.iterdir())
        if resume:
            if not run.config_path.exists():
                raise CheckpointError(
                    f"nothing to resume in {run.path} (no {CONFIG}); run again without --resume."
                )
            return run
        if non_empty:
            if not force:
                raise CheckpointError(
                    f"{run.path} already exists and is not empty; pass --resume to continue "
                    "that run or --force to overwrite it."
                )
        try:
            if non_empty:
                for child in run.path.iterdir():
                    if child.name == LOCK_NAME:
                        continue
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
            run.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            code = write_errno(exc)
            if code is None:
                raise
            raise write_failure(run.path, code, what="create run directory") from exc
        return run

    def read_config(self) -> dict[str, Any]:
        """The saved ``config.json``."""
        try:
            return json.loads(self.config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise CheckpointError(
                f"cannot read {self.config_path}: {err}; start a new run."
            ) from err

    def write_config(self, config: dict[str, Any]) -> None:
        """Write ``config.json`` atomically."""
        atomic_write_text(self.config_path, json.dumps(config, indent=2, default=str) + "\n")

    def write_history(self, rows: Sequence[dict[str, Any]]) -> None:
        """Rewrite ``history.csv`` from ``rows`` (one per epoch, deduplicated by epoch)."""
        write_history(self.history_path, rows)

    def read_history(self) -> list[dict[str, Any]]:
        """Rows of ``history.csv`` (numbers parsed), or [] if absent."""
        return read_history(self.history_path)


def write_history(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write epoch rows to CSV atomically; later rows win over earlier ones for an epoch."""
    by_epoch: dict[int, dict[str, Any]] = {}
    for row in rows:
        by_epoch[int(row["epoch"])] = row
    ordered = [by_epoch[k] for k in sorted(by_epoch)]
    fields: list[str] = []
    for row in ordered:
        for key in row:
            if key not in fields:
                fields.append(key)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in ordered:
        writer.writerow({k: _fmt(row.get(k)) for k in fields})
    atomic_write_text(path, buf.getvalue())


def _fmt(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return value


def read_history(path: Path) -> list[dict[str, Any]]:
    """Parse a history CSV written by :func:`write_history`."""
    if not Path(path).exists():
        return []
    rows = []
    with open(path, encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            rows.append({k: _parse(v) for k, v in row.items()})
    return rows


def _parse(value: str) -> Any:
    if value == "":
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


class CheckpointManager:
    """Atomic checkpoints of model variables, optimizer variables and loop state.

    Args:
        directory: the ``checkpoints`` folder of a run.
        keep: how many complete checkpoints to keep (the newest ones; 2, the default,
            lets a damaged newest one fall back to the previous; at least 1).
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 2):
        self.directory = Path(directory)
        self.keep = max(1, int(keep))

    @property
    def index_path(self) -> Path:
        return self.directory / "index.json"

    def _index(self) -> list[str]:
        names: list[str] = []
        try:
            names = list(json.loads(self.index_path.read_text(encoding="utf-8"))["complete"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        # Folders that made it to their final name are complete even if the index
        # update was lost (the rename happens only after every file is written).
        if self.directory.exists():
            for child in self.directory.iterdir():
                if child.is_dir() and child.name.startswith("ckpt-") and child.name not in names:
                    names.append(child.name)
        return sorted(set(names), key=_step_of)

    def list(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        return [self.directory / n for n in self._index() if (self.directory / n).is_dir()]

    def save(
        self,
        model_arrays: Sequence[np.ndarray],
        optimizer_arrays: Sequence[np.ndarray],
        state: dict[str, Any],
        layout: dict[str, Any] | None = None,
    ) -> Path:
        """Write a checkpoint for ``state["global_step"]`` atomically; prune old ones.

        Args:
            model_arrays: values of ``model.variables`` in order (a lean checkpoint: of
                those that ``layout`` does not list as frozen).
            optimizer_arrays: values of ``optimizer.variables`` in order.
            state: JSON-able loop state (epoch, step, stage, schedule, history, ...).
            layout: for a lean checkpoint, which variables are frozen and where their
                values are (``{"variables", "frozen", "source", "digests"}``).

        Returns:
            The checkpoint folder.
        """
        name = f"ckpt-{int(state['global_step']):09d}"
        payload = json.dumps(state, default=_json_default)

        def needed() -> int:
            arrays = [*model_arrays, *optimizer_arrays]
            return sum(np.asarray(a).nbytes for a in arrays) + len(payload)

        # The same step saved again (e.g. Ctrl-C right after a save) replaces the folder;
        # a failed write leaves no half checkpoint and the newest complete one stays listed.
        final = self.directory / name
        with self._staged_folder(final, needed) as tmp:
            _save_arrays(tmp / "model.npz", model_arrays)
            _save_arrays(tmp / "optimizer.npz", optimizer_arrays)
            if layout is not None:
                (tmp / LAYOUT).write_text(json.dumps(layout), encoding="utf-8")
            with open(tmp / "state.json", "w", encoding="utf-8") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
        names = [n for n in self._index() if n != name] + [name]
        names = sorted(set(names), key=_step_of)
        keep, drop = names[-self.keep :], names[: -self.keep]
        atomic_write_text(self.index_path, json.dumps({"complete": keep}, indent=1) + "\n")
        for old in drop:
            shutil.rmtree(self.directory / old, ignore_errors=True)
        self._drop_unreferenced(keep)
        # Temporary folders of killed processes are never complete: remove them.
        for child in self.directory.iterdir():
            if child.name.startswith(".tmp-ckpt-"):  # ours was renamed to `final` above
                shutil.rmtree(child, ignore_errors=True)
            elif child.name.startswith(f".tmp-{FROZEN_PREFIX}"):
                child.unlink(missing_ok=True)
            elif child.name.startswith(f".tmp-{BEST_PREFIX}"):
                shutil.rmtree(child, ignore_errors=True)
        return final

    def _drop_unreferenced(self, kept: Sequence[str]) -> None:
        """Remove best models and ``frozen-*.npz`` files that no kept checkpoint refers to."""
        best_epochs = set()
        for name in kept:
            try:
                state = json.loads((self.directory / name / "state.json").read_text("utf-8"))
                best_epochs.add((state.get("best") or {}).get("epoch"))
            except (OSError, ValueError, AttributeError):
                continue
        folders = list(kept)
        for path in self.directory.glob(f"{BEST_PREFIX}*"):
            if path.is_dir() and _step_of(path.name) not in best_epochs:
                shutil.rmtree(path, ignore_errors=True)
            else:
                folders.append(path.name)
        used = set()
        for name in folders:
            try:
                layout = _read_layout(self.directory / name)
            except (OSError, ValueError):
                continue
            if layout is not None:
                used.add(layout["source"])
        for path in self.directory.glob(f"{FROZEN_PREFIX}*.npz"):
            if path.name not in used:
                path.unlink(missing_ok=True)

    def save_frozen(self, name: str, arrays: Sequence[np.ndarray]) -> Path:
        """Write a stage's frozen arrays as ``name`` (atomically; kept if already there)."""
        path = self.directory / name
        if path.exists():
            return path
        tmp = self.directory / f".tmp-{name}-{os.getpid()}"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            _save_arrays(tmp, arrays)
            os.replace(tmp, path)
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            if not isinstance(exc, Exception):
                raise
            code = write_errno(exc)
            if code is None:
                raise
            needed = sum(np.asarray(a).nbytes for a in arrays)
            raise self._write_failure(path, code, needed) from exc
        return path

    def save_best(self, epoch: int, checkpoint: Path) -> Path:
        """Keep ``checkpoint``'s model arrays as the best epoch's, in ``best-<epoch>/``.

        The files are hard links (no bytes written; they outlive the checkpoint's
        pruning), or copies where the filesystem has no hard links.
        """
        final = self.directory / f"{BEST_PREFIX}{int(epoch):06d}"
        with self._staged_folder(final, lambda: directory_bytes(checkpoint)) as tmp:
            for name in ("model.npz", LAYOUT):
                if (checkpoint / name).exists():
                    try:
                        os.link(checkpoint / name, tmp / name)
                    except OSError:
                        shutil.copyfile(checkpoint / name, tmp / name)
        return final

    @contextlib.contextmanager
    def _staged_folder(self, final: Path, needed: Callable[[], int]) -> Iterator[Path]:
        """A temporary folder beside ``final`` to fill, renamed to ``final`` when filled.

        A failed write removes the temporary folder and ``final`` keeps what it had; a full
        or read-only disk becomes one ``CheckpointError`` line naming the
        space ``needed()`` (bytes).
        """
        tmp = self.directory / f".tmp-{final.name}-{os.getpid()}"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            yield tmp
            _replace_folder(tmp, final)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if not isinstance(exc, Exception):
                raise
            code = write_errno(exc)
            if code is None:
                raise
            raise self._write_failure(final, code, needed()) from exc

    def load_best(self, epoch: int) -> LoadedCheckpoint | None:
        """The best model saved for ``epoch`` (as a checkpoint without state), or None."""
        folder = self.directory / f"{BEST_PREFIX}{int(epoch):06d}"
        if not folder.is_dir():
            return None
        try:
            arrays = _load_arrays(folder / "model.npz")
            layout = _read_layout(folder)
            frozen = None
            if layout is not None and layout["source"] != "initial":
                frozen = _load_arrays(self.directory / layout["source"])
        except Exception as err:  # noqa: BLE001 - damaged: the run goes on without it
            log.warning("best model %s is unreadable (%s)", folder, err)
            return None
        return LoadedCheckpoint({}, arrays, [], folder, layout, frozen)

    def clear(self) -> None:
        """Remove every checkpoint (the run is finished and nothing resumes it)."""
        shutil.rmtree(self.directory, ignore_errors=True)

    def _write_failure(self, final: Path, code: int, needed: int) -> CheckpointError:
        err = write_failure(final, code, needed, what="save checkpoint")
        kept = self.list()
        note = f" {kept[-1].name} is the newest complete checkpoint." if kept else ""
        return CheckpointError(f"{err}{note}")

    def load_latest(self) -> tuple[dict[str, Any], list[np.ndarray], list[np.ndarray], Path]:
        """Read the newest checkpoint that loads completely, falling back to older ones.

        Returns:
            ``(state, model_arrays, optimizer_arrays, folder)``.

        Raises:
            CheckpointError: no checkpoint, or none that loads.
        """
        loaded = self.load_latest_checkpoint()
        return loaded.state, loaded.model_arrays, loaded.optimizer_arrays, loaded.folder

    def load_latest_checkpoint(self) -> LoadedCheckpoint:
        """Like :meth:`load_latest`, with a lean checkpoint's layout and frozen arrays."""
        candidates = list(reversed(self.list()))
        if not candidates:
            raise CheckpointError(
                f"no complete checkpoint in {self.directory}; start the run again with --force."
            )
        problems = []
        for folder in candidates:
            try:
                state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
                model_arrays = _load_arrays(folder / "model.npz")
                optimizer_arrays = _load_arrays(folder / "optimizer.npz")
                layout = _read_layout(folder)
                frozen = None
                if layout is not None and layout["source"] != "initial":
                    frozen = _load_arrays(self.directory / layout["source"])
            except Exception as err:  # noqa: BLE001 - any damage means "try the previous one"
                log.warning(
                    "checkpoint %s is unreadable (%s); trying the previous one", folder, err
                )
                problems.append(f"{folder.name}: {err}")
                continue
            return LoadedCheckpoint(state, model_arrays, optimizer_arrays, folder, layout, frozen)
        raise CheckpointError(
            f"every checkpoint in {self.directory} is damaged ({'; '.join(problems)}); "
            "start the run again with --force."
        )


def _replace_folder(new: Path, final: Path) -> None:
    """Rename folder ``new`` to ``final``; an existing ``final`` is replaced, and restored
    if the rename fails (it waits beside it as ``.tmp-<name>-old-<pid>``, which the
    clean-up of temporary folders removes if the process dies there)."""
    if not final.exists():
        os.replace(new, final)
        return
    aside = final.with_name(f".tmp-{final.name}-old-{os.getpid()}")
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(final, aside)
    try:
        os.replace(new, final)
    except BaseException:
        os.replace(aside, final)
        raise
    shutil.rmtree(aside, ignore_errors=True)


@dataclass
class LoadedCheckpoint:
    """A checkpoint read back: ``layout`` and ``frozen_arrays`` are None when it is complete."""

    state: dict[str, Any]
    model_arrays: list[np.ndarray]
    optimizer_arrays: list[np.ndarray]
    folder: Path
    layout: dict[str, Any] | None = None
    frozen_arrays: list[np.ndarray] | None = None


def _read_layout(folder: Path) -> dict[str, Any] | None:
    path = folder / LAYOUT
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def directory_bytes(path: str | os.PathLike) -> int:
    """Bytes of the regular files under ``path`` (hard links once; 0 if it does not exist)."""
    total, seen = 0, set()
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                info = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_size
    return total


def _step_of(name: str) -> int:
    try:
        return int(name.split("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def _save_arrays(path: Path, arrays: Sequence[np.ndarray]) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, *[np.asarray(a) for a in arrays])
        fh.flush()
        os.fsync(fh.fileno())


def _load_arrays(path: Path) -> list[np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        # Reading every array forces a CRC check of the whole file.
        return [np.array(data[f"arr_{i}"]) for i in range(len(data.files))]


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-able: {type(obj).__name__}")
