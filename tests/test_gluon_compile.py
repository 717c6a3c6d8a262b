"""The warp-specialised Gluon kernels (tokenyard/backends/nvidia/attention_ws.py, gdn_ws.py)
compiled for sm_90 on the CPU: Gluon has no interpreter, so this is what `make test` can check
without a GPU — each kernel builds with the installed Triton at the shapes it runs (attention:
Qwen3-Next's d=256 and Llama's d=128, packed GQA with split-K too; the GDN scan at K = V = 128,
V blocks of 32 and 64, P computed in the kernel or read), fits the 227 KB of shared memory a Hopper CTA may use, and its machine
code is what the design says: wgmma products, TMA loads and a register reallocation between the
partitions. Their numerics run on the device (tests/gpu/test_attention_ws.py,
tests/gpu/test_engine_layouts.py and the kernel grid).
"""

from __future__ import annotations

import os
import subprocess

import pytest

triton = pytest.importorskip("triton")
pytest.importorskip("triton.experimental.gluon.language.nvidia.hopper")

from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.experimental.gluon import language as gl  # noqa: E402
from triton.experimental.gluon._runtime import GluonASTSource  # noqa: E402

from tokenyard.backends.nvidia import attention_ws, gdn_ws  # noqa: E402

HOPPER_SMEM_PER_CTA = 227 * 1024


def _compile(D: int, HP: int, NS: int):
    bn, stages = attention_ws.extend_ws_config(D, D)
    box = min(64, bn)
    layout = gl.NVMMASharedLayout.get_default_for([box, D], gl.bfloat16)
    desc = f"tensordesc<bf16[{box}, {D}],{layout!r}>"
    names = ("q_ptr k_desc v_desc pt_ptr cu_ptr sk_ptr o_ptr mo_ptr ml_ptr qk_scale B HQ GROUP stride_qt stride_qh "
             "stride_pt stride_ot stride_oh").split()
    types = ["*bf16", desc, desc, "*i32", "*i32", "*i32", "*bf16", "*bf16", "*fp32", "fp32"] + ["i32"] * 8
    constexprs = dict(PAGE=64, D=D, DV=D, BQ=128 // HP, HP=HP, BN=bn, BOX=box, NS=NS, STAGES=stages,
                      HEADS_INNER=True, BLOCK_B=2)
    signature = dict(zip(names, types), **{c: "constexpr" for c in constexprs})
    return triton.compile(GluonASTSource(fn=attention_ws._attn_extend_ws_kernel, signature=signature,
                                         constexprs=constexprs),
                          target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "maxnreg": 168})


def _desc(box):
    return f"tensordesc<bf16[{box[0]}, {box[1]}],{gl.NVMMASharedLayout.get_default_for(box, gl.bfloat16)!r}>"


def _compile_gdn_scan(BV: int, stages: int, pscan: bool):
    names = ("w_desc u_desc q_desc k_desc p_desc gc_ptr qn_ptr kn_ptr state_ptr cu_ptr rs_ptr ws_ptr o_ptr scale HV "
             "GROUP stride_ot stride_oh stride_s").split()
    types = ([_desc([64, 128]), _desc([64, BV]), _desc([64, 128]), _desc([64, 128]), _desc([64, 64])]
             + ["*fp32"] * 4 + ["*i32"] * 3 + ["*bf16", "fp32"] + ["i32"] * 5)
    constexprs = dict(K=128, V=128, BV=BV, STAGES=stages, PSCAN=pscan)
    signature = dict(zip(names, types), **{c: "constexpr" for c in constexprs})
    return triton.compile(GluonASTSource(fn=gdn_ws._gdn_scan_ws_kernel, signature=signature, constexprs=constexprs),
                          target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "maxnreg": 168})


@pytest.mark.parametrize("kernel_name,shape", [("attention", (128, 1, 1)), ("attention", (256, 1, 1)),
                                               ("attention", (256, 8, 4)), ("gdn_scan", (32, 2, True)),
                                               ("gdn_scan", (64, 2, True)), ("gdn_scan", (32, 2, False))])
def test_ws_kernel_compiles_for_sm90(kernel_name, shape):
    kernel = _compile(*shape) if kernel_name == "attention" else _compile_gdn_scan(*shape)
    assert 0 < kernel.metadata.shared <= HOPPER_SMEM_PER_CTA
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.access(cuobjdump, os.X_OK):
        pytest.skip("the Triton wheel ships no runnable cuobjdump here")
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"tokenyard_{kernel_name}_{os.getpid()}.cubin")
    with open(path, "wb") as f:
        f.write(kernel.asm["cubin"])
    try:
        sass = subprocess.run([cuobjdump, "-sass", path], capture_output=True, text=True, check=True).stdout
    finally:
        os.remove(path)
    assert "HGMMA" in sass  # the products run on wgmma
    assert "USETMAXREG" in sass  # the producer warp hands its registers to the other partitions
    assert "UTMALDG" in sass  # the tiles arrive by TMA
