"""The matplotlib backend of a job: every figure an operation shows becomes one metadata line of its output.

The runner starts operations with ``MPLBACKEND=module://deepforge_adapters.jobs.plotting`` (unless the job's
environment names another backend), so ``plt.plot(...); plt.show()`` in an operation works on a headless
machine and reaches the model, as it does with DeepForge's job-side ``backend_deepforge.py``: ``show()``
writes, for each open figure, the line::

    deepforge-cmd PLOT <figure number> <state JSON>

and the plugin that follows the job (``deepforge_plugins.job_metadata``, DeepForge's ExecuteJob metadata
handling) turns it into a ``Graph`` node of the Job with one ``Plot2D``/``Plot3D`` per axes holding its
``Line``, ``ScatterPoints`` and ``Image`` nodes, and keeps the line out of ``Job.stdout``.  Showing the same
figure again updates the same Graph.

The state is DeepForge's: ``{"id", "title" (the suptitle), "axes": [{"title", "xlabel", "ylabel", "xlim",
"ylim", "is3D", ("zlabel", "zlim"), "lines": [{"points", "label", "color", "marker", "lineStyle",
"lineWidth"}], "scatterPoints": [{"points", "color", "marker", "label", "width"}], "images": [{"height",
"width", "visible", "rgbaMatrix" (base64 of the uint8 pixels, row-major), "numChannels", and ours:
"rgbaPixels" (the image as drawn, colormap applied, RGBA) for DeepForge 0.20.1's plotly JSON)}]}]}``; NaN and
infinities are written as ``null``.  Rendering (``savefig``) is Agg's.
"""

from __future__ import annotations

import base64
import json
import math
import sys
from typing import Any

import numpy as np
from matplotlib._pylab_helpers import Gcf
from matplotlib.axes import Axes
from matplotlib.backend_bases import FigureManagerBase
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from .layout import METADATA_PREFIX

PLOT_COMMAND = "PLOT"


def figure_state(figure: Figure, number: int) -> dict[str, Any]:
    """DeepForge's JSON state of ``figure`` (see the module docstring)."""
    suptitle = getattr(figure, "_suptitle", None)
    return {
        "id": number,
        "title": suptitle.get_text() if suptitle is not None else "",
        "axes": [_axes_state(axes) for axes in figure.get_axes()],
    }


def plot_command(figure: Figure, number: int) -> str:
    """The output line that carries ``figure`` to the model (no newline)."""
    state = _plain(figure_state(figure, number))
    return f"{METADATA_PREFIX} {PLOT_COMMAND} {number} {json.dumps(state, allow_nan=False, separators=(',', ':'))}"


def _axes_state(axes: Axes) -> dict[str, Any]:
    is3d = hasattr(axes, "get_zlabel")
    state: dict[str, Any] = {
        "title": axes.get_title(),
        "xlabel": axes.get_xlabel(),
        "ylabel": axes.get_ylabel(),
        "xlim": list(axes.get_xlim()),
        "ylim": list(axes.get_ylim()),
        "is3D": is3d,
        "lines": [],
        "images": [],
        "scatterPoints": [],
    }
    if is3d:
        state["zlabel"] = axes.get_zlabel()  # type: ignore[attr-defined]
        state["zlim"] = list(axes.get_zlim())  # type: ignore[attr-defined]
    for line in axes.lines:
        if hasattr(line, "get_data_3d"):
            points = np.transpose(np.asarray(line.get_data_3d())).tolist()
        else:
            points = np.asarray(line.get_xydata()).tolist()
        label = str(line.get_label() or "")
        marker = line.get_marker()
        state["lines"].append(
            {
                "points": points,
                "label": "" if label.startswith("_") else label,  # matplotlib's "_child0": no label given
                "color": to_hex(line.get_color()),
                "marker": "" if marker in (None, "None", "none") else str(marker),
                "lineStyle": line.get_linestyle(),
                "lineWidth": line.get_linewidth(),
            }
        )
    for collection in axes.collections:
        if isinstance(collection, LineCollection):
            state["lines"].extend(_line_collection(collection))
        elif isinstance(collection, PathCollection):
            state["scatterPoints"].append(_scatter(collection))
    for image in axes.images:
        rows, cols = image.get_size()
        matrix, channels = _encode_pixels(image.get_array())
        state["images"].append(
            {
                "height": rows,
                "width": cols,
                "visible": image.get_visible(),
                "rgbaMatrix": matrix,
                "numChannels": channels,
                "rgbaPixels": _drawn_pixels(image),
            }
        )
    return state


