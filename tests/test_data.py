"""The data module: search path, cache, stand-ins, corrupted files and downloads."""
import gzip
import http.server
import io
import json
import struct
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from curriculum import data

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def write_idx(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No search path, an empty cache in tmp_path, no downloads."""
    monkeypatch.setenv(data.DATA_PATH_VARIABLE, "")
    monkeypatch.setenv(data.CACHE_VARIABLE, str(tmp_path / "cache"))
    monkeypatch.setenv(data.OFFLINE_VARIABLE, "1")
    monkeypatch.setattr(data, "_standins", [])
    monkeypatch.setattr(data, "_warned", set())
    return tmp_path


@pytest.fixture
def fake_mnist_test(isolated, monkeypatch):
    """100 generated 28x28 'test' images, 10 per class, registered with their MD5s."""
    rng = np.random.default_rng(0)
    folder = isolated / "mnist-files"
    images, labels = rng.integers(0, 256, (100, 28, 28)), np.repeat(np.arange(10), 10)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", images)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", labels)
    md5 = dict(data.MNIST_MD5)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        md5[name] = data.md5sum(folder / name)
    monkeypatch.setattr(data, "MNIST_MD5", md5)
    return folder, images, labels


def place(folder: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for f in folder.iterdir():
        (target / f.name).write_bytes(f.read_bytes())


def test_mnist_from_search_path_is_a_stratified_split(fake_mnist_test, monkeypatch, capsys):
    folder, images, labels = fake_mnist_test
    place(folder, folder.parent / "search" / "mnist")
    monkeypatch.setenv(data.DATA_PATH_VARIABLE, f"/nonexistent:{folder.parent / 'search'}")
    d = data.mnist()
    assert (len(d.x_train), len(d.x_test)) == (80, 20)
    assert d.x_train.shape[1:] == (1, 28, 28) and d.x_train.dtype == torch.float32
    assert 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0
    assert torch.bincount(d.y_test, minlength=10).tolist() == [2] * 10  # stratified
    # every held-out image is one of the originals with its own label, and none is also in training
    originals = {torch.tensor(img).flatten().tolist().__repr__(): int(lab) for img, lab in zip(images, labels)}
    for x, y in zip(d.x_test, d.y_test):
        assert originals[(x * 255).round().to(torch.int64).flatten().tolist().__repr__()] == int(y)
    assert "from $CURRICULUM_DATA/mnist" in capsys.readouterr().out


def test_mnist_split_is_seeded(fake_mnist_test, monkeypatch):
    folder, _, _ = fake_mnist_test
    place(folder, folder.parent / "search" / "mnist")
    monkeypatch.setenv(data.DATA_PATH_VARIABLE, str(folder.parent / "search"))
    a, b, c = data.mnist(seed=0), data.mnist(seed=0), data.mnist(seed=1)
    assert torch.equal(a.y_test, b.y_test) and torch.equal(a.x_test, b.x_test)
    assert not torch.equal(a.x_test, c.x_test)


def test_mnist_from_cache(fake_mnist_test, isolated):
    folder, _, _ = fake_mnist_test
    place(folder, isolated / "cache" / "MNIST" / "raw")  # where torchvision's download puts it
    assert len(data.mnist().x_train) == 80


def test_mnist_standin_is_announced(isolated, capsys):
    d = data.mnist()
    assert d.source.startswith("STAND-IN") and "STAND-IN" in capsys.readouterr().out
    assert d.x_train.shape[1:] == (1, 28, 28) and len(d.x_train) + len(d.x_test) == 1797
    assert set(d.y_test.tolist()) == set(range(10))


def test_mnist_without_standin_says_what_to_do(isolated):
    with pytest.raises(data.DataNotFound, match="CURRICULUM_DATA.*prefetch mnist"):
        data.mnist(standin=False)


def test_truncated_file_is_named_with_the_fix(fake_mnist_test, monkeypatch):
    folder, _, _ = fake_mnist_test
    target = folder.parent / "search" / "mnist"
    place(folder, target)
    path = target / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])
    monkeypatch.setenv(data.DATA_PATH_VARIABLE, str(folder.parent / "search"))
    with pytest.raises(data.DataError, match=r"t10k-images-idx3-ubyte.gz is corrupted or truncated.*prefetch mnist"):
        data.mnist()


def test_read_idx_rejects_garbage(tmp_path):
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"this is not gzip")
    with pytest.raises(data.DataError, match="bad.gz is not a readable gzipped IDX file"):
        data.read_idx(bad)
    wrong_size = tmp_path / "short.gz"
    with gzip.open(wrong_size, "wb") as f:
        f.write(struct.pack(">HBBI", 0, 8, 1, 10) + b"123")
    with pytest.raises(data.DataError, match="shape"):
        data.read_idx(wrong_size)


@pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="the offline MNIST copy is not beside the checkout")
def test_real_mnist_test_split_offline(monkeypatch, tmp_path):
    monkeypatch.setenv(data.DATA_PATH_VARIABLE, str(SHARED))
    monkeypatch.setenv(data.CACHE_VARIABLE, str(tmp_path))
    monkeypatch.setenv(data.OFFLINE_VARIABLE, "1")
    d = data.mnist()
    assert (len(d.x_train), len(d.x_test)) == (8000, 2000)
    counts = torch.bincount(d.y_test, minlength=10)
    full = torch.bincount(torch.cat([d.y_train, d.y_test]), minlength=10)
    assert torch.allclose(counts.float() / 2000, full.float() / 10000, atol=1e-3)


def test_stratified_split_keeps_proportions():
    labels = torch.tensor([0] * 90 + [1] * 10)
    train, test = data.stratified_split(labels, test_size=20, seed=3)
    assert sorted(torch.cat([train, test]).tolist()) == list(range(100))
    assert torch.bincount(labels[test]).tolist() == [18, 2]


def test_tiny_shakespeare_search_path_and_standin(isolated, monkeypatch, capsys):
    (isolated / "s" / "tinyshakespeare").mkdir(parents=True)
    path = isolated / "s" / "tinyshakespeare" / "input.txt"
    path.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n")
    monkeypatch.setattr(data, "SHAKESPEARE_MD5", data.md5sum(path))
    monkeypatch.setenv(data.DATA_PATH_VARIABLE, str(isolated / "s"))
    assert data.tiny_shakespeare().startswith("First Citizen")
    monkeypatch.setenv(data.DATA_PATH_VARIABLE, "")
    text = data.tiny_shakespeare()
    assert len(text) > 100_000 and "def " in text and "STAND-IN" in capsys.readouterr().out
    with pytest.raises(data.DataNotFound):
        data.tiny_shakespeare(standin=False)


def test_multi30k_from_local_files(isolated, monkeypatch):
    folder = isolated / "s" / "multi30k"
    folder.mkdir(parents=True)
    md5 = {}
    for stem in data.MULTI30K_SPLITS.values():
        for lang, sentence in (("en", "A dog runs."), ("de", "Ein Hund läuft.")):
            name = f"{stem}.{lang}.gz"
            with gzip.open(folder / name, "wt", encoding="utf-8") as f:
                f.write(f"{sentence}\n{sentence}\n")
            md5[name] = data.md5sum(folder / name)
    monkeypatch.setattr(data, "MULTI30K_MD5", md5)
    monkeypatch.setenv(data.DATA_PATH_VARIABLE, str(isolated / "s"))
    pairs = data.multi30k()
    assert set(pairs) == {"train", "val", "test"}
    assert pairs["val"] == [("A dog runs.", "Ein Hund läuft.")] * 2


def test_multi30k_through_hugging_face_datasets_on_a_local_folder(isolated):
    """The online loader is Hugging Face `datasets`; here it reads a local folder laid out like the hub's."""
    folder = isolated / "hub"
    folder.mkdir()
    for split, n in (("train", 3), ("val", 2), ("test", 1)):
        rows = [{"en": f"A cat sits {i}.", "de": f"Eine Katze sitzt {i}."} for i in range(n)]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = data.multi30k_from_hub(str(folder))
    assert [len(pairs[s]) for s in ("train", "val", "test")] == [3, 2, 1]
    assert pairs["train"][1] == ("A cat sits 1.", "Eine Katze sitzt 1.")


def test_multi30k_standin(isolated, capsys):
    pairs = data.multi30k()
    assert len(pairs["train"]) == 5000 and "STAND-IN" in capsys.readouterr().out
    english, german = pairs["train"][0]
    assert english.endswith(".") and german.endswith(".")
    assert data.multi30k() == pairs  # seeded


def test_cifar10_from_jpeg_tars(isolated, monkeypatch):
    from PIL import Image

    folder = isolated / "s" / "cifar10"
    folder.mkdir(parents=True)
    md5 = {}
    for name, split in (("cifar10-train-jpg-first1000perclass.tar", "train"), ("cifar10-test-jpg.tar", "test")):
        with tarfile.open(folder / name, "w") as tar:
            for label in ("cat", "ship"):
                for i in range(2):
                    buffer = io.BytesIO()
                    Image.new("RGB", (32, 32), (200, 10, 10)).save(buffer, format="JPEG")
                    info = tarfile.TarInfo(f"{split}/{label}/{i:04d}.jpg")
                    info.size = buffer.tell()
                    buffer.seek(0)
                    tar.addfile(info, buffer)
        md5[name] = data.md5sum(folder / name)
    monkeypatch.setattr(data, "CIFAR10_TARS", md5)
    monkeypatch.setenv(data.DATA_PATH_VARIABLE, str(isolated / "s"))
    d = data.cifar10()
    assert d.x_train.shape == (4, 3, 32, 32) and d.x_test.shape == (4, 3, 32, 32)
    assert sorted(d.y_train.tolist()) == [3, 3, 8, 8]  # cat = 3, ship = 8
    assert abs(d.x_train[0, 0].mean().item() - 200 / 255) < 0.05
    # the decoded pixels are cached: a second load decodes nothing and gives the same images
    monkeypatch.setattr(data, "_decode_jpeg_tar", lambda path: pytest.fail("decoded again"))
    again = data.cifar10()
    assert torch.equal(again.x_train, d.x_train) and torch.equal(again.y_test, d.y_test)
    for cached in (isolated / "cache" / "cifar10").glob("decoded-*.pt"):
        cached.write_bytes(b"damaged")
    monkeypatch.undo()
    monkeypatch.setattr(data, "CIFAR10_TARS", md5)
    monkeypatch.setenv(data.DATA_PATH_VARIABLE, str(isolated / "s"))
    monkeypatch.setenv(data.CACHE_VARIABLE, str(isolated / "cache"))
    assert torch.equal(data.cifar10().x_train, d.x_train)  # a damaged cache entry is rebuilt


def test_cifar10_missing_offline(isolated, capsys):
    with pytest.raises(data.DataNotFound, match="cifar10"):
        data.cifar10(standin=False)
    d = data.cifar10()
    assert d.source.startswith("STAND-IN") and "STAND-IN" in capsys.readouterr().out
    assert d.x_train.shape[1:] == (3, 32, 32) and set(d.y_test.tolist()) == set(range(10))
    assert "cifar10" in data.used_standins()


def test_shapes_are_seeded_and_masks_match():
    images, masks = data.shapes(6, size=32, seed=1)
    again, _ = data.shapes(6, size=32, seed=1)
    assert images.shape == (6, 3, 32, 32) and masks.shape == (6, 32, 32)
    assert torch.equal(images, again) and set(masks.unique().tolist()) <= {0, 1}
    assert all(0 < m.float().mean() < 1 for m in masks)  # every image has a shape and background


class Server(http.server.BaseHTTPRequestHandler):
    payload = b"hello, data" * 100

    def do_GET(self):  # noqa: N802 (the name http.server calls)
        if self.path == "/ok":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(self.payload)
        else:
            self.send_error(404)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Server)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_is_verified_and_atomic(server, tmp_path):
    import hashlib

    dest = tmp_path / "sub" / "file.bin"
    data.download(f"{server}/ok", dest, hashlib.md5(Server.payload).hexdigest(), retries=0)
    assert dest.read_bytes() == Server.payload
    with pytest.raises(data.DataError, match="MD5"):
        data.download(f"{server}/ok", tmp_path / "other.bin", "0" * 32, retries=0)
    with pytest.raises(data.DataError, match="404"):
        data.download(f"{server}/missing", tmp_path / "missing.bin", retries=1, timeout=2)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["file.bin"]  # no partial files


