"""Datasets, one function each, resolved in the same order everywhere:

1. the data search path ``$CURRICULUM_DATA`` (colon-separated folders holding the published
   files, e.g. ``<dir>/mnist/t10k-images-idx3-ubyte.gz``), every file checked by MD5;
2. the user's cache (``$CURRICULUM_CACHE``, default ``~/.cache/curriculum``), filled on first
   use by torchvision, Hugging Face ``datasets`` or a plain HTTP download;
3. offline with nothing found: a small stand-in (scikit-learn's bundled digits, Python's own
   source text, generated sentences), only when ``standin=True``, and always announced.

Every loader prints the source it used. ``CURRICULUM_OFFLINE=1`` skips all downloads.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import socket
import struct
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .download import DownloadError
from .download import download as http_download

DATA_PATH_VARIABLE = "CURRICULUM_DATA"
CACHE_VARIABLE = "CURRICULUM_CACHE"
OFFLINE_VARIABLE = "CURRICULUM_OFFLINE"

MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_MD5 = "6fb458f1232090904fb40fe944165e91"
MULTI30K_HUB = "bentrevett/multi30k"
MULTI30K_MD5 = {
    "train.en.gz": "0065d13af80720a55ca8153d126e6627", "train.de.gz": "81ff90b99829c0cd4b1b587d394afd39",
    "val.en.gz": "2b69aa9253948ac9f67e94917272dd40", "val.de.gz": "6e0e229eb049e3fc99a1ef02fb2d5f91",
    "test_2016_flickr.en.gz": "ff2c0fcb4893a13bd73414306bc250ae",
    "test_2016_flickr.de.gz": "efd67d314d98489b716b145475101932",
}
MULTI30K_SPLITS = {"train": "train", "val": "val", "test": "test_2016_flickr"}
CIFAR10_TARS = {
    "cifar10-train-jpg-first1000perclass.tar": "32ab9ec0def4d900c4d9d5ab9377b1e3",
    "cifar10-test-jpg.tar": "c924a803dfb899c4154cb3b68581d7cb",
}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class DataError(RuntimeError):
    """A dataset file is corrupted or a download failed; the message says what to do."""


class DataNotFound(DataError):
    """The dataset is nowhere to be found and no stand-in was allowed."""


@dataclass
class ImageData:
    """Images as float tensors in [0, 1], ``N x C x H x W``, with int64 labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]
    source: str

    def __repr__(self) -> str:
        return (f"ImageData({len(self.x_train)} train / {len(self.x_test)} test, "
                f"{tuple(self.x_train.shape[1:])}, {len(self.classes)} classes, source: {self.source})")


# --- where files come from ---------------------------------------------------------------

_warned: set[str] = set()
_standins: list[str] = []


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        print(f"[data] warning: {message}")


def search_path() -> list[Path]:
    """The existing folders of ``$CURRICULUM_DATA``; an entry that is not a folder gets a warning."""
    folders = []
    for entry in os.environ.get(DATA_PATH_VARIABLE, "").split(os.pathsep):
        if not entry:
            continue
        folder = Path(entry).expanduser()
        if folder.is_dir():
            folders.append(folder)
        else:
            _warn_once(f"${DATA_PATH_VARIABLE} names {entry}, which is not a folder; it is ignored")
    return folders


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "curriculum"
    return Path(os.environ.get(CACHE_VARIABLE, default)).expanduser()


