"""The `dnnopt` command line (see `keras_dnnopt.cli.main`)."""
