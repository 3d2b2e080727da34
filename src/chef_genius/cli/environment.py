"""What the libraries run under: the CUDA allocator's setting, made before CUDA is first used, and
quiet libraries for the commands that load models."""

from __future__ import annotations

import contextlib
import os
import warnings

from chef_genius.encoding import USER_TOKENIZER_SETTING


def configure_allocator() -> None:
    """Ask PyTorch's CUDA allocator for expandable segments unless the user chose a setting.

    Batches of varying shapes leave the default allocator's fixed-size segments fragmented: on
    an H100 a 16k-token budget reserved 52.7 GiB for 33.4 GiB allocated. Must run before CUDA is
    first used, so `main` calls it at start (it imports nothing: `prepare`, `score` and `--help`
    run without torch)."""
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")


def _quiet_libraries() -> None:
    """Keep library progress bars and deprecation chatter out of the training output."""
    if "TOKENIZERS_PARALLELISM" in os.environ:  # the user's own choice: kept everywhere (encoding.tokenizer_threads)
        os.environ.setdefault(USER_TOKENIZER_SETTING, os.environ["TOKENIZERS_PARALLELISM"])
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    with contextlib.suppress(ImportError):  # only the training commands need transformers
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
