"""Running engine requests for an HTTP client that may go away: results as they arrive (merged
over the n choices of one request), server-sent events, and cancellation on disconnect, which
aborts the engine requests and so returns their pages and slots.

Owns the asyncio plumbing only; knows nothing of the OpenAI formats.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from tokenyard.engine.outputs import RequestOutput
from tokenyard.engine.params import SamplingParams
from tokenyard.engine.server.engine_loop import RequestStream
from tokenyard.engine.server.protocol import APIError
from tokenyard.engine.server.serving import ServerState, check_alive, raise_if_failed

EngineRequest = tuple[str, list[int], SamplingParams]  # request id, prompt token ids, sampling


async def _until_disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def close_all(streams: list[RequestStream]) -> None:
    for stream in streams:
        stream.close()


async def admit(state: ServerState, requests: list[EngineRequest]) -> list[RequestStream]:
    """Add all requests to the engine, or none: a refusal (the engine's ValueError, which names the
    argument) aborts those already added and becomes a 400."""
    admitted: list[RequestStream] = []
    try:
        for request in requests:
            admitted.append(await state.loop.add(*request))
    except BaseException as exc:
        close_all(admitted)
        if isinstance(exc, ValueError):
            raise APIError(str(exc)) from None
        check_alive(state)  # the loop died meanwhile: 503
        raise
    return admitted


async def unless_disconnected(request: Request, work: Awaitable, streams: list[RequestStream]):
    """Await `work`; if the client goes away first, cancel it. Either way `streams` are closed
    after, which aborts whatever has not finished."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_until_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        close_all(streams)
    if task.cancelled():
        return Response(status_code=499)
    return task.result()


def sse(events: AsyncIterator[dict], request: Request, streams: list[RequestStream]) -> StreamingResponse:
    """Server-sent events from `events`, produced in a task that a client disconnect cancels;
    `streams` are closed when the events end, fail, or the client goes away."""

    async def body() -> AsyncIterator[str]:
        queue: asyncio.Queue = asyncio.Queue()
        done = object()

        async def produce() -> None:
            try:
                async for event in events:
                    queue.put_nowait(f"data: {json.dumps(event, ensure_ascii=False, separators=(',', ':'))}\n\n")
            except APIError as exc:
                queue.put_nowait(f"data: {json.dumps(exc.body())}\n\n")
            except Exception as exc:
                error = APIError(f"{type(exc).__name__}: {exc}", status_code=500, type="server_error")
                queue.put_nowait(f"data: {json.dumps(error.body())}\n\n")
            finally:
                close_all(streams)
                queue.put_nowait(done)

        producer = asyncio.create_task(produce())

        async def watch() -> None:
            await _until_disconnected(request)
            producer.cancel()
            close_all(streams)  # the producer may be cancelled before it ever ran

        watcher = asyncio.create_task(watch())
        try:
            while True:
                item = await queue.get()
                if item is done:
                    break
                yield item
            yield "data: [DONE]\n\n"
        finally:
            watcher.cancel()
            producer.cancel()
            close_all(streams)

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def merge(streams: list[AsyncIterator]) -> AsyncIterator[tuple[int, object]]:
    """Items of several async iterators as they arrive, tagged with the iterator's index."""
    if len(streams) == 1:
        async for item in streams[0]:
            yield 0, item
        return
    queue: asyncio.Queue = asyncio.Queue()
    end = object()

    async def pump(i: int, stream: AsyncIterator) -> None:
        async for item in stream:
            queue.put_nowait((i, item))
        queue.put_nowait((i, end))

    async with asyncio.TaskGroup() as group:
        for i, stream in enumerate(streams):
            group.create_task(pump(i, stream))
        open_streams = len(streams)
        while open_streams:
            i, item = await queue.get()
            if item is end:
                open_streams -= 1
            else:
                yield i, item


async def run_requests(streams: list[RequestStream]) -> AsyncIterator[tuple[int, RequestOutput]]:
    """Outputs of admitted requests as they arrive, tagged with the request's index; a request
    that failed inside the engine raises APIError 500. Ending early aborts the unfinished."""
    try:
        async with contextlib.aclosing(merge(streams)) as merged:
            async for i, output in merged:
                raise_if_failed(output)
                yield i, output
    finally:
        close_all(streams)


async def final_outputs(streams: list[RequestStream]) -> list[RequestOutput]:
    """Run admitted requests to completion; each one's last output (which holds the totals)."""
    last: list[RequestOutput | None] = [None] * len(streams)
    async with contextlib.aclosing(run_requests(streams)) as outputs:
        async for i, output in outputs:
            last[i] = output
    return last
