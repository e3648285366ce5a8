"""Paged optimizers (QLoRA §3, "Paged Optimizers"): optimizer state that can leave the GPU during a memory spike.

QLoRA allocates the optimizer state in NVIDIA unified memory: one address space for CPU and GPU, in pages
that the driver moves on demand. When a long sequence makes the activations spike and the GPU would run
out of memory, state pages are evicted to CPU RAM; when the optimizer update needs them they are paged
back. bitsandbytes' paged optimizers allocate the state with ``cudaMallocManaged`` and prefetch it
(``cudaMemPrefetchAsync``) to the GPU before each update and to the CPU when memory runs short.

This module simulates that on the CPU, with the real arithmetic:

* :class:`DeviceMemory` — a device with a byte ``budget``: named allocations (weights, activations) plus the
  resident pages of every :class:`PagedBuffer`; an allocation that does not fit evicts state pages, least
  recently used first, and raises ``MemoryError`` only when even that is not enough;
* :class:`PagedBuffer` — one flat array in fixed-size pages, each resident on the "device" or on the "host".
  Evicting copies a page to the host array and **poisons the device copy with NaN**; paging in copies it
  back. A read of an evicted page would therefore spoil training: the test that paged and unpaged training
  give bit-identical parameters is also a test of the paging protocol;
* :class:`PagedAdamW` / :class:`PagedAdam` — :class:`~minilora.optim.AdamW` / ``Adam`` whose ``exp_avg`` and
  ``exp_avg_sq`` are views into one PagedBuffer; before a parameter's update its pages are paged in. The
  update itself is the engine's, unchanged.

The state lives on the current backend (:mod:`minilora.backend`) and the host copies in NumPy arrays, so on
CuPy an eviction is a real device-to-host copy. With ``managed=True`` (CuPy backend only)
``PagedBuffer`` allocates the state with ``cupy.cuda.malloc_managed`` (CUDA managed memory, what
bitsandbytes uses) and evicts / pages in with ``memPrefetchAsync`` to the CPU (device id -1) or the GPU;
the driver moves the data, so nothing is poisoned. **That path has not been run** (no GPU was available
where it was written); the tested paths are the simulation on NumPy and on the strict device-emulating
backend. The page tables (``resident``, ``last_use``) are host bookkeeping (NumPy).

Departures from the real thing: pages move only where this module says so (the CUDA driver also
migrates on page faults, at 4 KiB–2 MiB granularity); the device budget is a number, not the GPU.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from minilora import backend
from minilora.nn.module import Module
from minilora.optim import Adam, AdamW


@dataclass
class PageStats:
    """Counters of page traffic: pages moved out to the host and back in, and the bytes moved."""

    page_outs: int = 0
    page_ins: int = 0
    bytes_out: int = 0
    bytes_in: int = 0

    def __repr__(self) -> str:
        return (f"PageStats(page_outs={self.page_outs}, page_ins={self.page_ins}, bytes_out={self.bytes_out:,}, "
                f"bytes_in={self.bytes_in:,})")


def _positive_int(value: Any, arg: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{arg} must be a positive integer, got {value!r}")
    return int(value)


class DeviceMemory:
    """A device with ``budget`` bytes shared by named allocations and the resident pages of paged buffers."""

    def __init__(self, budget: int) -> None:
        self.budget = _positive_int(budget, "budget")
        self.allocations: dict[str, int] = {}
        self.buffers: list[PagedBuffer] = []
        self.peak = 0

    @property
    def used(self) -> int:
        """Bytes in use: allocations + resident pages."""
        return sum(self.allocations.values()) + sum(b.resident_bytes for b in self.buffers)

    @property
    def stats(self) -> PageStats:
        """Page traffic summed over all buffers."""
        s = PageStats()
        for b in self.buffers:
            for k in vars(s):
                setattr(s, k, getattr(s, k) + getattr(b.stats, k))
        return s

    def make_room(self, nbytes: int, protect: Any = None) -> None:
        """Evict least-recently-used pages (never ``protect``: (buffer, page ids)) until ``nbytes`` more fit."""
        need = self.used + nbytes - self.budget
        if need <= 0:
            return
        cands = [(int(b.last_use[i]), k, int(i)) for k, b in enumerate(self.buffers)
                 for i in np.flatnonzero(b.resident & ~b.protected_mask(protect))]
        cands.sort()
        freed, chosen = 0, {}
        for _, k, i in cands:
            if freed >= need:
                break
            chosen.setdefault(k, []).append(i)
            freed += self.buffers[k].page_bytes
        if freed < need:
            raise MemoryError(f"out of device memory: {nbytes:,} more bytes requested, {self.used:,} of "
                              f"{self.budget:,} in use and only {freed:,} can be paged out")
        for k, pages in chosen.items():
            self.buffers[k].evict(np.array(pages))

    def allocate(self, name: str, nbytes: int) -> None:
        """Reserve ``nbytes`` under ``name`` (evicting pages if needed); MemoryError if it cannot fit."""
        if name in self.allocations:
            raise ValueError(f"allocation {name!r} exists already; free it first")
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes!r}")
        self.make_room(int(nbytes))
        self.allocations[name] = int(nbytes)
        self.peak = max(self.peak, self.used)

    def free(self, name: str) -> None:
        """Release the allocation ``name``."""
        if name not in self.allocations:
            raise ValueError(f"no allocation {name!r}; allocations: {list(self.allocations)}")
        del self.allocations[name]

    @contextmanager
    def reserve(self, name: str, nbytes: int):
        """``with memory.reserve("activations", n):`` allocate for the duration of the block."""
        self.allocate(name, nbytes)
        try:
            yield
        finally:
            self.free(name)

    def __repr__(self) -> str:
        return (f"DeviceMemory(budget={self.budget:,}, used={self.used:,}, peak={self.peak:,}, "
                f"allocations={self.allocations}, {self.stats!r})")


def _cupy_managed(nbytes: int, dtype: np.dtype):
    """A flat CuPy array of ``nbytes`` in CUDA managed (unified) memory. Untested: needs a GPU."""
    try:
        import cupy
    except ImportError as err:
        raise ImportError("managed=True needs CuPy (pip install 'minilora[gpu]')") from err
    if backend.name() != "cupy":
        raise ValueError(f"managed=True needs the cupy backend (backend.use('cupy') or MINILORA_BACKEND=cupy), "
                         f"the current backend is {backend.name()!r}")
    mem = cupy.cuda.malloc_managed(nbytes)
    return cupy.ndarray((nbytes // dtype.itemsize,), dtype=dtype, memptr=mem)


class PagedBuffer:
    """A flat array of ``n`` elements in pages of ``page_size`` bytes, each on the device or on the host.

    ``array`` (n,) is the device view that computations use (on the current backend); ``host`` (a NumPy
    array) keeps evicted pages. All pages start resident (allocated through ``memory``, evicting others if
    needed).
    """

    def __init__(self, n: int, memory: DeviceMemory, page_size: int = 4096, dtype: Any = np.float32,
                 managed: bool = False) -> None:
        n = _positive_int(n, "n")
        self.dtype = np.dtype(dtype)
        self.page_size = _positive_int(page_size, "page_size")
        if page_size % self.dtype.itemsize:
            raise ValueError(f"page_size must be a multiple of the element size {self.dtype.itemsize}, got {page_size}")
        if not isinstance(memory, DeviceMemory):
            raise TypeError(f"memory must be a DeviceMemory, got {type(memory).__name__}")
        self.memory, self.managed = memory, bool(managed)
        per = self.page_size // self.dtype.itemsize
        self.npages = -(-n // per)
        if managed:
            full = _cupy_managed(self.npages * self.page_size, self.dtype)
            full[...] = 0
        else:
            full = backend.xp().zeros(self.npages * per, self.dtype)
        self.pages = full.reshape(self.npages, per)  # (npages, elements per page), a view
        self.array = full[:n]
        self.host = None if managed else np.zeros(self.pages.shape, self.dtype)  # host RAM
        self.resident = np.zeros(self.npages, bool)
        self.last_use = np.zeros(self.npages, np.int64)
        self.clock = 0
        self.stats = PageStats()
        memory.make_room(self.npages * self.page_size)
        memory.buffers.append(self)
        self.resident[:] = True
        memory.peak = max(memory.peak, memory.used)

    @property
    def page_bytes(self) -> int:
        return self.page_size

    @property
    def resident_bytes(self) -> int:
        return int(self.resident.sum()) * self.page_size

    def protected_mask(self, protect: Any) -> np.ndarray:
        mask = np.zeros(self.npages, bool)
        if protect is not None and protect[0] is self:
            mask[protect[1]] = True
        return mask

    def page_range(self, start: int, stop: int) -> np.ndarray:
        """Ids of the pages holding elements ``[start, stop)``."""
        per = self.pages.shape[1]
        return np.arange(start // per, -(-stop // per))

    def evict(self, pages: np.ndarray) -> None:
        """Move resident ``pages`` to the host; their device copy is poisoned with NaN (simulation)."""
        pages = pages[self.resident[pages]]
        if pages.size == 0:
            return
        if self.managed:
            self._prefetch(pages, to_host=True)
        else:
            on_device = backend.xp().asarray(pages)
            self.host[pages] = backend.to_numpy(self.pages[on_device])  # device -> host copy
            self.pages[on_device] = np.nan
        self.resident[pages] = False
        self.stats.page_outs += int(pages.size)
        self.stats.bytes_out += int(pages.size) * self.page_size

    def page_in(self, start: int, stop: int) -> None:
        """Make the pages of elements ``[start, stop)`` resident (evicting LRU pages elsewhere if needed)."""
        pages = self.page_range(start, stop)
        self.clock += 1
        self.last_use[pages] = self.clock
        missing = pages[~self.resident[pages]]
        if missing.size:
            self.memory.make_room(int(missing.size) * self.page_size, protect=(self, pages))
            if self.managed:
                self._prefetch(missing, to_host=False)
            else:
                self.pages[backend.xp().asarray(missing)] = backend.xp().asarray(self.host[missing])  # host -> device
            self.resident[missing] = True
            self.stats.page_ins += int(missing.size)
            self.stats.bytes_in += int(missing.size) * self.page_size
        self.memory.peak = max(self.memory.peak, self.memory.used)

    def _prefetch(self, pages: np.ndarray, to_host: bool) -> None:
        import cupy

        device = -1 if to_host else cupy.cuda.Device().id  # cudaCpuDeviceId = -1
        base = self.pages.data.ptr
        for i in pages.tolist():  # one prefetch per page: the driver's unit of transfer here
            cupy.cuda.runtime.memPrefetchAsync(base + i * self.page_size, self.page_size, device, 0)

    def __repr__(self) -> str:
        return (f"PagedBuffer(npages={self.npages}, page_size={self.page_size}, resident={int(self.resident.sum())}, "
                f"managed={self.managed}, {self.stats!r})")


class _Paged:
    """Mixin: put an Adam-type optimizer's state in one PagedBuffer and page it in before each update."""

    def _setup_paging(self, memory: DeviceMemory, page_size: int, managed: bool) -> None:
        params = self.model.params
        names = self.model.trainable_names()
        if not names:
            raise ValueError("the model has no trainable parameters to optimize")
        dtypes = {params[n].dtype for n in names}
        if len(dtypes) != 1:
            raise ValueError(f"all trainable parameters must share one dtype for paging, "
                             f"got {sorted(map(str, dtypes))}")
        sizes = [params[n].size for n in names]
        self.buffer = PagedBuffer(2 * sum(sizes), memory, page_size, dtypes.pop(), managed)
        self.spans: dict[str, tuple[int, int]] = {}
        off = 0
        for name, size in zip(names, sizes):  # exp_avg then exp_avg_sq of each parameter, contiguous
            shape = params[name].shape
            self.state[name] = {"exp_avg": self.buffer.array[off:off + size].reshape(shape),
                                "exp_avg_sq": self.buffer.array[off + size:off + 2 * size].reshape(shape)}
            self.spans[name] = (off, off + 2 * size)
            off += 2 * size

    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        self.buffer.page_in(*self.spans[name])
        super()._update(name, p, g)

    @property
    def stats(self) -> PageStats:
        return self.buffer.stats


