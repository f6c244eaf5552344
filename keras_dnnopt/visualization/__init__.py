"""Visual explanations and training plots, on Keras 3 and tf_keras.

- `grad_cam`: Grad-CAM heatmaps (Selvaraju et al.), on the last convolutional layer
  (`find_last_conv_layer`) unless one is named.
- `saliency_map`: gradient saliency maps (Simonyan et al.).
- `overlay_heatmap`: a heatmap blended over its image, as an RGB array.
- `plot_history`, `plot_schedule`, `plot_confusion_matrix`, `plot_sparsity`,
  `plot_lr_finder`: matplotlib figures drawn off-screen (the object-oriented API, never
  pyplot's backend), each able to save a PNG atomically (`save_path=`).

The explanations need only TensorFlow; the plots and `overlay_heatmap`'s colormaps need
matplotlib (`pip install keras_dnnopt[viz]`), imported when first used.
"""

from keras_dnnopt.visualization.gradcam import find_last_conv_layer, grad_cam
from keras_dnnopt.visualization.overlay import overlay_heatmap
from keras_dnnopt.visualization.plots import (
    plot_confusion_matrix,
    plot_history,
    plot_lr_finder,
    plot_schedule,
    plot_sparsity,
)
from keras_dnnopt.visualization.saliency import saliency_map

__all__ = [
    "grad_cam",
    "find_last_conv_layer",
    "saliency_map",
    "overlay_heatmap",
    "plot_history",
    "plot_schedule",
    "plot_confusion_matrix",
    "plot_sparsity",
    "plot_lr_finder",
]