def test_prefetch_rejects_unknown_names():
    with pytest.raises(KeyError, match="choose from: mnist"):
        data.prefetch("imagenet")


# --- offline behaviour, cache problems, paths shown to the reader --------------------------------

def test_a_missing_search_path_folder_gets_a_warning(isolated, monkeypatch, capsys):
    monkeypatch.setattr(data, "_warned", set())
    monkeypatch.setenv(data.DATA_PATH_VARIABLE, str(isolated / "no-such-folder"))
    assert data.search_path() == []
    assert "no-such-folder, which is not a folder" in capsys.readouterr().out


@pytest.mark.parametrize("value, offline", [("", False), ("0", False), ("false", False), ("False", False),
                                            ("no", False), ("1", True), ("true", True), ("yes", True)])
def test_offline_variable(monkeypatch, value, offline):
    monkeypatch.setenv(data.OFFLINE_VARIABLE, value)
    assert data.offline() is offline


@pytest.mark.parametrize("loader", [data.mnist, data.tiny_shakespeare, data.multi30k, data.gutenberg,
                                    data.rt_polarity, data.cifar10])
def test_an_unusable_cache_gets_one_clear_message_and_the_stand_in(isolated, monkeypatch, capsys, loader):
    monkeypatch.setattr(data, "_warned", set())
    blocker = isolated / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(data.CACHE_VARIABLE, str(blocker / "cache"))  # cannot be created: its parent is a file
    monkeypatch.setenv(data.OFFLINE_VARIABLE, "0")  # online, but nothing may be downloaded into it
    monkeypatch.setattr(data.urllib.request, "urlopen", lambda *a, **k: pytest.fail("no download without a cache"))
    loader()
    out = capsys.readouterr().out
    assert out.count("cannot be used") == 1 and "Set $CURRICULUM_CACHE to a writable folder" in out
    assert "STAND-IN" in out


