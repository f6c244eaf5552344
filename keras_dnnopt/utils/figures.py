"""matplotlib, off-screen: the lazy import, a new figure and the atomic image save (shared by
the plots of `visualization`, `pipeline`, `LRFinder.plot` and the CLI).

The plots draw on a `matplotlib.figure.Figure` with its own Agg canvas (the
object-oriented API, without pyplot), so they never switch or depend on the backend a
user has set for pyplot, and work on machines without a display.
"""

import os
import tempfile

VIZ_EXTRA_HINT = "`pip install keras_dnnopt[viz]` (or `pip install matplotlib`)"


def require_matplotlib(what):
    """Imports matplotlib, or raises an `ImportError` naming the `viz` extra."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError as error:
        raise ImportError(f"`{what}` needs matplotlib: {VIZ_EXTRA_HINT}.") from error
    return matplotlib


def new_figure(what, figsize=(6.0, 4.0), nrows=1, ncols=1):
    """A new off-screen figure and its axes (a flat list).

    Raises:
        ImportError: if matplotlib is missing (names the `viz` extra).
    """
    require_matplotlib(what)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize)
    FigureCanvasAgg(figure)  # draws off-screen, whatever pyplot's backend is
    axes = figure.subplots(nrows, ncols, squeeze=False)
    return figure, list(axes.ravel())


def check_save_path(save_path, name="save_path"):
    """Validates `save_path` (None, or a path whose extension matplotlib can write;
    no extension means PNG) and returns `(path, format)`; errors call it `name`."""
    if save_path is None:
        return None, None
    if not isinstance(save_path, (str, os.PathLike)) or not os.fspath(save_path):
        raise ValueError(
            f"Argument `{name}` must be None or a file path (str or os.PathLike), e.g. "
            f"'history.png'. Received: {name}={save_path!r}"
        )
    path = os.fspath(save_path)
    extension = os.path.splitext(path)[1].lower().lstrip(".")
    fmt = extension or "png"
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    supported = FigureCanvasAgg.get_supported_filetypes()
    if fmt not in supported:
        raise ValueError(
            f"Argument `{name}` must end with an image extension matplotlib can write "
            f"({', '.join('.' + k for k in sorted(supported))}; none means PNG). "
            f"Received: {name}={save_path!r}"
        )
    return path, fmt


def save_figure(figure, save_path, dpi=100, name="save_path"):
    """Saves `figure` to `save_path` atomically: written to a temporary file in the same
    folder, then moved over the target (`os.replace`), so that a reader never sees a
    half-written image. Does nothing for `save_path=None`."""
    path, fmt = check_save_path(save_path, name)
    if path is None:
        return None
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=f".{fmt}", dir=folder)
    try:
        with os.fdopen(handle, "wb") as stream:
            figure.savefig(stream, format=fmt, dpi=dpi)
        # mkstemp makes the file owner-only; give it the permissions a plain open() would.
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(temporary, 0o666 & ~mask)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return path
