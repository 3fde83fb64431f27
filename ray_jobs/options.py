"""Job configs are dataclasses; argparse exists only here, at the edge.

``parse(ConfigClass, argv, prog, doc)`` builds a command line from the dataclass's fields
(``--field-name``, the type from the annotation, help and choices from ``field(metadata=)``,
defaults shown in ``--help``). Jobs call each other with the dataclasses, never with argv.

``run_cli`` turns a user error into one line on stderr and exit code 2, no traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from typing import Any, Callable

from core.checkpoint import CheckpointError
from core.config import ConfigError
from core.data.rocov2 import DataLayoutError
from core.scoring.settings import SettingsError
from core.search_space import SearchSpaceError


class UserError(ValueError):
    """A problem with what the user asked for (a path, a flag, a value): reported in one
    line, exit code 2."""


# What a user can get wrong, reported as one line; anything else is a bug and keeps its
# traceback.
USER_ERRORS = (UserError, FileNotFoundError, FileExistsError, ConfigError, CheckpointError, DataLayoutError,
               SearchSpaceError, SettingsError)


def opt(default: Any = None, help: str = "", **metadata) -> Any:
    """A config field with its command-line help (and ``choices=``, ``flag=`` ...)."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default),
                                 metadata={"help": help, **metadata})
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def _base_type(hint):
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _base_type(args[0])
    return hint


def _nested(cls) -> dict:
    """The fields of ``cls`` that hold a settings dataclass (its flags sit at the top level)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)
            if dataclasses.is_dataclass(hints[f.name]) and f.metadata.get("cli") is not False}


def add_options(parser: argparse.ArgumentParser, cls) -> None:
    hints = typing.get_type_hints(cls)
    nested = _nested(cls)
    for f in dataclasses.fields(cls):
        meta = dict(f.metadata)
        if meta.get("cli") is False:
            continue
        if f.name in nested:  # e.g. ScoringSettings: --k, --rerank-k, ... built into one object
            add_options(parser, nested[f.name])
            continue
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        hint = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kwargs: dict = {"dest": f.name, "help": meta.get("help") or " "}
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction if default else "store_true"
        elif hint is list or typing.get_origin(hint) is list:
            kwargs.update(nargs="*", metavar=meta.get("metavar", "VALUE"),
                          type=meta.get("item_type", str))
        else:
            kwargs["type"] = hint if hint in (int, float) else str
            if meta.get("metavar"):
                kwargs["metavar"] = meta["metavar"]
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        if meta.get("required"):
            kwargs["required"] = True
        else:
            kwargs["default"] = default
        parser.add_argument(flag, **kwargs)


def parser_for(cls, prog: str, doc: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=_Formatter)
    add_options(parser, cls)
    return parser


def parse(cls, argv, prog: str, doc: str | None):
    """The dataclass ``cls`` filled from the command line ``argv``."""
    values = vars(parser_for(cls, prog, doc).parse_args(argv))
    try:
        for name, settings in _nested(cls).items():  # built, and so checked, once: here
            values[name] = settings(**{f.name: values.pop(f.name)
                                       for f in dataclasses.fields(settings)})
    except SettingsError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return cls(**values)


def run_cli(prog: str, fn: Callable[[], Any]) -> Any:
    """Run a job; a user error becomes one line on stderr and exit code 2."""
    try:
        return fn()
    except USER_ERRORS as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
