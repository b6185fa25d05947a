"""What a command shows on the console: a quiet log by default, everything with `--verbose`.

Quiet means one line when a stage starts and one when it ends (with what it made), the iteration table and the
warnings a user must act on. The libraries' own bars (datasets' saving and mapping, transformers' weight loading,
TRL's preprocessing, the Trainer's steps) and the package's detail lines are shown with `--verbose` only, and this
package's own bars only on a terminal: in a log file they are carriage-return noise.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

# Warnings the libraries raise on every run that ask nothing of the user of this package.
HARMLESS_WARNINGS = (
    # transformers 5 deprecates a property that peft and TRL still read.
    (FutureWarning, r".*is_gradient_checkpointing.*"),
    # peft, saving an adapter of a GGUF base (a folder with no config.json): the vocabulary is never resized here.
    (UserWarning, r"Could not find a config file in .* will assume that the vocabulary was not modified"),
)


# Log lines of the libraries that ask nothing of the user: logger name -> text.
HARMLESS_LOG_LINES = (
    # The Trainer orders checkpoints by number when file times are coarse: the order it should use anyway.
    ("transformers.trainer_utils", "mtime may not be reliable"),
)


_DROP = {text: (lambda record, text=text: text not in record.getMessage()) for _, text in HARMLESS_LOG_LINES}


def on_terminal() -> bool:
    return sys.stderr.isatty()


def configure(verbose: bool = False) -> None:
    """Logging format and levels, library progress bars and known harmless warnings, for the whole process (and
    the processes `accelerate launch` starts, through the environment)."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("spc_train").setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # bitsandbytes warns at import, on every CPU machine, that an optional kernels package is missing: not actionable.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for category, message in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name, text in HARMLESS_LOG_LINES:
        logging.getLogger(name).addFilter(_DROP[text])  # the same filter object: added once per logger
    if verbose:
        return
    # Read by datasets, huggingface_hub and transformers (which follows huggingface_hub) when they are imported.
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if not on_terminal():  # the bars libraries draw with tqdm directly (transformers' GGUF dequantizing)
        os.environ.setdefault("TQDM_DISABLE", "1")
    quiet_libraries()


def quiet_libraries() -> None:
    """The same for libraries already imported (the settings above are read at import)."""
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


def library_bars_enabled() -> bool:
    return os.environ.get("HF_DATASETS_DISABLE_PROGRESS_BARS") != "1"


def progress(*args, **kwargs):
    """tqdm, shown only on a terminal (pass `disable=` to hide it for other reasons too)."""
    from tqdm.auto import tqdm

    kwargs["disable"] = kwargs.get("disable", False) or not on_terminal()
    return tqdm(*args, **kwargs)