def test_an_interrupted_download_leaves_no_part_file(server, tmp_path, monkeypatch):
    def interrupt(path):
        assert path.name.endswith(".part") and path.exists()
        raise KeyboardInterrupt

    monkeypatch.setattr(data, "md5sum", interrupt)
    with pytest.raises(KeyboardInterrupt):
        data.download(f"{server}/ok", tmp_path / "file.bin", "0" * 32, retries=0)
    assert list(tmp_path.iterdir()) == []


def test_paths_are_shown_relative_to_the_search_path_and_cache(isolated, monkeypatch):
    (isolated / "s").mkdir()
    monkeypatch.setenv(data.DATA_PATH_VARIABLE, str(isolated / "s"))
    assert data.display(isolated / "s" / "mnist" / "x.gz") == "$CURRICULUM_DATA/mnist/x.gz"
    assert data.display(isolated / "cache" / "mnist") == "$CURRICULUM_CACHE/mnist"
    monkeypatch.delenv(data.CACHE_VARIABLE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(isolated / "xdg"))
    assert data.display(isolated / "xdg" / "curriculum" / "a") == "~/.cache/curriculum/a"


# --- Gutenberg and rt-polarity ------------------------------------------------------------------

def fake_gutenberg(isolated, monkeypatch):
    folder = isolated / "s" / "gutenberg"
    folder.mkdir(parents=True)
    md5 = {}
    for i, name in enumerate(data.GUTENBERG_MD5):
        (folder / name).write_bytes(f"Book {i}\r\nCaf\xe9 line two\r\n".encode("latin-1"))
        md5[name] = data.md5sum(folder / name)
    monkeypatch.setattr(data, "GUTENBERG_MD5", md5)
    monkeypatch.setenv(data.DATA_PATH_VARIABLE, str(isolated / "s"))
    return folder


