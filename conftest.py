"""Test-suite settings: every notebook runs in the ``smoke`` profile unless told otherwise, and
plots render off-screen. (nbval's kernels inherit this process's environment.)"""
import os

os.environ.setdefault("CURRICULUM_PROFILE", "smoke")
os.environ.setdefault("MPLBACKEND", "Agg")
