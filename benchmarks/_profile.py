"""Where a training step's time goes: self time per operation, measured by wrapping the engine's functions.

:class:`OpProfile` replaces, for the duration of a ``with`` block, the public functions of
:mod:`minilora.nn.functional` and the few methods a step spends time in outside them (the optimizer's per-parameter
update, ``Module.zero_grad``, ``Module.accumulate_grad``) and the fast paths of :mod:`minilora.nn.fast` (labelled
``fast ...``) by timed wrappers. Each op is charged its *self* time:
a function called inside another (``softmax_forward`` inside ``attention_forward``) is charged to itself and
subtracted from its caller. What no wrapped function covers (the modules' Python, residual adds, input checks)
is reported as "other". The wrappers cost about a microsecond per call, a few hundred calls per step.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

from minilora.nn import fast
from minilora.nn import functional as F
from minilora.nn import module as nn_module
from minilora.optim import Optimizer


class OpProfile:
    """Self time per op over the steps run inside ``with OpProfile(clock) as prof:``; :meth:`table` prints it."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[float] = []  # time spent in nested wrapped calls, one entry per open call
        self._patched: list[tuple[object, str, object]] = []

    def _wrap(self, owner: object, attr: str, label: str) -> None:
        fn = getattr(owner, attr)
        clock, seconds, calls, stack = self.clock, self.seconds, self.calls, self._stack

        def timed(*args, **kwargs):
            stack.append(0.0)
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = clock() - t0
                nested = stack.pop()
                seconds[label] += dt - nested
                calls[label] += 1
                if stack:
                    stack[-1] += dt

        self._patched.append((owner, attr, fn))
        setattr(owner, attr, timed)

    def __enter__(self) -> OpProfile:
        for name in dir(F):
            if name.endswith(("_forward", "_backward")) or name in ("softmax", "log_softmax", "causal_mask"):
                if callable(getattr(F, name)):
                    self._wrap(F, name, name)
        for name in fast.FAST_OPS:  # the modules call these (looked up at each call)
            self._wrap(fast, name, "fast " + name)
        self._wrap(Optimizer, "step", "optimizer step")
        self._wrap(nn_module.Module, "zero_grad", "zero_grad")
        self._wrap(nn_module.Module, "accumulate_grad", "accumulate_grad")
        return self

    def __exit__(self, *exc) -> None:
        for owner, attr, fn in reversed(self._patched):
            setattr(owner, attr, fn)
        self._patched.clear()

    def table(self, total: float, steps: int, title: str) -> str:
        """Rows ``op  ms/step  % of the step  calls/step``, largest first, with "other" = total − the ops."""
        rows = sorted(self.seconds.items(), key=lambda kv: -kv[1])
        covered = sum(self.seconds.values())
        lines = [f"{title}: {total / steps * 1e3:.1f} ms per step ({steps} steps profiled)",
                 f"  {'op':<24} {'ms/step':>8} {'share':>6} {'calls/step':>10}"]
        for name, s in rows:
            lines.append(f"  {name:<24} {s / steps * 1e3:8.2f} {100 * s / total:5.1f}% "
                         f"{self.calls[name] / steps:10.0f}")
        lines.append(f"  {'other (module Python)':<24} {(total - covered) / steps * 1e3:8.2f} "
                     f"{100 * (total - covered) / total:5.1f}%")
        return "\n".join(lines)


def profile_step(step: Callable[[], object], steps: int = 5, clock: Callable[[], float] = time.perf_counter,
                 title: str = "step") -> str:
    """Run ``step`` ``steps`` times under an :class:`OpProfile` (after one unprofiled warm-up) and return its table."""
    step()
    with OpProfile(clock) as prof:
        t0 = clock()
        for _ in range(steps):
            step()
        total = clock() - t0
    return prof.table(total, steps, title)
