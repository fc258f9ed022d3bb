"""
Poor man's configurator, after nanoGPT. Not imported: exec'd by a training script after it
has defined its config as module globals:

    out_dir = 'out/sft'   # where checkpoints go
    max_iters = 1000      # optimizer steps
    exec(open('configurator.py').read())  # applies config files and --key=value overrides

Then, on the command line:

    python train_sft.py config/tiny_sft.py --max_iters=200 --init_from=out/base/ckpt

- A bare argument is a python config file: it is exec'd in its own namespace and every
  name it defines (not starting with '_') must already be a global of the script.
- `--key=value` overrides one global. The value is parsed as a Python literal
  (`ast.literal_eval`), else kept as a string; only the first '=' splits, so values may
  contain '='. The new value must have the type of the default: an int is accepted where
  a float is expected, and a `None` default accepts anything.
- Unknown key or wrong type: a clear error listing the valid keys. The effective
  overrides are printed once (rank 0 only under torchrun).
- The config keys are the script's lowercase globals holding plain values (`config_keys`);
  `config_snapshot(globals())` is what a script saves beside its checkpoints. Imported for
  that (`from configurator import config_snapshot`), this file applies nothing.
"""
import ast
import builtins
import os
import sys


def config_keys(g):
    """The script's config: its lowercase module globals that hold plain values (set before
    the exec). UPPER_CASE globals are the script's constants, not config."""
    plain = (int, float, bool, str, list, tuple, dict, type(None))
    return sorted(k for k, v in g.items() if not k.startswith('_') and k.islower() and isinstance(v, plain))


def config_snapshot(g):
    """{key: value} of the script's config, as saved beside a checkpoint."""
    return {k: g[k] for k in config_keys(g)}


def _check_and_set(g, key, value, source):
    valid = config_keys(g)
    if key not in valid:
        raise SystemExit(f"configurator: unknown config key '{key}' (from {source}).\n"
                         f"valid keys: {', '.join(valid)}")
    default = g[key]
    if default is not None and value is not None:
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif isinstance(default, bool) != isinstance(value, bool) or not isinstance(value, type(default)):
            raise SystemExit(f"configurator: wrong type for '{key}' (from {source}): "
                             f"got {type(value).__name__} {value!r}, expected {type(default).__name__} "
                             f"(default {default!r}).\nvalid keys: {', '.join(valid)}")
    g[key] = value
    return value


def _parse_value(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a plain string, e.g. --out_dir=out/sft


def apply_config(g, argv):
    """Apply config files and --key=value overrides in argv onto the dict g. Returns the
    overrides as a dict (key -> final value)."""
    applied = {}
    for arg in argv:
        if not arg.startswith('--'):
            if not os.path.isfile(arg):
                raise SystemExit(f"configurator: config file '{arg}' not found")
            file_globals = {}
            with open(arg) as f:
                # builtins.compile: a script may well have a config global named `compile`
                code = builtins.compile(f.read(), arg, 'exec')
            exec(code, file_globals)
            for key, value in file_globals.items():
                if key.startswith('_') or key == '__builtins__' or type(value).__name__ in ('module', 'function'):
                    continue
                applied[key] = _check_and_set(g, key, value, arg)
        else:
            if '=' not in arg:
                raise SystemExit(f"configurator: override '{arg}' must look like --key=value")
            key, text = arg[2:].split('=', 1)
            applied[key] = _check_and_set(g, key, _parse_value(text), arg)
    return applied


# when exec'd from a script, apply sys.argv to the script's globals
if __name__ != 'configurator':
    _overrides = apply_config(globals(), sys.argv[1:])
    if _overrides and int(os.environ.get('RANK', '0')) == 0:
        print('config overrides: ' + ', '.join(f'{k}={v!r}' for k, v in _overrides.items()))
