"""Parity of our LSTM and LSTMCell with nn.LSTM and nn.LSTMCell in float64, the 1997 cell
(forget_gate=False), the pinned-forget-gate fast path, and the task generators.

Tolerances: rtol=1e-10, atol=1e-12 (float64 rounding of different summation orders).
"""
import pytest
import torch
import torch.nn as nn

from curriculum import load_topic

lstm = load_topic("lstm")
TOL = {"rtol": 1e-10, "atol": 1e-12}
F64 = torch.float64


def grads(outputs, inputs, seed=1):
    """Gradients of a random weighted sum of ``outputs`` with respect to ``inputs`` (None for unused)."""
    g = torch.Generator().manual_seed(seed)
    total = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outputs)
    return torch.autograd.grad(total, inputs, allow_unused=True)


@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("with_state", [True, False])
def test_lstm_values_and_gradients_match_pytorch(num_layers, bias, batch_first, with_state):
    torch.manual_seed(0)
    theirs = nn.LSTM(4, 6, num_layers, bias=bias, batch_first=batch_first, dtype=F64)
    ours = lstm.LSTM(4, 6, num_layers, bias=bias, batch_first=batch_first, dtype=F64)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn((3, 9, 4) if batch_first else (9, 3, 4), dtype=F64, requires_grad=True)
    hx = tuple(torch.randn(num_layers, 3, 6, dtype=F64, requires_grad=True) for _ in range(2)) if with_state else None
    out_o, (h_o, c_o) = ours(x, hx)
    out_t, (h_t, c_t) = theirs(x, hx)
    for a, b in ((out_o, out_t), (h_o, h_t), (c_o, c_t)):
        torch.testing.assert_close(a, b, **TOL)
    wrt = [x, *(hx or ())]
    g_o = grads((out_o, h_o, c_o), wrt + list(ours.parameters()))
    g_t = grads((out_t, h_t, c_t), wrt + list(theirs.parameters()))
    for a, b in zip(g_o, g_t, strict=True):
        torch.testing.assert_close(a, b, **TOL)


def test_unbatched_input_matches_pytorch():
    torch.manual_seed(0)
    theirs, ours = nn.LSTM(4, 5, 2, dtype=F64), lstm.LSTM(4, 5, 2, dtype=F64)
    ours.load_state_dict(theirs.state_dict())
    x, hx = torch.randn(7, 4, dtype=F64), (torch.randn(2, 5, dtype=F64), torch.randn(2, 5, dtype=F64))
    for a, b in zip(ours(x, hx)[0:1] + ours(x, hx)[1], theirs(x, hx)[0:1] + theirs(x, hx)[1]):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("bias", [True, False])
def test_cell_values_and_gradients_match_pytorch(bias):
    torch.manual_seed(0)
    theirs, ours = nn.LSTMCell(4, 6, bias=bias, dtype=F64), lstm.LSTMCell(4, 6, bias=bias, dtype=F64)
    ours.load_state_dict(theirs.state_dict())
    for batch in ((5,), ()):
        x = torch.randn(*batch, 4, dtype=F64, requires_grad=True)
        hx = tuple(torch.randn(*batch, 6, dtype=F64, requires_grad=True) for _ in range(2))
        for state in (hx, None):
            out_o, out_t = ours(x, state), theirs(x, state)
            for a, b in zip(out_o, out_t, strict=True):
                torch.testing.assert_close(a, b, **TOL)
            wrt = [x, *(state or ())]
            for a, b in zip(grads(out_o, wrt + list(ours.parameters())), grads(out_t, wrt + list(theirs.parameters()))):
                torch.testing.assert_close(a, b, **TOL)


