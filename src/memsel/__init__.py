"""memsel: attention networks that select the right memory from a growing list.

``memsel.Selector`` (the network, memsel.network) and ``memsel.SelectorPredictor`` (raw-text
inference, memsel.inference) are imported on first use, so ``import memsel`` stays light and
never imports Ray, Lightning or MLflow.
"""

__version__ = "0.1.0"
__all__ = ["Selector", "SelectorPredictor", "__version__"]

_LAZY = {"Selector": "memsel.network", "SelectorPredictor": "memsel.inference"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'memsel' has no attribute {name!r}")