def test_gutenberg_reads_latin1_and_crlf(isolated, monkeypatch, capsys):
    fake_gutenberg(isolated, monkeypatch)
    books = data.gutenberg()
    assert len(books) == 13 and books["austen-emma"] == "Book 0\nCafé line two\n"
    assert "$CURRICULUM_DATA/gutenberg" in capsys.readouterr().out and data.used_standins() == []


def test_gutenberg_corrupted_book_is_named(isolated, monkeypatch):
    folder = fake_gutenberg(isolated, monkeypatch)
    (folder / "blake-poems.txt").write_text("something else")
    with pytest.raises(data.DataError, match="blake-poems.txt is corrupted.*prefetch gutenberg"):
        data.gutenberg()


def test_gutenberg_standin_and_not_found(isolated, capsys):
    with pytest.raises(data.DataNotFound, match="gutenberg"):
        data.gutenberg(standin=False)
    books = data.gutenberg()
    assert list(books) == ["lee_background"] and len(books["lee_background"].split()) > 50_000
    assert "STAND-IN" in capsys.readouterr().out and data.used_standins() == ["gutenberg"]


def test_rt_polarity_split_is_stratified_and_seeded(isolated, monkeypatch, capsys):
    folder = isolated / "s" / "rt-polarity"
    folder.mkdir(parents=True)
    (folder / "rt-polarity.pos").write_text("".join(f"good film {i} .\n" for i in range(100)))
    (folder / "rt-polarity.neg").write_text("".join(f"bad film {i} .\n" for i in range(100)))
    monkeypatch.setattr(data, "RT_POLARITY_MD5", {n: data.md5sum(folder / n) for n in data.RT_POLARITY_MD5})
    monkeypatch.setenv(data.DATA_PATH_VARIABLE, str(isolated / "s"))
    a, b, c = data.rt_polarity(seed=0), data.rt_polarity(seed=0), data.rt_polarity(seed=1)
    assert {k: len(v) for k, v in a.items()} == {"train": 160, "val": 20, "test": 20}
    assert a == b and a["test"] != c["test"]
    assert sum(label for _, label in a["test"]) == 10  # half positive
    everything = sorted(a["train"] + a["val"] + a["test"])
    assert len(set(everything)) == 200 and all(label == text.startswith("good") for text, label in everything)
    assert "STAND-IN" not in capsys.readouterr().out


