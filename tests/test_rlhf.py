"""RLHF (04-06): the reward model against ``transformers.GPT2ForSequenceClassification`` (random weights,
float64), and the properties that define the algorithm's parts: the Bradley-Terry loss, GAE's two
limits, PPO's clipping, the KL estimators against ``torch.distributions``, best-of-n's KL, and PPO
solving CartPole."""
import math

import gymnasium
import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification

from curriculum import load_topic

rlhf = load_topic("rlhf")
gpt = rlhf.gpt


def small_pair(pad_token_id=0):
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=40, n_positions=16, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, num_labels=1, pad_token_id=pad_token_id)
    theirs = GPT2ForSequenceClassification(config).double().eval()
    ours = rlhf.RewardModel(gpt.from_hf_config(config), pad_token_id=pad_token_id).double().eval()
    return ours, theirs


def test_reward_model_equals_gpt2_for_sequence_classification_values_and_gradients():
    ours, theirs = small_pair()
    missing, unexpected = ours.load_state_dict(gpt.from_hf_state_dict(theirs.state_dict()), strict=False)
    assert missing == ["lm_head.weight"] and unexpected == []  # lm_head is tied to wte, loaded through it
    idx = torch.randint(1, 40, (5, 11), generator=torch.Generator().manual_seed(1))
    idx[1, 7:] = 0  # right padding: the score is read at the last real token
    idx[3, 4:] = 0
    r_ours, r_theirs = ours(idx), theirs(idx).logits.squeeze(-1)
    torch.testing.assert_close(r_ours, r_theirs, rtol=1e-10, atol=1e-12)
    upstream = torch.randn(5, dtype=torch.float64)
    g_ours = torch.autograd.grad((r_ours * upstream).sum(), [ours.score.weight, ours.transformer.wte.weight])
    g_theirs = torch.autograd.grad((r_theirs * upstream).sum(), [theirs.score.weight, theirs.transformer.wte.weight])
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # and back: our state dict, in GPT-2's layout, loads into transformers' model
    theirs2 = GPT2ForSequenceClassification(theirs.config).double().eval()
    state = {k: v for k, v in gpt.to_hf_state_dict(ours.state_dict()).items() if k != "lm_head.weight"}
    theirs2.load_state_dict(state, strict=False)
    torch.testing.assert_close(theirs2(idx).logits.squeeze(-1), r_ours, rtol=1e-10, atol=1e-12)


def test_reward_model_without_padding_reads_the_last_token():
    ours, _ = small_pair(pad_token_id=None)
    idx = torch.randint(0, 40, (3, 9))
    torch.testing.assert_close(ours(idx), ours.score(ours.features(idx))[:, -1, 0])


def test_mean_pooling_averages_the_rewards_of_every_prefix_and_ignores_padding():
    ours, _ = small_pair(pad_token_id=0)
    mean = rlhf.RewardModel(ours.config, pad_token_id=0, pooling="mean").double().eval()
    mean.load_state_dict(ours.state_dict())
    idx = torch.randint(1, 40, (3, 9), generator=torch.Generator().manual_seed(2))
    # causal attention: the score after token t is the last-token reward of the prefix that ends at t
    prefixes = torch.stack([ours(idx[:, :t + 1]) for t in range(9)], 1)
    torch.testing.assert_close(mean(idx), prefixes.mean(1), rtol=1e-10, atol=1e-12)
    padded = torch.cat([idx[:1, :5], torch.zeros(1, 4, dtype=idx.dtype)], 1)  # right padding is not averaged
    torch.testing.assert_close(mean(padded), mean(idx[:1, :5]), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="pooling"):
        rlhf.RewardModel(ours.config, pooling="max")


def test_bradley_terry_loss_is_the_preference_negative_log_likelihood():
    chosen, rejected = torch.randn(50, dtype=torch.float64), torch.randn(50, dtype=torch.float64)
    expected = -torch.log(torch.sigmoid(chosen - rejected)).mean()
    torch.testing.assert_close(rlhf.bradley_terry_loss(chosen, rejected), expected)
    assert rlhf.bradley_terry_loss(torch.tensor([5.0]), torch.tensor([-5.0])) < 1e-4
    with pytest.raises(ValueError, match="pair up"):
        rlhf.bradley_terry_loss(torch.zeros(3), torch.zeros(4))


def test_gae_limits_are_monte_carlo_returns_and_td0():
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(4, 7, generator=g, dtype=torch.float64), torch.randn(4, 7, generator=g, dtype=torch.float64)
    gamma = 0.9
    _, returns = rlhf.gae(rewards, values, gamma=gamma, lam=1.0)
    discounted = torch.stack([sum(gamma ** k * rewards[:, t + k] for k in range(7 - t)) for t in range(7)], 1)
    torch.testing.assert_close(returns, discounted)
    advantages, _ = rlhf.gae(rewards, values, gamma=gamma, lam=0.0)
    next_values = torch.cat([values[:, 1:], torch.zeros(4, 1, dtype=torch.float64)], 1)
    torch.testing.assert_close(advantages, rewards + gamma * next_values - values)