def test_parameters_and_state_dicts_mirror_pytorch_both_ways():
    for forget_gate in (True, False):
        theirs = nn.LSTM(3, 5, 2)
        ours = lstm.LSTM(3, 5, 2, forget_gate=forget_gate)
        assert [(n, p.shape) for n, p in ours.named_parameters()] == [(n, p.shape) for n, p in theirs.named_parameters()]
        ours.load_state_dict(theirs.state_dict())
        back = nn.LSTM(3, 5, 2)
        back.load_state_dict(ours.state_dict())
        assert all(torch.equal(a, b) for a, b in zip(back.parameters(), theirs.parameters()))
    cell, ours_cell = nn.LSTMCell(3, 5), lstm.LSTMCell(3, 5)
    ours_cell.load_state_dict(cell.state_dict())
    nn.LSTMCell(3, 5).load_state_dict(ours_cell.state_dict())


def test_default_init_matches_pytorch_range():
    ours = lstm.LSTM(3, 16, 2)
    assert all(p.abs().max() <= 1 / 4 for p in ours.parameters())
    assert all(p.std() > 0.1 for p in ours.parameters())


def test_1997_cell_is_the_constant_error_carousel():
    torch.manual_seed(0)
    cell = lstm.LSTMCell(3, 4, dtype=F64, forget_gate=False)
    x, h, c = torch.randn(6, 3, dtype=F64), torch.randn(6, 4, dtype=F64), torch.randn(6, 4, dtype=F64)
    gates = x @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh
    i, _, g, o = gates.chunk(4, 1)
    c_next = c + torch.sigmoid(i) * torch.tanh(g)
    h_new, c_new = cell(x, (h, c))
    torch.testing.assert_close(c_new, c_next, **TOL)
    torch.testing.assert_close(h_new, torch.sigmoid(o) * torch.tanh(c_next), **TOL)
    # with the input gate shut (bias -inf-like), the state is carried exactly: dc'/dc = 1
    with torch.no_grad():
        cell.bias_ih[:4] = -1e4
    assert torch.equal(cell(x, (h, c))[1], c)


def test_1997_cell_ignores_forget_rows_and_equals_pinned_pytorch_lstm():
    torch.manual_seed(0)
    ours = lstm.LSTM(3, 5, 2, batch_first=True, forget_gate=False, dtype=F64)
    x = torch.randn(2, 8, 3, dtype=F64)
    out = ours(x)[0]
    out.sum().backward()
    for name, p in ours.named_parameters():
        assert p.grad[5:10].abs().max() == 0, name  # forget rows unused
    with torch.no_grad():
        ours.weight_hh_l1[5:10] = 7.0
    assert torch.equal(ours(x)[0], out)
    pinned = lstm.pin_forget_gate(nn.LSTM(3, 5, 2, batch_first=True, dtype=F64))
    ours.load_state_dict(pinned.state_dict())
    torch.testing.assert_close(ours(x)[0], pinned(x)[0], rtol=1e-9, atol=1e-9)  # sigmoid(30) = 1 - 1e-13 in float64


def test_pinned_forget_gate_stays_pinned_under_training():
    torch.manual_seed(0)
    net = lstm.pin_forget_gate(nn.LSTM(2, 4, batch_first=True))
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(3, 6, 2))[0].pow(2).sum().backward()
        opt.step()
    assert torch.all(net.weight_ih_l0[4:8] == 0) and torch.all(net.weight_hh_l0[4:8] == 0)
    assert torch.all(net.bias_ih_l0[4:8] == 30) and torch.all(torch.sigmoid(net.bias_ih_l0[4:8]) == 1)
    assert torch.any(net.weight_hh_l0[:4] != 0)


def test_set_gate_bias():
    net = lstm.set_gate_bias(lstm.LSTM(2, 3, 2), "i", -3.0)
    for k in range(2):
        assert torch.all(getattr(net, f"bias_ih_l{k}")[:3] == -3) and torch.all(getattr(net, f"bias_hh_l{k}")[:3] == 0)
    with pytest.raises(ValueError, match="gate must be one of"):
        lstm.set_gate_bias(net, "z", 1.0)


def test_dropout_between_layers():
    torch.manual_seed(0)
    theirs, ours = nn.LSTM(3, 4, 2, dropout=0.5), lstm.LSTM(3, 4, 2, dropout=0.5)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(5, 2, 3)
    ours.eval(), theirs.eval()
    torch.testing.assert_close(ours(x)[0], theirs(x)[0], rtol=1e-5, atol=1e-6)
    ours.train()
    assert not torch.allclose(ours(x)[0], theirs(x)[0])


