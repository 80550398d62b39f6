"""The one-page overview: placeholders from results files, and the check that keeps both editions true."""
import json
import shutil

import pytest

from curriculum import cli, overview, registry

ROOT = registry.ROOT


def test_a_placeholder_becomes_the_measured_number_in_its_format():
    measured = {"02-cnn": {"lenet5_held_out_accuracy": 0.99, "n_train": 8000.0}}
    text = "LeNet-5 {{02-cnn:lenet5_held_out_accuracy:.2%}} on {{02-cnn:n_train:,.0f}} images; raw {{02-cnn:n_train}}"
    assert overview.render(text, measured) == "LeNet-5 99.00% on 8,000 images; raw 8000"


def test_a_missing_metric_or_topic_is_an_error_that_names_it():
    with pytest.raises(KeyError, match="02-cnn's results.json has no cpu metric 'bleu'"):
        overview.render("{{02-cnn:bleu:.1f}}", {"02-cnn": {"lenet5_held_out_accuracy": 0.99}})
    with pytest.raises(KeyError, match="no topic '99-nope'"):
        overview.render("{{99-nope:x}}", {"02-cnn": {}})


def test_a_topic_without_results_has_no_metrics():
    measured = overview.metrics(ROOT)
    assert set(measured) == {t.folder for t in registry.topics()}
    assert measured["02-cnn"]["lenet5_held_out_accuracy"] > 0.9


@pytest.fixture
def copy(tmp_path):
    """The overview's inputs and outputs in a temporary tree: topic folders hold only their results.json."""
    for name in (*overview.EDITIONS, *overview.EDITIONS.values(), "papers/facts.toml", "README.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / name, tmp_path / name)
    for t in registry.topics():
        (tmp_path / t.section / t.folder).mkdir(parents=True)
        results = t.path / "results.json"
        if results.exists():
            shutil.copyfile(results, tmp_path / t.section / t.folder / "results.json")
    shutil.copytree(ROOT / "images", tmp_path / "images")
    assert overview.problems(tmp_path) == []
    return tmp_path


def test_the_check_fails_on_a_stale_number(copy):
    path = copy / "01-deep-neural-networks/02-cnn/results.json"
    results = json.loads(path.read_text())
    results["cpu"]["metrics"]["lenet5_held_out_accuracy"] = 0.5
    path.write_text(json.dumps(results))
    assert overview.problems(copy) == [
        f"{name} differs from {template} and the results files now: run `curriculum overview`"
        for name, template in overview.EDITIONS.items()]


def test_the_check_fails_on_a_metric_that_is_gone(copy):
    path = copy / "01-deep-neural-networks/02-cnn/results.json"
    results = json.loads(path.read_text())
    del results["cpu"]["metrics"]["lenet5_held_out_accuracy"]
    path.write_text(json.dumps(results))
    assert "no cpu metric 'lenet5_held_out_accuracy'" in overview.problems(copy)[0]


def test_the_check_fails_on_a_missing_figure(copy):
    (copy / "images/overview-compute.png").unlink()
    found = overview.problems(copy)
    assert "images/overview-compute.png is missing: run `curriculum overview`" in found
    assert "OVERVIEW.md links to images/overview-compute.png, which does not exist" in found


def test_the_check_fails_on_a_broken_link_and_an_unlinked_topic(copy):
    for name, template in overview.EDITIONS.items():
        text = (copy / template).read_text().replace("](01-deep-neural-networks/04-u-net/)", "](01-deep-neural-networks/04-unet/)")
        (copy / template).write_text(text)
        (copy / name).write_text(overview.HEADER.format(template=template) + overview.render(text, overview.metrics(copy)))
    found = overview.problems(copy)
    assert "OVERVIEW.md links to 01-deep-neural-networks/04-unet/, which does not exist" in found
    assert "OVERVIEW.zh-CN.md does not link the topic folder 01-deep-neural-networks/04-u-net/" in found


def test_the_real_overview_is_up_to_date(capsys):
    assert cli.main(["overview", "--check"]) == 0, capsys.readouterr().out
