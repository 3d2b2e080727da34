"""The `chef-genius` command line. Bad input ends with one line on stderr and exit code 2.

Its parts: parser.py (each command's flags and help), commands.py (the handlers of every command
but `train`), training.py (`train`, --print-config and --plan), runs.py (the settings a trained run
was trained with), environment.py (what the libraries run under).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable

from chef_genius.cli.environment import configure_allocator
from chef_genius.cli.parser import _parser
from chef_genius.errors import UserError

EXIT_USER_ERROR = 2
# Import names of the `train` extras (pyproject.toml) and of numpy, which they bring: without them
# only prepare, score and --help run.
TRAIN_EXTRAS = frozenset({"torch", "transformers", "peft", "accelerate", "safetensors", "sacrebleu", "rouge_score",
                          "gguf", "jiwer", "matplotlib", "wandb", "tensorboard", "huggingface_hub", "numpy"})


def main(argv: list[str] | None = None) -> int:
    configure_allocator()
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warnings(warnings.showwarning)
            return args.handler(args)
    except UserError as error:
        message = " ".join(str(error).split("\n"))  # always one line
        print(f"chef-genius: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("chef-genius: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as error:  # a light install (no `train` extras) asked to train
        if error.name not in TRAIN_EXTRAS:  # a package itself missing, not a part of an installed one
            raise
        print(f"chef-genius: error: {args.command} needs the training stack ({error.name} is not installed): "
              "pip install 'chef-genius[train]'", file=sys.stderr)
        return EXIT_USER_ERROR


def _one_line_warnings(show: Callable) -> Callable:
    """A `warnings.showwarning` that says chef-genius' own warnings as one plain line on stderr
    (``chef-genius: warning: ...``), without Python's source path and code line, which look
    like a crash; other libraries' warnings go to ``show`` as before."""

    def showwarning(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, UserWarning) and f"{os.sep}chef_genius{os.sep}" in str(filename):
            print(f"chef-genius: warning: {' '.join(str(message).split())}", file=file or sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return showwarning
