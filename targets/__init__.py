"""The bundled target files, one YAML per target, and the JSON schemas of target files and recipes.

This directory installs as the data package `edgepack.targets` (see pyproject.toml); `edgepack.config` finds the files
through it, so a wheel and an editable install read the same files as a checkout.
"""
