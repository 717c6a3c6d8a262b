"""The vendor path end to end: the out-of-tree package in examples/ is installed into a scratch
site-packages, and a fresh Python process discovers it through its entry point alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "tokenyard-example-backend"

PROBE = textwrap.dedent("""
    import dataclasses, json, sys, time, torch
    from tokenyard.registry import get_registry
    reg = get_registry()
    reg.ensure_loaded()
    if sys.argv[1] == "slow-reference":
        # make the reference measurably slower so that 'fastest' has a clear winner
        slow = []
        for rec in reg.records["silu_and_mul"]:
            if rec.backend == "reference":
                inner = rec.fn
                def fn(x, _inner=inner):
                    time.sleep(0.002)
                    return _inner(x=x)
                rec = dataclasses.replace(rec, fn=fn)
            slow.append(rec)
        reg.records["silu_and_mul"] = slow
    x = torch.randn(64, 256)
    sel = reg.select("silu_and_mul", {"x": x})
    print(json.dumps({
        "backends": reg.backends,
        "kernels": [r.key for r in reg.kernels("silu_and_mul")],
        "chosen": sel.chosen.key,
        "how": sel.how,
        "failures": {c.record.key: c.check_failure for c in sel.candidates if c.check_failure},
    }))
""")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(EXAMPLE)], check=True, cwd=tmp_path_factory.mktemp("build"))
    return target


def run(site, tmp_path, mode="plain", **env):
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("TOKENYARD_")}
    full_env = {**inherited, "PYTHONPATH": str(site), "TOKENYARD_CACHE_DIR": str(tmp_path), **env}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], env=full_env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_discovered_through_its_entry_point_and_listed(site, tmp_path):
    info = run(site, tmp_path, TOKENYARD_KERNEL_POLICY="priority")
    assert "example" in info["backends"]
    assert "example:fused" in info["kernels"]
    listing = subprocess.run([sys.executable, "-m", "tokenyard.cli", "kernels", "list", "--device", "cpu"],
                             env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True, check=True)
    assert "example:fused" in listing.stdout


def test_selectable_by_override(site, tmp_path):
    info = run(site, tmp_path, TOKENYARD_KERNEL_SILU_AND_MUL="example:fused")
    assert (info["chosen"], info["how"]) == ("example:fused", "override:environment")


def test_chosen_by_fastest_when_faster_and_correct(site, tmp_path):
    info = run(site, tmp_path, "slow-reference", TOKENYARD_KERNEL_POLICY="fastest")
    assert (info["chosen"], info["how"]) == ("example:fused", "fastest")
    assert info["failures"] == {}


def test_excluded_when_wrong_even_if_faster(site, tmp_path):
    info = run(site, tmp_path, "slow-reference", TOKENYARD_KERNEL_POLICY="fastest", TOKENYARD_EXAMPLE_FAULT="1")
    assert info["chosen"] == "reference:torch"
    assert "exceeds tolerance" in info["failures"]["example:fused"]
