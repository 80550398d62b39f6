"""The `curriculum` command line: listing, safe notebook runs, prefetch, help."""
import json

import nbformat
import pytest

from curriculum import cli, data, registry


def test_list_shows_every_topic_under_its_section(capsys):
    assert cli.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["topic", "module", "status"]
    sections = {t.section for t in registry.topics()}
    assert sections <= {line.strip() for line in lines}
    rows = [line for line in lines[1:] if line.strip() and line.strip() not in sections]
    assert len(rows) == len(registry.topics()) == 31
    assert rows[0].split()[:3] == ["01-dnn", "dnn", "implemented"]


def test_a_bad_results_file_is_marked_and_the_list_goes_on(capsys, monkeypatch):
    real = cli.load_results

    def load(name):
        if name == "02-cnn":
            raise ValueError("02-cnn/results.json: the 'cpu' entry lacks headline")
        return real(name)

    monkeypatch.setattr(cli, "load_results", load)
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "UNREADABLE RESULTS: 02-cnn/results.json" in out and "08-adam" in out


def test_bad_names_are_clear_errors(capsys, monkeypatch):
    assert cli.main(["run", "lenet"]) == 2
    assert "unknown topic 'lenet'" in capsys.readouterr().err
    monkeypatch.setenv("CURRICULUM_PROFILE", "turbo")
    assert cli.main(["run", "dnn"]) == 2
    assert "valid profiles are: smoke, cpu, gpu" in capsys.readouterr().err
    assert cli.main(["prefetch", "imagenet"]) == 2
    assert "unknown dataset 'imagenet'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["run", "dnn", "--profile", "turbo"])


@pytest.mark.parametrize("timeout", ["0", "-5"])
def test_timeout_must_be_positive(timeout, capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "dnn", "--timeout", timeout])
    assert "positive" in capsys.readouterr().err


