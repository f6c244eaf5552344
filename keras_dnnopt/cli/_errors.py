"""The command line's error for bad input.

A command raises `UsageError` for anything the user can fix (an unknown dataset, an output
folder that cannot be created, a missing or corrupt model file, a bad number, flags that
contradict each other); `keras_dnnopt.cli.main.main` prints it as one line
`dnnopt <command>: error: <message>` on stderr and exits with status 2, argparse's
convention. Anything else is an internal error: exit status 1, its traceback with `--debug`.
"""


class UsageError(Exception):
    """Bad input on the command line: shown as one line, exit status 2.

    The message names the flag and shows the value, e.g.
    `--out: cannot create the folder '/proc/nope' (No such file or directory)`.
    """
