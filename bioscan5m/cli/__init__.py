"""``bioscan5m``: a thin command line over the Python API. Every command maps to one documented function.

One module per capability (``dataset``, ``dna``, ``evaluation``, ``clibd``, ``identification``,
``delimitation``, ``demo``) adds
its commands; ``arguments`` holds the options they share and the argument types that refuse bad values.
"""

from __future__ import annotations

import argparse
import logging
import sys

from . import clibd, dataset, delimitation, demo, dna, evaluation, identification


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="bioscan5m", description=__doc__)
    parser.add_argument("--version", action="version", version=f"bioscan5m {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for commands in (dataset, dna, evaluation, clibd, identification, delimitation, demo):
        commands.add_commands(sub)
    return parser


def _leave_process_group(finished: bool) -> None:
    """Close the ``torchrun`` process group, if a training command opened one, before the interpreter exits.

    A gloo group left open aborts a process at exit now and then ("terminate called without an active exception",
    pytorch/pytorch#190489). After a successful run every process first waits for the others, so none exits while
    rank 0 still saves; after a failure there is no waiting, as the other processes may never arrive.
    """
    if "torch.distributed" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def input_problem(error: BaseException) -> BaseException | None:
    """The problem with the user's input behind ``error`` (the error itself, or the one a library wrapped, as
    ``datasets`` wraps every error of a builder in ``DatasetGenerationError``), or None for a bug."""
    import zipfile

    from PIL import Image

    while error is not None:
        if isinstance(error, (ValueError, OSError, zipfile.BadZipFile, Image.DecompressionBombError)):
            return error
        error = error.__cause__
    return None


#: The extra of pyproject.toml that installs each optional dependency (by its top-level module).
EXTRA_OF_MODULE = {
    **dict.fromkeys(("torch", "torchvision", "transformers", "tokenizers", "safetensors", "timm", "accelerate"),
                    "models"),
    **dict.fromkeys(("evaluate", "sklearn", "scipy", "umap", "faiss", "matplotlib"), "evaluation"),
    "gradio": "app",
}


def missing_extra(error: BaseException) -> tuple[str, str] | None:
    """The optional dependency behind ``error`` that is not installed, and the extra that installs it. Only a
    top-level package that cannot be found counts: a missing part of an installed one is a bug, not a missing
    extra."""
    import importlib.util

    while error is not None:
        if isinstance(error, ModuleNotFoundError):
            if error.name in EXTRA_OF_MODULE and importlib.util.find_spec(error.name) is None:
                return error.name, EXTRA_OF_MODULE[error.name]
            return None
        error = error.__cause__
    return None


class _StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a line is logged, not as it was when the handler was made (a caller
    may redirect or capture it between two commands)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _):
        pass


def _show_progress_lines() -> None:
    """The library's step lines (``logging`` INFO of the ``bioscan5m`` loggers) on stderr, once per process."""
    logger = logging.getLogger("bioscan5m")
    if not any(isinstance(handler, _StderrHandler) for handler in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _show_progress_lines()
    finished = False
    try:
        args.run(args)
        finished = True
    except Exception as error:
        # A missing extra or an input problem gets one clear line, not a traceback; BIOSCAN5M_DEBUG=1 shows it.
        import os

        if os.environ.get("BIOSCAN5M_DEBUG"):
            raise
        missing = missing_extra(error)
        if missing is not None:
            module, extra = missing
            print(f"bioscan5m {args.command}: error: this command needs {module}, which is not installed: "
                  f"pip install 'bioscan5m[{extra}]' (or 'bioscan5m[all]' for every command)", file=sys.stderr)
            return 2
        problem = input_problem(error)
        if problem is None:
            raise
        print(f"bioscan5m {args.command}: error: {problem}", file=sys.stderr)
        return 2
    finally:
        _leave_process_group(finished)
    return 0


if __name__ == "__main__":
    sys.exit(main())