def test_bad_inputs_raise_clear_errors():
    net = lstm.LSTM(3, 4, 2, batch_first=True)
    with pytest.raises(ValueError, match=r"expects input of shape"):
        net(torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match=r"h_0 and c_0 of shape \(2, 2, 4\)"):
        net(torch.randn(2, 5, 3), (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)))
    with pytest.raises(ValueError, match="unidirectional"):
        lstm.LSTM(3, 4, bidirectional=True)
    with pytest.raises(ValueError, match="num_layers >= 1"):
        lstm.LSTM(3, 4, num_layers=0)
    with pytest.raises(ValueError, match=r"LSTMCell expects input"):
        lstm.LSTMCell(3, 4)(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"h and c of shape \(2, 4\)"):
        lstm.LSTMCell(3, 4)(torch.randn(2, 3), (torch.zeros(2, 5), torch.zeros(2, 5)))


def test_adding_problem_is_the_papers_version():
    x, y, lengths = lstm.adding_problem(4000, 100, torch.Generator().manual_seed(0))
    assert x.shape == (4000, 110, 2) and lengths.min() >= 100 and lengths.max() <= 110
    values, markers = x[..., 0], x[..., 1]
    assert torch.all((markers == 1).sum(1) == 2)
    assert torch.all((markers == 1)[:, 10:].sum(1) <= 1) and torch.all((markers == 1)[:, :10].sum(1) >= 1)
    assert torch.all((markers == 1)[:, 49:].sum(1) == 0)
    assert torch.all(markers[torch.arange(4000), lengths - 1] == -1)
    torch.testing.assert_close(y, 0.5 + (values * (markers == 1)).sum(1) / 4)
    assert torch.all(values.abs() <= 1) and torch.all(x[torch.arange(110) >= lengths[:, None]] == 0)
    assert 0.12 < ((y - 0.5).abs() < 0.04).float().mean() < 0.19  # the constant 0.5 predictor
    with pytest.raises(ValueError, match="T >= 20"):
        lstm.adding_problem(3, 10)


def accepted_by_reber(inner: str) -> bool:
    state = 0
    for symbol in inner:
        nexts = dict(lstm.REBER_GRAPH.get(state, []))
        if symbol not in nexts:
            return False
        state = nexts[symbol]
    return state == -1


def test_embedded_reber_strings_and_targets():
    g = torch.Generator().manual_seed(0)
    strings = [lstm.embedded_reber(g) for _ in range(300)]
    for text, allowed in strings:
        assert text[0] == "B" and text[-1] == "E" and text[1] == text[-2] and text[1] in "TP"
        assert accepted_by_reber(text[2:-2]) and len(allowed) == len(text) - 1
        assert all(nxt in a for nxt, a in zip(text[1:], allowed))
        assert allowed[-2] == text[1]  # the long-lag prediction: only the matching outer symbol
    assert {s[1] for s, _ in strings} == {"T", "P"}
    x, y, mask = lstm.encode_reber(strings[:5])
    assert x.shape == y.shape == (5, max(len(s) for s, _ in strings[:5]) - 1, 7)
    assert mask.sum().item() == sum(len(s) - 1 for s, _ in strings[:5])
    assert torch.all(x.sum(-1)[mask] == 1)


def test_continual_reber_stream():
    g = torch.Generator().manual_seed(0)
    strings = [lstm.embedded_reber(g) for _ in range(20)]
    x, y, ends = lstm.encode_reber(strings, continual=True)
    text = "".join(s for s, _ in strings)
    assert x.shape == y.shape == (len(text), 7) and len(ends) == 20
    assert all(text[e] == "E" for e in ends.tolist())
    assert torch.all(y[ends] == torch.eye(7)[0])  # after every E comes the next string's B
    assert torch.all(x[ends[:-1] + 1] == torch.eye(7)[0])
