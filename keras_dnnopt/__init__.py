"""keras_dnnopt: make Keras models smaller, faster and better trained, on Keras 3 and tf_keras.

The Keras in use follows `tf.keras` (see `keras_dnnopt.backend`).
"""

__version__ = "0.1.0"
