"""The curriculum command: list topics, run notebooks, fetch papers, prefetch data, write the README table.

examples:
  curriculum list                       topics by section, what exists and the recorded results
  curriculum run 02-cnn [--profile P]   execute a topic's notebook headless into runs/ ('all' for every one)
  curriculum run 02-cnn --in-place      re-execute the committed notebook (maintainers)
  curriculum papers                     download every paper's PDF into its topic folder
  curriculum prefetch mnist cifar10     fill the data cache (for a GPU server without internet)
  curriculum readme [--check]           regenerate (or check) the README's topic table and reading list
  curriculum overview [--check]         write (or check) OVERVIEW.md, OVERVIEW.zh-CN.md and their figures
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from . import registry
from .results import RECORDED_PROFILES, RUNS, load_results, read_json, write_json
from .runtime import PROFILE_VARIABLE, PROFILES, profile

README = registry.ROOT / "README.md"
DATASET_NAMES = ("mnist", "cifar10", "tinyshakespeare", "multi30k", "gutenberg", "text8", "rt_polarity", "oxford_pets")
IMAGES = registry.ROOT / "images"


def _final_text(text: str) -> str:
    """Keep what a terminal would show: each line's text after its last carriage return."""
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


def _coalesce(outputs: list) -> list:
    """Merge consecutive stream outputs of the same stream, as a terminal would show them (progress
    bars redraw with carriage returns: only their final state is kept; blank remains are dropped)."""
    merged: list = []
    for output in outputs:
        if output.get("output_type") == "stream" and merged and merged[-1].get("output_type") == "stream" \
                and merged[-1]["name"] == output["name"]:
            merged[-1]["text"] += output["text"]
        else:
            merged.append(output)
    for output in merged:
        if output.get("output_type") == "stream":
            output["text"] = _final_text(output["text"])
    return [o for o in merged if o.get("output_type") != "stream" or o["text"].strip()]


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# Lines a notebook prints that the terminal repeats: where the data came from and what was measured.
ECHOED = ("[data]", "[results]")


class RunFailed(RuntimeError):
    """A notebook run did not succeed; the message says where and why in plain text."""


def _shown(path: Path) -> str:
    return str(path.relative_to(registry.ROOT)) if registry.ROOT in path.parents else str(path)


def _atomic_write_notebook(nb, target: Path) -> None:
    """Write a notebook through a temporary file beside ``target`` and ``os.replace``."""
    import nbformat

    with tempfile.NamedTemporaryFile("w", dir=target.parent, delete=False, suffix=".tmp", encoding="utf-8") as f:
        nbformat.write(nb, f)
    os.chmod(f.name, 0o644)
    os.replace(f.name, target)


def _failure(index: int, cell, error: Exception, seconds: float, copy: Path) -> str:
    """The failing cell's number, its first lines and the error's last line, as plain text."""
    lines = [line for line in cell.source.splitlines() if line.strip()][:3]
    ename, evalue = getattr(error, "ename", type(error).__name__), getattr(error, "evalue", None)
    if evalue is None:
        evalue = next((line for line in str(error).splitlines() if line.strip()), "")
    reason = ANSI.sub("", f"{ename}: {evalue}").strip()
    source = "\n".join(f"    {line}" for line in lines)
    return (f"cell {index + 1} failed after {seconds:.0f} s:\n{source}\n  {reason}\n"
            f"the executed copy with the full error is at {_shown(copy)}")


