"""Multi-process training under ``torchrun``: process group set-up and small collectives.

The CLI reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) and passes a
:class:`DistContext` in; library code never reads the environment itself.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Mapping

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DistContext:
        """torchrun's variables; a plain process is rank 0 of 1."""
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def setup(ctx: DistContext, device: torch.device) -> None:
    """Join the process group torchrun prepared: gloo on the CPU, NCCL on CUDA."""
    if ctx.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group(backend=backend, rank=ctx.rank, world_size=ctx.world_size)


def teardown(ctx: DistContext, finished: bool = True) -> None:
    """Leave the process group. After a run that finished on every rank, the ranks first meet at a
    barrier: a rank that destroyed its group while another still wrote its summary once took gloo's
    threads down under it (one rank aborted: "terminate called without an active exception"). After
    an error there is no barrier: the other ranks may never reach it."""
    if ctx.enabled and dist.is_initialized():
        if finished:
            dist.barrier()
            _meet_outside_gloo(ctx)
        dist.destroy_process_group()


def _meet_outside_gloo(ctx: DistContext, timeout_s: float = 120.0) -> None:
    """gloo's barrier can return on one rank while its last messages are still queued on another; a
    rank that then destroys its group closes the pairs under them (pytorch/gloo#155: the barrier fix
    above still lost a rank once in a loaded CI run). So the ranks meet once more on the rendezvous
    store, which is not gloo: every rank leaves a key and waits for all of them."""
    get_store = getattr(dist.distributed_c10d, "_get_default_store", None)
    if get_store is None:  # a torch without it: the barrier alone, as before
        return
    store = get_store()
    store.set(f"edgediff/teardown/{ctx.rank}", b"1")
    store.wait([f"edgediff/teardown/{r}" for r in range(ctx.world_size)], timedelta(seconds=timeout_s))


def mean_across(ctx: DistContext, value: float, device: torch.device) -> float:
    if not ctx.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / ctx.world_size


def weights_digest(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the raw bytes of every tensor, in name order: equal digests, equal weights."""
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def gather_digests(ctx: DistContext, digest: str, device: torch.device) -> list[str]:
    """Every rank's digest, on every rank."""
    if not ctx.enabled:
        return [digest]
    mine = torch.tensor(list(bytes.fromhex(digest)), dtype=torch.uint8, device=device)
    out = [torch.empty_like(mine) for _ in range(ctx.world_size)]
    dist.all_gather(out, mine)
    return [bytes(t.tolist()).hex() for t in out]
