"""Data: datasets, duplicate removal, stratified splits, normalisation, augmentation and
`tf.data` pipelines, on Keras 3 and tf_keras.

    data = load_dataset("digits", validation_split=0.1, test_split=0.2, augment=True)
    model.fit(data.train, validation_data=data.validation, epochs=10)

- `load_dataset`, `Dataset`, `DATASET_NAMES`, `dataset_cache_paths`: `digits` (scikit-learn's,
  always available), `mnist`, `fashion_mnist`, `cifar10` (`keras.datasets`) or a folder of
  class subfolders, deduplicated, split and piped.
- `deduplicate`, `DedupReport`: exact duplicates by hashing; conflicting labels reported.
- `stratified_split`: hold-out splits and k folds keeping class proportions.
- `adapt_normalizer`: a `Normalization` layer adapted on the training split.
- `augmentation_layers`, `default_augmentation`: Keras preprocessing layers for training.
- `make_pipeline`: cache, shuffle each epoch, batch, augment, normalise, prefetch.
"""

from keras_dnnopt.data.augmentation import augmentation_layers
from keras_dnnopt.data.datasets import DATASET_NAMES, Dataset, dataset_cache_paths, load_dataset
from keras_dnnopt.data.dedup import DedupReport, deduplicate
from keras_dnnopt.data.normalization import adapt_normalizer
from keras_dnnopt.data.pipeline import default_augmentation, make_pipeline
from keras_dnnopt.data.splits import stratified_split

__all__ = [
    "DATASET_NAMES",
    "Dataset",
    "DedupReport",
    "adapt_normalizer",
    "augmentation_layers",
    "dataset_cache_paths",
    "deduplicate",
    "default_augmentation",
    "load_dataset",
    "make_pipeline",
    "stratified_split",
]
