"""The one engine loop that feeds every connection.

`EngineLoop` owns an `LLMEngine` and a thread that is the only code ever calling it: requests are
added and aborted through a command queue, the thread runs `step()` while anything is unfinished
and sleeps on the queue otherwise, and each step's outputs are handed to the asyncio side, one
queue per request. Adding returns only after the engine accepted the request, so a ValueError from
`add_request` reaches the HTTP handler (and becomes a 400) with nothing changed.

Liveness: if `step()` raises, the loop stops, fails every open request with finish_reason "error"
and `alive` turns False; /health then answers 503. Nothing else restarts it.

Owns the thread and the request -> queue map; knows nothing of HTTP or the OpenAI format.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import traceback
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass

from tokenyard.engine.outputs import RequestOutput
from tokenyard.engine.params import SamplingParams
from tokenyard.engine.server.metrics import Metrics

log = logging.getLogger("tokenyard.server")


@dataclass
class _Add:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    accepted: Future


@dataclass
class _Abort:
    request_id: str


class EngineLoop:
    def __init__(self, engine, metrics: Metrics):
        self.engine = engine
        self.metrics = metrics
        self.error: str | None = None
        self._commands: queue.Queue = queue.Queue()
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._lock = threading.Lock()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="tokenyard-engine-loop", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._commands.put(None)
        self._thread.join(timeout=30)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.error is None and not self._stopping

    async def add(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams) -> "RequestStream":
        """Add a request; returns once the engine has accepted it.

        Raises the engine's ValueError, with nothing changed, if it refuses the request.
        """
        if not self.alive:
            raise RuntimeError(f"the engine loop is not running: {self.error or 'stopped'}")
        outputs: asyncio.Queue = asyncio.Queue()
        with self._lock:
            if request_id in self._streams:
                raise ValueError(f"request_id={request_id!r} is already running")
            self._streams[request_id] = (asyncio.get_running_loop(), outputs)
        accepted: Future = Future()
        self._commands.put(_Add(request_id, prompt_token_ids, params, accepted))
        try:
            await asyncio.wrap_future(accepted)
        except BaseException:
            # Refused, or cancelled (client gone) while waiting: if the engine thread had already
            # started adding it, this abort, queued behind the add, takes it out again.
            self.abort(request_id)
            self._forget(request_id)
            raise
        return RequestStream(self, request_id, outputs)

    def abort(self, request_id: str) -> None:
        self._commands.put(_Abort(request_id))

    def _forget(self, request_id: str) -> None:
        with self._lock:
            self._streams.pop(request_id, None)

    def _run(self) -> None:
        try:
            while not self._stopping:
                busy = self.engine.has_unfinished_requests()
                try:
                    command = self._commands.get(block=not busy, timeout=None if busy else 1.0)
                except queue.Empty:
                    command = None
                while command is not None:
                    self._handle(command)
                    try:
                        command = self._commands.get_nowait()
                    except queue.Empty:
                        command = None
                if self._stopping:
                    break
                if not self.engine.has_unfinished_requests():
                    self.metrics.update_gauges(self.engine.stats())
                    continue
                outputs = self.engine.step()
                self.metrics.observe_step(outputs, self.engine.stats())
                self._deliver(outputs)
        except BaseException:
            self.error = traceback.format_exc()
            log.error("engine loop died:\n%s", self.error)
            self._fail_all()

    def _handle(self, command) -> None:
        if isinstance(command, _Add):
            if not command.accepted.set_running_or_notify_cancel():
                return  # the caller gave up before the engine saw it
            try:
                self.engine.add_request(command.request_id, command.prompt_token_ids, command.params)
            except Exception as exc:  # refused: the engine changed nothing; tell the caller
                command.accepted.set_exception(exc)
            else:
                self.metrics.request_added(command.request_id, len(command.prompt_token_ids))
                command.accepted.set_result(None)
        elif isinstance(command, _Abort):
            self.engine.abort_request(command.request_id)  # False (no-op) if it already finished

    def _deliver(self, outputs: list[RequestOutput]) -> None:
        by_request: dict[str, list[RequestOutput]] = {}
        for output in outputs:
            by_request.setdefault(output.request_id, []).append(output)
        # One wake-up of each event loop per step, not one per request.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue, list[RequestOutput]]]] = {}
        with self._lock:
            for request_id, batch in by_request.items():
                if request_id in self._streams:
                    loop, outputs_queue = self._streams[request_id]
                    by_loop.setdefault(loop, []).append((outputs_queue, batch))
        for loop, items in by_loop.items():
            loop.call_soon_threadsafe(_put_all, items)

    def _fail_all(self) -> None:
        with self._lock:
            streams = dict(self._streams)
        for request_id, (loop, outputs_queue) in streams.items():
            failed = RequestOutput(
                request_id=request_id, prompt_token_ids=[], new_token_ids=[], new_text="", token_ids=[], text="",
                finished=True, finish_reason="error", error=f"engine loop died: {self.error}",
            )
            loop.call_soon_threadsafe(outputs_queue.put_nowait, [failed])
        # Keep answering: an add that raced the failure must be refused, not left waiting.
        while not self._stopping:
            command = self._commands.get()
            if isinstance(command, _Add) and command.accepted.set_running_or_notify_cancel():
                command.accepted.set_exception(RuntimeError("the engine loop died"))


def _put_all(items: list[tuple[asyncio.Queue, list[RequestOutput]]]) -> None:
    for outputs_queue, batch in items:
        outputs_queue.put_nowait(batch)


class RequestStream:
    """The outputs of one accepted request, in order, ending with the finished one.

    `close()` aborts the request if it has not finished (idempotent); whoever holds a stream must
    close it on every path, which is how a client that goes away returns its memory.
    """

    def __init__(self, loop: EngineLoop, request_id: str, outputs: asyncio.Queue):
        self.request_id = request_id
        self._loop = loop
        self._outputs = outputs
        self._ready: deque[RequestOutput] = deque()
        self._finished = False

    def __aiter__(self) -> "RequestStream":
        return self

    async def __anext__(self) -> RequestOutput:
        if self._finished:
            raise StopAsyncIteration
        while not self._ready:
            self._ready.extend(await self._outputs.get())
        output = self._ready.popleft()
        if output.finished:
            self._finished = True
            self._loop._forget(self.request_id)
        return output

    def close(self) -> None:
        if not self._finished:
            self._finished = True
            self._loop.abort(self.request_id)
            self._loop._forget(self.request_id)
