"""``stream_tensors``: a safetensors file written one tensor at a time (merge's writer).

It must be a file safetensors itself reads back exactly, for every dtype latentzoo writes,
and a failure while producing a tensor must leave nothing behind.
"""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from latentzoo.core.contract.errors import LatentzooError
from latentzoo.core.contract.weights import check_finite, read_metadata, stream_tensors
from latentzoo.core.runtime.merge import merge_files


def sample_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "a.weight": torch.randn(3, 5, generator=g),
        "b.bf16": torch.randn(7, generator=g).to(torch.bfloat16),
        "c.half": torch.randn(2, 2, 2, generator=g).half(),
        "d.ids": torch.arange(5, dtype=torch.int64),
        "e.mask": torch.tensor([True, False, True]),
        "f.scalar": torch.tensor(2.5),
        "g.empty": torch.zeros(0, 4),
        "h.bytes": torch.arange(3, dtype=torch.uint8),
    }


def test_every_dtype_reads_back_exactly_with_its_metadata(tmp_path):
    tensors = sample_tensors()
    layout = {k: (tuple(v.shape), v.dtype) for k, v in tensors.items()}
    produced = []
    digest = stream_tensors(tmp_path / "x.safetensors", layout, lambda k: produced.append(k) or tensors[k], {"recipe": "r", "b": "2"})
    back = load_file(tmp_path / "x.safetensors")
    assert sorted(back) == sorted(tensors) and produced == sorted(tensors)  # each made once, in the file's order
    for key, value in tensors.items():
        assert back[key].dtype == value.dtype and torch.equal(back[key], value), key
    assert read_metadata(tmp_path / "x.safetensors") == {"recipe": "r", "b": "2"}
    assert len(digest) == 64
    with safe_open(str(tmp_path / "x.safetensors"), "pt") as f:
        assert f.get_slice("a.weight").get_shape() == [3, 5]


@pytest.mark.parametrize("failure", ["wrong shape", "wrong dtype", "nan"])
def test_a_failure_mid_file_leaves_nothing(tmp_path, failure):
    tensors = sample_tensors()
    layout = {k: (tuple(v.shape), v.dtype) for k, v in tensors.items()}
    target = tmp_path / "x.safetensors"
    target.write_bytes(b"the previous file")

    def produce(key: str) -> torch.Tensor:
        if key == "c.half":
            bad = {"wrong shape": torch.zeros(9), "wrong dtype": tensors[key].float(), "nan": torch.full((2, 2, 2), float("nan")).half()}
            check_finite(target, {key: bad[failure]})
            return bad[failure]
        return tensors[key]

    with pytest.raises((ValueError, LatentzooError)):
        stream_tensors(target, layout, produce)
    assert target.read_bytes() == b"the previous file"
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]  # no temporary left


def test_merge_streams_the_same_tensors_as_the_formula(tmp_path):
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(1)
    inputs = []
    for name in "ABC":
        save_file({"w": torch.randn(4, 3, generator=g), "ids": torch.arange(3)}, tmp_path / f"{name}.safetensors")
        inputs.append(tmp_path / f"{name}.safetensors")
    a, b, c = (load_file(p) for p in inputs)
    merge_files("add-difference", inputs, 0.5, tmp_path / "D.safetensors", dtype="fp16", recipe={"op": "ad"})
    d = load_file(tmp_path / "D.safetensors")
    assert d["w"].dtype == torch.float16 and torch.equal(d["w"], (a["w"] + 0.5 * (b["w"] - c["w"])).half())
    assert torch.equal(d["ids"], a["ids"]) and d["ids"].dtype == torch.int64
    merge_files("weighted-sum", inputs[:2], 0.25, tmp_path / "E.safetensors", dtype=None, recipe={"op": "ws"})
    assert torch.equal(load_file(tmp_path / "E.safetensors")["w"], 0.75 * a["w"] + 0.25 * b["w"])