def test_rt_polarity_standin(isolated, capsys):
    with pytest.raises(data.DataNotFound, match="rt_polarity"):
        data.rt_polarity(standin=False)
    splits = data.rt_polarity()
    assert len(splits["train"]) == 1600 and "STAND-IN" in capsys.readouterr().out


# --- prefetch -----------------------------------------------------------------------------------

def test_prefetch_reports_the_search_path_and_offline(isolated, monkeypatch):
    fake_gutenberg(isolated, monkeypatch)
    ok, what = data.prefetch("gutenberg")
    assert ok and "already on the search path ($CURRICULUM_DATA/gutenberg)" in what
    ok, what = data.prefetch("mnist")
    assert not ok and "disabled by $CURRICULUM_OFFLINE" in what and "prefetch" not in what


def test_prefetch_never_claims_a_cache_it_did_not_fill(isolated, monkeypatch):
    monkeypatch.setenv(data.OFFLINE_VARIABLE, "0")
    monkeypatch.setattr(data, "DATASETS", {**data.DATASETS, "tinyshakespeare": lambda: None})
    ok, what = data.prefetch("tinyshakespeare")  # the loader "succeeded" but put nothing in the cache
    assert ok and what.startswith("already in the cache")

    def fails():
        data._download_failed("tinyshakespeare", OSError("Name or service not known"))
        raise data._not_found("tinyshakespeare", "input.txt")

    monkeypatch.setattr(data, "DATASETS", {**data.DATASETS, "tinyshakespeare": fails})
    ok, what = data.prefetch("tinyshakespeare")
    assert not ok and what == "failed: Name or service not known"

    def fills():
        (data.cache_dir() / "tinyshakespeare").mkdir(parents=True, exist_ok=True)
        (data.cache_dir() / "tinyshakespeare" / "input.txt").write_text("text")

    monkeypatch.setattr(data, "DATASETS", {**data.DATASETS, "tinyshakespeare": fills})
    ok, what = data.prefetch("tinyshakespeare")
    assert ok and what.startswith("fetched into $CURRICULUM_CACHE (1 files")


# --- text8 --------------------------------------------------------------------------------------

def test_text8_from_the_search_path_checked_by_length(isolated, monkeypatch, capsys):
    folder = isolated / "s" / "text8"
    folder.mkdir(parents=True)
    (folder / "text8").write_text(" anarchism originated as a term of abuse")
    monkeypatch.setenv(data.DATA_PATH_VARIABLE, str(isolated / "s"))
    monkeypatch.setattr(data, "TEXT8_CHARACTERS", 40)
    assert data.text8().split()[:2] == ["anarchism", "originated"]
    assert "$CURRICULUM_DATA/text8/text8" in capsys.readouterr().out
    monkeypatch.setattr(data, "TEXT8_CHARACTERS", 100)
    with pytest.raises(data.DataError, match="truncated or another file.*prefetch text8"):
        data.text8()


def test_text8_through_hugging_face_datasets_on_a_local_folder(isolated, capsys):
    folder = isolated / "hub"
    folder.mkdir()
    (folder / "train.jsonl").write_text(json.dumps({"text": " anarchism originated as a term"}) + "\n")
    assert data.text8(repository=str(folder)) == "anarchism originated as a term"
    assert "Hugging Face datasets" in capsys.readouterr().out


