"""minilora.show: the notebooks display the library's own source, read live from the module."""

import inspect
import textwrap

import pytest

from minilora.peft.lora import LoRALinear
from minilora.quant.absmax import absmax_quantize
from minilora.show import show_source


def test_source_is_the_library_text_dedented():
    src = show_source(LoRALinear.forward)
    assert src.text == textwrap.dedent(inspect.getsource(LoRALinear.forward)).rstrip("\n")
    assert src.text.startswith("def forward(self, x")


def test_markdown_is_a_python_code_block_naming_the_file_and_line():
    md = show_source(absmax_quantize)._repr_markdown_()
    line = inspect.getsourcelines(absmax_quantize)[1]
    assert md.startswith(f"`minilora/quant/absmax.py:{line} · absmax_quantize`")
    assert "```python\ndef absmax_quantize(" in md and md.rstrip().endswith("```")


def test_several_objects_and_a_line_range():
    both = show_source(LoRALinear.forward, LoRALinear.backward)
    assert len(both.parts) == 2 and "def backward" in both.text
    part = show_source(LoRALinear.forward, span=("linear_forward", "return y")).text.splitlines()
    whole = [line.strip() for line in show_source(LoRALinear.forward).text.splitlines()]
    assert "linear_forward" in part[0] and part[-1].strip() == "return y" and len(part) < len(whole)
    assert [line.strip() for line in part] == whole[whole.index(part[0].strip()):][:len(part)]


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        show_source()
    with pytest.raises(ValueError, match="span start 'no such line'"):
        show_source(absmax_quantize, span=("no such line", "return"))
    with pytest.raises(ValueError, match="span end"):
        show_source(LoRALinear.forward, span=("return y", "linear_forward"))
    with pytest.raises(ValueError, match="one object"):
        show_source(absmax_quantize, LoRALinear, span=("a", "b"))
    with pytest.raises(TypeError, match="cannot show the source of 3"):
        show_source(3)


def test_docstring_examples():
    import doctest

    import minilora.show

    assert doctest.testmod(minilora.show).failed == 0


def test_log_ticks_labels_1_2_5_per_decade():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from minilora.show import log_ticks

    fig, ax = plt.subplots()
    ax.semilogy([1, 2], [3e11, 4e13])
    log_ticks(ax.yaxis)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    plt.close(fig)
    assert {"5e+11", "1e+12", "2e+12", "5e+12", "1e+13", "2e+13"} <= set(labels)