def _line_collection(collection: Any) -> list[dict[str, Any]]:
    colors = collection.get_colors()
    widths = collection.get_linewidths()
    label = collection.get_label()
    return [
        {
            "points": np.asarray(segment).tolist(),
            "label": "" if not label or str(label).startswith("_") else str(label),
            "color": to_hex(colors[i % len(colors)]) if len(colors) else "#000000",
            "lineStyle": "solid",
            "lineWidth": float(widths[i % len(widths)]) if len(widths) else 1.0,
            "marker": ".",
        }
        for i, segment in enumerate(collection.get_segments())
    ]


def _scatter(collection: Any) -> dict[str, Any]:
    offsets3d = getattr(collection, "_offsets3d", None)
    if offsets3d is not None:
        points = np.transpose([np.ma.getdata(a) for a in offsets3d]).tolist()
    else:
        points = np.ma.getdata(collection.get_offsets()).tolist()
    colors = [to_hex(c, keep_alpha=True) for c in collection.get_facecolors().tolist()]
    sizes = [math.sqrt(s) for s in collection.get_sizes()]
    return {
        "color": colors[0] if len(colors) == 1 else colors,
        "points": points,
        "marker": ".",
        "label": "",
        "width": sizes[0] if len(sizes) == 1 else sizes,
    }


def _encode_pixels(array: Any) -> tuple[str, int]:
    """DeepForge's image encoding: masked values as 0, values in [0, 1] scaled to 0..255, uint8, a grey image
    as three equal channels; the raw bytes (rows, columns, channels) in base64."""
    data = np.ma.filled(np.ma.asarray(array), 0)
    pixels = (data * 255).astype(np.uint8) if np.all(data <= 1) else data.astype(np.uint8)
    if pixels.ndim == 2:
        pixels = np.stack((pixels, pixels, pixels), axis=-1)
    pixels = np.ascontiguousarray(pixels)
    return base64.b64encode(pixels.tobytes()).decode("ascii"), int(pixels.shape[-1])


def _drawn_pixels(image: Any) -> str:
    """The image as matplotlib draws it (colormap and norm applied; rows top down): base64 of its RGBA uint8
    pixels (rows, columns, 4), what DeepForge's plotly backend puts into a plotly ``image`` trace."""
    data = image.get_array()
    rgba = image.to_rgba(data[::-1] if image.origin == "lower" else data, bytes=True, norm=True)
    return base64.b64encode(np.ascontiguousarray(rgba, dtype=np.uint8).tobytes()).decode("ascii")


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars as Python numbers, tuples as lists, NaN and infinities as ``None``."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def emit(figure: Figure, number: int) -> None:
    """Write ``figure``'s command line to stdout (the job's output, which its runner streams)."""
    sys.stdout.write(plot_command(figure, number) + "\n")
    sys.stdout.flush()


class FigureManagerDeepForge(FigureManagerBase):
    """``show()`` sends the figure to the model instead of opening a window."""

    def show(self) -> None:
        emit(self.canvas.figure, int(self.num))

    @classmethod
    def pyplot_show(cls, *, block: bool | None = None) -> None:
        for manager in Gcf.get_all_fig_managers():
            manager.show()


class FigureCanvasDeepForge(FigureCanvasAgg):
    manager_class = FigureManagerDeepForge


# The names matplotlib looks up in a backend module.
FigureCanvas = FigureCanvasDeepForge
FigureManager = FigureManagerDeepForge


def show(*, block: bool | None = None) -> None:
    FigureManagerDeepForge.pyplot_show(block=block)
