"""The base layer: what every other layer uses and which uses nothing of GridKV's own.

Hybrid logical clocks (:mod:`~gridkv.base.hlc`), options and their loading
(:mod:`~gridkv.base.options`, :mod:`~gridkv.base.config`, :mod:`~gridkv.base.durations`), the
errors (:mod:`~gridkv.base.errors`), logging (:mod:`~gridkv.base.log`) and the event loop
choice (:mod:`~gridkv.base.eventloop`).
"""
