"""Benchmarks, run by ``make bench`` (``python -m bench [NAME ...]``).

Each module ``bench/<name>.py`` has a ``main() -> None`` that measures side by side in
one run and prints ratios: this machine is shared and noisy, absolute figures are not
comparable between runs. Benchmarks never run as tests and only use loopback.
"""
