"""`tokenyard kernels list | explain | bench` on the CPU."""

from __future__ import annotations

import json

import pytest

import tokenyard.kernel_api as ops
from tokenyard.cli import main


def test_list_shows_every_op_with_its_reference_kernel(capsys):
    assert main(["kernels", "list", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    for op in ops.OPS:
        assert op in out
    assert "reference:torch" in out and "backends loaded:" in out


def test_explain_names_candidates_and_the_choice(capsys):
    assert main(["kernels", "explain", "gdn_extend", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "reference:torch" in out and "chosen: reference:torch" in out


def test_explain_with_a_forced_kernel(capsys):
    assert main(["kernels", "explain", "rms_norm", "--device", "cpu", "--kernel", "reference"]) == 0
    assert "(override:argument)" in capsys.readouterr().out


def test_bench_prints_a_table_against_measured_ceilings_and_writes_json(capsys, tmp_path):
    path = tmp_path / "b.json"
    assert main(["kernels", "bench", "attention_decode", "--device", "cpu", "--shape", "small,ctx=64",
                 "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ceilings: copy" in out and "reference:torch" in out
    data = json.loads(path.read_text())
    assert data["shape"]["ctx"] == 64 and data["bytes"] > 0 and data["flops"] > 0
    (row,) = data["kernels"]
    assert row["kernel"] == "reference:torch" and row["time_ms"] > 0 and row["gbytes_per_s"] > 0
    assert data["ceilings"]["copy_bytes_per_s"] > 0 and data["ceilings"]["matmul_flops_per_s"] > 0


def test_unknown_op_or_shape_is_a_clear_error():
    with pytest.raises(SystemExit, match="unknown op 'nope'"):
        main(["kernels", "explain", "nope"])
    with pytest.raises(SystemExit, match="--shape 'huge': unknown for rms_norm"):
        main(["kernels", "bench", "rms_norm", "--device", "cpu", "--shape", "huge"])