def test_text8_standin_is_announced(isolated, capsys):
    with pytest.raises(data.DataNotFound, match="text8"):
        data.text8(standin=False)
    text = data.text8()
    assert set(text) <= set("abcdefghijklmnopqrstuvwxyz ") and len(text.split()) > 50_000
    assert "text8: STAND-IN" in capsys.readouterr().out and "text8" in data.used_standins()


def test_cifar10_splits_are_shuffled_with_the_seed():
    sorted_by_class = torch.arange(100) // 10    # the JPEG copies are stored class by class
    images = data.ImageData(sorted_by_class.float()[:, None], sorted_by_class, sorted_by_class.float()[:, None],
                            sorted_by_class, tuple("0123456789"), "test")
    a, b, c = data._shuffled(images, 0), data._shuffled(images, 0), data._shuffled(images, 1)
    assert torch.equal(a.y_train, b.y_train) and not torch.equal(a.y_train, c.y_train)
    assert sorted(a.y_train.tolist()) == sorted_by_class.tolist() and len(set(a.y_train[:10].tolist())) > 3
    assert torch.equal(a.x_train[:, 0].long(), a.y_train) and torch.equal(a.x_test[:, 0].long(), a.y_test)


def _pets_archives(folder):
    """Two tiny archives laid out like Oxford-IIIT Pet's: annotations/ and images/."""
    from PIL import Image

    folder.mkdir(parents=True)
    for name, members in (("annotations.tar.gz", {"annotations/trainval.txt": b"Abyssinian_1 1 1 1\n"}),
                          ("images.tar.gz", {})):
        with tarfile.open(folder / name, "w:gz") as tar:
            if name == "images.tar.gz":
                buffer = io.BytesIO()
                Image.new("RGB", (20, 16), (10, 200, 10)).save(buffer, format="JPEG")
                members = {"images/Abyssinian_1.jpg": buffer.getvalue()}
            for member, content in members.items():
                info = tarfile.TarInfo(member)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return {name: data.md5sum(folder / name) for name in ("annotations.tar.gz", "images.tar.gz")}


def test_oxford_pets_archives_are_verified_small_first_and_unpacked_into_the_cache(isolated, monkeypatch):
    md5 = _pets_archives(isolated / "s" / "oxford-iiit-pet")
    monkeypatch.setenv(data.DATA_PATH_VARIABLE, str(isolated / "s"))
    monkeypatch.setattr(data, "PETS_ARCHIVES", md5)
    root = data._pets_root()
    assert root == data.cache_dir()
    assert (root / "oxford-iiit-pet" / "images" / "Abyssinian_1.jpg").is_file()
    assert (root / "oxford-iiit-pet" / "annotations" / "trainval.txt").is_file()
    assert not (root / "oxford-iiit-pet.part").exists()
    assert data._pets_root() == root  # found unpacked the second time


def test_oxford_pets_damaged_small_archive_is_reported_before_the_large_one_is_hashed(isolated, monkeypatch):
    md5 = _pets_archives(isolated / "s" / "oxford-iiit-pet")
    monkeypatch.setenv(data.DATA_PATH_VARIABLE, str(isolated / "s"))
    monkeypatch.setattr(data, "PETS_ARCHIVES", {**md5, "annotations.tar.gz": "0" * 32})
    hashed = []
    real_md5sum = data.md5sum
    monkeypatch.setattr(data, "md5sum", lambda path: hashed.append(path.name) or real_md5sum(path))
    with pytest.raises(data.DataError, match="annotations.tar.gz is corrupted or truncated"):
        data._pets_root()
    assert hashed == ["annotations.tar.gz"]
    assert not (data.cache_dir() / "oxford-iiit-pet").exists()


