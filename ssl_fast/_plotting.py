"""matplotlib for the PNGs ssl_fast writes (an optional dependency, the `plot` extra): figures
drawn on the non-interactive Agg canvas, never through pyplot's global state."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

INSTALL = "pip install 'ssl_fast[plot]'"


def require(what: str) -> None:
    """ImportError saying that `what` needs matplotlib, unless it can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError(f"{what} needs matplotlib, which is not installed ({INSTALL})") from None


def figure(what: str, **kwargs) -> Figure:
    """A Figure(**kwargs) on an Agg canvas; `what` names the output in the ImportError."""
    require(what)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig
