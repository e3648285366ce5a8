"""Show the library's own code in a notebook, so the course displays what it teaches and cannot drift from it.

``show_source(LoRALinear.forward, LoRALinear.backward)`` returns a :class:`Source`, which Jupyter renders
as a highlighted Python code block (its ``_repr_markdown_``) and a terminal prints as plain text. The text
is read from the installed module with :func:`inspect.getsource` each time it is shown: edit the library
and the notebook shows the edit.

:func:`log_ticks` labels a logarithmic plot axis densely enough to be read.

Nothing here is needed by the library; notebooks import it (it imports only the standard library, and
matplotlib inside :func:`log_ticks`).
"""

from __future__ import annotations

import inspect
import textwrap
from typing import Any


class Source:
    """The source text of one or more functions, classes or modules, with where each comes from."""

    def __init__(self, parts: list[tuple[str, str]]) -> None:
        self.parts = parts  # (where, code) pairs

    @property
    def text(self) -> str:
        """The code of every part, separated by a blank line (what ``str`` and the terminal show)."""
        return "\n\n".join(code for _, code in self.parts)

    def _repr_markdown_(self) -> str:
        blocks = [f"`{where}`\n\n```python\n{code}\n```" for where, code in self.parts]
        return "\n\n".join(blocks)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return "\n\n".join(f"# {where}\n{code}" for where, code in self.parts)


def _where(obj: Any) -> str:
    target = inspect.unwrap(obj.fget if isinstance(obj, property) else obj)
    module = inspect.getmodule(target)
    name = getattr(target, "__qualname__", getattr(target, "__name__", ""))
    try:
        line = inspect.getsourcelines(target)[1]
    except (OSError, TypeError):
        line = 0
    path = module.__name__.replace(".", "/") + ".py" if module is not None else "?"
    return f"{path}:{line}" + (f" · {name}" if name and not inspect.ismodule(target) else "")


def _span(code: str, first: str, last: str) -> str:
    lines = code.splitlines()
    start = next((i for i, line in enumerate(lines) if first in line), None)
    if start is None:
        raise ValueError(f"span start {first!r} is not in the source")
    stop = next((i for i in range(start, len(lines)) if last in lines[i]), None)
    if stop is None:
        raise ValueError(f"span end {last!r} does not follow {first!r} in the source")
    return textwrap.dedent("\n".join(lines[start:stop + 1]))


def show_source(*objs: Any, span: tuple[str, str] | None = None) -> Source:
    """The source of each object (function, method, class, property or module), dedented, for display.

    Parameters
    ----------
    *objs : objects :func:`inspect.getsource` accepts (a property shows its getter).
    span : optional ``(first, last)`` pieces of text, to show one part of a long function (only with a single
        object): from the first line containing ``first`` to the next line (from there on) containing
        ``last``, inclusive. Chosen by text, not by line numbers, so that an edit of the library either keeps
        the span right or raises ValueError, never shows the wrong lines.

    Examples
    --------
    >>> from minilora.quant.absmax import absmax_dequantize
    >>> show_source(absmax_dequantize).text.startswith("def absmax_dequantize(")
    True
    """
    if not objs:
        raise ValueError("show_source needs at least one object to show")
    if span is not None and len(objs) != 1:
        raise ValueError(f"span selects part of one object's source; got {len(objs)} objects")
    parts = []
    for obj in objs:
        target = obj.fget if isinstance(obj, property) else obj
        try:
            code = textwrap.dedent(inspect.getsource(target)).rstrip("\n")
        except (OSError, TypeError) as err:
            raise TypeError(f"cannot show the source of {obj!r}: {err}") from err
        if span is not None:
            code = _span(code, *span)
        parts.append((_where(obj), code))
    return Source(parts)


def log_ticks(axis: Any, subs: tuple[float, ...] = (1.0, 2.0, 5.0)) -> Any:
    """Label a logarithmic matplotlib axis at 1, 2 and 5 times each power of ten (not only at the powers).

    ``axis`` is ``ax.xaxis`` or ``ax.yaxis``; labels are written like ``2e+12`` or ``0.005`` (``{:g}``). Returns
    the axis. A log axis spanning one or two decades otherwise shows only one or two labelled ticks.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())
    return axis


__all__ = ["Source", "log_ticks", "show_source"]
