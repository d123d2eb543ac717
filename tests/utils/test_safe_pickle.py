"""Restricted unpickling: tensors equal torch.load's, unknown objects become inert records, payloads never run."""

from __future__ import annotations

import argparse
import io
import os
import pickle
import subprocess
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import torch

from egovlp.errors import CheckpointError, DataError
from egovlp.utils.safe_pickle import OpaqueObject, RefusedGlobalError, load_pickle_restricted, load_torch_checkpoint


@pytest.fixture
def fake_parse_config(monkeypatch: pytest.MonkeyPatch) -> type:
    """A ``parse_config.ConfigParser`` class, like the official code base's, importable only during the test."""

    def __init__(self: object) -> None:
        self._config = OrderedDict(name="EgoVLPv2", arch={"type": "FrozenInTime", "args": {"num_frames": 4}})
        self.resume = Path("/ckpt/model_best.pth")
        self.args = argparse.Namespace(rank=0, save_dir="/out")
        self.log_levels = {0: 30, 1: 20}

    cls = type("ConfigParser", (), {"__init__": __init__, "__module__": "parse_config"})
    module = types.ModuleType("parse_config")
    module.ConfigParser = cls
    monkeypatch.setitem(sys.modules, "parse_config", module)
    return cls


def _official_like_checkpoint(config: object) -> dict:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    model(torch.randn(5, 4)).sum().backward()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-5, betas=(0.9, 0.98))
    opt.step()
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = OrderedDict(("module." + k, v) for k, v in model.state_dict().items())
    state._metadata = model.state_dict()._metadata  # as Module.state_dict() returns it
    state.update(
        base=base,
        transposed=base.t(),  # non-contiguous view of the same storage
        strided=base[1:, ::2],  # storage offset and strides
        half=torch.randn(3, 2).half(),
        bf16=torch.randn(4).bfloat16(),
        int64=torch.arange(7),
        flags=torch.tensor([True, False, True]),
        complex=torch.randn(2, dtype=torch.complex64),
        empty=torch.zeros(0, 3),
        scalar=torch.tensor(2.5),
    )
    return {
        "arch": "FrozenInTime",
        "epoch": 10,
        "state_dict": state,
        "optimizer": opt.state_dict(),
        "scheduler": {"last_epoch": 3, "base_lrs": [3e-5]},
        "monitor_best": np.float64(0.4125),
        "config": config,
        "param": torch.nn.Parameter(torch.ones(2)),
        "array": np.arange(6.0).reshape(2, 3).T,
        "dtype": torch.float16,
        "size": torch.Size([2, 3]),
    }


def _assert_same_tensor(ours: torch.Tensor, ref: torch.Tensor, key: str) -> None:
    assert type(ours) is type(ref), key
    assert ours.dtype == ref.dtype and ours.shape == ref.shape, key
    assert ours.stride() == ref.stride() and ours.storage_offset() == ref.storage_offset(), key
    assert ours.requires_grad == ref.requires_grad, key
    assert torch.equal(ours.detach(), ref.detach()), key


def test_matches_torch_load(tmp_path: Path, fake_parse_config: type) -> None:
    path = tmp_path / "ckpt.pth"
    torch.save(_official_like_checkpoint(fake_parse_config()), path)
    ref = torch.load(path, weights_only=False)
    ours = load_torch_checkpoint(path)
    assert set(ours) == set(ref)
    for key, value in ref["state_dict"].items():
        _assert_same_tensor(ours["state_dict"][key], value, key)
    assert ours["state_dict"]._metadata == ref["state_dict"]._metadata
    _assert_same_tensor(ours["param"], ref["param"], "param")
    for idx, slot in ref["optimizer"]["state"].items():
        for name, value in slot.items():
            _assert_same_tensor(ours["optimizer"]["state"][idx][name], value, f"optimizer {idx} {name}")
    assert ours["optimizer"]["param_groups"] == ref["optimizer"]["param_groups"]
    assert ours["scheduler"] == ref["scheduler"] and ours["epoch"] == 10 and ours["arch"] == "FrozenInTime"
    assert type(ours["monitor_best"]) is np.float64 and ours["monitor_best"] == ref["monitor_best"]
    np.testing.assert_array_equal(ours["array"], ref["array"])
    assert ours["dtype"] is torch.float16 and ours["size"] == torch.Size([2, 3])


