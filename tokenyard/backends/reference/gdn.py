"""Gated DeltaNet (Qwen3-Next, Qwen3.5 linear attention): gating, short causal conv, delta rule.

Owns the math of the GDN token mixer over the state-slot pools; the pools themselves (their
allocation and slot ids) belong to the engine's cache. Read slot -1 starts from zeros, write slot
-1 writes nothing, and every read happens before any write, so read == write is in place.

Gating:      g = −exp(A_log)·softplus(a + dt_bias)   (log-space decay),   β = sigmoid(b)

Causal conv: depthwise, per channel c, over the window [state ‖ x] (state = last W−1 inputs,
oldest first):  y_t = act(bias_c + Σ_{i<W} w[c, i]·x_{t−W+1+i}); the new state is the last W−1
entries of [state ‖ x], so a sequence shorter than W−1 shifts the old state along.

Gated delta rule, per value head with state S [K, V] (v-head j reads qk-head j // (Hv/Hk); q and
k L2-normalised over K when asked, as FLA does: x / sqrt(Σx² + 1e-6); q scaled by `scale`):
    S_t = e^{g_t}·S_{t−1} + k_t u_tᵀ,   u_t = β_t (v_t − e^{g_t}·S_{t−1}ᵀk_t),   o_t = S_tᵀq_t
Decode runs this recurrence for one step. Extend runs it chunk by chunk (C = 64), in the WY/UT
form of FLA's chunk_gated_delta_rule. Inside a chunk starting from state S, with γ_t = Σ_{s≤t} g_s
and D_tj = e^{γ_t−γ_j} for j ≤ t (0 above the diagonal), unrolling the recurrence gives
    (I + A) U = β⊙V − (β e^{γ})⊙K · S,           A_tj = β_t D_tj k_t·k_j  (j < t)
so with T = (I + A)⁻¹ (one unit-lower-triangular solve per chunk)
    U     = T(β⊙V) − T((β e^{γ})⊙K) · S
    O     = (e^{γ}⊙Q) · S + (QKᵀ ⊙ D) · U
    S_new = e^{γ_C} S + ((e^{γ_C−γ})⊙K)ᵀ · U
Everything but the S-dependent products is computed for all chunks at once; the scan over chunks
is the only sequential part. A sequence is padded to whole chunks with k = v = β = 0, g = 0,
which leaves its state untouched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .pools import read_slots as read_states
from .pools import write_slots as write_states

CHUNK = 64
L2NORM_EPS = 1e-6


def gdn_gating(*, A_log: torch.Tensor, a: torch.Tensor, dt_bias: torch.Tensor, b: torch.Tensor):
    g = -A_log.float().exp() * F.softplus(a.float() + dt_bias.float())
    return g, b.float().sigmoid()


def _activate(y: torch.Tensor, activation: str | None) -> torch.Tensor:
    if activation is None:
        return y
    if activation == "silu":
        return F.silu(y)
    raise ValueError(f"activation must be 'silu' or None, got {activation!r}")


def _conv(windows: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, activation: str | None) -> torch.Tensor:
    """windows[..., C, L, W] (fp32) -> y[..., C, L]: Σ_i w[c, i]·window[i] + bias_c, activated."""
    y = (windows * w.float()[:, None, :]).sum(-1)
    if bias is not None:
        y = y + bias.float()[:, None]
    return _activate(y, activation)


def causal_conv1d_extend(
    *,
    x: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None,
    conv_state: torch.Tensor,
    cu_seqlens: torch.Tensor,
    read_slots: torch.Tensor,
    write_slots: torch.Tensor,
    activation: str | None,
) -> torch.Tensor:
    width = w.shape[1]
    initial = read_states(conv_state, read_slots)  # [B, C, W-1]
    y = torch.empty_like(x)
    finals = []
    cu = cu_seqlens.tolist()
    for b in range(len(cu) - 1):
        start, end = cu[b], cu[b + 1]
        window = torch.cat((initial[b], x[start:end].float().t()), dim=-1)  # [C, W-1+L]
        if end > start:
            y[start:end] = _conv(window.unfold(-1, width, 1), w, bias, activation).t()
        finals.append(window[:, window.shape[-1] - (width - 1) :])
    write_states(write_slots, (conv_state, torch.stack(finals)))
    return y


def causal_conv1d_decode(
    *,
    x: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None,
    conv_state: torch.Tensor,
    read_slots: torch.Tensor,
    write_slots: torch.Tensor,
    activation: str | None,
) -> torch.Tensor:
    window = torch.cat((read_states(conv_state, read_slots), x.float()[:, :, None]), dim=-1)  # [B, C, W]
    y = _conv(window[:, :, None, :], w, bias, activation)[:, :, 0]
    write_states(write_slots, (conv_state, window[:, :, 1:]))
    return y.to(x.dtype)


def l2norm(x: torch.Tensor) -> torch.Tensor:
    """FLA's l2norm: x / sqrt(Σx² + 1e-6) over the last dim."""
    return x * torch.rsqrt(x.square().sum(-1, keepdim=True) + L2NORM_EPS)


