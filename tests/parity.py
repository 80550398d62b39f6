"""Helpers shared by the parity tests."""
import torch


def value_and_grad(fn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn(x)`` and the gradient of a weighted sum of it (a non-uniform upstream gradient)."""
    x = x.clone().requires_grad_(True)
    y = fn(x)
    weights = torch.linspace(-1, 1, len(x), dtype=x.dtype)
    (grad,) = torch.autograd.grad((y * weights).sum(), x)
    return y.detach(), grad


def assert_greedy_is_argmax_and_beam_one_agrees(model, s2s, src: torch.Tensor, src_len: torch.Tensor) -> None:
    """Greedy decoding follows the arg-max of the teacher-forced logits, and beam search with one beam
    returns the same sentences (``s2s``: the 05-seq2seq module with ``greedy``, ``beam_search``, BOS, EOS)."""
    from curriculum import text

    out = s2s.greedy(model, src, src_len, max_len=6)
    tgt_in = torch.cat([torch.full((len(src), 1), s2s.BOS), out[:, :-1]], 1)
    torch.testing.assert_close(model(src, src_len, tgt_in).argmax(-1), out, rtol=0, atol=0)
    vocab = text.Vocab([[str(i) for i in range(9)]])
    beam = [vocab.decode(s + [s2s.EOS]) for s in s2s.beam_search(model, src, src_len, beam=1, max_len=6)]
    assert beam == [vocab.decode(row) for row in out.tolist()]
