"""What starting migrategate costs: a `wait` gate in every app pod pays it on each start."""

from __future__ import annotations

import subprocess
import sys

import pytest

import migrategate
from migrategate.errors import ConfigError


def test_importing_the_package_loads_no_command_module_and_no_sqlalchemy():
    code = ("import sys, migrategate, migrategate.cli; "
            "print(sorted(m for m in sys.modules if m.startswith(('sqlalchemy', 'alembic', "
            "'migrategate.doctor', 'migrategate.commands'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_the_library_doctor_stays_a_function_after_its_module_is_loaded(tmp_path):
    for _ in range(2):  # the first call imports migrategate.doctor, the module
        with pytest.raises(ConfigError):
            migrategate.doctor(migrations=str(tmp_path / "nowhere"), env={})
    assert callable(migrategate.doctor)
