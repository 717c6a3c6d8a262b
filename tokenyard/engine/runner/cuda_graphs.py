"""CUDA graphs of the decode step: one graph per padded batch size, captured at start-up.

Owns the static input buffers the graphs read, their capture, and replaying a decode batch
through the smallest graph that fits it. Padding rows read page 0 and write nothing (slot -1, state
write slot -1), and their logits are dropped. A model's decode forward must not read values from
the host (`q_lens` / `k_lens` are placeholders here): every kernel it calls on the decode path is
graph-capturable by contract, but an op may have no capturable kernel for this device and dtype
(only the reference one, which syncs with the host). A failed capture leaves CUDA's random number
generator unusable, so every size first runs eagerly with CUDA's sync detection set to raise: a
syncing kernel then fails there, `NotCapturable` is raised, and the engine runs decode eagerly.
The eager run is also where kernel selection and tuning happen, outside capture.
"""

from __future__ import annotations

import traceback

import torch

from tokenyard.engine.models.base import ForwardBatch, ModelCaches


SIZES = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


class NotCapturable(RuntimeError):
    pass


class DecodeGraphs:
    def __init__(self, model, caches: ModelCaches, device: torch.device, max_batch: int, max_pages: int):
        self.model, self.caches = model, caches
        self.sizes = [s for s in SIZES if s < max_batch] + [max_batch]
        self.max_batch = max_batch

        def buffer(*shape, dtype, fill):
            return torch.full(shape, fill, dtype=dtype, device=device)

        n = max_batch
        self.input_ids = buffer(n, dtype=torch.int64, fill=0)
        self.positions = buffer(n, dtype=torch.int64, fill=0)
        self.seqlens_k = buffer(n, dtype=torch.int32, fill=1)
        self.page_table = buffer(n, max_pages, dtype=torch.int32, fill=0)
        self.slot_mapping = buffer(n, dtype=torch.int64, fill=-1)
        self.read_slots = buffer(n, dtype=torch.int32, fill=-1)
        self.write_slots = buffer(n, dtype=torch.int32, fill=-1)
        self.cu_seqlens = torch.arange(n + 1, dtype=torch.int32, device=device)
        self.rows = torch.arange(n, dtype=torch.int64, device=device)
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}

    def _batch(self, size: int) -> ForwardBatch:
        return ForwardBatch(
            input_ids=self.input_ids[:size], positions=self.positions[:size], cu_seqlens_q=self.cu_seqlens[:size + 1],
            seqlens_k=self.seqlens_k[:size], page_table=self.page_table[:size], slot_mapping=self.slot_mapping[:size],
            state_read_slots=self.read_slots[:size], state_write_slots=self.write_slots[:size],
            logits_indices=self.rows[:size], is_decode=True, q_lens=[1] * size, k_lens=[1] * size,
            cu_seqlens_k=self.cu_seqlens[:size + 1], key_slots=self.rows[:0],
        )

    def capture(self) -> None:
        pool = torch.cuda.graph_pool_handle()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for size in reversed(self.sizes):   # largest first: smaller graphs reuse its memory
                batch = self._batch(size)
                self._eager_without_syncs(batch)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool, stream=stream):
                    logits = self.model.forward(batch, self.caches)
                self.graphs[size] = (graph, logits)
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()

    def _eager_without_syncs(self, batch: ForwardBatch) -> None:
        self.model.forward(batch, self.caches)   # kernels chosen and tuned (which may sync)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            self.model.forward(batch, self.caches)
        except RuntimeError as error:
            frame = traceback.extract_tb(error.__traceback__)[-1]
            raise NotCapturable(f"decode at batch size {batch.num_seqs} syncs with the host at "
                                f"{frame.filename}:{frame.lineno} ({frame.line})") from error
        finally:
            torch.cuda.set_sync_debug_mode("default")

    def fits(self, batch: ForwardBatch) -> bool:
        return batch.is_decode and batch.num_seqs <= self.max_batch and batch.logits_indices.shape[0] == batch.num_seqs

    def run(self, batch: ForwardBatch) -> torch.Tensor:
        b = batch.num_seqs
        size = next(s for s in self.sizes if s >= b)
        width = batch.page_table.shape[1]
        self.input_ids[:b].copy_(batch.input_ids)
        self.positions[:b].copy_(batch.positions)
        self.seqlens_k[:b].copy_(batch.seqlens_k)
        self.page_table[:b, :width].copy_(batch.page_table)
        self.slot_mapping[:b].copy_(batch.slot_mapping)
        self.read_slots[:b].copy_(batch.state_read_slots)
        self.write_slots[:b].copy_(batch.state_write_slots)
        for buffer, pad in ((self.input_ids, 0), (self.positions, 0), (self.seqlens_k, 1), (self.page_table, 0),
                            (self.slot_mapping, -1), (self.read_slots, -1), (self.write_slots, -1)):
            buffer[b:size].fill_(pad)
        graph, logits = self.graphs[size]
        graph.replay()
        return logits[:b]
