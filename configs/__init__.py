"""Experiment configs as code: one module per experiment, ``get_config()`` each.

Installed with the package (``pip install -e .``), so configs import their
defaults (``from configs import digits``) from any directory, and the entry
points need no ``sys.path`` changes.
"""
