"""Checkpoints: one .npz file (no pickle) holding arrays plus a JSON header.

    model/<param or buffer name>   the model's state dict (float32, or float16 with half=True)
    optim/<slot>.<i>               optimizer moments (training checkpoints only)
    __meta__                       UTF-8 JSON: configs, step, epoch position, RNG state, quant recipe

Writes are atomic: the file is written beside its destination under a temporary name, flushed
to disk and renamed over it, so an interrupted save (Ctrl-C, a crash, a full disk) leaves the
previous checkpoint intact and no half-written file. Loading never unpickles anything
(``allow_pickle=False``) and turns a truncated or foreign file into a clear error.
"""
import io
import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT = "minitbt-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt or does not fit the model."""


def save(path: str, model_state: dict, meta: dict, optim_state: dict = None, half: bool = False) -> None:
    """Atomically write a checkpoint to ``path``. Non-finite weights are refused: NaN never
    becomes a checkpoint."""
    arrays = {}
    for name, arr in model_state.items():
        arr = np.asarray(arr)
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise CheckpointError(f"not saving {path}: weight {name!r} holds non-finite values (NaN or inf)")
        arrays[f"model/{name}"] = arr.astype(np.float16) if half and arr.dtype == np.float32 else arr
    scalars = {}
    for name, val in (optim_state or {}).items():
        if isinstance(val, np.ndarray):
            arrays[f"optim/{name}"] = val
        else:
            scalars[name] = val
    header = {"format": FORMAT, "version": VERSION, **meta, "optim_scalars": scalars}
    arrays["__meta__"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)

    atomic_write(path, lambda f: np.savez(f, **arrays))


def atomic_write(path: str, write) -> None:
    """Write a file so that it is either complete or absent: ``write(f)`` fills a temporary file
    beside ``path`` (``.tmp-*``), which is flushed, fsynced and renamed over ``path``. An interrupted
    write (Ctrl-C, a crash, a full disk) leaves the previous file intact; a SIGKILL can leave the
    temporary, which ``clean_stale_temporaries`` removes."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=directory)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)                         # mkstemp makes 0600; a saved file is ordinary
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def clean_stale_temporaries(directory: str) -> list:
    """Remove the ``.tmp-*.npz`` files that a save killed mid-write (SIGKILL, power loss) left
    in ``directory``; returns their names. Called when a run starts or resumes there."""
    if not os.path.isdir(directory):
        return []
    stale = [n for n in os.listdir(directory) if n.startswith(".tmp-") and n.endswith(".npz")]
    for name in stale:
        os.remove(os.path.join(directory, name))
    return stale


def load(path: str):
    """Read a checkpoint: returns (model_state, meta, optim_state). Arrays come back as float32.

    Refused with a CheckpointError: a file that is not an .npz archive, a truncated one, one
    without a JSON header object, and weights that are not finite (a diverged run)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if os.path.isdir(path):
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    with open(path, "rb") as f:
        raw = f.read()
    if not raw.startswith(b"PK"):                         # every .npz is a zip archive
        raise CheckpointError(f"{path} is not a minitbt checkpoint (not an .npz archive: corrupt or truncated, or another kind of file)")
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            files = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, NotImplementedError) as exc:
        raise CheckpointError(f"{path} is not a readable minitbt checkpoint (corrupt or truncated?): {exc}") from None
    if "__meta__" not in files:
        raise CheckpointError(f"{path} is an .npz file but not a minitbt checkpoint (no __meta__ entry)")
    try:
        meta = json.loads(files.pop("__meta__").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt checkpoint header: {exc}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: corrupt checkpoint header: a JSON object expected, got {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown format {meta.get('format')!r}, expected {FORMAT!r}")
    scalars = meta.pop("optim_scalars", {})
    if not isinstance(scalars, dict):
        raise CheckpointError(f"{path}: corrupt checkpoint header: optim_scalars must be an object")
    model_state, optim_state = {}, dict(scalars)
    for key, arr in files.items():
        kind, _, name = key.partition("/")
        if kind == "model":
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise CheckpointError(f"{path}: weight {name!r} holds non-finite values (NaN or inf): "
                                      f"the run that wrote it diverged; use an earlier checkpoint")
            model_state[name] = arr.astype(np.float32) if arr.dtype == np.float16 else arr
        elif kind == "optim":
            optim_state[name] = arr
    return model_state, meta, optim_state
