"""`overlay_heatmap`: a heatmap blended over its image, as an RGB array."""

import numpy as np

from keras_dnnopt.backend import tf
from keras_dnnopt.utils.figures import require_matplotlib
from keras_dnnopt.utils.validation import check_number


def _check_image(image):
    array = np.asarray(image, dtype="float32")
    if array.ndim == 3 and array.shape[-1] in (1, 3):
        pass
    elif array.ndim != 2:
        raise ValueError(
            "Argument `image` must be one image: (height, width) or (height, width, 1) "
            "grayscale, or (height, width, 3) RGB. Received: "
            f"image.shape={array.shape}"
        )
    if array.size == 0 or not np.all(np.isfinite(array)):
        raise ValueError(
            f"Argument `image` must be a non-empty array of finite numbers. Received: "
            f"image.shape={array.shape}"
        )
    if array.ndim == 2:
        array = array[..., None]
    low, high = float(array.min()), float(array.max())
    scaled = (array - low) / (high - low) if high > low else np.zeros_like(array)
    return np.repeat(scaled, 3, axis=-1) if scaled.shape[-1] == 1 else scaled


def _check_heatmap(heatmap, size):
    array = np.asarray(heatmap, dtype="float32")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2 or array.size == 0:
        raise ValueError(
            "Argument `heatmap` must be one map of shape (height, width), such as "
            f"`grad_cam(model, image)` returns. Received: heatmap.shape={array.shape}"
        )
    if not np.all(np.isfinite(array)) or array.min() < 0.0 or array.max() > 1.0:
        raise ValueError(
            "Argument `heatmap` must hold values in [0, 1] (`grad_cam` and `saliency_map` "
            "give such maps; divide a raw map by its maximum). Received: values in "
            f"[{np.nanmin(array)}, {np.nanmax(array)}]"
        )
    if array.shape != size:
        array = tf.image.resize(array[..., None], size, method="bilinear").numpy()[..., 0]
        array = np.clip(array, 0.0, 1.0)
    return array


def _colormap(colormap):
    matplotlib = require_matplotlib("overlay_heatmap")
    from matplotlib.colors import Colormap

    if isinstance(colormap, Colormap):
        return colormap
    if isinstance(colormap, str) and colormap in matplotlib.colormaps:
        return matplotlib.colormaps[colormap]
    raise ValueError(
        "Argument `colormap` must be a matplotlib colormap or its name, e.g. 'jet', "
        f"'inferno', 'viridis'. Received: colormap={colormap!r}"
    )


def overlay_heatmap(image, heatmap, alpha=0.4, colormap="jet"):
    """Blends a heatmap, coloured by a colormap, over its image.

    The image is rescaled to [0, 1] by its own minimum and maximum (a grayscale image is
    repeated over the three channels); the heatmap (values in [0, 1]) is resized
    (bilinear) to the image when their sizes differ and coloured with `colormap`; the
    result is `(1 - alpha) * image + alpha * colormap(heatmap)`.

    Args:
        image: one image: `(height, width)` or `(height, width, 1)` grayscale, or
            `(height, width, 3)` RGB, any numeric range.
        heatmap: a map of shape `(h, w)` with values in [0, 1], e.g. from `grad_cam` or
            `saliency_map`.
        alpha: the weight of the heatmap, in [0, 1]. Defaults to 0.4.
        colormap: a matplotlib colormap or its name. Defaults to `"jet"`.

    Returns:
        A float32 NumPy array `(height, width, 3)`, RGB in [0, 1] (ready for
        `imshow`; multiply by 255 for 8-bit).

    Raises:
        ValueError: for an image or heatmap of the wrong rank, heatmap values outside
            [0, 1], `alpha` outside [0, 1] or an unknown colormap.
        ImportError: if matplotlib (for the colormap) is missing
            (`pip install keras_dnnopt[viz]`).

    Example:

    ```python
    picture = overlay_heatmap(image, grad_cam(model, image), alpha=0.5)
    ```
    """
    alpha = check_number("alpha", alpha, low=0.0, high=1.0)
    rgb = _check_image(image)
    heat = _check_heatmap(heatmap, rgb.shape[:2])
    colours = np.asarray(_colormap(colormap)(heat), dtype="float32")[..., :3]
    return ((1.0 - alpha) * rgb + alpha * colours).astype("float32")
