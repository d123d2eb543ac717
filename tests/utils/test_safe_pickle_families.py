"""Restricted unpickling for the next model families: a PyTorch-Lightning ``.ckpt`` (All-in-one) whose
``hyper_parameters`` is a dict subclass holding a sacred config, and BUTD detection ``.npz`` records whose ``info``
field is a pickled dict in a 0-d object array. Fixtures are written here with stand-in classes that carry the real
module and class names into the pickle stream; the stand-ins are gone before anything is loaded."""

from __future__ import annotations

import argparse
import io
import os
import pickle
import pickletools
import sys
import types
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from egovlp.errors import CheckpointError, DataError
from egovlp.utils.safe_pickle import (
    InertDict,
    InertList,
    OpaqueObject,
    RefusedGlobalError,
    load_npz_safely,
    load_torch_checkpoint,
)

Install = Callable[[str, type], type]


@pytest.fixture
def install(monkeypatch: pytest.MonkeyPatch) -> Install:
    """``install('pkg.mod', cls)`` makes ``pkg.mod.<cls name>`` importable (parents included) for this test only."""

    made: set[str] = set()

    def _install(module_name: str, cls: type) -> type:
        parts = module_name.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name not in made:  # a fresh module even where the real package is installed; restored afterwards
                monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
                made.add(name)
        cls.__module__ = module_name
        setattr(sys.modules[module_name], cls.__qualname__, cls)
        return cls

    return _install


def _forget(*prefixes: str) -> None:
    """Drop the stand-in modules so that loading cannot import (nor call) them."""
    for name in [n for n in sys.modules if n.split(".")[0] in prefixes]:
        del sys.modules[name]


def _ops_and_globals(path: Path) -> tuple[set[str], set[str]]:
    """The opcode names and the ``module name`` globals in a torch archive's ``data.pkl``."""
    with zipfile.ZipFile(path) as zf:
        data = zf.read(next(n for n in zf.namelist() if n.endswith("/data.pkl")))
    ops, names, strings = set(), set(), []
    for op, arg, _ in pickletools.genops(data):
        ops.add(op.name)
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "STACK_GLOBAL":
            names.add(" ".join(strings[-2:]))
        elif op.name == "GLOBAL":
            names.add(arg)
    return ops, names


# ---------------------------------------------------------------- PyTorch-Lightning checkpoints
class AttributeDict(dict):
    """Like ``pytorch_lightning.utilities.parsing.AttributeDict``: a dict with attribute access."""

    def __getattr__(self, key: str) -> object:
        try:
            return self[key]
        except KeyError as exc:
            raise AttributeError(key) from exc

    def __setattr__(self, key: str, value: object) -> None:
        self[key] = value


class ReadOnlyDict(dict):
    """Like ``sacred.config.custom_containers.ReadOnlyDict``: writes refused, pickled as ``cls(dict(self))``."""

    def __setitem__(self, key: object, value: object) -> None:
        raise TypeError("read-only")

    def __reduce__(self) -> tuple:
        return type(self), (dict(self),)


class ReadOnlyList(list):
    """Like sacred's ``ReadOnlyList``, with a saved attribute (BUILD state) to show it is kept, not applied."""

    def __init__(self, items: object = ()) -> None:
        super().__init__(items)
        self.message = "read-only"

    def __reduce__(self) -> tuple:
        return type(self), (list(self),), {"message": self.message}


class ModelCheckpoint:
    """Like Lightning 1.x's callback class, which keys ``checkpoint['callbacks']``."""


@pytest.fixture
def lightning_ckpt(tmp_path: Path, install: Install) -> tuple[Path, dict]:
    install("pytorch_lightning.utilities.parsing", AttributeDict)
    install("sacred.config.custom_containers", ReadOnlyDict)
    install("sacred.config.custom_containers", ReadOnlyList)
    install("pytorch_lightning.callbacks.model_checkpoint", ModelCheckpoint)
    torch.manual_seed(0)
    state = {
        "text_embeddings.position_embeddings.weight": torch.randn(40, 8),
        "transformer.cls_token": torch.zeros(1, 1, 8),
    }
    config = ReadOnlyDict(
        exp_name="finetune_msrvtt", num_frames=3, max_text_len=40, loss_names=ReadOnlyDict(vtm=1, mlm=1, vtc=0),
        draw_false_video=1, test_only=False, load_path="/ckpt/all-in-one-base.ckpt", decay_power=1,
        vit="vit_base_patch16_224", end_lr=0.0, lr_mult=ReadOnlyList([1, 10]),
    )  # fmt: skip
    hparams = AttributeDict()
    hparams.config = config
    ckpt = {
        "epoch": 9,
        "global_step": 1234,
        "pytorch-lightning_version": "1.1.4",
        "state_dict": state,
        "callbacks": {ModelCheckpoint: {"best_model_score": torch.tensor(0.75), "best_model_path": "/out/e9.ckpt"}},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]}],
        "lr_schedulers": [{"last_epoch": 1234, "base_lrs": [1e-4]}],
        "native_amp_scaling_state": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 10},
        "hyper_parameters": hparams,
    }
    path = tmp_path / "all-in-one-base.ckpt"
    torch.save(ckpt, path)
    ref = torch.load(path, weights_only=False)  # the trusted oracle, while the stand-ins are importable
    _forget("pytorch_lightning", "sacred")
    return path, ref