def execute(topic: registry.Topic, *, in_place: bool, timeout: int) -> Path:
    """Execute a topic's notebook top to bottom in a fresh kernel, a progress bar over its cells.

    The executed copy goes to ``runs/<folder>/<module>.ipynb``, with the run's results and key figure
    beside it. With ``in_place`` and only once every cell succeeded on real data, the committed
    notebook is replaced atomically and the results and figure are recorded in the source tree;
    a failed run leaves the committed files byte-identical.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    if in_place and profile() not in RECORDED_PROFILES:
        raise ValueError(f"--in-place records a committed notebook, which must come from a cpu or gpu run, "
                         f"not {profile()!r}; add --profile cpu")
    nb = nbformat.read(topic.notebook, as_version=4)
    out = RUNS / topic.folder
    out.mkdir(parents=True, exist_ok=True)
    copy = out / topic.notebook.name
    for stale in (out / "results.json", out / f"{topic.folder}.png"):
        stale.unlink(missing_ok=True)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(topic.path)}})
    client.km = client.create_kernel_manager()
    client.km.transport = "ipc"  # local socket files: no TCP port, no "running over TCP without encryption" warning
    sockets = tempfile.TemporaryDirectory(prefix="curriculum-kernel-")
    client.km.ip = os.path.join(sockets.name, "kernel")  # absolute: the kernel runs in the topic's folder
    failure: str | None = None
    start = time.perf_counter()
    with client.setup_kernel():
        code_cells = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
        bar = tqdm(code_cells, desc=f"{topic.folder} [{profile()}]", unit="cell", file=sys.stdout)
        for index, cell in bar:
            try:
                client.execute_cell(cell, index)
            except (CellExecutionError, CellTimeoutError, DeadKernelError) as e:
                failure = _failure(index, cell, e, time.perf_counter() - start, copy)
                break
            finally:
                cell.outputs = _coalesce(cell.outputs)
                for output in cell.outputs:
                    for line in output.get("text", "").splitlines() if output.get("output_type") == "stream" else []:
                        if line.startswith(ECHOED):
                            bar.write(f"  {line}", file=sys.stdout)
        bar.close()
    sockets.cleanup()
    _atomic_write_notebook(nb, copy)
    seconds = time.perf_counter() - start
    if failure is not None:
        raise RunFailed(f"{topic.folder}: {failure}")
    if in_place:
        _record(topic, nb, out)
    print(f"{topic.folder}: ran in {seconds:.0f} s -> {_shown(topic.notebook if in_place else copy)}")
    return topic.notebook if in_place else copy


def _record(topic: registry.Topic, nb, out: Path) -> None:
    """Put a successful run's notebook, results and key figure into the source tree (``--in-place``)."""
    run = profile()
    produced = out / "results.json"
    entry = read_json(produced).get(run) if produced.exists() else None
    if entry is None:
        raise RunFailed(f"{topic.folder}: the notebook recorded no {run} results (its last cell calls "
                        f"cur.save_results); the committed notebook is unchanged, the run is at {_shown(out)}")
    if entry.get("standin"):
        raise RunFailed(f"{topic.folder}: the run used STAND-IN data for {', '.join(entry['standin'])}; "
                        f"the committed notebook and results.json are unchanged. Put the real data on "
                        f"$CURRICULUM_DATA or run `curriculum prefetch` online. The run is at {_shown(out)}")
    _atomic_write_notebook(nb, topic.notebook)
    recorded = topic.path / "results.json"
    results = read_json(recorded) if recorded.exists() else {}
    results[run] = entry
    write_json(topic.path / "results.json", results)
    figure = out / f"{topic.folder}.png"
    if figure.exists():
        IMAGES.mkdir(exist_ok=True)
        shutil.copyfile(figure, IMAGES / figure.name)


def table() -> str:
    """The README's topic table, from the registry and each topic's results.json."""
    papers: dict[str, list[registry.Paper]] = {}
    for p in registry.papers():
        papers.setdefault(p.topic, []).append(p)
    lines = ["| # | topic | paper(s) | notebook | implementation | headline result |",
             "|---|---|---|---|---|---|"]
    for t in registry.topics():
        number = f"{t.section[:2]}.{t.folder[:2]}"
        cites = "; ".join(f"[{p.authors.split(',')[0].split()[-1]} {p.year}]({p.url})" for p in papers.get(t.folder, []))
        if t.implemented:
            rel = f"{t.section}/{t.folder}"
            notebook = f"[{t.module}.ipynb]({rel}/{t.module}.ipynb)"
            module = f"[{t.module}.py]({rel}/{t.module}.py)"
            results = load_results(t.folder)
            best = next((p for p in ("gpu", "cpu") if p in results), None)
            headline = f"{results[best]['headline']} (`{best}`{_minutes(results[best])})" if best else "not yet recorded"
            title = f"[{t.title}]({rel}/README.md)"
        else:
            notebook = module = "planned"
            headline = ""
            title = t.title
        lines.append(f"| {number} | {title} | {cites} | {notebook} | {module} | {headline} |")
    return "\n".join(lines)


def _minutes(entry: dict) -> str:
    """The notebook's recorded wall time, as the table shows it (absent for notebooks run before it was kept)."""
    seconds = entry["metrics"].get("notebook_seconds")
    return "" if seconds is None else f", {seconds / 60:.1f} min"


def generated_sections() -> dict[str, str]:
    """The README's generated parts, each between ``<!-- name:start -->`` and ``<!-- name:end -->``."""
    from .papers import reading_list

    return {"topics": table(), "papers": reading_list().strip()}


