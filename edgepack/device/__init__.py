"""Measuring artifacts on attached devices (Android phones over adb) with runner binaries the user built.

Stdlib only at import time: nothing here imports torch or a runtime.
"""