def test_lightning_stream_has_the_real_names_and_opcodes(lightning_ckpt: tuple[Path, dict]) -> None:
    ops, names = _ops_and_globals(lightning_ckpt[0])
    assert "pytorch_lightning.utilities.parsing AttributeDict" in names
    assert {"sacred.config.custom_containers ReadOnlyDict", "sacred.config.custom_containers ReadOnlyList"} <= names
    assert {"NEWOBJ", "SETITEMS", "REDUCE", "BUILD"} <= ops  # AttributeDict: NEWOBJ + SETITEMS; sacred: REDUCE


def test_lightning_checkpoint_reads_as_plain_data(lightning_ckpt: tuple[Path, dict]) -> None:
    path, ref = lightning_ckpt
    ours = load_torch_checkpoint(path)
    assert "pytorch_lightning" not in sys.modules and "sacred" not in sys.modules
    assert set(ours) == set(ref)
    for key, value in ref["state_dict"].items():
        assert torch.equal(ours["state_dict"][key], value) and ours["state_dict"][key].dtype == value.dtype, key
    hparams = ours["hyper_parameters"]
    assert isinstance(hparams, InertDict) and type(hparams) is not InertDict
    assert (hparams.module, hparams.name) == ("pytorch_lightning.utilities.parsing", "AttributeDict")
    config = hparams["config"]
    assert isinstance(config, InertDict) and (config.module, config.name) == (
        "sacred.config.custom_containers",
        "ReadOnlyDict",
    )
    assert config == dict(ref["hyper_parameters"]["config"])  # every value as saved, nested containers included
    assert config["num_frames"] == 3 and config["loss_names"] == {"vtm": 1, "mlm": 1, "vtc": 0}
    lr_mult = config["lr_mult"]
    assert isinstance(lr_mult, InertList) and lr_mult == [1, 10] and lr_mult.name == "ReadOnlyList"
    assert lr_mult.state == {"message": "read-only"}  # BUILD kept as a record, never applied as attributes
    assert ours["optimizer_states"] == ref["optimizer_states"] and ours["lr_schedulers"] == ref["lr_schedulers"]
    assert ours["native_amp_scaling_state"] == ref["native_amp_scaling_state"]
    ((callback, cb_state),) = ours["callbacks"].items()  # a class used as a dict key becomes its stub class
    assert issubclass(callback, OpaqueObject) and callback.name == "ModelCheckpoint"
    assert cb_state["best_model_score"].item() == 0.75 and cb_state["best_model_path"] == "/out/e9.ckpt"
    assert ours["pytorch-lightning_version"] == "1.1.4" and ours["global_step"] == 1234


def test_unknown_dict_subclass_is_a_record_with_items(tmp_path: Path, install: Install) -> None:
    cls = install("somelib.containers", type("Bag", (dict,), {}))
    path = tmp_path / "bag.ckpt"
    torch.save({"bag": cls(a=1, b=torch.ones(2))}, path)
    _forget("somelib")
    bag = load_torch_checkpoint(path)["bag"]
    assert isinstance(bag, OpaqueObject) and (bag.module, bag.name) == ("somelib.containers", "Bag")
    assert bag.items["a"] == 1 and torch.equal(bag.items["b"], torch.ones(2))


class _Call:
    """Pickles as ``func(*args)``."""

    def __init__(self, func: object, *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return self.func, self.args


def test_inert_container_takes_only_data(tmp_path: Path, install: Install) -> None:
    install("sacred.config.custom_containers", ReadOnlyDict)
    install("pytorch_lightning.utilities.parsing", AttributeDict)
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"hyper_parameters": AttributeDict(config=_Call(os.system, f"touch {marker}"))}, path)
    path_bad = tmp_path / "bad.ckpt"
    torch.save({"config": _Call(ReadOnlyDict, "not a dict")}, path_bad)
    _forget("sacred", "pytorch_lightning")
    with pytest.raises(CheckpointError, match=r"ReadOnlyDict.*takes at most one dict"):
        load_torch_checkpoint(path_bad)
    with pytest.raises(RefusedGlobalError, match=os.system.__module__ + r"\.system"):  # SETITEMS of a REDUCE result
        load_torch_checkpoint(path)
    assert not marker.exists()


