"""configurator.py: config files and --key=value overrides applied to a script's globals."""
import subprocess
import sys

import pytest

from configurator import apply_config, config_keys, config_snapshot


def fresh():
    return {'out_dir': 'out/x', 'max_iters': 10, 'lr': 1e-3, 'init_from': None, 'compile': False, 'tags': [1, 2]}


def test_override_parses_literals_and_strings():
    g = fresh()
    applied = apply_config(g, ['--max_iters=50', '--lr=3e-4', '--compile=True', '--out_dir=out/y'])
    assert g['max_iters'] == 50 and g['lr'] == 3e-4 and g['compile'] is True and g['out_dir'] == 'out/y'
    assert applied == {'max_iters': 50, 'lr': 3e-4, 'compile': True, 'out_dir': 'out/y'}


def test_int_accepted_for_float_and_value_with_equals_sign():
    g = fresh()
    apply_config(g, ['--lr=1', '--out_dir=a=b=c'])
    assert g['lr'] == 1.0 and isinstance(g['lr'], float)
    assert g['out_dir'] == 'a=b=c'


def test_none_default_can_be_overridden():
    g = fresh()
    apply_config(g, ['--init_from=out/base/ckpt'])
    assert g['init_from'] == 'out/base/ckpt'


def test_wrong_type_is_a_clear_error():
    g = fresh()
    with pytest.raises(SystemExit, match="(?s)wrong type for 'max_iters'.*expected int"):
        apply_config(g, ['--max_iters=fast'])
    with pytest.raises(SystemExit, match="wrong type for 'compile'"):
        apply_config(g, ['--compile=1'])


def test_config_is_the_lowercase_plain_globals_and_the_snapshot_saves_exactly_them():
    g = dict(fresh(), METRIC_KEYS=['n'], _private=3, helper=len)  # a constant, a private name, a function
    assert config_keys(g) == sorted(fresh()) and config_snapshot(g) == fresh()
    with pytest.raises(SystemExit, match="unknown config key 'METRIC_KEYS'"):  # constants are not config
        apply_config(g, ['--METRIC_KEYS=[1]'])


def test_unknown_key_lists_valid_keys():
    with pytest.raises(SystemExit, match=r"(?s)unknown config key 'max_iter'.*valid keys: compile, init_from, lr, max_iters"):
        apply_config(fresh(), ['--max_iter=5'])


def test_config_file_applied_and_checked(tmp_path):
    good = tmp_path / 'good.py'
    good.write_text('import math\nmax_iters = 7  # comment\nlr = math.sqrt(4) * 1e-4\n_private = 3\n')
    g = fresh()
    apply_config(g, [str(good), '--max_iters=9'])  # later overrides win
    assert g['max_iters'] == 9 and abs(g['lr'] - 2e-4) < 1e-12
    bad = tmp_path / 'bad.py'
    bad.write_text('max_iterz = 7\n')
    with pytest.raises(SystemExit, match=f"unknown config key 'max_iterz' \\(from {bad}\\)"):
        apply_config(fresh(), [str(bad)])


def test_exec_from_a_script_prints_overrides_once(tmp_path):
    import os
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = tmp_path / 'script.py'
    script.write_text(f"batch_size = 4\nexec(open({os.path.join(root, 'configurator.py')!r}).read())\nprint('batch', batch_size)\n")
    out = subprocess.run([sys.executable, str(script), '--batch_size=8'], capture_output=True, text=True, check=True).stdout
    assert out.count('config overrides: batch_size=8') == 1
    assert 'batch 8' in out


def test_config_file_works_when_script_has_a_global_named_compile(tmp_path):
    # exec'd into a script whose globals shadow the builtin compile()
    import os
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg = tmp_path / 'c.py'
    cfg.write_text('compile = True\n')
    script = tmp_path / 'script.py'
    script.write_text(f"compile = False\nexec(open({os.path.join(root, 'configurator.py')!r}).read())\nprint('compile', compile)\n")
    out = subprocess.run([sys.executable, str(script), str(cfg)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert 'compile True' in out.stdout
