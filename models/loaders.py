"""Readers for the files of a 4D-Humans installation, none of which needs the original packages.

- :func:`load_checkpoint_trunk` - the Lightning checkpoint (``epoch=35-step=1000000.ckpt``):
  its ``state_dict`` restricted to ``backbone.*`` and ``smpl_head.*``. Objects of packages that
  are not installed (yacs configs in ``hyper_parameters``, ...) become inert stubs.
- :func:`load_mean_params` - ``smpl_mean_params.npz`` (keys ``pose`` 144, ``shape`` 10, ``cam`` 3).
- :func:`load_smpl` - ``SMPL_NEUTRAL.pkl``, both the smplx-compatible pickle (numpy arrays, a
  scipy sparse ``J_regressor``) and the original release whose arrays are chumpy objects;
  chumpy does not need to be installed (its objects are read as their stored array ``x``).
- :func:`load_j19` - ``SMPL_to_J19.pkl``, a (19, 6890) regressor.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from .smpl import NUM_JOINTS, NUM_VERTICES, PARENTS, SmplData

TRUNK_PREFIXES = ("backbone.", "smpl_head.")


class Stub:
    """Stands in for a class of a package that is not installed. Accepts any constructor
    arguments and any pickled state and keeps them: ``args``, ``state`` (from ``__setstate__``),
    ``items`` (dict-style items) and ``values`` (list-style items)."""

    _stub_name = "?"
    args: tuple = ()
    state: Any = None

    def __init__(self, *args: Any, **kwargs: Any):
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__.setdefault("items", {})[key] = value

    def append(self, value: Any) -> None:
        self.__dict__.setdefault("values", []).append(value)

    def extend(self, values: Any) -> None:
        self.__dict__.setdefault("values", []).extend(values)

    def __repr__(self) -> str:
        return f"<stub {self._stub_name}>"


_stub_classes: Dict[Tuple[str, str], type] = {}


def _stub_class(module: str, name: str) -> type:
    key = (module, name)
    if key not in _stub_classes:
        _stub_classes[key] = type(name, (Stub,), {"_stub_name": f"{module}.{name}"})
    return _stub_classes[key]


class LenientUnpickler(pickle.Unpickler):
    """Unpickler that maps classes of missing or untrusted packages to :class:`Stub` classes.

    Real classes are used only for numpy, scipy.sparse (old module paths such as
    ``scipy.sparse.csc`` are mapped to ``scipy.sparse``), torch, and a few builtins; everything
    else (chumpy, yacs, omegaconf, ...) becomes a stub. That also means such a file cannot run
    code of those packages while it is read.
    """

    _BUILTINS = {
        "set", "frozenset", "dict", "list", "tuple", "slice", "range", "complex", "int", "float",
        "bool", "str", "bytes", "bytearray", "object",
    }

    def find_class(self, module: str, name: str) -> Any:
        if module in ("builtins", "__builtin__"):
            if name in self._BUILTINS:
                return super().find_class("builtins", name)
        elif module in ("collections", "copyreg", "copy_reg", "_codecs"):
            return super().find_class({"copy_reg": "copyreg"}.get(module, module), name)
        elif module == "numpy" or module.startswith("numpy."):
            if module.startswith("numpy.core") and int(np.__version__.split(".")[0]) >= 2:
                module = "numpy._core" + module[len("numpy.core"):]
            return super().find_class(module, name)
        elif module.startswith("scipy.sparse"):
            import scipy.sparse

            if hasattr(scipy.sparse, name):
                return getattr(scipy.sparse, name)
        elif module == "torch" or module.startswith("torch."):
            return super().find_class(module, name)
        return _stub_class(module, name)


def lenient_pickle_load(f: Any) -> Any:
    """``pickle.load`` with latin1 decoding of Python 2 strings and :class:`LenientUnpickler`."""
    return LenientUnpickler(f, encoding="latin1").load()


class _LenientPickleModule:
    """What ``torch.load(pickle_module=...)`` needs from a pickle module."""

    __name__ = "models.loaders.lenient_pickle"
    Unpickler = LenientUnpickler
    load = staticmethod(lenient_pickle_load)


def load_checkpoint_trunk(path: str | os.PathLike) -> Dict[str, torch.Tensor]:
    """The ``backbone.*`` and ``smpl_head.*`` entries of a Lightning checkpoint's ``state_dict``
    (or of a plain state dict saved by ``torch.save``), as CPU tensors."""
    kwargs: Dict[str, Any] = dict(map_location="cpu", weights_only=False, pickle_module=_LenientPickleModule)
    try:
        ckpt = torch.load(path, mmap=True, **kwargs)
    except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
        ckpt = torch.load(path, **kwargs)
    if isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict):
        state = ckpt["state_dict"]
    elif isinstance(ckpt, dict):
        state = ckpt
    else:
        raise ValueError(f"{path}: not a checkpoint (a {type(ckpt).__name__}, expected a dict with 'state_dict')")
    trunk = {k: v for k, v in state.items() if k.startswith(TRUNK_PREFIXES)}
    if not trunk:
        raise ValueError(f"{path}: its state_dict has no backbone.* or smpl_head.* entries")
    return trunk


def load_mean_params(path: str | os.PathLike) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pose (1,144), betas (1,10), cam (1,3)) from ``smpl_mean_params.npz``."""
    with np.load(path) as npz:
        missing = {"pose", "shape", "cam"} - set(npz.files)
        if missing:
            raise ValueError(f"{path}: missing keys {sorted(missing)} (has {sorted(npz.files)})")
        pose, shape, cam = (np.asarray(npz[k], dtype=np.float32).reshape(1, -1) for k in ("pose", "shape", "cam"))
    for name, arr, n in (("pose", pose, NUM_JOINTS * 6), ("shape", shape, 10), ("cam", cam, 3)):
        if arr.shape[1] != n:
            raise ValueError(f"{path}: '{name}' has {arr.shape[1]} values, expected {n}")
    return torch.from_numpy(pose), torch.from_numpy(shape), torch.from_numpy(cam)


