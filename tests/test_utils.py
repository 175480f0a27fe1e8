"""The atomic writers every saved file goes through: a failed write leaves the old file whole and
no temporary file behind; figures are written the same way and closed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from activesynth.utils import atomic_write, atomic_write_figure, atomic_write_json


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.json"
    atomic_write_json(path, {"round": 1, "ids": np.arange(3), "score": np.float32(0.5)})
    assert json.loads(path.read_text()) == {"round": 1, "ids": [0, 1, 2], "score": 0.5}

    def half_then_fail(fh) -> None:
        fh.write(b'{"round": 2, "ids": [')
        raise KeyboardInterrupt  # an interruption mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_fail)
    assert json.loads(path.read_text())["round"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]


def test_a_figure_is_written_whole_and_closed(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1), dpi=50)
    ax.plot([0, 1], [1, 0])
    out = atomic_write_figure(tmp_path / "curve.png", fig)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert fig.number not in plt.get_fignums()
    width = int.from_bytes(out.read_bytes()[16:20], "big")
    assert width == 100  # dpi=None keeps the figure's own dpi (2 in x 50)
    big = atomic_write_figure(tmp_path / "big.png", plt.figure(figsize=(2, 1), dpi=50), dpi=100)
    assert int.from_bytes(big.read_bytes()[16:20], "big") == 200  # dpi given: it wins


def test_an_object_api_figure_does_not_import_pyplot(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from matplotlib.figure import Figure\n"
        "from activesynth.utils import atomic_write_figure\n"
        "fig = Figure(figsize=(1, 1), dpi=30)\n"
        "fig.subplots().plot([0, 1])\n"
        f"p = atomic_write_figure({str(tmp_path / 'f.png')!r}, fig)\n"
        "assert p.read_bytes()[:4] == b'\\x89PNG'\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_written_files_get_the_mode_a_plain_open_would_give(tmp_path: Path) -> None:
    """Not mkstemp's 0600: a new file gets 0666 less the umask, an existing one keeps its mode."""
    code = (
        "import os, stat, sys\n"
        "from pathlib import Path\n"
        "os.umask(0o027)\n"
        "from activesynth.utils import atomic_write_text\n"
        f"new = atomic_write_text({str(tmp_path / 'new.txt')!r}, 'a')\n"
        "assert stat.S_IMODE(new.stat().st_mode) == 0o640, oct(new.stat().st_mode)\n"
        "new.chmod(0o2604)\n"
        "atomic_write_text(new, 'b')\n"
        "assert stat.S_IMODE(new.stat().st_mode) == 0o604 and new.read_text() == 'b'\n"
        "from activesynth.utils import atomic_write\n"
        "atomic_write(new, lambda fh: fh.write(b'c'), mode=0o600)\n"
        "assert stat.S_IMODE(new.stat().st_mode) == 0o600\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