def _value_head_qk(q: torch.Tensor, k: torch.Tensor, num_v_heads: int, scale: float, qk_l2norm: bool):
    """q, k [..., Hk, K] -> fp32 [..., Hv, K], normalised if asked, q scaled; v-head j gets qk-head j // (Hv/Hk)."""
    q, k = q.float(), k.float()
    if qk_l2norm:
        q, k = l2norm(q), l2norm(k)
    group = num_v_heads // q.shape[-2]
    return (q * scale).repeat_interleave(group, dim=-2), k.repeat_interleave(group, dim=-2)


def chunk_gated_delta_rule(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor, state: torch.Tensor
):
    """One sequence, chunked. q, k [H, L, K], v [H, L, V], g, beta [H, L], state [H, K, V], all fp32
    (q already normalised and scaled) -> (o [H, L, V], final state [H, K, V])."""
    h, length, _ = k.shape
    pad = (-length) % CHUNK
    n = (length + pad) // CHUNK
    q, k, v = (F.pad(t, (0, 0, 0, pad)).view(h, n, CHUNK, t.shape[-1]) for t in (q, k, v))
    g, beta = (F.pad(t, (0, pad)).view(h, n, CHUNK) for t in (g, beta))

    gamma = g.cumsum(-1)
    lower = torch.ones(CHUNK, CHUNK, dtype=torch.bool, device=k.device).tril()
    decay = (gamma[..., :, None] - gamma[..., None, :]).masked_fill(~lower, float("-inf")).exp()
    k_beta = k * beta[..., None]
    eye = torch.eye(CHUNK, device=k.device)
    unit_lower = eye + ((k_beta @ k.transpose(-1, -2)) * decay).tril(-1)  # I + A
    u_from_v = torch.linalg.solve_triangular(unit_lower, v * beta[..., None], upper=False, unitriangular=True)
    u_from_state = torch.linalg.solve_triangular(
        unit_lower, k_beta * gamma.exp()[..., None], upper=False, unitriangular=True
    )
    intra = (q @ k.transpose(-1, -2)) * decay
    q_decayed = q * gamma.exp()[..., None]
    k_to_end = k * (gamma[..., -1:] - gamma).exp()[..., None]
    chunk_decay = gamma[..., -1].exp()[..., None, None]

    o = torch.empty_like(v)
    for c in range(n):
        u = u_from_v[:, c] - u_from_state[:, c] @ state
        o[:, c] = q_decayed[:, c] @ state + intra[:, c] @ u
        state = state * chunk_decay[:, c] + k_to_end[:, c].transpose(-1, -2) @ u
    return o.view(h, n * CHUNK, o.shape[-1])[:, :length], state


def gdn_extend(
    *,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    state: torch.Tensor,
    cu_seqlens: torch.Tensor,
    read_slots: torch.Tensor,
    write_slots: torch.Tensor,
    scale: float,
    qk_l2norm: bool,
) -> torch.Tensor:
    q, k = _value_head_qk(q, k, v.shape[1], scale, qk_l2norm)
    initial = read_states(state, read_slots)
    out = torch.empty_like(v)
    finals = []
    cu = cu_seqlens.tolist()
    for b in range(len(cu) - 1):
        s = slice(cu[b], cu[b + 1])
        o, final = chunk_gated_delta_rule(
            q[s].transpose(0, 1),
            k[s].transpose(0, 1),
            v[s].float().transpose(0, 1),
            g[s].float().t(),
            beta[s].float().t(),
            initial[b],
        )
        out[s] = o.transpose(0, 1)
        finals.append(final)
    write_states(write_slots, (state, torch.stack(finals)))
    return out


def gdn_decode(
    *,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    state: torch.Tensor,
    read_slots: torch.Tensor,
    write_slots: torch.Tensor,
    scale: float,
    qk_l2norm: bool,
) -> torch.Tensor:
    q, k = _value_head_qk(q, k, v.shape[1], scale, qk_l2norm)  # [B, Hv, K]
    s = read_states(state, read_slots) * g.float().exp()[..., None, None]  # [B, Hv, K, V]
    u = beta.float()[..., None] * (v.float() - torch.einsum("bhk,bhkv->bhv", k, s))
    s = s + k[..., :, None] * u[..., None, :]
    write_states(write_slots, (state, s))
    return torch.einsum("bhk,bhkv->bhv", q, s).to(v.dtype)
