"""The ``curriculum`` command: list topics, run notebooks, fetch papers, prefetch data, write the README table.

    curriculum list                       topics, with what exists and the recorded results
    curriculum run 02-cnn [--profile P]   execute a topic's notebook headless (``all`` for every one)
    curriculum papers                     download every paper's PDF into its topic folder
    curriculum prefetch mnist cifar10     fill the data cache (for a GPU server without internet)
    curriculum readme [--check]           regenerate (or check) the README's topic table and reading list
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

from tqdm import tqdm

from . import registry
from .results import load_results
from .runtime import PROFILE_VARIABLE, PROFILES, profile

README = registry.ROOT / "README.md"
RUNS = registry.ROOT / "runs"


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


def execute(topic: registry.Topic, *, in_place: bool, timeout: int) -> Path:
    """Execute a topic's notebook top to bottom in a fresh kernel, a progress bar over its cells.

    Writes the executed copy to ``runs/<folder>/<module>.ipynb`` (or over the committed notebook
    with ``in_place``), also when a cell fails, so the error can be read in place.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = nbformat.read(topic.notebook, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(topic.path)}})
    target = topic.notebook if in_place else RUNS / topic.folder / topic.notebook.name
    target.parent.mkdir(parents=True, exist_ok=True)
    error: Exception | None = None
    start = time.perf_counter()
    with client.setup_kernel():
        code_cells = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
        for index, cell in tqdm(code_cells, desc=f"{topic.folder} [{profile()}]", unit="cell"):
            try:
                client.execute_cell(cell, index)
            except (CellExecutionError, CellTimeoutError, DeadKernelError) as e:
                error = e
                break
            cell.outputs = _coalesce(cell.outputs)
    nbformat.write(nb, target)
    seconds = time.perf_counter() - start
    if error is not None:
        raise RuntimeError(f"{topic.notebook.name} failed after {seconds:.0f} s; the executed notebook with the "
                           f"error is at {target}\n{error}")
    print(f"{topic.folder}: ran in {seconds:.0f} s -> {target}")
    return target


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
            headline = f"{results[best]['headline']} (`{best}`)" if best else "not yet recorded"
            title = f"[{t.title}]({rel}/README.md)"
        else:
            notebook = module = "planned"
            headline = ""
            title = t.title
        lines.append(f"| {number} | {title} | {cites} | {notebook} | {module} | {headline} |")
    return "\n".join(lines)


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
        if updated != text:
            print("README.md's generated topic table or reading list is out of date: run `curriculum readme`")
            return 1
        print("README.md's topic table and reading list are up to date")
        return 0
    README.write_text(updated)
    print("README.md's topic table and reading list written")
    return 0


def list_topics() -> None:
    for t in registry.topics():
        results = load_results(t.folder) if t.implemented else {}
        status = "implemented" if t.implemented else "planned"
        recorded = "; ".join(f"{p}: {r['headline']}" for p, r in sorted(results.items()))
        print(f"{t.folder:26} {t.module:13} {status:12} {recorded}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="curriculum", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the topics and their status")
    run = sub.add_parser("run", help="execute topic notebooks headless")
    run.add_argument("topics", nargs="+", help="topic folder or module names, or 'all'")
    run.add_argument("--profile", choices=PROFILES, help=f"run profile (default: ${PROFILE_VARIABLE}, else by device)")
    run.add_argument("--in-place", action="store_true", help="overwrite the committed notebook with the executed one")
    run.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell (default 1800)")
    papers = sub.add_parser("papers", help="download the papers' PDFs into their topic folders")
    papers.add_argument("--timeout", type=float, default=30.0, help="seconds per download attempt")
    prefetch = sub.add_parser("prefetch", help="download datasets into the cache")
    prefetch.add_argument("datasets", nargs="+", help="mnist, cifar10, tinyshakespeare, multi30k, oxford_pets")
    readme_cmd = sub.add_parser("readme", help="regenerate the README's topic table and reading list")
    readme_cmd.add_argument("--check", action="store_true", help="only check that the table is up to date")
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
                except RuntimeError as e:
                    print(e, file=sys.stderr)
                    failed.append(t.folder)
            if failed:
                print(f"failed: {', '.join(failed)}", file=sys.stderr)
                return 1
        elif args.command == "papers":
            from .papers import fetch

            results = fetch(timeout=args.timeout)
            return 1 if any(r.status == "failed" for r in results) else 0
        elif args.command == "prefetch":
            from .data import prefetch as prefetch_dataset

            for name in args.datasets:
                prefetch_dataset(name)
        elif args.command == "readme":
            return readme(args.check)
    except (KeyError, ValueError, FileNotFoundError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"curriculum: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
