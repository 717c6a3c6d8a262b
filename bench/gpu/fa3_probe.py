"""Which FlashAttention-3 calling forms work on the paged cache layout of tokenyard (each form runs in
its own process: an illegal memory access poisons the CUDA context). Prints one line per form."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORMS = ("extend_batch", "extend_varlen", "decode")

CHILD = """
import sys, torch
sys.path.insert(0, {gpu!r})
import cases
from tokenyard.backends.nvidia import peers
form = sys.argv[1]
torch.manual_seed(0)
if form == "extend_batch":
    args = cases.make("attention_extend", "cuda", torch.bfloat16, q_lens=[1000], kv_lens=[1300], page=64, Hq=16, Hk=2, D=256)
    op, fn = "attention_extend", peers.fa3_attention_extend
elif form == "extend_varlen":
    args = cases.make("attention_extend", "cuda", torch.bfloat16, q_lens=[5, 300, 1], kv_lens=[5, 1300, 38], page=64, Hq=16, Hk=2, D=256)
    op, fn = "attention_extend", peers.fa3_attention_extend
else:
    args = cases.make("attention_decode", "cuda", torch.bfloat16, kv_lens=[1, 5000, 300], page=64, Hq=16, Hk=2, D=256)
    op, fn = "attention_decode", peers.fa3_attention_decode
print(form, "rel_err", cases.check(op, fn, args))
"""


def main() -> int:
    code = CHILD.format(gpu=str(ROOT / "tests" / "gpu"))
    for form in FORMS:
        proc = subprocess.run([sys.executable, "-c", code, form], capture_output=True, text=True, timeout=300)
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or [""]
        print(f"fa3 {form}: rc={proc.returncode} {tail[0][:300]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