def test_shared_storage_is_shared(tmp_path: Path) -> None:
    base = torch.arange(12.0)
    torch.save({"a": base, "b": base[2:8].view(2, 3)}, tmp_path / "s.pt")
    ours = load_torch_checkpoint(tmp_path / "s.pt")
    assert ours["a"].untyped_storage().data_ptr() == ours["b"].untyped_storage().data_ptr()
    ours["a"][3] = -1.0
    assert ours["b"][0, 1] == -1.0


def test_config_object_becomes_inert_record(tmp_path: Path, fake_parse_config: type) -> None:
    torch.save(_official_like_checkpoint(fake_parse_config()), tmp_path / "c.pth")
    config = load_torch_checkpoint(tmp_path / "c.pth")["config"]
    assert isinstance(config, OpaqueObject)
    assert (config.module, config.name) == ("parse_config", "ConfigParser")
    assert config.state["_config"]["arch"]["args"] == {"num_frames": 4}
    assert config.state["resume"] == PurePosixPath("/ckpt/model_best.pth")  # a pure path: no file-system access
    namespace = config.state["args"]
    assert (namespace.module, namespace.name) == ("argparse", "Namespace") and namespace.state["rank"] == 0


class _Payload:
    """Pickles as a call of ``func(*args)``: what a hostile checkpoint does."""

    def __init__(self, func: object, *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return self.func, self.args


def _payloads(marker: Path) -> list[tuple[_Payload, str]]:
    return [
        (_Payload(os.system, f"touch {marker}"), os.system.__module__ + ".system"),
        (_Payload(eval, f"open({str(marker)!r}, 'w')"), "builtins.eval"),
        (_Payload(exec, f"open({str(marker)!r}, 'w')"), "builtins.exec"),
        (_Payload(subprocess.call, ["touch", str(marker)]), "subprocess.call"),
        (_Payload(getattr, str(marker), "upper"), "builtins.getattr"),
        (_Payload(torch.load, str(marker)), "torch.serialization.load"),
    ]


def test_torch_checkpoint_payloads_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for payload, name in _payloads(marker):
        path = tmp_path / "evil.pth"
        torch.save({"state_dict": {"w": torch.ones(2)}, "config": payload}, path)
        with pytest.raises(RefusedGlobalError, match=name.replace(".", r"\.")) as info:
            load_torch_checkpoint(path)
        assert str(path) in str(info.value)
        assert isinstance(info.value, CheckpointError)
        assert not marker.exists()


def test_plain_pickle_payloads_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for payload, name in _payloads(marker):
        path = tmp_path / "evil.pkl"
        path.write_bytes(pickle.dumps({"relevancy": np.eye(2), "x": payload}, protocol=2))
        with pytest.raises(RefusedGlobalError, match=name.replace(".", r"\.")) as info:
            load_pickle_restricted(path)
        assert str(path) in str(info.value) and isinstance(info.value, DataError)
        assert not marker.exists()


def test_unknown_callable_is_refused_or_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "pwned"
    module = types.ModuleType("evil_helpers")

    def run(path: str) -> None:
        Path(path).write_text("ran")

    run.__module__, run.__qualname__ = "evil_helpers", "run"
    module.run = run
    monkeypatch.setitem(sys.modules, "evil_helpers", module)
    path = tmp_path / "evil.pth"
    torch.save({"config": _Payload(run, str(marker))}, path)
    monkeypatch.delitem(sys.modules, "evil_helpers")  # the loader must not need (nor import) it
    with pytest.raises(RefusedGlobalError, match=r"evil_helpers\.run"):
        load_torch_checkpoint(path)
    record = load_torch_checkpoint(path, allow_opaque_calls=True)["config"]
    assert isinstance(record, OpaqueObject) and record.called and record.args == (str(marker),)
    assert (record.module, record.name) == ("evil_helpers", "run")
    assert not marker.exists() and "evil_helpers" not in sys.modules


def test_legacy_and_non_torch_files(tmp_path: Path) -> None:
    legacy = tmp_path / "legacy.pth"
    torch.save({"w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="legacy"):
        load_torch_checkpoint(legacy)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match=r"not a torch\.save zip"):
        load_torch_checkpoint(text)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_archive_is_refused(tmp_path: Path) -> None:
    scripted = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.trace(torch.nn.Linear(2, 2), torch.ones(1, 2)), scripted)
    with pytest.raises(CheckpointError, match="TorchScript"):
        load_torch_checkpoint(scripted)


# ---------------------------------------------------------------- hand-built archives (byte order, bad views)
class _StorageRef:
    def __init__(self, key: str, storage_type: type, numel: int) -> None:
        self.key, self.storage_type, self.numel = key, storage_type, numel


class _TensorRecord:
    def __init__(self, storage: _StorageRef, offset: int, size: tuple, stride: tuple) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce__(self) -> tuple:
        args = (self.storage, self.offset, self.size, self.stride, False, OrderedDict())
        return torch._utils._rebuild_tensor_v2, args


class _ArchivePickler(pickle.Pickler):
    def persistent_id(self, obj: object) -> tuple | None:
        if isinstance(obj, _StorageRef):
            return ("storage", obj.storage_type, obj.key, "cpu", obj.numel)
        return None


def _write_archive(
    path: Path,
    obj: object,
    storages: dict[str, bytes],
    byteorder: str = "little",
    compression: int = zipfile.ZIP_STORED,
) -> None:
    buf = io.BytesIO()
    _ArchivePickler(buf, protocol=2).dump(obj)
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        zf.writestr("archive/data.pkl", buf.getvalue())
        zf.writestr("archive/byteorder", byteorder)
        for key, data in storages.items():
            zf.writestr(f"archive/data/{key}", data)
        zf.writestr("archive/version", "3\n")


def test_big_endian_archive(tmp_path: Path) -> None:
    floats = np.array([1.5, -2.25, 3.0], dtype=">f4")
    longs = np.array([1, -2, 2**40], dtype=">i8")
    halfs = np.array([0.5, 8.0], dtype=">f2")
    refs = [_StorageRef("0", torch.FloatStorage, 3), _StorageRef("1", torch.LongStorage, 3)]
    refs.append(_StorageRef("2", torch.HalfStorage, 2))
    obj = {
        "f": _TensorRecord(refs[0], 0, (3,), (1,)),
        "l": _TensorRecord(refs[1], 1, (2,), (1,)),
        "h": _TensorRecord(refs[2], 0, (2,), (1,)),
    }
    path = tmp_path / "big.pth"
    _write_archive(path, obj, {"0": floats.tobytes(), "1": longs.tobytes(), "2": halfs.tobytes()}, "big")
    ours = load_torch_checkpoint(path)
    assert ours["f"].tolist() == [1.5, -2.25, 3.0]
    assert ours["l"].tolist() == [-2, 2**40] and ours["l"].dtype == torch.int64
    assert ours["h"].tolist() == [0.5, 8.0] and ours["h"].dtype == torch.float16


def test_out_of_bounds_view_and_bad_storage(tmp_path: Path) -> None:
    ref = _StorageRef("0", torch.FloatStorage, 4)
    data = np.zeros(4, dtype="<f4").tobytes()
    path = tmp_path / "oob.pth"
    _write_archive(path, {"t": _TensorRecord(ref, 2, (3,), (1,))}, {"0": data})
    with pytest.raises(CheckpointError, match="exceeds its storage"):
        load_torch_checkpoint(path)
    _write_archive(path, {"t": _TensorRecord(ref, 0, (4,), (1,))}, {"0": data[:8]})
    with pytest.raises(CheckpointError, match="holds 8 bytes"):
        load_torch_checkpoint(path)
    _write_archive(path, {"t": _TensorRecord(ref, 0, (4,), (1,))}, {})
    with pytest.raises(CheckpointError, match="missing"):
        load_torch_checkpoint(path)
    _write_archive(path, {"t": _TensorRecord(ref, 0, (4,), (1,))}, {"0": data}, compression=zipfile.ZIP_DEFLATED)
    with pytest.raises(CheckpointError, match="compressed"):  # torch never compresses: refuse possible zip bombs
        load_torch_checkpoint(path)


# ---------------------------------------------------------------- plain pickles (the EK-100 relevancy matrix)
@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_pickles(tmp_path: Path, protocol: int) -> None:
    rng = np.random.default_rng(0)
    values = {
        "relevancy": rng.random((9, 4)),
        "fortran": np.asfortranarray(rng.random((3, 5)).astype(np.float32)),
        "ints": np.arange(10, dtype=np.int64)[::3],
        "big": np.arange(3, dtype=">i4"),
        "flags": np.array([True, False]),
        "text": np.array(["ab", "c"]),
        "scalar": np.float32(1.25),
        "misc": {1, 2},
        "ordered": OrderedDict(a=1),
    }
    path = tmp_path / "rel.pkl"
    path.write_bytes(pickle.dumps(values, protocol=protocol))
    ours = load_pickle_restricted(path)
    trusted = pickle.loads(path.read_bytes())  # numpy's own unpickling (normalises byte order) is the oracle
    for key, value in trusted.items():
        if isinstance(value, np.ndarray):
            assert ours[key].dtype == value.dtype and ours[key].shape == value.shape, key
            np.testing.assert_array_equal(ours[key], value)
        else:
            assert ours[key] == value and type(ours[key]) is type(value), key
    assert ours["fortran"].flags["F_CONTIGUOUS"]


def test_plain_pickle_refusals(tmp_path: Path) -> None:
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps(np.arange(3)))
    with pytest.raises(RefusedGlobalError, match=r"numpy\._core\.multiarray\._reconstruct|numpy\.core"):
        load_pickle_restricted(path, allow_numpy=False)
    path.write_bytes(pickle.dumps(np.array([1, "a"], dtype=object)))
    with pytest.raises(DataError, match="dtype"):
        load_pickle_restricted(path)
    path.write_bytes(pickle.dumps(argparse.Namespace(a=1)))
    with pytest.raises(RefusedGlobalError, match=r"argparse\.Namespace") as info:
        load_pickle_restricted(path)
    assert str(path) in str(info.value)
    path.write_bytes(b"\x80\x02}q\x00(X\x01")  # truncated
    with pytest.raises(DataError, match="malformed"):
        load_pickle_restricted(path)


def test_hostile_numpy_dtype_state_refused(tmp_path: Path) -> None:
    float64_before = np.dtype("f8").__reduce__()[2]
    path = tmp_path / "dtype.pkl"
    for state in [(3, "|", None, None, None, -1, -1, 1), (3, ">", None, None, None, 8, 1, 0)]:
        path.write_bytes(pickle.dumps(_BuildPayload(np.dtype, ("f8", False, False), state), protocol=2))
        with pytest.raises(DataError, match="dtype state"):
            load_pickle_restricted(path)
    assert np.dtype("f8").__reduce__()[2] == float64_before


class _BuildPayload:
    def __init__(self, func: object, args: tuple, state: object) -> None:
        self.func, self.args, self.state = func, args, state

    def __reduce__(self) -> tuple:
        return self.func, self.args, self.state
