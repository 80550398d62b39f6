"""The forget gate (Gers, Schmidhuber & Cummins 2000): parity of the forget-gate cell with nn.LSTMCell
(float64), a forget gate fixed at one is exactly the 1997 cell, the gate probe, the endless streams,
truncated BPTT across chunks and the per-string scores.

Tolerances: rtol=1e-10, atol=1e-12 where summation orders differ; exact equality where they do not.
"""
import torch
import torch.nn as nn

from curriculum import load_topic

fg = load_topic("forget_gate")
lstm = load_topic("lstm")
F64 = torch.float64
TOL = {"rtol": 1e-10, "atol": 1e-12}


def test_forget_gate_cell_matches_nn_lstmcell():
    torch.manual_seed(0)
    theirs, ours = nn.LSTMCell(5, 6, dtype=F64), lstm.LSTMCell(5, 6, dtype=F64)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(4, 5, dtype=F64)
    hx = tuple(torch.randn(4, 6, dtype=F64) for _ in range(2))
    outs = [net(x, hx) for net in (ours, theirs)]
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, **TOL)
    grads = [torch.autograd.grad(sum((o * w).sum() for o, w in zip(out, (1.0, -0.5))), list(net.parameters()))
             for out, net in zip(outs, (ours, theirs))]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, **TOL)
    assert grads[0][1][6:12].abs().max() > 0  # the forget rows learn in this cell


def test_forget_gate_fixed_at_one_is_exactly_the_1997_cell():
    torch.manual_seed(0)
    with_gate = lstm.LSTM(5, 6, 2, batch_first=True, dtype=F64)
    with torch.no_grad():
        for k in range(2):
            getattr(with_gate, f"weight_ih_l{k}")[6:12] = 0
            getattr(with_gate, f"weight_hh_l{k}")[6:12] = 0
    lstm.set_gate_bias(with_gate, "f", 40.0)  # sigmoid(40) == 1.0 exactly in float64
    old = lstm.LSTM(5, 6, 2, batch_first=True, forget_gate=False, dtype=F64)
    old.load_state_dict(with_gate.state_dict())
    x = torch.randn(3, 25, 5, dtype=F64, requires_grad=True)
    (out_a, (h_a, c_a)), (out_b, (h_b, c_b)) = with_gate(x), old(x)
    assert torch.equal(out_a, out_b) and torch.equal(h_a, h_b) and torch.equal(c_a, c_b)
    g_a = torch.autograd.grad(out_a.sum() + c_a.sum(), [x, *with_gate.parameters()])
    g_b = torch.autograd.grad(out_b.sum() + c_b.sum(), [x, *old.parameters()])
    for a, b in zip(g_a, g_b):
        assert torch.equal(a, b)


def test_probe_records_the_same_states_as_the_layer():
    torch.manual_seed(0)
    for forget_gate in (True, False):
        net = lstm.LSTM(7, 8, forget_gate=forget_gate, dtype=F64)
        x = torch.randn(30, 7, dtype=F64)
        out, (h_n, c_n) = net(x)
        rec = fg.probe(net, x)
        torch.testing.assert_close(rec["h"], out, **TOL)
        torch.testing.assert_close(rec["c"][-1], c_n[0], **TOL)
        assert torch.all((rec["f"] > 0) & (rec["f"] <= 1)) and torch.all(rec["f"] == 1) != forget_gate
    builtin = nn.LSTM(7, 8, dtype=F64)
    torch.testing.assert_close(fg.probe(builtin, x)["h"], builtin(x)[0], **TOL)


def test_streams_are_continual_and_valid():
    streams = fg.ReberStreams(3, torch.Generator().manual_seed(0))
    chunks = [streams.next(k) for k in (5, 40, 1, 17)]
    x = torch.cat([c[0] for c in chunks], 1)
    y = torch.cat([c[1] for c in chunks], 1)
    assert x.shape == y.shape == (3, 63, 7) and torch.all(x.sum(-1) == 1)
    assert torch.all((y[:, :-1] * x[:, 1:]).sum(-1) == 1)  # every next symbol was allowed: no gaps, no resets
    assert torch.all(x[:, 0, 0] == 1)  # each stream starts with B
    assert (x[:, 1:, 0] == 1).sum() > 3  # and strings follow each other


def test_truncated_bptt_carries_the_state():
    torch.manual_seed(0)
    for forget_gate in (True, False):
        model = fg.StreamPredictor(6, forget_gate=forget_gate)
        losses = fg.train_continual(model, 4, batch=2, chunk=9, lr=1e-2, generator=torch.Generator().manual_seed(0))
        assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    pinned = fg.StreamPredictor(6, forget_gate=False).lstm
    assert torch.all(torch.sigmoid(pinned.bias_ih_l0[6:12] + pinned.bias_hh_l0[6:12]) == 1)
    ours = fg.StreamPredictor(6, forget_gate=False, fast=False)
    assert isinstance(ours.lstm, lstm.LSTM) and not ours.lstm.forget_gate


class Oracle(nn.Module):
    def __init__(self, y: torch.Tensor, sign: float):
        super().__init__()
        self.logits = sign * (y * 2 - 1) * 10

    def forward(self, x, state=None):
        return self.logits[None], state


def test_stream_scores():
    x, y, ends = lstm.encode_reber([lstm.embedded_reber(torch.Generator().manual_seed(k)) for k in range(20)],
                                   continual=True)
    assert fg.stream_scores(Oracle(y, 1.0), x, y, ends) == {"outer": 1.0, "strings": 1.0}
    assert fg.stream_scores(Oracle(y, -1.0), x, y, ends) == {"outer": 0.0, "strings": 0.0}
    wrong_outer = y.clone()
    wrong_outer[ends[:10] - 2] = wrong_outer[ends[:10] - 2].flip(-1)  # spoil the long-lag step of 10 strings
    assert fg.stream_scores(Oracle(wrong_outer, 1.0), x, y, ends) == {"outer": 0.5, "strings": 0.5}
    model = fg.StreamPredictor(5)
    scores = fg.stream_scores(model, x, y, ends)
    assert 0 <= scores["strings"] <= scores["outer"] <= 1
