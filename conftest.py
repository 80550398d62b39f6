"""Test-suite settings: every notebook runs in the ``smoke`` profile unless told otherwise
(nbval's kernels inherit this process's environment)."""
import os

os.environ.setdefault("CURRICULUM_PROFILE", "smoke")