class PagedAdamW(_Paged, AdamW):
    """AdamW whose state lives in pages under a device-memory budget (bitsandbytes' ``PagedAdamW32bit``)."""

    def __init__(self, model: Module, memory: DeviceMemory, lr: float = 1e-3, page_size: int = 4096,
                 managed: bool = False, **kwargs: Any) -> None:
        AdamW.__init__(self, model, lr, **kwargs)
        self._setup_paging(memory, page_size, managed)


class PagedAdam(_Paged, Adam):
    """Adam whose state lives in pages under a device-memory budget (bitsandbytes' ``PagedAdam32bit``)."""

    def __init__(self, model: Module, memory: DeviceMemory, lr: float = 1e-3, page_size: int = 4096,
                 managed: bool = False, **kwargs: Any) -> None:
        Adam.__init__(self, model, lr, **kwargs)
        self._setup_paging(memory, page_size, managed)


def train_steps(model: Module, optimizer: Any, batches: Iterable[tuple[np.ndarray, np.ndarray]],
                memory: DeviceMemory | None = None, activation_bytes: Any = None) -> list[float]:
    """Plain training steps; with ``memory``, each step's activations are reserved on the device meanwhile.

    ``activation_bytes(model) -> int`` measures the activations after the forward
    (:func:`minilora.peft.memory.activation_bytes`); a long batch is then a memory spike that evicts
    optimizer pages, which the update pages back in. Returns the losses.
    """
    losses = []
    for step, (x, y) in enumerate(batches):
        model.train()
        model.zero_grad()
        _, loss = model.forward(x, y)
        if memory is None:
            model.backward()
        else:
            with memory.reserve(f"activations {step}", int(activation_bytes(model))):
                model.backward()
        optimizer.step()
        losses.append(float(loss))
    return losses


__all__ = ["DeviceMemory", "PageStats", "PagedAdam", "PagedAdamW", "PagedBuffer", "train_steps"]
