import subprocess
import sys

import pytest

from minilora.__main__ import main


def test_figures_list(capsys):
    assert main(["figures", "--list"]) == 0
    out = capsys.readouterr().out
    assert "float_formats" in out and "量化.jpeg" in out


def test_figures_named_with_blog_names(tmp_path, capsys):
    assert main(["figures", "float_formats", "--out", str(tmp_path), "--blog-names"]) == 0
    assert (tmp_path / "float_formats.png").exists() and (tmp_path / "量化.jpeg").exists()
    assert (tmp_path / "MANIFEST.json").exists()


def test_unknown_figure_is_a_clear_error(tmp_path, capsys):
    assert main(["figures", "no_such_figure", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown figure" in err and "float_formats" in err


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "numpy" in out and "backend    numpy" in out


def test_unknown_command_exits_nonzero():
    with pytest.raises(SystemExit) as exc:
        main(["bogus"])
    assert exc.value.code == 2


def test_python_dash_m():
    r = subprocess.run([sys.executable, "-m", "minilora", "info"], capture_output=True, text=True, check=True)
    assert "minilora" in r.stdout