# ---------------------------------------------------------------- BUTD detection records (.npz with an object array)
def _butd_record(rng: np.random.Generator, n: int = 5) -> dict[str, object]:
    info = {
        "image_id": "video_0017/3",
        "image_h": np.int64(360),
        "image_w": 640,
        "num_boxes": n,
        "objects_id": rng.integers(0, 1600, n),
        "objects_conf": rng.random(n).astype(np.float32),
        "attrs_id": rng.integers(0, 400, n),
        "attrs_conf": rng.random(n).astype(np.float32),
    }
    bbox = np.sort(rng.random((n, 4)) * 300, axis=1).astype(np.float32)
    return {
        "x": rng.random((n, 16)).astype(np.float32),
        "bbox": bbox,
        "num_bbox": n,
        "image_h": 360,
        "image_w": 640,
        "info": info,
    }


def test_npz_matches_numpy_allow_pickle(tmp_path: Path) -> None:
    path = tmp_path / "3.npz"
    np.savez_compressed(path, **_butd_record(np.random.default_rng(0)))
    with np.load(path) as plain, pytest.raises(ValueError, match="allow_pickle"):
        plain["info"]  # the fixture does hold a pickle that numpy refuses without allow_pickle
    ours = load_npz_safely(path)
    with np.load(path, allow_pickle=True) as trusted:
        assert set(ours) == set(trusted.files)
        for key in trusted.files:
            assert ours[key].dtype == trusted[key].dtype and ours[key].shape == trusted[key].shape, key
            if key != "info":
                np.testing.assert_array_equal(ours[key], trusted[key])
        info, ref = ours["info"].item(), trusted["info"].item()
    assert ours["info"].shape == () and ours["info"].dtype == object
    assert set(info) == set(ref)
    for key, value in ref.items():
        assert type(info[key]) is type(value), key
        np.testing.assert_array_equal(info[key], value)
    assert info["objects_id"].dtype == ref["objects_id"].dtype and info["image_h"] == 360


def test_npz_ragged_object_array(tmp_path: Path) -> None:
    ragged = np.empty(3, dtype=object)
    ragged[:] = [np.arange(2.0), np.arange(5), {"k": [1, (2, 3)]}]
    path = tmp_path / "ragged.npz"
    np.savez(path, ragged=ragged, plain=np.eye(2))
    ours = load_npz_safely(path)
    assert ours["ragged"].shape == (3,) and ours["ragged"].dtype == object
    np.testing.assert_array_equal(ours["ragged"][0], np.arange(2.0))
    assert ours["ragged"][1].dtype == np.arange(5).dtype and ours["ragged"][2] == {"k": [1, (2, 3)]}
    np.testing.assert_array_equal(ours["plain"], np.eye(2))


def test_npz_payloads_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    payloads = [
        (_Call(os.system, f"touch {marker}"), os.system.__module__ + ".system"),
        (_Call(eval, "1"), "builtins.eval"),
    ]
    payloads.append((argparse.Namespace(a=1), "argparse.Namespace"))  # no stubs in data files
    for payload, name in payloads:
        np.savez_compressed(path, x=np.zeros(2), info={"image_id": "a", "x": payload})
        with pytest.raises(RefusedGlobalError, match=name.replace(".", r"\.")) as info:
            load_npz_safely(path)
        assert f"{path}:info.npy" in str(info.value) and isinstance(info.value, DataError)
        assert not marker.exists()


def _npz_with_raw_member(path: Path, name: str, header: dict | None, body: bytes) -> None:
    buf = io.BytesIO()
    if header is not None:
        np.lib.format.write_array_header_1_0(buf, header)
    buf.write(body)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(name, buf.getvalue())


def test_npz_malformed(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    path.write_text("not a zip")
    with pytest.raises(DataError, match="not an .npz archive"):
        load_npz_safely(path)
    _npz_with_raw_member(path, "notes.txt", None, b"hello")
    with pytest.raises(DataError, match=r"notes\.txt: not an \.npy record"):
        load_npz_safely(path)
    _npz_with_raw_member(path, "x.npy", None, b"garbage")
    with pytest.raises(DataError, match=r"x\.npy: not a readable \.npy record"):
        load_npz_safely(path)
    header = {"descr": "|O", "fortran_order": False, "shape": (2,)}
    zero_d = np.empty((), dtype=object)
    zero_d[()] = {"a": 1}
    _npz_with_raw_member(path, "info.npy", header, pickle.dumps(zero_d, protocol=3))
    with pytest.raises(DataError, match=r"info\.npy: pickled data is not the object array of shape \(2,\)"):
        load_npz_safely(path)
    _npz_with_raw_member(path, "info.npy", header, pickle.dumps({"a": 1}))
    with pytest.raises(DataError, match="header announces"):
        load_npz_safely(path)
