"""Charts for the benchmark scripts (``kvmdune wss --chart``, ``kvmdune bench paper``).

matplotlib is an optional extra (``pip install 'kvmdune[chart]'``): the core install
stays small, and only drawing needs it. Every chart is written in the format its
file name's extension says (.svg, .png, .pdf).
"""

from __future__ import annotations

from pathlib import Path

INSTALL_HINT = ("charts need matplotlib, an optional extra of kvmdune: "
                "pip install 'kvmdune[chart]' (or pip install matplotlib)")


class ChartUnavailable(RuntimeError):
    """matplotlib is not installed."""


def pyplot():
    """matplotlib.pyplot with a file-only backend, or ChartUnavailable."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ChartUnavailable(INSTALL_HINT) from exc
    return plt


def check_available() -> None:
    """Raise ChartUnavailable before any work is done when charts cannot be drawn."""
    pyplot()


def save(figure, path: Path) -> Path:
    """Write ``figure`` to ``path`` (its parent made if needed) and close it."""
    plt = pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, bbox_inches="tight")
    plt.close(figure)
    return path