def checkpoint_path(topic: str, settings: dict, profile: str) -> Path:
    """Where a notebook saves a model for later topics: ``<cache>/checkpoints/<topic>-<profile>-<hash>.pt``,
    the hash taken over the settings that made the model (JSON with sorted keys), so a change of recipe
    never loads a stale model."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    return cache_dir() / "checkpoints" / f"{topic}-{profile}-{digest}.pt"


def writable_cache() -> Path | None:
    """The cache folder if it can be created and written to; otherwise ``None``, after one warning."""
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
        return folder
    except OSError as e:
        _warn_once(f"the cache folder {display(folder)} cannot be used ({e.strerror or e}); downloads are skipped. "
                   f"Set ${CACHE_VARIABLE} to a writable folder.")
        return None


def offline() -> bool:
    """``$CURRICULUM_OFFLINE`` set to anything but empty, 0, false, no or off."""
    return os.environ.get(OFFLINE_VARIABLE, "").strip().lower() not in ("", "0", "false", "no", "off")


HOSTS = {"mnist": "ossci-datasets.s3.amazonaws.com", "cifar10": "www.cs.toronto.edu",
         "tinyshakespeare": "raw.githubusercontent.com", "gutenberg": "raw.githubusercontent.com",
         "multi30k": "huggingface.co", "rt_polarity": "huggingface.co", "text8": "huggingface.co", "oxford_pets": "thor.robots.ox.ac.uk"}


@functools.cache
def _resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False


def can_download(dataset: str) -> bool:
    """Whether a download of ``dataset`` may be tried: online, a usable cache, and its host's name resolves
    (without a network, one line says so instead of minutes of retries)."""
    if offline() or writable_cache() is None:
        return False
    if not _resolves(HOSTS[dataset]):
        _download_failed(dataset, OSError(f"no network: {HOSTS[dataset]} could not be resolved"))
        return False
    return True


def display(path: Path) -> str:
    """A path as a reader should see it: relative to the search-path entry or the cache it is in."""
    path = Path(path)
    for prefix, folders in ((f"${DATA_PATH_VARIABLE}", search_path()), ("$CURRICULUM_CACHE" if os.environ.get(
            CACHE_VARIABLE) else "~/.cache/curriculum", [cache_dir()])):
        for folder in folders:
            if path == folder or folder in path.parents:
                return f"{prefix}/{path.relative_to(folder)}".rstrip("/.")
    home = Path.home()
    return f"~/{path.relative_to(home)}" if home in path.parents else str(path)


def used_standins() -> list[str]:
    """The datasets this process has replaced by a stand-in (results from such runs are not recorded)."""
    return list(_standins)


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, md5: str, dataset: str) -> Path:
    """Return ``path`` if its MD5 is ``md5``; otherwise raise a ``DataError`` that says what to do."""
    actual = md5sum(path)
    if actual != md5:
        raise DataError(
            f"{display(path)} is corrupted or truncated (MD5 {actual}, expected {md5}). "
            f"Delete it and run `curriculum prefetch {dataset}` (or replace it with the published file)."
        )
    return path


def find(relative: str, md5: str, dataset: str) -> Path | None:
    """The first verified copy of ``relative`` on the search path, then in the cache."""
    for folder in [*search_path(), cache_dir()]:
        path = folder / relative
        if path.is_file():
            return verify(path, md5, dataset)
    return None


def download(url: str, dest: Path, md5: str | None = None, *, timeout: float = 30.0, retries: int = 3) -> Path:
    """Download ``url`` to ``dest`` with the shared downloader, checked against ``md5`` before it lands."""
    def check(part: Path) -> None:
        if md5 is not None and (actual := md5sum(part)) != md5:
            raise DownloadError(f"the download has MD5 {actual}, expected {md5}", transient=True)

    try:
        http_download(url, dest, check=check, timeout=timeout, retries=retries)
    except DownloadError as e:
        raise DataError(f"could not download {url} ({e}). Check the connection, or put the file on the data "
                        f"search path ${DATA_PATH_VARIABLE}.") from e
    return dest


def _reason(error: Exception | None) -> str:
    """A failure in plain words: the innermost reason of a URLError, without the class names."""
    if isinstance(error, DataError) and isinstance(error.__cause__, DownloadError):
        return str(error.__cause__)
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    reason = getattr(error, "reason", error)
    return str(getattr(reason, "strerror", None) or reason).splitlines()[0][:150] if reason else "unknown error"


def _announce(dataset: str, source: str, *, standin: bool = False) -> str:
    if standin:
        _standins.append(dataset)
        source = f"STAND-IN: {source}"
    print(f"[data] {dataset}: {source}")
    return source


_download_errors: dict[str, str] = {}


def _download_failed(dataset: str, error: Exception) -> None:
    _download_errors[dataset] = _reason(error)
    print(f"[data] {dataset}: download failed ({_reason(error)})")


def _not_found(dataset: str, files: str) -> DataNotFound:
    how = ("downloads are disabled by $CURRICULUM_OFFLINE" if offline() else "the download failed")
    return DataNotFound(
        f"{dataset} not found: no {files} on the data search path ${DATA_PATH_VARIABLE} "
        f"({os.environ.get(DATA_PATH_VARIABLE) or 'unset'}) or in the cache {display(cache_dir())}, and {how}. "
        f"Connect to the internet and run `curriculum prefetch {dataset}`, or point ${DATA_PATH_VARIABLE} at a "
        "folder holding the files."
    )


def stratified_split(labels: torch.Tensor, test_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of a seeded split that keeps every class's share equal in both parts."""
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        k = round(len(idx) * test_size / len(labels))
        test.append(idx[:k])
        train.append(idx[k:])
    train, test = torch.cat(train), torch.cat(test)
    return train[torch.randperm(len(train), generator=generator)], test[torch.randperm(len(test), generator=generator)]


# --- MNIST --------------------------------------------------------------------------------

def read_idx(path: Path) -> torch.Tensor:
    """Read a gzipped IDX file (the MNIST format: magic, dimensions, unsigned bytes)."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
        zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
        shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    except (OSError, EOFError, struct.error) as e:
        raise DataError(f"{path} is not a readable gzipped IDX file ({e}); delete it and fetch it again") from e
    body = raw[4 + 4 * ndim:]
    if zero != 0 or dtype != 0x08 or len(body) != int(np.prod(shape)):
        raise DataError(f"{path} is not an IDX file of unsigned bytes with shape {shape}; delete it and fetch it again")
    return torch.from_numpy(np.frombuffer(body, dtype=np.uint8).reshape(shape).copy())


def _mnist_files() -> dict[str, Path | None]:
    found = {}
    for name, md5 in MNIST_MD5.items():
        found[name] = find(f"mnist/{name}", md5, "mnist") or find(f"MNIST/raw/{name}", md5, "mnist")
    return found


def _digits_standin(seed: int) -> ImageData:
    """scikit-learn's 1,797 bundled 8x8 digits, upsampled to 20x20 and centred in 28x28 like MNIST."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.pad(F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False), (4, 4, 4, 4)).clamp(0, 1)
    y = torch.tensor(digits.target, dtype=torch.int64)
    train, test = stratified_split(y, test_size=360, seed=seed)
    source = _announce("mnist", f"scikit-learn's 8x8 digits upsampled to 28x28 ({len(train):,} train / "
                                f"{len(test)} test); MNIST itself was not found and could not be downloaded",
                       standin=True)
    return ImageData(x[train], y[train], x[test], y[test], tuple(str(i) for i in range(10)), source)