def test_gae_does_not_bootstrap_across_episode_ends():
    rewards, values = torch.tensor([1.0, 1.0, 1.0]), torch.tensor([0.0, 10.0, 0.0])
    dones = torch.tensor([1.0, 0.0, 0.0])
    advantages, _ = rlhf.gae(rewards, values, gamma=1.0, lam=1.0, dones=dones, last_value=torch.tensor(5.0))
    assert advantages.tolist() == [1.0, 1 + 1 + 5 - 10.0, 1 + 5.0]


def test_ppo_clip_has_no_gradient_beyond_the_clip_range():
    old = torch.zeros(4)
    logp = torch.tensor([0.5, -0.5, 0.05, 0.5], requires_grad=True)   # ratios e^0.5, e^-0.5, e^0.05, e^0.5
    advantages = torch.tensor([1.0, -1.0, 1.0, -1.0])
    loss = rlhf.ppo_clip_loss(logp, old, advantages, clip=0.2)
    loss.backward()
    # clipped from above with A > 0 and from below with A < 0: no gradient; inside the range, or where the
    # unclipped term is the smaller one, the gradient of -rho A / 4
    expected = torch.tensor([0.0, 0.0, -math.exp(0.05) / 4, math.exp(0.5) / 4])
    torch.testing.assert_close(logp.grad, expected)


def test_kl_estimators_are_unbiased_and_k3_is_never_negative():
    g = torch.Generator().manual_seed(0)
    p, q = torch.distributions.Categorical(logits=torch.randn(6, generator=g)), \
        torch.distributions.Categorical(logits=torch.randn(6, generator=g))
    samples = torch.multinomial(p.probs, 400_000, replacement=True, generator=g)
    k1, k3 = rlhf.kl_estimates(p.log_prob(samples), q.log_prob(samples))
    exact = torch.distributions.kl_divergence(p, q).item()
    assert abs(k1.mean().item() - exact) < 0.01 and abs(k3.mean().item() - exact) < 0.01
    assert (k3 >= 0).all() and (k1 < 0).any()


def test_best_of_n_kl_matches_the_exact_distribution_of_the_best_sample():
    m = 200_000  # a base policy uniform over m outcomes with distinct rewards
    k = torch.arange(1, m + 1, dtype=torch.float64)
    for n in (1, 2, 4, 16):
        best = (k / m) ** n - ((k - 1) / m) ** n  # P(the best of n draws is the k-th ranked outcome)
        exact = (best[best > 0] * (best[best > 0] * m).log()).sum().item()
        assert abs(exact - rlhf.best_of_n_kl(n)) < 1e-3
    with pytest.raises(ValueError, match="at least 1"):
        rlhf.best_of_n_kl(0)


def test_adaptive_kl_controller_moves_beta_towards_the_target():
    controller = rlhf.AdaptiveKLController(beta=0.1, target=6.0, horizon=10_000)
    assert controller.update(kl=12.0, n_samples=1000) == pytest.approx(0.1 * (1 + 0.1 * 0.2 * 0.1))
    high = controller.beta
    assert controller.update(kl=3.0, n_samples=1000) < high


def test_policy_with_value_keeps_the_policy_logits():
    policy = gpt.GPT(gpt.GPTConfig(vocab_size=30, block_size=12, n_layer=1, n_head=2, n_embd=16))
    model = rlhf.PolicyWithValue(policy)
    idx = torch.randint(0, 30, (2, 7))
    logits, values = model(idx)
    torch.testing.assert_close(logits, policy(idx)[0])
    assert values.shape == (2, 7)


def test_ppo_on_language_raises_a_toy_reward():
    torch.manual_seed(0)
    policy = gpt.GPT(gpt.GPTConfig(vocab_size=8, block_size=16, n_layer=1, n_head=2, n_embd=16))
    reference = gpt.GPT(policy.config)
    reference.load_state_dict(policy.state_dict())
    model = rlhf.PolicyWithValue(policy)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    prompts = torch.zeros(64, 2, dtype=torch.long)
    reward = lambda seq: (seq[:, 2:] == 3).float().sum(1)  # noqa: E731  how often token 3 was written
    generator = torch.Generator().manual_seed(0)
    first = [rlhf.ppo_language_step(model, reference, reward, prompts, optimizer, length=8, beta=0.01,
                                    generator=generator) for _ in range(25)]
    assert first[-1]["scores"].mean() > first[0]["scores"].mean() + 2  # from about 1 token in 8
    assert first[-1]["kl"].mean() > 0


def test_ppo_balances_cartpole():
    env = gymnasium.make("CartPole-v1")
    torch.manual_seed(0)
    returns = rlhf.ppo_control(env, rlhf.ActorCritic(4, 2), total_steps=40_960, rollout=2048, seed=0)
    assert sum(returns[-10:]) / 10 > 150 > sum(returns[:10]) / 10  # random play lasts about 20 steps
