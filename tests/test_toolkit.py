"""The toolkit: run profiles, device, seeding, the training loop, plots, results files, topic import."""
import json
import math

import matplotlib
import pytest
import torch

import curriculum as cur
from curriculum import registry, results, runtime

matplotlib.use("Agg")


def test_profile_defaults_to_the_device(monkeypatch):
    monkeypatch.delenv(runtime.PROFILE_VARIABLE, raising=False)
    assert cur.profile() == ("gpu" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("name", runtime.PROFILES)
def test_profile_and_choose(monkeypatch, name):
    monkeypatch.setenv(runtime.PROFILE_VARIABLE, name.upper())
    assert cur.profile() == name
    assert cur.choose(smoke=1, cpu=2, gpu=3) == {"smoke": 1, "cpu": 2, "gpu": 3}[name]


def test_unknown_profile_lists_the_valid_ones(monkeypatch):
    monkeypatch.setenv(runtime.PROFILE_VARIABLE, "fast")
    with pytest.raises(ValueError, match="unknown run profile 'fast'.*smoke, cpu, gpu"):
        cur.profile()


def test_device_and_seeding(capsys):
    assert cur.device().type in ("cuda", "mps", "cpu")
    a = (cur.seed_everything(7), torch.rand(3))
    b = (cur.seed_everything(7), torch.rand(3))
    assert torch.equal(a[1], b[1]) and torch.equal(torch.rand(2, generator=a[0]), torch.rand(2, generator=b[0]))
    cur.setup("01-dnn", seed=3)
    assert "topic 01-dnn | profile" in capsys.readouterr().out


def test_batches_cover_every_example_once():
    x, y = torch.arange(10).float(), torch.arange(10)
    seen = torch.cat([yb for _, yb in cur.batches(x, y, batch_size=3, generator=torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == list(range(10))
    assert [len(b[0]) for b in cur.batches(x, y, batch_size=4, shuffle=False)] == [4, 4, 2]


def test_fit_learns_and_records_history():
    torch.manual_seed(0)
    x = torch.randn(256, 2)
    y = (x[:, 0] > x[:, 1]).long()
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)

    def step(batch):
        xb, yb = batch
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss, "batch_accuracy": (model(xb).argmax(1) == yb).float().mean()}

    history = cur.fit(step, cur.batches(x, y, batch_size=32), epochs=5,
                      evaluate=lambda: {"accuracy": cur.accuracy(model, x, y)})
    assert len(history.steps["loss"]) == 40 and len(history.epochs["accuracy"]) == 5
    assert history.last("accuracy") > 0.9 and history.epochs["loss"][-1] < history.epochs["loss"][0]
    assert history.seconds > 0 and model.training  # accuracy() restores training mode
    with pytest.raises(KeyError, match="recorded"):
        history.last("nothing")


def test_fit_stops_at_max_steps():
    history = cur.fit(lambda b: 1.0, [0] * 100, epochs=3, max_steps=7)
    assert len(history.steps["loss"]) == 7


def test_fit_evaluates_every_eval_every_steps_across_passes():
    calls = []
    history = cur.fit(lambda b: float(b), list(range(4)), epochs=5, max_steps=18, eval_every=6,
                      evaluate=lambda: calls.append(1) or {"calls": len(calls)})
    assert len(history.steps["loss"]) == 18 and history.epochs["calls"] == [1, 2, 3]
    assert history.epochs["loss"] == [(0 + 1 + 2 + 3 + 0 + 1) / 6,
                                      (2 + 3 + 0 + 1 + 2 + 3) / 6, (0 + 1 + 2 + 3 + 0 + 1) / 6]
    with pytest.raises(ValueError, match="eval_every must be a positive"):
        cur.fit(lambda b: 1.0, [0], eval_every=0)


def test_fit_takes_batches_not_a_function_returning_them():
    with pytest.raises(TypeError, match="takes the batches themselves"):
        cur.fit(lambda b: 1.0, lambda: [0, 1])


def test_fit_names_the_step_where_the_loss_diverged():
    losses = iter([1.0, 2.0, math.inf, 1.0])
    with pytest.raises(cur.DivergedError, match="loss became inf at step 2 .*lower the learning rate"):
        cur.fit(lambda b: next(losses), range(4))
    with pytest.raises(cur.DivergedError, match="nan at step 0"):
        cur.fit(lambda b: torch.tensor(float("nan")), range(4))


def test_plots_return_figures():
    ax = cur.plot_curves({"a": [3, 2, 1], "b": [1, 2, 3]}, window=2, logy=True, title="t")
    assert len(ax.get_lines()) == 2
    fig = cur.show_images(torch.rand(5, 1, 8, 8), nrow=3, titles=list("abcde"))
    assert len(fig.axes) == 6
    assert cur.plots.smooth([1, 2, 3, 4], 2) == [1, 1.5, 2.5, 3.5]


def test_results_go_to_runs_with_the_notebook_time(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(results, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(results.data_module, "_standins", [])
    monkeypatch.setenv(runtime.PROFILE_VARIABLE, "smoke")
    cur.setup("01-dnn")
    cur.save_results("01-dnn", "smoke result", {"acc": 0.5})
    assert not (tmp_path / "runs").exists() and "[results] smoke: smoke result" in capsys.readouterr().out
    monkeypatch.setenv(runtime.PROFILE_VARIABLE, "cpu")
    cur.save_results("01-dnn", "97% held-out", {"acc": 0.97})
    printed = capsys.readouterr().out
    saved = json.loads((tmp_path / "runs" / "01-dnn" / "results.json").read_text())["cpu"]
    assert saved["headline"] == "97% held-out" and saved["metrics"]["acc"] == 0.97
    assert 0 <= saved["metrics"]["notebook_seconds"] < 60 and "standin" not in saved
    assert "[results] cpu: 97% held-out" in printed
    assert json.loads(printed.split("[metrics] ")[1].splitlines()[0]) == saved["metrics"]


def test_a_run_on_stand_in_data_is_marked(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(results, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(results.data_module, "_standins", ["mnist"])
    monkeypatch.setenv(runtime.PROFILE_VARIABLE, "cpu")
    cur.save_results("01-dnn", "99%", {"acc": 0.99})
    assert "STAND-IN" in capsys.readouterr().out
    assert json.loads((tmp_path / "runs" / "01-dnn" / "results.json").read_text())["cpu"]["standin"] == ["mnist"]


@pytest.mark.parametrize("content, problem", [("{not json", "not valid JSON"), ("[]", "must map profiles"),
                                              ('{"cpu": {}}', "lacks headline and metrics"),
                                              ('{"cpu": {"headline": "x"}}', "lacks metrics"),
                                              ('{"smoke": {"headline": "x", "metrics": {"a": 1}}}', "unknown profile")])
def test_bad_results_files_name_the_file_and_the_problem(tmp_path, monkeypatch, content, problem):
    path = tmp_path / "results.json"
    path.write_text(content)
    monkeypatch.setattr(results, "results_file", lambda name: path)
    with pytest.raises(ValueError, match=f"{path}.*{problem}|{path} {problem}"):
        cur.load_results("01-dnn")


def test_save_figure_writes_under_runs(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    monkeypatch.setattr(results, "RUNS", tmp_path / "runs")
    fig, _ = plt.subplots()
    monkeypatch.setenv(runtime.PROFILE_VARIABLE, "smoke")
    cur.save_figure(fig, "02-cnn")
    assert not (tmp_path / "runs").exists()
    monkeypatch.setenv(runtime.PROFILE_VARIABLE, "cpu")
    cur.save_figure(fig, "02-cnn")
    assert (tmp_path / "runs" / "02-cnn" / "02-cnn.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("size", [0, -3, 2.5])
def test_batches_need_a_positive_size(size):
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        cur.batches(torch.zeros(4), batch_size=size)


def test_fit_rejects_empty_data_and_steps_without_a_loss():
    with pytest.raises(ValueError, match="no batches"):
        cur.fit(lambda b: 1.0, [])
    with pytest.raises(TypeError, match="'loss' entry"):
        cur.fit(lambda b: {"accuracy": 1.0}, [0])
    with pytest.raises(TypeError, match="'loss' entry"):
        cur.fit(lambda b: None, [0])


def test_accuracy_rejects_empty_input():
    with pytest.raises(ValueError, match="at least one"):
        cur.accuracy(torch.nn.Linear(2, 2), torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))


def test_registry_lookup():
    assert registry.topic("cnn") == registry.topic("02-cnn") == registry.topic("01-deep-neural-networks/02-cnn/")
    with pytest.raises(KeyError, match="unknown topic 'lenet'"):
        registry.topic("lenet")


def test_load_topic_imports_by_name_once():
    dnn = cur.load_topic("dnn")
    assert cur.load_topic("01-dnn") is dnn and hasattr(dnn, "MLP")


def test_fit_reads_the_loss_back_every_10_steps_not_every_step():
    """On a GPU, reading a loss forces a synchronisation: fit reads the pending ones every 10 steps."""
    taken, read_at = [0], set()

    class DeviceLoss:  # stands in for a loss still on the device
        def __float__(self):
            read_at.add(taken[0])
            return 1.0

    def step(_):
        taken[0] += 1
        return DeviceLoss()

    history = cur.fit(step, list(range(25)))
    assert read_at == {10, 20, 25} and len(history.steps["loss"]) == 25