def mnist(*, standin: bool = True, seed: int = 0) -> ImageData:
    """MNIST as ``N x 1 x 28 x 28`` floats in [0, 1].

    The official 60,000/10,000 split when all four files are found or downloaded; with only the
    10,000 test images (the offline copy), a stratified seeded 8,000/2,000 split of those.
    """
    files = _mnist_files()
    if not all(files.values()) and can_download("mnist"):
        try:
            from torchvision.datasets import MNIST

            for train in (True, False):
                MNIST(cache_dir(), train=train, download=True)
            files = _mnist_files()
        except Exception as e:  # torchvision raises RuntimeError/URLError when every mirror fails
            _download_failed("mnist", e)
    if all(files.values()):
        x_train, y_train, x_test, y_test = (read_idx(files[n]) for n in MNIST_MD5)
        source = _announce("mnist", f"official split 60,000 train / 10,000 test from {display(files['t10k-images-idx3-ubyte.gz'].parent)}")
    elif files["t10k-images-idx3-ubyte.gz"] and files["t10k-labels-idx1-ubyte.gz"]:
        x, y = read_idx(files["t10k-images-idx3-ubyte.gz"]), read_idx(files["t10k-labels-idx1-ubyte.gz"])
        train, test = stratified_split(y.long(), test_size=len(y) // 5, seed=seed)
        x_train, y_train, x_test, y_test = x[train], y[train], x[test], y[test]
        source = _announce("mnist", f"the {len(y):,} official test images from "
                                    f"{display(files['t10k-images-idx3-ubyte.gz'].parent)}, split {len(train):,} train / "
                                    f"{len(test):,} held out (stratified, seed {seed}); "
                                    "the 60,000 training images are not available")
    elif standin:
        return _digits_standin(seed)
    else:
        raise _not_found("mnist", "mnist/*-idx?-ubyte.gz")
    as_float = lambda t: t.float().div(255).unsqueeze(1)  # noqa: E731
    return ImageData(as_float(x_train), y_train.long(), as_float(x_test), y_test.long(),
                     tuple(str(i) for i in range(10)), source)


# --- CIFAR-10 -----------------------------------------------------------------------------

def _decode_jpeg_tar(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from PIL import Image

    images, labels = [], []
    with tarfile.open(path) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            if not member.name.endswith(".jpg"):
                continue
            label = CIFAR10_CLASSES.index(member.name.split("/")[-2])
            with Image.open(io.BytesIO(tar.extractfile(member).read())) as img:
                images.append(np.asarray(img.convert("RGB")))
            labels.append(label)
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), torch.tensor(labels, dtype=torch.int64)


def _read_jpeg_tar(path: Path, md5: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode a verified tar of JPEGs to ``N x 3 x 32 x 32`` floats; the decoded uint8 pixels are kept in
    the cache (keyed by the tar's MD5), so later runs skip decoding 10,000 files."""
    decoded = cache_dir() / "cifar10" / f"decoded-{md5}.pt"
    pixels = labels = None
    if decoded.is_file():
        try:
            pixels, labels = torch.load(decoded)
        except Exception:  # a damaged cache entry is rebuilt, never trusted
            pixels = None
    if pixels is None:
        pixels, labels = _decode_jpeg_tar(verify(path, md5, "cifar10"))
        if writable_cache() is not None:
            decoded.parent.mkdir(parents=True, exist_ok=True)
            part = decoded.with_name(decoded.name + ".part")
            torch.save((pixels, labels), part)
            os.replace(part, decoded)
    return pixels.float().div(255), labels


def _cifar10_standin(seed: int) -> ImageData:
    """scikit-learn's 8x8 digits as 32x32 colour images: each digit in a random colour on a random
    colour, with noise; ten classes like CIFAR-10's, far easier than CIFAR-10, always announced."""
    from sklearn.datasets import load_digits

    g = torch.Generator().manual_seed(seed)
    digits = load_digits()
    shape = F.interpolate(torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0, size=(32, 32),
                          mode="bilinear", align_corners=False)  # N x 1 x 32 x 32
    n = len(shape)
    ink, paper = torch.rand(n, 3, 1, 1, generator=g), torch.rand(n, 3, 1, 1, generator=g)
    x = (shape * ink + (1 - shape) * paper + 0.05 * torch.randn(n, 3, 32, 32, generator=g)).clamp(0, 1)
    y = torch.tensor(digits.target, dtype=torch.int64)
    train, test = stratified_split(y, test_size=360, seed=seed)
    source = _announce("cifar10", f"scikit-learn's digits as 32x32 colour images ({len(train):,} train / {len(test)} "
                                  "test); CIFAR-10 was not found and could not be downloaded", standin=True)
    return ImageData(x[train], y[train], x[test], y[test], tuple(str(i) for i in range(10)), source)


def cifar10(*, standin: bool = True, seed: int = 0) -> ImageData:
    """CIFAR-10 as ``N x 3 x 32 x 32`` floats in [0, 1].

    The official 50,000/10,000 split through torchvision (cache or download); offline, the JPEG
    copies on the search path: 10,000 training images (1,000 a class) and the 10,000 test images.
    Both splits come shuffled with ``seed``, so ``x_train[:n]`` is a random subset (the JPEG copies
    are stored sorted by class). With neither and ``standin``: coloured digits (split with ``seed``),
    announced as a stand-in.
    """
    tars = {name: next((p for d in search_path() if (p := d / "cifar10" / name).is_file()), None)
            for name in CIFAR10_TARS}
    if all(tars.values()):
        x_train, y_train = _read_jpeg_tar(tars["cifar10-train-jpg-first1000perclass.tar"],
                                          CIFAR10_TARS["cifar10-train-jpg-first1000perclass.tar"])
        x_test, y_test = _read_jpeg_tar(tars["cifar10-test-jpg.tar"], CIFAR10_TARS["cifar10-test-jpg.tar"])
        source = _announce("cifar10", f"JPEG copies from {display(tars['cifar10-test-jpg.tar'].parent)}: 10,000 of "
                                      "the 50,000 training images (1,000 a class) and the 10,000 test images")
        return _shuffled(ImageData(x_train, y_train, x_test, y_test, CIFAR10_CLASSES, source), seed)
    from torchvision.datasets import CIFAR10

    try:
        train, test = (CIFAR10(cache_dir(), train=t, download=can_download("cifar10")) for t in (True, False))
    except Exception as e:  # torchvision raises RuntimeError for missing files and URLError for failed downloads
        if not standin:
            raise _not_found("cifar10", "cifar10/cifar10-*-jpg*.tar") from e
        return _cifar10_standin(seed)
    as_float = lambda d: torch.from_numpy(d.data).permute(0, 3, 1, 2).float().div(255)  # noqa: E731
    source = _announce("cifar10", f"official split 50,000 train / 10,000 test (torchvision, {display(cache_dir())})")
    return _shuffled(ImageData(as_float(train), torch.tensor(train.targets), as_float(test),
                               torch.tensor(test.targets), CIFAR10_CLASSES, source), seed)


def _shuffled(data: ImageData, seed: int) -> ImageData:
    """Both splits in an order drawn with ``seed`` (one permutation each, the same on every machine)."""
    generator = torch.Generator().manual_seed(seed)
    train, test = (torch.randperm(len(y), generator=generator) for y in (data.y_train, data.y_test))
    return ImageData(data.x_train[train], data.y_train[train], data.x_test[test], data.y_test[test],
                     data.classes, data.source)


# --- Tiny Shakespeare ---------------------------------------------------------------------

def tiny_shakespeare(*, standin: bool = True) -> str:
    """The 1,115,394-character Tiny Shakespeare corpus (stand-in: Python's standard-library source)."""
    path = find("tinyshakespeare/input.txt", SHAKESPEARE_MD5, "tinyshakespeare")
    if path is None and can_download("tinyshakespeare"):
        try:
            path = download(SHAKESPEARE_URL, cache_dir() / "tinyshakespeare" / "input.txt", SHAKESPEARE_MD5, retries=2)
        except DataError as e:
            _download_failed("tinyshakespeare", e)
    if path is not None:
        _announce("tinyshakespeare", f"Tiny Shakespeare from {display(path)}")
        return path.read_text(encoding="utf-8")
    if not standin:
        raise _not_found("tinyshakespeare", "tinyshakespeare/input.txt")
    import json as stdlib_module  # any pure-Python standard-library package will do

    root = Path(stdlib_module.__file__).parents[1]
    text = "".join(p.read_text(encoding="utf-8", errors="replace") for p in sorted(root.glob("*.py"))[:60])[:1_000_000]
    _announce("tinyshakespeare", f"{len(text):,} characters of Python's standard-library source; Tiny "
                                 "Shakespeare was not found and could not be downloaded", standin=True)
    return text


# --- Multi30k -----------------------------------------------------------------------------

def _multi30k_standin(seed: int) -> dict[str, list[tuple[str, str]]]:
    """Generated English-German caption pairs from a small lexicon ("a black dog runs on the grass")."""
    rng = np.random.default_rng(seed)
    nouns = {"man": ("ein", "Mann", "er"), "woman": ("eine", "Frau", "e"), "dog": ("ein", "Hund", "er"),
             "child": ("ein", "Kind", "es"), "girl": ("ein", "Mädchen", "es"), "boy": ("ein", "Junge", "er"),
             "cat": ("eine", "Katze", "e")}  # article, noun, adjective ending after the article
    colours = {"black": "schwarz", "white": "weiß", "young": "jung", "small": "klein", "brown": "braun"}
    verbs = {"runs": "läuft", "sits": "sitzt", "plays": "spielt", "stands": "steht", "jumps": "springt"}
    places = {"on the grass": "auf dem Gras", "in the water": "im Wasser", "on the street": "auf der Straße",
              "in the snow": "im Schnee", "near the house": "in der Nähe des Hauses"}

    def pair() -> tuple[str, str]:
        noun, colour, verb, place = (str(rng.choice(list(d))) for d in (nouns, colours, verbs, places))
        article, german_noun, ending = nouns[noun]
        return (f"A {colour} {noun} {verb} {place}.",
                f"{article.capitalize()} {colours[colour]}{ending} {german_noun} {verbs[verb]} {places[place]}.")

    sizes = {"train": 5000, "val": 500, "test": 500}
    return {split: [pair() for _ in range(n)] for split, n in sizes.items()}


def multi30k(*, standin: bool = True, seed: int = 0) -> dict[str, list[tuple[str, str]]]:
    """Multi30k task 1: ``{"train": [(english, german), ...], "val": [...], "test": [...]}``.

    29,000 / 1,014 / 1,000 untokenised caption pairs (test = the 2016 Flickr test set).
    """
    files = {name: find(f"multi30k/{name}", md5, "multi30k") for name, md5 in MULTI30K_MD5.items()}
    if all(files.values()):
        def lines(name: str) -> list[str]:
            with gzip.open(files[name], "rt", encoding="utf-8") as f:
                return f.read().splitlines()
        pairs = {split: list(zip(lines(f"{stem}.en.gz"), lines(f"{stem}.de.gz"), strict=True))
                 for split, stem in MULTI30K_SPLITS.items()}
        _announce("multi30k", f"Multi30k from {display(files['train.en.gz'].parent)}: " +
                  " / ".join(f"{len(v):,} {k}" for k, v in pairs.items()))
        return pairs
    if can_download("multi30k"):
        try:
            return multi30k_from_hub(MULTI30K_HUB)
        except Exception as e:  # the hub raises connection errors of several kinds
            _download_failed("multi30k", e)
    if not standin:
        raise _not_found("multi30k", "multi30k/{train,val,test_2016_flickr}.{en,de}.gz")
    pairs = _multi30k_standin(seed)
    _announce("multi30k", "generated English-German sentence pairs from a 30-word lexicon "
                          "(5,000 / 500 / 500); Multi30k was not found and could not be downloaded", standin=True)
    return pairs


def multi30k_from_hub(repository: str) -> dict[str, list[tuple[str, str]]]:
    """Load Multi30k with Hugging Face ``datasets`` (a hub name, or a local folder of the same layout:
    ``train.jsonl``, ``val.jsonl``, ``test.jsonl`` with ``{"en": ..., "de": ...}`` rows)."""
    from datasets import load_dataset

    dataset = load_dataset(repository, cache_dir=str(cache_dir() / "huggingface"))
    names = {"train": "train", "val": "validation", "test": "test"}
    pairs = {split: [(row["en"], row["de"]) for row in dataset[hub]] for split, hub in names.items()}
    _announce("multi30k", f"Multi30k through Hugging Face datasets ({repository}): " +
              " / ".join(f"{len(v):,} {k}" for k, v in pairs.items()))
    return pairs


# --- Project Gutenberg books (word2vec, language models) -----------------------------------

GUTENBERG_URL = "https://raw.githubusercontent.com/nltk/nltk_data/gh-pages/packages/corpora/gutenberg.zip"
GUTENBERG_MD5 = {
    "austen-emma.txt": "078eb921a6d1704d1a6000b51c9bcceb", "austen-persuasion.txt": "ceb6d4e0408c3b8ad0345cda7de88f2b",
    "austen-sense.txt": "669917f7b59ca9beaf929fb9c86960bf", "blake-poems.txt": "897081bd84d4115633fee5020ad07e09",
    "chesterton-ball.txt": "3302a27164fe0e1b6ca34d3cf1a52969", "chesterton-brown.txt": "3a6812aea07589c8a95cd07eb2ed7f7c",
    "chesterton-thursday.txt": "b7c2386825f4bfc99522aa6d84c5cef2",
    "melville-moby_dick.txt": "bcb82ed43371f2a3ede275f7cdb3e8d7", "milton-paradise.txt": "c80681444cfbf46a481ca26b8e94b5c3",
    "shakespeare-caesar.txt": "3c6889aca9e29c591aa564451311dc93",
    "shakespeare-hamlet.txt": "73207c9daaf0fed7b209783922f55568",
    "shakespeare-macbeth.txt": "22fc96e45930fda8fbde0c8018569b01", "whitman-leaves.txt": "b97e2b38f22ea561eb9bd6797e0e4598",
}


def _fetch_gutenberg() -> None:
    """Download NLTK's Gutenberg corpus and extract the 13 books into the cache (each checked by MD5)."""
    folder = cache_dir() / "gutenberg"
    archive = download(GUTENBERG_URL, folder / "gutenberg.zip", retries=2)
    try:
        with zipfile.ZipFile(archive) as z:
            for name, md5 in GUTENBERG_MD5.items():
                part = folder / f"{name}.part"
                part.write_bytes(z.read(f"gutenberg/{name}"))
                if md5sum(part) != md5:
                    part.unlink()
                    raise DataError(f"{name} in {GUTENBERG_URL} does not have the expected MD5 {md5}")
                os.replace(part, folder / name)
    except (zipfile.BadZipFile, KeyError) as e:
        raise DataError(f"{GUTENBERG_URL} is not the expected zip archive ({e})") from e
    finally:
        archive.unlink(missing_ok=True)


def gutenberg(*, standin: bool = True) -> dict[str, str]:
    """Thirteen public-domain books (NLTK's Gutenberg selection without the Bible): ``{"austen-emma": text, ...}``.

    Read as Latin-1 (a few bytes are not ASCII) with Windows line ends made ``\\n``. Stand-in: the
    300 news articles of ``lee_background.cor`` that ship inside gensim.
    """
    files = {name: find(f"gutenberg/{name}", md5, "gutenberg") for name, md5 in GUTENBERG_MD5.items()}
    if not all(files.values()) and can_download("gutenberg"):
        try:
            _fetch_gutenberg()
            files = {name: find(f"gutenberg/{name}", md5, "gutenberg") for name, md5 in GUTENBERG_MD5.items()}
        except DataError as e:
            _download_failed("gutenberg", e)
    if all(files.values()):
        books = {name.removesuffix(".txt"): path.read_bytes().decode("latin-1").replace("\r\n", "\n")
                 for name, path in files.items()}
        words = sum(len(text.split()) for text in books.values())
        _announce("gutenberg", f"{len(books)} Gutenberg books from {display(files['austen-emma.txt'].parent)} "
                               f"({words:,} words)")
        return books
    if not standin:
        raise _not_found("gutenberg", "gutenberg/*.txt")
    import gensim.test.utils

    text = Path(gensim.test.utils.datapath("lee_background.cor")).read_text(encoding="utf-8")
    _announce("gutenberg", f"gensim's lee_background.cor, 300 news articles ({len(text.split()):,} words); the "
                           "Gutenberg books were not found and could not be downloaded", standin=True)
    return {"lee_background": text}


# --- text8 (word2vec at the paper's smaller scale) -----------------------------------------

TEXT8_HUB = "afmck/text8"
TEXT8_CHARACTERS = 100_000_000


def text8(*, repository: str = TEXT8_HUB, standin: bool = True) -> str:
    """Matt Mahoney's text8: the first 10^8 characters of an English Wikipedia dump, lower-case letters
    and single spaces only (about 17 million words).

    Looked for as ``text8/text8`` (the unzipped published file) on the search path and in the cache,
    checked by its length; online through Hugging Face ``datasets`` (``repository``, a hub name or a
    local folder of the same layout: rows with a ``text`` column). Stand-in: the Gutenberg books (or
    their stand-in) lower-cased to text8's alphabet.
    """
    for folder in [*search_path(), cache_dir()]:
        path = folder / "text8" / "text8"
        if path.is_file():
            text = path.read_text(encoding="ascii", errors="replace")
            if len(text) != TEXT8_CHARACTERS:
                raise DataError(f"{display(path)} has {len(text):,} characters, not text8's {TEXT8_CHARACTERS:,}: it is "
                                "truncated or another file. Delete it and run `curriculum prefetch text8`.")
            _announce("text8", f"text8 from {display(path)} ({len(text.split()):,} words)")
            return text
    if Path(repository).is_dir() or can_download("text8"):
        try:
            from datasets import load_dataset

            rows = load_dataset(repository, cache_dir=str(cache_dir() / "huggingface"))["train"]["text"]
            text = " ".join(row.strip() for row in rows)
            _announce("text8", f"text8 through Hugging Face datasets ({repository}): {len(text.split()):,} words")
            return text
        except Exception as e:  # the hub raises connection errors of several kinds
            _download_failed("text8", e)
    if not standin:
        raise _not_found("text8", "text8/text8")
    books = gutenberg()
    text = " ".join(" ".join(re.sub(r"[^a-z]+", " ", book.lower()).split()) for book in books.values())
    _announce("text8", f"the {'Gutenberg books' if 'gutenberg' not in _standins else 'Gutenberg stand-in'} reduced "
                       f"to text8's alphabet ({len(text.split()):,} words); text8 was not found and could not be "
                       "downloaded", standin=True)
    return text


# --- Sentence polarity (rt-polarity) ------------------------------------------------------

RT_POLARITY_MD5 = {"rt-polarity.pos": "819e2ab972d5f1314804c62921cf21a8", "rt-polarity.neg": "efd38e162b1a4ede8fbf024de182eb4a"}
RT_POLARITY_HUB = "cornell-movie-review-data/rotten_tomatoes"


def _polarity_standin(seed: int) -> list[tuple[str, int]]:
    """Generated one-line reviews whose label follows from a small lexicon of opinion words."""
    rng = np.random.default_rng(seed)
    good = ["wonderful", "moving", "funny", "sharp", "beautiful", "smart", "gripping", "charming"]
    bad = ["dull", "tedious", "clumsy", "flat", "boring", "silly", "lifeless", "muddled"]
    subjects = ["the film", "this movie", "the script", "the cast", "the story", "its ending"]
    rows = []
    for i in range(2000):
        label = i % 2
        words = rng.choice(good if label else bad, size=2, replace=False)
        rows.append((f"{rng.choice(subjects)} is {words[0]} and {words[1]} .", label))
    return rows


def rt_polarity(*, standin: bool = True, seed: int = 0) -> dict[str, list[tuple[str, int]]]:
    """Pang & Lee's sentence polarity data: ``{"train": [(sentence, label), ...], "val": ..., "test": ...}``.

    5,331 positive (label 1) and 5,331 negative (label 0) lower-cased, tokenised review snippets. The
    data has no official split: a stratified split 80/10/10 seeded with ``seed``.
    """
    files = {name: find(f"rt-polarity/{name}", md5, "rt_polarity") for name, md5 in RT_POLARITY_MD5.items()}
    rows: list[tuple[str, int]] | None = None
    if all(files.values()):
        rows = [(line, label) for name, label in (("rt-polarity.neg", 0), ("rt-polarity.pos", 1))
                for line in files[name].read_text(encoding="utf-8").splitlines() if line.strip()]
        where = display(files["rt-polarity.pos"].parent)
    elif can_download("rt_polarity"):
        try:
            from datasets import load_dataset

            hub = load_dataset(RT_POLARITY_HUB, cache_dir=str(cache_dir() / "huggingface"))
            rows = [(r["text"], int(r["label"])) for split in ("train", "validation", "test") for r in hub[split]]
            where = f"Hugging Face datasets ({RT_POLARITY_HUB})"
        except Exception as e:  # the hub raises connection errors of several kinds
            _download_failed("rt_polarity", e)
    standin_used = rows is None
    if standin_used:
        if not standin:
            raise _not_found("rt_polarity", "rt-polarity/rt-polarity.{pos,neg}")
        rows = _polarity_standin(seed)
    labels = torch.tensor([label for _, label in rows])
    rest, test = stratified_split(labels, test_size=len(rows) // 10, seed=seed)
    train_part, val_part = stratified_split(labels[rest], test_size=len(rows) // 10, seed=seed)
    train, val = rest[train_part], rest[val_part]
    splits = {name: [rows[i] for i in idx.tolist()] for name, idx in (("train", train), ("val", val), ("test", test))}
    sizes = " / ".join(f"{len(v):,} {k}" for k, v in splits.items())
    if standin_used:
        _announce("rt_polarity", f"generated one-line reviews ({sizes}); the sentence polarity data was not found "
                                 "and could not be downloaded", standin=True)
    else:
        _announce("rt_polarity", f"sentence polarity v1.0 from {where}: {sizes} (stratified split, seed {seed})")
    return splits


# --- Captioned coloured MNIST (05-04 CLIP, 05-05 DALL-E) ---------------------------------------

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# name: (RGB, synonyms used in captions; the first is the name itself)
INKS = {"red": ((0.95, 0.1, 0.1), ("red", "crimson", "scarlet")),
        "green": ((0.1, 0.8, 0.15), ("green", "emerald", "lime")),
        "blue": ((0.15, 0.3, 1.0), ("blue", "azure", "cobalt")),
        "yellow": ((1.0, 0.9, 0.1), ("yellow", "golden", "lemon")),
        "magenta": ((0.9, 0.1, 0.9), ("magenta", "pink", "fuchsia")),
        "cyan": ((0.1, 0.9, 0.9), ("cyan", "turquoise", "aqua"))}
BACKGROUNDS = {"black": ((0.0, 0.0, 0.0), ("black", "dark")),
               "white": ((1.0, 1.0, 1.0), ("white", "pale")),
               "gray": ((0.5, 0.5, 0.5), ("gray", "grey")),
               "brown": ((0.45, 0.28, 0.12), ("brown", "chocolate"))}
# (digit, ink) pairs never shown in training: one ink per digit, every ink withheld for one or two digits
HELD_OUT = frozenset((d, tuple(INKS)[d % len(INKS)]) for d in range(10))
TEMPLATES = ("a {ink} {digit} on a {background} background", "the digit {digit} in {ink} on {background}",
             "{digit} written in {ink} over a {background} background", "a {background} picture of a {ink} {digit}")


def describe(digit: int, ink: str, background: str, generator: torch.Generator | None = None) -> str:
    """A caption for one image. Without ``generator``: the plain form ("a red 7 on a black background");
    with it: a random template, the digit as a word or a numeral, and a random synonym of each colour."""
    if generator is None:
        return TEMPLATES[0].format(ink=ink, digit=digit, background=background)
    pick = lambda options: options[int(torch.randint(len(options), (1,), generator=generator))]  # noqa: E731
    return pick(TEMPLATES).format(ink=pick(INKS[ink][1]), digit=pick((str(digit), DIGIT_WORDS[digit])),
                                  background=pick(BACKGROUNDS[background][1]))


@dataclass
class CaptionedImages:
    """``images`` N x 3 x 28 x 28 in [0, 1] with their ``captions`` and the attributes behind them (int64
    indices into ``range(10)``, ``tuple(INKS)``, ``tuple(BACKGROUNDS)``); ``held_out`` marks (digit, ink)
    pairs from ``HELD_OUT``."""

    images: torch.Tensor
    captions: list[str]
    digit: torch.Tensor
    ink: torch.Tensor
    background: torch.Tensor
    held_out: torch.Tensor

    def __len__(self) -> int:
        return len(self.captions)


def paint(digits: torch.Tensor, ink: torch.Tensor, background: torch.Tensor,
          generator: torch.Generator | None = None) -> torch.Tensor:
    """Grey digits ``N x 1 x H x W`` in [0, 1] -> RGB ``N x 3 x H x W``: ``background`` where the stroke is 0,
    ``ink`` where it is 1 (both palette indices), each colour jittered by up to 0.05 per channel."""
    inks = torch.tensor([rgb for rgb, _ in INKS.values()])[ink]  # N x 3
    grounds = torch.tensor([rgb for rgb, _ in BACKGROUNDS.values()])[background]
    if generator is not None:
        inks = inks + (torch.rand(inks.shape, generator=generator) - 0.5) * 0.1
        grounds = grounds + (torch.rand(grounds.shape, generator=generator) - 0.5) * 0.1
    images = grounds[:, :, None, None] * (1 - digits) + inks[:, :, None, None] * digits  # N x 3 x H x W
    return images.clamp(0, 1)


def read_colours(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The palette (ink, background) indices of RGB images ``N x 3 x H x W`` in [0, 1]: the background nearest
    to the median of the two-pixel frame; the ink whose direction from that background best matches (cosine) the
    mean of the 5% of pixels farthest from it, so that a faint or blurred stroke still reads as its hue."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"read_colours expects RGB images N x 3 x H x W, got {tuple(images.shape)}")
    frame = torch.cat([images[:, :, :2].flatten(2), images[:, :, -2:].flatten(2),
                       images[:, :, :, :2].flatten(2), images[:, :, :, -2:].flatten(2)], dim=2)
    ground = frame.median(dim=2).values  # N x 3
    pixels = images.flatten(2)  # N x 3 x HW
    distance = (pixels - ground[:, :, None]).norm(dim=1)  # N x HW
    far = distance >= distance.quantile(0.95, dim=1, keepdim=True)
    stroke = (pixels * far[:, None]).sum(2) / far.sum(1, keepdim=True)  # N x 3
    inks = torch.tensor([rgb for rgb, _ in INKS.values()])
    grounds = torch.tensor([rgb for rgb, _ in BACKGROUNDS.values()])
    background = torch.cdist(ground, grounds).argmin(1)
    directions = F.normalize(inks[None] - grounds[background][:, None], dim=2)  # N x inks x 3
    ink = (directions @ F.normalize(stroke - ground, dim=1)[:, :, None])[..., 0].argmax(1)
    return ink, background


def unpaint(images: torch.Tensor) -> torch.Tensor:
    """The grey stroke ``N x 1 x H x W`` in [0, 1] behind RGB images, undoing ``paint`` with the colours that
    ``read_colours`` finds: each pixel's position on the line from background to ink colour. A LeNet trained
    on grey MNIST can then read the digit of a painted or generated image."""
    ink, ground = read_colours(images)
    inks = torch.tensor([rgb for rgb, _ in INKS.values()])[ink][:, :, None, None]  # N x 3 x 1 x 1
    grounds = torch.tensor([rgb for rgb, _ in BACKGROUNDS.values()])[ground][:, :, None, None]
    along = ((images - grounds) * (inks - grounds)).sum(1, keepdim=True) / (inks - grounds).square().sum(1, keepdim=True)
    return along.clamp(0, 1)


def recolour(grey: torch.Tensor, digit: torch.Tensor, generator: torch.Generator,
             allow_held_out: bool) -> CaptionedImages:
    """Grey digits ``N x 1 x H x W`` with labels ``digit`` (N,), coloured and captioned: a random ink (uniform;
    with ``allow_held_out=False`` the ink of every ``HELD_OUT`` pair is redrawn until none is left, so uniform over
    the digit's other inks), a random background, a caption from ``describe`` with ``generator`` and ``paint``'s
    jitter. ``captioned_mnist`` colours its splits once with it; 05-04 CLIP's training stream recolours every
    digit it draws with it."""
    inks, grounds = tuple(INKS), tuple(BACKGROUNDS)
    ink = torch.randint(len(inks), (len(digit),), generator=generator)
    if not allow_held_out:  # redraw the ink of every held-out pair until none is left
        while (bad := torch.tensor([(int(d), inks[i]) in HELD_OUT for d, i in zip(digit, ink)])).any():
            ink[bad] = torch.randint(len(inks), (int(bad.sum()),), generator=generator)
    background = torch.randint(len(grounds), (len(digit),), generator=generator)
    captions = [describe(int(d), inks[i], grounds[b], generator) for d, i, b in zip(digit, ink, background)]
    held_out = torch.tensor([(int(d), inks[i]) in HELD_OUT for d, i in zip(digit, ink)], dtype=torch.bool)
    return CaptionedImages(paint(grey, ink, background, generator), captions, digit.clone(), ink, background, held_out)


def captioned_mnist(*, seed: int = 0, standin: bool = True) -> tuple[CaptionedImages, CaptionedImages, str]:
    """Coloured MNIST digits with generated captions ("a crimson seven on a grey background"): returns
    ``(train, test, source)``. Each digit of ``mnist()``'s splits gets a random ink and background
    colour (seeded); the (digit, ink) pairs in ``HELD_OUT`` never occur in ``train`` and make up about a
    sixth of ``test``, for compositional zero-shot tests."""
    digits = mnist(standin=standin, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    train = recolour(digits.x_train, digits.y_train, generator, allow_held_out=False)
    test = recolour(digits.x_test, digits.y_test, generator, allow_held_out=True)
    source = (f"captioned coloured MNIST: {len(train):,} train / {len(test):,} test, {len(INKS)} inks x "
              f"{len(BACKGROUNDS)} backgrounds, {len(HELD_OUT)} (digit, ink) pairs held out of training "
              f"({int(test.held_out.sum()):,} test images), seed {seed}; digits from {digits.source}")
    print(f"[data] {source}")
    return train, test, source


# --- Synthetic shapes and Oxford-IIIT Pet (segmentation) -----------------------------------

def shapes(n: int, *, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Generated segmentation data: ``n`` RGB images with 1-3 discs, squares or triangles on a
    smooth, noisy background; returns ``(images n x 3 x size x size, masks n x size x size)`` with
    mask 1 where a shape is. The shapes share colours with the background, so a pixel's colour
    alone does not decide it: the model must see edges and form."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    images, masks = torch.empty(n, 3, size, size), torch.zeros(n, size, size)
    for i in range(n):
        low_res = torch.rand(1, 3, 4, 4, generator=g)
        images[i] = F.interpolate(low_res, size=(size, size), mode="bilinear", align_corners=False)[0]
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            cx, cy = (torch.rand(2, generator=g) * 0.6 + 0.2) * size
            r = float(torch.rand(1, generator=g) * 0.12 + 0.08) * size
            kind = int(torch.randint(0, 3, (1,), generator=g))
            if kind == 0:
                inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= r ** 2
            elif kind == 1:
                inside = ((xx - cx).abs() <= r) & ((yy - cy).abs() <= r)
            else:
                inside = (yy - cy <= r) & (yy - cy >= -r + 2 * (xx - cx).abs())
            images[i][:, inside] = torch.rand(3, 1, generator=g)
            masks[i][inside] = 1.0
    images = (images + 0.08 * torch.randn(images.shape, generator=g)).clamp(0, 1)
    return images, masks.long()


# Oxford-IIIT Pet's two archives with torchvision's MD5s, the small one first: a damaged or partial
# copy is reported before 790 MB of images are hashed.
PETS_ARCHIVES = {"annotations.tar.gz": "95a8c909bbe2e81eed6a22bccdf3f68f",
                 "images.tar.gz": "5c4f3ee8e5d25df40f4fd59a7f44e54c"}


def _pets_root() -> Path:
    """The folder that holds ``oxford-iiit-pet/{images,annotations}`` as torchvision lays them out:
    a search-path entry or the cache that has them unpacked; else the two archives from the search
    path, verified and unpacked into the cache; else the cache (for torchvision to download into)."""
    for root in [*search_path(), cache_dir()]:
        if all((root / "oxford-iiit-pet" / part).is_dir() for part in ("images", "annotations")):
            return root
    archives = []
    for name, md5 in PETS_ARCHIVES.items():
        archive = find(f"oxford-iiit-pet/{name}", md5, "oxford_pets")
        if archive is None:
            return cache_dir()
        archives.append(archive)
    if writable_cache() is None:
        raise DataError(f"the Oxford-IIIT Pet archives must be unpacked, but the cache {display(cache_dir())} "
                        f"is not writable: point ${CACHE_VARIABLE} at a writable folder")
    target = cache_dir() / "oxford-iiit-pet"
    part = target.with_name(target.name + ".part")
    shutil.rmtree(part, ignore_errors=True)  # what an interrupted unpacking left
    for archive in archives:  # unpacked whole into <target>.part, then renamed into place
        with tarfile.open(archive) as tar:
            tar.extractall(part, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    os.replace(part, target)
    return cache_dir()


def oxford_pets(*, size: int = 64, split: str = "trainval") -> tuple[torch.Tensor, torch.Tensor]:
    """Oxford-IIIT Pet through torchvision: images resized to ``size`` and masks with 1 = pet
    (the trimap's pet and border classes) and 0 = background. Found unpacked (folder
    ``oxford-iiit-pet`` as torchvision lays it out) on the data search path or in the cache; else its
    two archives ``oxford-iiit-pet/{annotations,images}.tar.gz`` on the search path, checked against
    torchvision's MD5s and unpacked into the cache; else downloaded by torchvision (which checks them)."""
    from torchvision.datasets import OxfordIIITPet
    from torchvision.transforms.functional import pil_to_tensor, resize

    root = _pets_root()
    try:
        dataset = OxfordIIITPet(root, split=split, target_types="segmentation",
                                download=root == cache_dir() and can_download("oxford_pets"))
    except Exception as e:  # missing files and failed downloads both land here
        raise _not_found("oxford_pets", "oxford-iiit-pet/{annotations,images}.tar.gz") from e
    images, masks = [], []
    for image, trimap in dataset:
        images.append(resize(pil_to_tensor(image.convert("RGB")), [size, size], antialias=True).float() / 255)
        trimap = resize(pil_to_tensor(trimap), [size, size], interpolation=0)[0]  # nearest
        masks.append((trimap != 2).long())  # trimap: 1 pet, 2 background, 3 border
    _announce("oxford_pets", f"Oxford-IIIT Pet ({split}, {len(images):,} images) from {display(root)}")
    return torch.stack(images), torch.stack(masks)


DATASETS = {"mnist": lambda: mnist(standin=False), "cifar10": lambda: cifar10(standin=False),
            "tinyshakespeare": lambda: tiny_shakespeare(standin=False), "multi30k": lambda: multi30k(standin=False),
            "gutenberg": lambda: gutenberg(standin=False), "text8": lambda: text8(standin=False),
            "rt_polarity": lambda: rt_polarity(standin=False),
            "oxford_pets": oxford_pets}
# The files that make a dataset complete, relative to a search-path folder or the cache.
COMPLETE = {"mnist": [f"mnist/{n}" for n in MNIST_MD5], "cifar10": [f"cifar10/{n}" for n in CIFAR10_TARS],
            "tinyshakespeare": ["tinyshakespeare/input.txt"], "multi30k": [f"multi30k/{n}" for n in MULTI30K_MD5],
            "gutenberg": [f"gutenberg/{n}" for n in GUTENBERG_MD5], "text8": ["text8/text8"],
            "rt_polarity": [f"rt-polarity/{n}" for n in RT_POLARITY_MD5], "oxford_pets": ["oxford-iiit-pet"]}


def _files_in(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else set()


def prefetch(name: str) -> tuple[bool, str]:
    """Fill the cache with a dataset (for a GPU server without internet: run this, copy the cache).

    Returns ``(ok, what happened)``: already on the search path, fetched into the cache, or failed
    with the reason. Success is claimed only for files that are really there.
    """
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; choose from: {', '.join(DATASETS)}")
    for folder in search_path():
        if all((folder / f).exists() for f in COMPLETE[name]):
            return True, f"already on the search path ({display(folder / COMPLETE[name][0]).rsplit('/', 1)[0]})"
    if offline():
        return False, f"not fetched: downloads are disabled by ${OFFLINE_VARIABLE}; unset it on a machine with internet"
    cache = writable_cache()
    if cache is None:
        return False, f"not fetched: the cache {display(cache_dir())} cannot be written; set ${CACHE_VARIABLE}"
    before = _files_in(cache)
    _download_errors.pop(name, None)
    try:
        DATASETS[name]()
    except Exception as e:  # every loader failure ends here with its reason; the next dataset still runs
        reason = _download_errors.get(name) or _reason(e)
        return False, f"failed: {reason}"
    new = _files_in(cache) - before
    if new:
        size = sum(p.stat().st_size for p in new)
        return True, f"fetched into {display(cache)} ({len(new)} files, {size / 1e6:.1f} MB)"
    if name in _download_errors:
        return False, f"failed: {_download_errors[name]}"
    return True, f"already in the cache {display(cache)}"
