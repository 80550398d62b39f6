"""The curriculum's small toolkit: run profiles, devices and seeds, data, a training loop,
plots, results files, and the one way to import another topic's implementation."""
from . import data, text
from .figures import save_figure
from .plots import plot_curves, show_images
from .results import load_results, save_results
from .runtime import PROFILES, choose, device, profile, seed_everything, setup
from .topics import load_topic
from .train import DivergedError, History, accuracy, batches, fit

__all__ = ["PROFILES", "DivergedError", "History", "accuracy", "batches", "choose", "data", "text", "device", "fit",
           "load_results", "load_topic", "plot_curves", "profile", "save_figure", "save_results", "seed_everything", "setup",
           "show_images"]
