"""Helpers every layer of ``layerconnect`` may use (atomic files, model paths, versions, options).

They import nothing from the rest of the package, so any module can depend on them.
"""
