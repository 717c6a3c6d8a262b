"""The agentic multi-turn benchmark client: replays a coding-agent workload against any
OpenAI-compatible `/v1/chat/completions` endpoint over HTTP and measures what the user sees.

Workload. Each of C concurrent users holds one conversation: a first user turn of N tokens, then
T further turns (drawn per user from a range) that each append the previous answer and M new
tokens (the "tool output"); every turn asks for O output tokens, with `ignore_eos` so lengths stay
fixed where the server accepts it. Text is random common English words (about one token each in
the BPE vocabularies we know), drawn from a fixed seed, so two runs send the same requests. Token
counts in the report are the server's own, from `usage`.

Measurements, per turn and overall: TTFT (request sent -> first streamed token), inter-token
latency (the mean gap between tokens after the first, from the server's completion_tokens), per-user
decode speed in tokens/s (1 / that gap), aggregate output tokens/min over the run's wall time, and
the cached-token share, `prompt_tokens_details.cached_tokens / prompt_tokens`.

Owns nothing in the engine; talks HTTP only.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

# Short, common words: a single token (with its leading space) in GPT-2, Llama 3, Qwen and SmolLM
# vocabularies, so a turn of M words is close to M tokens.
WORDS = (
    "the of and to in is it you that he was for on are with as his they be at one have this from or "
    "had by hot word but what some we can out other were all there when up use your how said an each "
    "she which do their time if will way about many then them write would like so these her long make "
    "thing see him two has look more day could go come did number sound no most people my over know "
    "water than call first who may down side been now find any new work part take get place made live "
    "where after back little only round man year came show every good me give our under name very "
    "through just form sentence great think say help low line differ turn cause much mean before move "
    "right boy old too same tell does set three want air well also play small end put home read hand "
    "port large spell add even land here must big high such follow act why ask men change went light "
    "kind off need house picture try us again animal point mother world near build self earth father"
).split()


@dataclass
class Workload:
    first_turn_tokens: int = 50_000
    turn_tokens: int = 800
    min_turns: int = 10
    max_turns: int = 15
    output_tokens: int = 256
    users: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("first_turn_tokens", "turn_tokens", "output_tokens", "users"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if not 0 <= self.min_turns <= self.max_turns:
            raise ValueError(f"turns {self.min_turns}-{self.max_turns}: expected 0 <= min <= max")


PRESETS = {
    # The seeds' workload: 50K-token first turn, 10-15 turns of 800 new tokens.
    "agentic": Workload(),
    # Small enough for SmolLM2-135M on two CPU cores in about a minute.
    "cpu": Workload(first_turn_tokens=512, turn_tokens=64, min_turns=3, max_turns=4, output_tokens=24, users=3),
}


def random_text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


@dataclass
class TurnResult:
    user: int
    turn: int
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    ttft_s: float
    e2e_s: float
    decode_s: float  # first token -> last token
    start_s: float  # since the run began
    finish_reason: str | None

    @property
    def itl_s(self) -> float | None:
        if self.completion_tokens < 2:
            return None
        return self.decode_s / (self.completion_tokens - 1)


@dataclass
class _Endpoint:
    base_url: str
    model: str
    api_key: str | None
    send_ignore_eos: bool = True


async def _stream_turn(client: httpx.AsyncClient, endpoint: _Endpoint, messages: list[dict], workload: Workload, seed: int):
    """One streamed chat completion. Returns (answer text, usage, ttft, decode time, finish reason)."""
    body = {
        "model": endpoint.model,
        "messages": messages,
        "max_tokens": workload.output_tokens,
        "temperature": 0.0,
        "seed": seed,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if endpoint.send_ignore_eos:
        body["ignore_eos"] = True
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    start = time.perf_counter()
    first = last = None
    pieces: list[str] = []
    usage: dict = {}
    finish_reason = None
    async with client.stream("POST", f"{endpoint.base_url}/chat/completions", json=body, headers=headers) as response:
        if response.status_code != 200:
            error = (await response.aread()).decode(errors="replace")
            if response.status_code == 400 and "ignore_eos" in error and endpoint.send_ignore_eos:
                endpoint.send_ignore_eos = False
                return await _stream_turn(client, endpoint, messages, workload, seed)
            raise RuntimeError(f"{endpoint.base_url} answered {response.status_code}: {error}")
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if "error" in chunk:
                raise RuntimeError(f"stream error: {chunk['error']}")
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices", []):
                delta = choice.get("delta", {})
                text = (delta.get("content") or "") + (delta.get("reasoning_content") or "")
                if text or delta.get("tool_calls"):
                    now = time.perf_counter()
                    first = first if first is not None else now
                    last = now
                    pieces.append(delta.get("content") or "")
                finish_reason = choice.get("finish_reason") or finish_reason
    end = time.perf_counter()
    first = first if first is not None else end
    last = last if last is not None else end
    return "".join(pieces), usage, first - start, last - first, end - start, finish_reason


async def _user(client, endpoint: _Endpoint, workload: Workload, user: int, turns: int, t0: float, results: list):
    rng = random.Random(f"{workload.seed}-user-{user}")
    messages = [{"role": "user", "content": f"User {user}. " + random_text(rng, workload.first_turn_tokens)}]
    for turn in range(turns + 1):
        if turn > 0:
            messages.append({"role": "user", "content": random_text(rng, workload.turn_tokens)})
        sent = time.perf_counter() - t0
        answer, usage, ttft, decode, e2e, reason = await _stream_turn(
            client, endpoint, messages, workload, seed=workload.seed * 1_000_003 + user * 1000 + turn
        )
        details = usage.get("prompt_tokens_details") or {}
        results.append(
            TurnResult(
                user=user,
                turn=turn,
                prompt_tokens=int(usage.get("prompt_tokens", 0)),
                cached_tokens=int(details.get("cached_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens", 0)),
                ttft_s=ttft,
                e2e_s=e2e,
                decode_s=decode,
                start_s=sent,
                finish_reason=reason,
            )
        )
        messages.append({"role": "assistant", "content": answer})


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summarize(results: list[TurnResult], wall_s: float | None = None) -> dict:
    """Aggregate statistics of a set of turns; `wall_s` adds the aggregate throughput."""
    ttft = [r.ttft_s for r in results]
    itl = [r.itl_s for r in results if r.itl_s is not None]
    speed = [1.0 / r.itl_s for r in results if r.itl_s]
    prompt = sum(r.prompt_tokens for r in results)
    cached = sum(r.cached_tokens for r in results)
    output = sum(r.completion_tokens for r in results)
    summary = {
        "requests": len(results),
        "prompt_tokens": prompt,
        "cached_tokens": cached,
        "completion_tokens": output,
        "cached_share": cached / prompt if prompt else 0.0,
        "ttft_s": {"mean": statistics.fmean(ttft) if ttft else None, "p50": _percentile(ttft, 0.5), "p90": _percentile(ttft, 0.9)},
        "itl_s": {"mean": statistics.fmean(itl) if itl else None, "p50": _percentile(itl, 0.5), "p90": _percentile(itl, 0.9)},
        "per_user_tok_s": {"mean": statistics.fmean(speed) if speed else None, "p50": _percentile(speed, 0.5)},
    }
    if wall_s is not None:
        summary["wall_s"] = wall_s
        summary["aggregate_output_tok_min"] = output / wall_s * 60 if wall_s > 0 else 0.0
        summary["aggregate_prompt_tok_min"] = prompt / wall_s * 60 if wall_s > 0 else 0.0
    return summary


async def run_async(base_url: str, model: str | None, workload: Workload, api_key: str | None = None,
                    gpus: int | None = None) -> dict:
    """Run the workload against `base_url` (an OpenAI /v1 root); `gpus`, the GPUs behind it when
    known, only divides the aggregate throughput into tokens/min per GPU."""
    base_url = base_url.rstrip("/")
    rng = random.Random(workload.seed)
    turns = [rng.randint(workload.min_turns, workload.max_turns) for _ in range(workload.users)]
    timeout = httpx.Timeout(None, connect=30.0)
    limits = httpx.Limits(max_connections=workload.users + 4)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        if model is None:
            headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
            listing = (await client.get(f"{base_url}/models", headers=headers)).raise_for_status().json()
            model = listing["data"][0]["id"]
        endpoint = _Endpoint(base_url=base_url, model=model, api_key=api_key)
        results: list[TurnResult] = []
        t0 = time.perf_counter()
        await asyncio.gather(*(_user(client, endpoint, workload, u, turns[u], t0, results) for u in range(workload.users)))
        wall = time.perf_counter() - t0
    results.sort(key=lambda r: (r.user, r.turn))
    overall = summarize(results, wall)
    if gpus:
        overall["output_tok_min_per_gpu"] = overall["aggregate_output_tok_min"] / gpus
    per_turn = [
        {"turn": t, **summarize([r for r in results if r.turn == t])}
        for t in range(max(turns) + 1)
    ]
    return {
        "endpoint": base_url,
        "model": model,
        "workload": asdict(workload),
        "turns_per_user": turns,
        "ignore_eos_sent": endpoint.send_ignore_eos,
        "gpus": gpus,
        "overall": overall,
        "per_turn": per_turn,
        "requests": [asdict(r) | {"itl_s": r.itl_s} for r in results],
    }


def run(base_url: str, model: str | None, workload: Workload, api_key: str | None = None,
        gpus: int | None = None) -> dict:
    return asyncio.run(run_async(base_url, model, workload, api_key, gpus))


def _fmt(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def format_report(report: dict) -> str:
    w = report["workload"]
    lines = [
        f"agentic benchmark: {report['model']} at {report['endpoint']}",
        f"  {w['users']} users, first turn {w['first_turn_tokens']} tokens, {w['min_turns']}-{w['max_turns']} turns "
        f"of {w['turn_tokens']} tokens, {w['output_tokens']} output tokens a turn, seed {w['seed']}"
        + ("" if report["ignore_eos_sent"] else " (server refused ignore_eos)"),
        f"{'turn':>5} {'reqs':>5} {'prompt':>8} {'cached%':>8} {'TTFT p50 ms':>12} {'TTFT p90 ms':>12} "
        f"{'ITL p50 ms':>11} {'user tok/s':>11}",
    ]
    for row in report["per_turn"] + [{"turn": "all", **report["overall"]}]:
        prompt = row["prompt_tokens"] / row["requests"] if row["requests"] else 0
        lines.append(
            f"{row['turn']:>5} {row['requests']:>5} {prompt:>8.0f} {_fmt(row['cached_share'], 100):>8} "
            f"{_fmt(row['ttft_s']['p50'], 1000):>12} {_fmt(row['ttft_s']['p90'], 1000):>12} "
            f"{_fmt(row['itl_s']['p50'], 1000):>11} {_fmt(row['per_user_tok_s']['mean']):>11}"
        )
    overall = report["overall"]
    per_gpu = f" ({overall['output_tok_min_per_gpu']:.0f} per GPU on {report['gpus']})" if report["gpus"] else ""
    lines.append(
        f"aggregate: {overall['aggregate_output_tok_min']:.0f} output tok/min{per_gpu}, "
        f"{overall['aggregate_prompt_tok_min']:.0f} prompt tok/min, wall {overall['wall_s']:.1f} s, "
        f"cached share {overall['cached_share'] * 100:.1f}%"
    )
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    turns = [row["turn"] for row in report["per_turn"]]
    series = [
        ("TTFT (ms)", [("p50", "ttft_s", "p50"), ("p90", "ttft_s", "p90")], 1000),
        ("inter-token latency (ms)", [("p50", "itl_s", "p50"), ("mean", "itl_s", "mean")], 1000),
        ("per-user decode tokens/s", [("mean", "per_user_tok_s", "mean")], 1),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for ax in axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax, (title, lines, scale) in zip(axes.flat, series):
        for label, key, stat in lines:
            values = [row[key][stat] for row in report["per_turn"]]
            ax.plot(turns, [v * scale if v is not None else float("nan") for v in values], marker="o", label=label)
        ax.set_title(title)
        ax.set_xlabel("turn")
        ax.legend()
    ax = axes.flat[3]
    ax.bar(turns, [row["cached_share"] * 100 for row in report["per_turn"]])
    ax.set_title("cached share of prompt tokens (%)")
    ax.set_xlabel("turn")
    ax.set_ylim(0, 100)
    w = report["workload"]
    fig.suptitle(
        f"{report['model']}: {w['users']} users, {w['first_turn_tokens']}+{w['turn_tokens']}/turn, "
        f"{w['output_tokens']} out; {report['overall']['aggregate_output_tok_min']:.0f} output tok/min"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(report: dict, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out_dir / "agentic.json", out_dir / "agentic.png"
    json_path.write_text(json.dumps(report, indent=2))
    plot(report, png_path)
    return json_path, png_path