def test_captioned_mnist_holds_out_its_pairs_and_captions_what_it_paints(isolated, capsys):
    train, test, source = data.captioned_mnist(seed=1)  # the stand-in digits: no data here
    inks, grounds = tuple(data.INKS), tuple(data.BACKGROUNDS)
    assert not train.held_out.any() and test.held_out.any()
    assert all((int(d), inks[i]) not in data.HELD_OUT for d, i in zip(train.digit, train.ink))
    assert test.held_out.tolist() == [(int(d), inks[i]) in data.HELD_OUT for d, i in zip(test.digit, test.ink)]
    for split in (train, test):
        assert split.images.shape == (len(split), 3, 28, 28) and 0 <= split.images.min() and split.images.max() <= 1
        for caption, d, i, b in list(zip(split.captions, split.digit, split.ink, split.background))[:200]:
            words = caption.split()
            assert str(int(d)) in words or data.DIGIT_WORDS[d] in words, caption
            assert set(data.INKS[inks[i]][1]) & set(words), caption
            assert set(data.BACKGROUNDS[grounds[b]][1]) & set(words), caption
    ink, ground = data.read_colours(test.images)  # the colours can be read back from the pixels
    assert torch.equal(ink, test.ink) and torch.equal(ground, test.background)
    again = data.captioned_mnist(seed=1)[1]
    assert again.captions == test.captions and torch.equal(again.images, test.images)
    assert data.captioned_mnist(seed=2)[1].captions != test.captions
    assert "held out of training" in source and "[data] captioned coloured MNIST" in capsys.readouterr().out


def test_captioned_mnist_is_recolour_of_the_digits_and_unchanged(isolated):
    """One implementation of the colouring: the dataset is ``recolour`` of ``mnist``'s splits with the seeded
    generator (05-04 CLIP's training stream calls the same function); pinned values guard the committed results
    that depend on the exact draws."""
    train, test, _ = data.captioned_mnist(seed=1)
    digits, g = data.mnist(seed=1), torch.Generator().manual_seed(1)
    for split, again in ((train, data.recolour(digits.x_train, digits.y_train, g, allow_held_out=False)),
                         (test, data.recolour(digits.x_test, digits.y_test, g, allow_held_out=True))):
        assert split.captions == again.captions and torch.equal(split.images, again.images)
        for name in ("digit", "ink", "background", "held_out"):
            assert torch.equal(getattr(split, name), getattr(again, name))
    assert train.captions[:3] == ["a lime three on a dark background", "9 written in cyan over a brown background",
                                  "1 written in scarlet over a dark background"]
    assert test.ink[:10].tolist() == [2, 5, 1, 5, 2, 1, 0, 3, 5, 5]
    assert test.background[:10].tolist() == [3, 0, 1, 3, 0, 2, 0, 2, 3, 0]
    # held-out inks are redrawn: uniform over each digit's five other inks, never the withheld one
    digit = torch.arange(6000) % 10
    drawn = data.recolour(torch.zeros(6000, 1, 28, 28), digit, torch.Generator().manual_seed(0), allow_held_out=False)
    assert not drawn.held_out.any()
    counts = torch.zeros(10, len(data.INKS)).index_put_((digit, drawn.ink), torch.ones(6000), accumulate=True)
    allowed = torch.tensor([[(d, ink) not in data.HELD_OUT for ink in data.INKS] for d in range(10)])
    assert (counts[~allowed] == 0).all() and counts[allowed].min() > 80  # 120 expected per allowed pair


def test_describe_and_read_colours_errors():
    assert data.describe(7, "red", "black") == "a red 7 on a black background"
    g = torch.Generator().manual_seed(0)
    assert len({data.describe(7, "red", "black", g) for _ in range(30)}) > 5
    with pytest.raises(ValueError, match="RGB images"):
        data.read_colours(torch.zeros(2, 1, 28, 28))


def test_unpaint_recovers_the_grey_digit():
    g = torch.Generator().manual_seed(0)
    grey = torch.rand(24, 1, 28, 28, generator=g) * (torch.rand(24, 1, 28, 28, generator=g) < 0.2)
    ink, ground = torch.arange(24) % len(data.INKS), torch.arange(24) % len(data.BACKGROUNDS)
    painted = data.paint(grey, ink, ground)  # no jitter: exact colours
    assert torch.allclose(data.unpaint(painted), grey, atol=1e-5)


def test_read_colours_reads_a_faint_stroke_by_its_hue():
    g = torch.Generator().manual_seed(0)
    grey = (torch.rand(24, 1, 28, 28, generator=g) < 0.15).float()
    ink, ground = torch.arange(24) % len(data.INKS), torch.arange(24) % len(data.BACKGROUNDS)
    faint = data.paint(grey * 0.4, ink, ground)  # 40% of the way from background to ink
    assert torch.equal(data.read_colours(faint)[0], ink) and torch.equal(data.read_colours(faint)[1], ground)
