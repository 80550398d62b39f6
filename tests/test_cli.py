"""The `curriculum` command line."""
import nbformat
import pytest

from curriculum import cli, registry


def test_list_shows_every_topic(capsys):
    assert cli.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(registry.topics()) == 31
    assert lines[0].split()[:3] == ["01-dnn", "dnn", "implemented"]


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


def test_progress_output_keeps_what_a_terminal_shows():
    outputs = [{"output_type": "stream", "name": "stderr", "text": " 10%|#  | 1/10\r"},
               {"output_type": "stream", "name": "stderr", "text": "100%|###| 10/10\n"},
               {"output_type": "stream", "name": "stdout", "text": "done\n"},
               {"output_type": "stream", "name": "stderr", "text": "\n"}]
    merged = cli._coalesce(outputs)
    assert [o["text"] for o in merged] == ["100%|###| 10/10\n", "done\n"]


class FakeTopic:
    def __init__(self, folder):
        self.folder, self.path = "99-fake", folder
        self.notebook = folder / "fake.ipynb"


def write_notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_execute_runs_a_notebook_in_its_folder(tmp_path):
    (tmp_path / "helper.py").write_text("VALUE = 41\n")
    write_notebook(tmp_path / "fake.ipynb", "import helper", "print(helper.VALUE + 1)")
    cli.execute(FakeTopic(tmp_path), in_place=True, timeout=120)
    nb = nbformat.read(tmp_path / "fake.ipynb", as_version=4)
    assert [c.execution_count for c in nb.cells] == [1, 2]
    assert nb.cells[1].outputs[0]["text"] == "42\n"


def test_execute_keeps_the_failing_notebook_to_read(tmp_path):
    write_notebook(tmp_path / "fake.ipynb", "x = 1", "raise ValueError('broken on purpose')", "print('never')")
    with pytest.raises(RuntimeError, match="failed after"):
        cli.execute(FakeTopic(tmp_path), in_place=True, timeout=120)
    nb = nbformat.read(tmp_path / "fake.ipynb", as_version=4)
    assert nb.cells[1].outputs[0]["ename"] == "ValueError" and nb.cells[2].execution_count is None


def test_execute_reports_a_cell_that_runs_past_its_timeout(tmp_path):
    write_notebook(tmp_path / "fake.ipynb", "import time; time.sleep(30)")
    with pytest.raises(RuntimeError, match="failed after"):
        cli.execute(FakeTopic(tmp_path), in_place=True, timeout=2)
    assert (tmp_path / "fake.ipynb").exists()
