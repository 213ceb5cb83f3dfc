"""One readable line for a command line that absl or ml_collections could not parse.

absl and ml_collections report a bad `--config` file or variant, or a mistyped `--config.<field>`, in
three ways: a flags.Error whose text embeds the config file's traceback, a KeyError or AttributeError
whose text is a repr with a literal '\\n' (the mistyped field), or an OSError deferred until the config
is first used (a missing file). `describe` turns each into one line that names the flag; anything else
gets None, so the caller re-raises it with its traceback (it is a bug, not a usage error).
"""

from __future__ import annotations

import os
import re

from absl import flags

_CONFIG_FILE_FAILED = ": Error whilst parsing config file"
_DID_YOU_MEAN = re.compile(r'Did you mean "([^"]+)"')
# Fields that moved to another section (2026-12-07): the old flag names the new one.
MOVED = {f"eval.{name}": f"sampling.{name}"
         for name in ("learned_target", "cfg_scale", "cfg_ramp", "temperature", "top_k", "top_p")}


def _root_cause(error: BaseException) -> BaseException:
    """The first exception raised: absl and ml_collections re-raise it wrapped, twice for a config file."""
    seen = {id(error)}
    while True:
        inner = error.__cause__ or error.__context__
        if inner is None or id(inner) in seen:
            return error
        seen.add(id(inner))
        error = inner


def _text(error: BaseException) -> str:
    """An exception's message; KeyError's str() is a repr, and ml_collections nests KeyError in others."""
    message = error
    while isinstance(message, (KeyError, AttributeError)) and message.args:
        message = message.args[0]
    return str(message)


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.strip().splitlines() if part.strip())


def _flag_error(error: flags.Error) -> str:
    text = str(error).strip()
    if _CONFIG_FILE_FAILED in text:  # a ValueError or TypeError inside the config file's get_config
        flag = text.split(_CONFIG_FILE_FAILED)[0].removeprefix("flag ")
        return f"{flag}: {_one_line(_text(_root_cause(error)))}"
    if "--config=None" in text:
        return "--config is required, e.g. --config=experiments/pointmaze.py:local,umaze,quicktest"
    return _one_line(text.removeprefix("flag "))


def _missing_field(error: LookupError | AttributeError, argv: list[str]) -> str | None:
    """The line for a mistyped `--config.<path>`; None when no override names the missing field."""
    lines = _text(error).strip().splitlines()
    field = lines[0].strip().strip("'\"") if lines else ""
    flag = next((a.split("=")[0] for a in argv
                 if a.startswith("--config.") and field in a.split("=")[0].split(".")), None)
    if flag is None:
        return None  # raised inside a config file: a bug there, keep its traceback
    suggestion = _DID_YOU_MEAN.search(_text(error))
    hint = f"; did you mean {suggestion.group(1)!r}?" if suggestion else "; see the config file's fields"
    if (moved := MOVED.get(flag.removeprefix("--config."))) is not None:
        hint = f"; it moved to --config.{moved}"
    return f"{flag}: the config has no field {field!r}{hint}"


def config_file_error(argument: str, error: BaseException) -> str:
    """The line for a config file that could not be loaded (`argument` is the --config value)."""
    path = argument.split(":", 1)[0]
    if not os.path.isfile(path):
        folder = os.path.dirname(path) or "."
        files = sorted(f for f in os.listdir(folder) if f.endswith(".py")) if os.path.isdir(folder) else []
        listing = f"; the files in {folder}/: {', '.join(files)}" if files else ""
        return f"--config={argument}: no such config file (relative to {os.getcwd()}){listing}"
    return f"--config={argument}: cannot load it: {_one_line(_text(_root_cause(error)))}"


def describe(error: BaseException, argv: list[str], config_argument: str | None) -> str | None:
    """The line for an error raised while parsing `argv`, or None when it is not a usage error."""
    if isinstance(error, flags.Error):
        return _flag_error(error)
    if isinstance(error, (KeyError, AttributeError)):
        return _missing_field(error, argv)
    if isinstance(error, OSError) and config_argument:
        return config_file_error(config_argument, error)
    return None
