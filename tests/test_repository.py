"""The repository is consistent: every topic has its files, registry entry, tests and results;
notebooks are committed executed in order; the README's table and links match the files."""
import json
import re
import subprocess

import pytest

from curriculum import cli, registry

ROOT = registry.ROOT
TOPICS = registry.topics()
IMPLEMENTED = [t for t in TOPICS if t.implemented]


def test_every_topic_folder_on_disk_is_registered():
    sections = {t.section for t in TOPICS}
    on_disk = {(p.parent.name, p.name) for s in sections if (ROOT / s).is_dir()
               for p in (ROOT / s).iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
    assert on_disk <= {(t.section, t.folder) for t in TOPICS}


@pytest.mark.parametrize("topic", IMPLEMENTED, ids=lambda t: t.folder)
def test_topic_has_its_files(topic):
    for path in (topic.path / "README.md", topic.path / f"{topic.module}.py", topic.notebook,
                 ROOT / "tests" / f"test_{topic.module}.py"):
        assert path.is_file(), f"{path} is missing"
    readme = (topic.path / "README.md").read_text()
    assert f"curriculum run {topic.folder}" in readme, "the topic README says how to run it"
    for paper in (p for p in registry.papers() if p.topic == topic.folder):
        assert paper.url in readme, f"the topic README links to {paper.url}"
    assert any(p.topic == topic.folder for p in registry.papers())


@pytest.mark.parametrize("topic", IMPLEMENTED, ids=lambda t: t.folder)
def test_topic_results_are_recorded(topic):
    results = json.loads((topic.path / "results.json").read_text())
    assert set(results) & {"cpu", "gpu"}, "the notebook was run in the cpu or gpu profile"
    for profile, entry in results.items():
        assert profile in ("cpu", "gpu") and entry["headline"] and entry["metrics"]


@pytest.mark.parametrize("topic", IMPLEMENTED, ids=lambda t: t.folder)
def test_notebook_is_committed_executed_in_order(topic):
    nb = json.loads(topic.notebook.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1)), "re-run top to bottom"
    assert not [o for c in code for o in c["outputs"] if o["output_type"] == "error"]
    assert f'cur.setup("{topic.folder}")' in "".join(code[0]["source"]), "the first cell prints the profile"
    profile_line = "".join(code[0]["outputs"][0]["text"])
    assert re.search(r"profile (cpu|gpu)", profile_line), "committed outputs come from the cpu or gpu profile"
    assert any("".join(c["source"]).startswith("# NBVAL_CHECK_OUTPUT") for c in code), "a proof cell"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


def printed_lines(topic) -> list[str]:
    nb = json.loads(topic.notebook.read_text())
    return [line for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"]
            if o["output_type"] == "stream" for line in "".join(o["text"]).splitlines()]


@pytest.mark.parametrize("topic", IMPLEMENTED, ids=lambda t: t.folder)
def test_results_json_equals_what_the_notebook_printed(topic):
    """A hand-edited number in results.json, or a notebook re-run without recording, fails here."""
    lines = printed_lines(topic)
    run = re.search(r"profile (cpu|gpu)", lines[0])[1]
    entry = json.loads((topic.path / "results.json").read_text()).get(run)
    assert entry, f"results.json has no {run} entry, the profile the committed notebook ran in"
    headlines = [line.split(": ", 1)[1] for line in lines if line.startswith(f"[results] {run}: ")]
    assert headlines and headlines[-1] == entry["headline"], "the headline differs from the notebook's [results] line"
    records = [json.loads(line.removeprefix("[metrics] ")) for line in lines if line.startswith("[metrics] ")]
    assert records and records[-1] == entry["metrics"], "the metrics differ from the notebook's [metrics] record"
    assert 0 < entry["metrics"]["notebook_seconds"] <= (600 if run == "cpu" else 900), "over the profile's budget"


@pytest.mark.parametrize("topic", IMPLEMENTED, ids=lambda t: t.folder)
def test_sizes_are_printed_honestly(topic):
    """No size rounded down to thousands ("0k" for 359 images) in a headline or an output."""
    headlines = [entry["headline"] for entry in json.loads((topic.path / "results.json").read_text()).values()]
    assert not [line for line in printed_lines(topic) + headlines if re.search(r"\b0k\b", line)]


@pytest.mark.parametrize("topic", IMPLEMENTED, ids=lambda t: t.folder)
def test_progress_bars_are_saved_as_text(topic):
    """A progress bar must be readable on GitHub: `from tqdm import tqdm` with file=sys.stdout (as `cur.fit`),
    not `tqdm.auto`, whose widget keeps only its first state in the saved notebook."""
    notebook = topic.notebook.read_text()
    widgets = "application/vnd.jupyter.widget-view+json" in notebook or "tqdm.auto" in notebook
    assert not widgets, f"{topic.folder}: use `from tqdm import tqdm` (file=sys.stdout), not tqdm.auto"


@pytest.mark.parametrize("topic", IMPLEMENTED, ids=lambda t: t.folder)
def test_nothing_is_printed_to_standard_error(topic):
    """Progress bars and status lines go to standard output (`file=sys.stdout`); library warnings are avoided."""
    nb = json.loads(topic.notebook.read_text())
    stderr = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"]
              if o["output_type"] == "stream" and o.get("name") == "stderr"]
    assert not stderr, f"{topic.folder} prints to standard error: {''.join(stderr[0]['text'])[:120]!r}"


def test_readme_states_the_install_size_and_the_cpu_only_build():
    readme = (ROOT / "README.md").read_text()
    assert "several GB" in readme and "https://download.pytorch.org/whl/cpu" in readme


def test_readme_table_and_links():
    assert cli.main(["readme", "--check"]) == 0, "run `curriculum readme`"
    readme = (ROOT / "README.md").read_text()
    for link in re.findall(r"\]\((?!https?://)([^)#]+)\)", readme):
        assert (ROOT / link).exists(), f"README links to missing {link}"


def test_ci_runs_the_readme_quick_start():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- quickstart:start -->")[1].split("<!-- quickstart:end -->")[0]
    commands = [line for line in block.splitlines() if line.strip() and not line.startswith("```")]
    assert len(commands) == 2 and commands[1] == "pytest"
    assert "quickstart:start" in (ROOT / ".ci" / "run").read_text()


def test_no_papers_or_shared_data_are_committed():
    try:
        tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    assert not [f for f in tracked.splitlines() if f.endswith((".pdf", ".gz", ".tar"))]
