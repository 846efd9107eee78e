"""The package version, written once: setup.py and ``mmfocal.__version__`` read it from here."""
__version__ = '0.1.0'