def to_dense(value: Any, what: str = "array") -> np.ndarray:
    """A numpy array from a numpy array, a scipy sparse matrix, or a chumpy stub (whose pickled
    state keeps the value in ``x``)."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "toarray"):  # scipy sparse
        try:
            return np.asarray(value.toarray())
        except Exception:  # a matrix pickled by an old scipy: rebuild it from its parts
            import scipy.sparse

            d = vars(value)
            kind = scipy.sparse.csr_matrix if "csr" in type(value).__name__ else scipy.sparse.csc_matrix
            shape = d.get("_shape", d.get("shape"))
            return kind((d["data"], d["indices"], d["indptr"]), shape=shape).toarray()
    if isinstance(value, Stub):
        state = value.state if isinstance(value.state, dict) else {}
        if "x" in state:
            return to_dense(state["x"], what)
        raise ValueError(
            f"{what} is a {value._stub_name} object whose value is not stored "
            f"(state keys {sorted(state)}); convert the file to plain numpy arrays"
        )
    if isinstance(value, (list, tuple)):
        return np.asarray(value)
    raise ValueError(f"{what} is a {type(value).__name__}, expected an array")


def _load_pickle(path: str | os.PathLike) -> Any:
    with open(path, "rb") as f:
        return lenient_pickle_load(f)


def load_j19(path: str | os.PathLike, num_vertices: int = NUM_VERTICES) -> np.ndarray:
    """The (19, V) regressor of ``SMPL_to_J19.pkl`` (a pickled array, dense or sparse)."""
    j19 = to_dense(_load_pickle(path), f"{Path(path).name}")
    if j19.shape != (19, num_vertices):
        raise ValueError(f"{path}: J19 regressor has shape {j19.shape}, expected (19, {num_vertices})")
    return j19.astype(np.float64)


def load_smpl(path: str | os.PathLike, j19: Optional[np.ndarray] = None) -> SmplData:
    """Arrays of ``SMPL_NEUTRAL.pkl`` (smplx-style or original chumpy pickle).

    ``j19`` is the J19 regressor (see :func:`load_j19`); without it the data has a zero J19
    regressor, which :class:`~models.smpl.SMPL` accepts but whose keypoints 25..43 are then 0.
    """
    raw = _load_pickle(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: not an SMPL model (a {type(raw).__name__}, expected a dict)")
    need = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
    missing = [k for k in need if k not in raw]
    if missing:
        raise ValueError(f"{path}: missing keys {missing} (has {sorted(map(str, raw))})")
    arr = {k: to_dense(raw[k], f"{Path(path).name}:{k}") for k in need}
    kintree = np.asarray(arr["kintree_table"]).astype(np.int64)
    if kintree.shape != (2, NUM_JOINTS):
        raise ValueError(f"{path}: kintree_table has shape {kintree.shape}, expected (2, 24)")
    # The root's parent is stored as -1 or as 2**32 - 1; either way it is the root.
    parents = [-1] + [int(p) for p in kintree[0, 1:]]
    if parents != PARENTS:
        raise ValueError(f"{path}: kinematic tree {parents} differs from SMPL's {PARENTS}")
    v = arr["v_template"].shape[0]
    data = SmplData(
        v_template=np.asarray(arr["v_template"], dtype=np.float64),
        shapedirs=np.asarray(arr["shapedirs"], dtype=np.float64),
        posedirs=np.asarray(arr["posedirs"], dtype=np.float64),
        j_regressor=np.asarray(arr["J_regressor"], dtype=np.float64),
        weights=np.asarray(arr["weights"], dtype=np.float64),
        parents=parents,
        faces=np.asarray(arr["f"]).astype(np.int64),
        j19=np.zeros((19, v)) if j19 is None else j19,
        source=Path(path).name,
    )
    data.validate()
    return data