def readme(check: bool) -> int:
    text = updated = README.read_text()
    for name, content in generated_sections().items():
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
        if not pattern.search(updated):
            raise ValueError(f"{README} lacks the markers {start} ... {end}")
        updated = pattern.sub(lambda _: f"{start}\n{content}\n{end}", updated)
    if check:
        from .overview import check as check_overview

        if updated != text:
            print("README.md's generated topic table or reading list is out of date: run `curriculum readme`")
            return 1 | check_overview()
        print("README.md's topic table and reading list are up to date")
        return check_overview()
    README.write_text(updated)
    print("README.md's topic table and reading list written")
    return 0


def list_topics() -> None:
    """One line a topic under its section's heading; a bad results file marks its topic and the list goes on."""
    section = None
    print(f"{'topic':26} {'module':13} {'status':12} recorded results")
    for t in registry.topics():
        if t.section != section:
            section = t.section
            print(f"\n{section}")
        status = "implemented" if t.implemented else "planned"
        try:
            results = load_results(t.folder) if t.implemented else {}
            recorded = "; ".join(f"{p}: {r['headline']}" for p, r in sorted(results.items()))
        except ValueError as e:
            recorded = f"UNREADABLE RESULTS: {e}"
        print(f"{t.folder:26} {t.module:13} {status:12} {recorded}".rstrip())


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    description, examples = __doc__.split("\n", 1)
    parser = argparse.ArgumentParser(prog="curriculum", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=examples.strip())
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the topics and their status")
    run = sub.add_parser("run", help="execute topic notebooks headless")
    run.add_argument("topics", nargs="+", help="topic folder or module names, or 'all'")
    run.add_argument("--profile", choices=PROFILES, help=f"run profile (default: ${PROFILE_VARIABLE}, else by device)")
    run.add_argument("--in-place", action="store_true", help="replace the committed notebook and its results, only if every cell succeeds on real data")
    run.add_argument("--timeout", type=positive_int, default=1800, help="seconds allowed per cell (default 1800)")
    papers = sub.add_parser("papers", help="download the papers' PDFs into their topic folders")
    papers.add_argument("--timeout", type=float, default=30.0, help="seconds per download attempt")
    prefetch = sub.add_parser("prefetch", help="download datasets into the cache")
    prefetch.add_argument("datasets", nargs="+", help="any of: " + ", ".join(DATASET_NAMES))
    readme_cmd = sub.add_parser("readme", help="regenerate the README's topic table and reading list")
    readme_cmd.add_argument("--check", action="store_true", help="only check that the table is up to date")
    overview_cmd = sub.add_parser("overview", help="write OVERVIEW.md, OVERVIEW.zh-CN.md and images/overview-*.png")
    overview_cmd.add_argument("--check", action="store_true", help="only check that they are up to date")
    args = parser.parse_args(argv)

    try:
        if args.command == "list":
            list_topics()
        elif args.command == "run":
            if args.profile:
                os.environ[PROFILE_VARIABLE] = args.profile  # inherited by the notebook's kernel
            profile()  # an unknown name in the environment fails here, before any kernel starts
            chosen = [t for t in registry.topics() if t.implemented] if args.topics == ["all"] else \
                [registry.topic(name) for name in args.topics]
            for t in chosen:
                if not t.notebook.exists():
                    raise FileNotFoundError(f"topic {t.folder} has no notebook yet ({t.notebook})")
            failed = []
            for t in chosen:
                try:
                    execute(t, in_place=args.in_place, timeout=args.timeout)
                except RunFailed as e:
                    print(e)
                    failed.append(t.folder)
            if failed:
                print(f"failed: {', '.join(failed)}")
                return 1
        elif args.command == "papers":
            from .papers import fetch

            results = fetch(timeout=args.timeout)
            return 1 if any(r.status == "failed" for r in results) else 0
        elif args.command == "prefetch":
            from .data import prefetch as prefetch_dataset

            unknown = [name for name in args.datasets if name not in DATASET_NAMES]
            if unknown:
                raise KeyError(f"unknown dataset {unknown[0]!r}; choose from: {', '.join(DATASET_NAMES)}")
            failures = 0
            for name in args.datasets:
                ok, what = prefetch_dataset(name)
                failures += not ok
                print(f"{name:16} {what}")
            return 1 if failures else 0
        elif args.command == "readme":
            return readme(args.check)
        elif args.command == "overview":
            from . import overview

            if args.check:
                return overview.check()
            overview.write()
    except (KeyError, ValueError, FileNotFoundError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"curriculum: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
