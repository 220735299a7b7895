"""migrategate's version, written once.

pyproject.toml reads it (setuptools dynamic version), ``migrategate --version`` and
``migrategate.__version__`` import it, and the chart repeats it in Chart.yaml
(``version`` and ``appVersion``), which tests/unit/test_version.py checks. A plain
module rather than ``importlib.metadata``: the chart runs this package from its
source files on ``PYTHONPATH``, where there is no installed distribution to ask.
"""

__version__ = "0.1.0"