def test_help_is_plain_text(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    description = cli.__doc__.split("\n")[0]
    assert text.count(description) == 1 and "`" not in text
    assert cli.DATASET_NAMES == tuple(data.DATASETS)


def test_progress_output_keeps_what_a_terminal_shows():
    outputs = [{"output_type": "stream", "name": "stderr", "text": " 10%|#  | 1/10\r"},
               {"output_type": "stream", "name": "stderr", "text": "100%|###| 10/10\n"},
               {"output_type": "stream", "name": "stdout", "text": "done\n"},
               {"output_type": "stream", "name": "stderr", "text": "\n"}]
    merged = cli._coalesce(outputs)
    assert [o["text"] for o in merged] == ["100%|###| 10/10\n", "done\n"]


# --- running notebooks safely ---------------------------------------------------------------

class FakeTopic:
    def __init__(self, folder):
        self.folder, self.path = "99-fake", folder
        self.notebook = folder / "fake.ipynb"


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A topic folder with a notebook; runs/ and images/ inside tmp_path; the cpu profile."""
    folder = tmp_path / "topic"
    folder.mkdir()
    monkeypatch.setattr(cli, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(cli, "IMAGES", tmp_path / "images")
    monkeypatch.setenv("CURRICULUM_PROFILE", "cpu")
    return FakeTopic(folder)


def write_notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def results_cell(runs, entry):
    """Notebook code that does what cur.save_results does: write the run's results under runs/."""
    target = runs / "99-fake" / "results.json"
    return f"import json, pathlib; pathlib.Path({str(target)!r}).write_text(json.dumps({{'cpu': {entry!r}}}))"


GOOD = {"headline": "42% of everything", "metrics": {"answer": 42.0}}


def test_a_plain_run_writes_only_under_runs(fake, tmp_path, capfd):
    (fake.path / "helper.py").write_text("VALUE = 41\n")
    write_notebook(fake.notebook, "import helper", "print(helper.VALUE + 1)\nprint('[data] fake: real data')",
                   results_cell(tmp_path / "runs", GOOD))
    before = fake.notebook.read_bytes()
    target = cli.execute(fake, in_place=False, timeout=120)
    assert target == tmp_path / "runs" / "99-fake" / "fake.ipynb"
    nb = nbformat.read(target, as_version=4)
    assert [c.execution_count for c in nb.cells] == [1, 2, 3]
    assert nb.cells[1].outputs[0]["text"].startswith("42\n")  # ran in the topic's folder
    assert fake.notebook.read_bytes() == before and not (fake.path / "results.json").exists()
    out, err = capfd.readouterr()  # file descriptors: the kernel process writes to them directly
    assert "[data] fake: real data" in out and "without encryption" not in out + err


def test_in_place_records_the_notebook_results_and_figure(fake, tmp_path):
    figure = tmp_path / "runs" / "99-fake" / "99-fake.png"
    write_notebook(fake.notebook, results_cell(tmp_path / "runs", GOOD),
                   f"import pathlib; pathlib.Path({str(figure)!r}).write_bytes(b'png')")
    cli.execute(fake, in_place=True, timeout=120)
    assert nbformat.read(fake.notebook, as_version=4).cells[0].execution_count == 1
    assert json.loads((fake.path / "results.json").read_text())["cpu"] == GOOD
    assert (tmp_path / "images" / "99-fake.png").read_bytes() == b"png"


def test_a_failed_in_place_run_leaves_the_committed_notebook_byte_identical(fake, tmp_path, capsys):
    write_notebook(fake.notebook, "x = 1", "y = 2\nraise ValueError('broken on purpose')", "print('never')")
    before = fake.notebook.read_bytes()
    with pytest.raises(cli.RunFailed) as failure:
        cli.execute(fake, in_place=True, timeout=120)
    message = str(failure.value)
    assert "cell 2 failed" in message and "ValueError: broken on purpose" in message
    assert "raise ValueError" in message and "\x1b[" not in message and "Traceback" not in message
    assert fake.notebook.read_bytes() == before and not (fake.path / "results.json").exists()
    kept = nbformat.read(tmp_path / "runs" / "99-fake" / "fake.ipynb", as_version=4)
    assert kept.cells[1].outputs[0]["ename"] == "ValueError" and kept.cells[2].execution_count is None
    assert "runs/99-fake/fake.ipynb" in message or str(tmp_path / "runs") in message


def test_a_cell_past_its_timeout_is_reported(fake):
    write_notebook(fake.notebook, "import time; time.sleep(30)")
    before = fake.notebook.read_bytes()
    with pytest.raises(cli.RunFailed, match="cell 1 failed"):
        cli.execute(fake, in_place=True, timeout=2)
    assert fake.notebook.read_bytes() == before


def test_in_place_never_records_a_run_on_stand_in_data(fake, tmp_path):
    write_notebook(fake.notebook, results_cell(tmp_path / "runs", {**GOOD, "standin": ["mnist"]}))
    before = fake.notebook.read_bytes()
    with pytest.raises(cli.RunFailed, match="STAND-IN data for mnist"):
        cli.execute(fake, in_place=True, timeout=120)
    assert fake.notebook.read_bytes() == before and not (fake.path / "results.json").exists()


def test_in_place_needs_results_and_a_recorded_profile(fake, monkeypatch):
    write_notebook(fake.notebook, "x = 1")
    before = fake.notebook.read_bytes()
    with pytest.raises(cli.RunFailed, match="recorded no cpu results"):
        cli.execute(fake, in_place=True, timeout=120)
    monkeypatch.setenv("CURRICULUM_PROFILE", "smoke")
    with pytest.raises(ValueError, match="--profile cpu"):
        cli.execute(fake, in_place=True, timeout=120)
    assert fake.notebook.read_bytes() == before


# --- prefetch ---------------------------------------------------------------------------------

def test_prefetch_reports_every_dataset_and_carries_on(monkeypatch, capsys):
    outcomes = {"mnist": (False, "failed: Name or service not known"), "gutenberg": (True, "already on the search path")}
    monkeypatch.setattr(data, "prefetch", lambda name: outcomes[name])
    assert cli.main(["prefetch", "mnist", "gutenberg"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[0] == "mnist" and "Name or service not known" in lines[0]
    assert lines[1].split()[0] == "gutenberg" and "curriculum prefetch" not in "".join(lines)
