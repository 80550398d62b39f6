"""Reinforcement learning from human feedback (Christiano et al., 2017; Ziegler et al., 2019; Ouyang et al., 2022).

Three pieces, in the order the papers use them:

1. A reward model r(x, y) learned from comparisons. People say which of two samples they prefer;
   the Bradley-Terry model P(y_w > y_l) = sigmoid(r(x, y_w) - r(x, y_l)) turns a preference into a
   loss, -log sigmoid(r_w - r_l) (InstructGPT eq. 1). ``RewardModel`` is a GPT trunk with a scalar
   head on the last token, ``transformers.GPT2ForSequenceClassification`` with one label, or (our variant)
   averaged over the tokens.
2. Proximal policy optimisation (Schulman et al., 2017) of a policy pi_theta: the clipped surrogate
   L = E[min(rho A, clip(rho, 1 - eps, 1 + eps) A)], rho = pi_theta(a|s) / pi_old(a|s) (PPO eq. 7),
   with advantages from generalised advantage estimation (Schulman et al., 2016, eq. 16):
   A_t = sum_l (gamma lambda)^l delta_{t+l}, delta_t = r_t + gamma V(s_{t+1}) - V(s_t).
3. For language, the reward of a continuation y is the reward model's score minus a penalty that
   keeps the policy near the model it started from (Ziegler eq. 2):
   R(x, y) = r(x, y) - beta log(pi(y|x) / rho(y|x)), spread over tokens as -beta (log pi - log rho)
   per token, the score added at the last one. An adaptive beta aims at a target KL (Ziegler eq. 3).

Best-of-n sampling is the baseline that needs no training: draw n samples, keep the one the reward
model likes best; its KL from the sampling policy is log n - (n - 1)/n (Stiennon et al., 2020).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from curriculum import load_topic

gpt = load_topic("gpt")


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(r_w - r_l), averaged over pairs: the negative log-likelihood of the preferences
    under the Bradley-Terry model (InstructGPT eq. 1). ``chosen`` and ``rejected`` are rewards (N,)."""
    if chosen.shape != rejected.shape:
        raise ValueError(f"chosen and rejected rewards must pair up, got shapes {tuple(chosen.shape)} "
                         f"and {tuple(rejected.shape)}")
    return -F.logsigmoid(chosen - rejected).mean()


class RewardModel(gpt.GPT):
    """A GPT trunk and a linear ``score`` head (n_embd -> 1, no bias) that scores every prefix.

    ``pooling="last"`` reads the score at the last token that is not ``pad_token_id``, mirroring
    ``transformers.GPT2ForSequenceClassification`` with ``num_labels=1``, the papers' choice (Ziegler et al. and
    InstructGPT read the reward at the final token). ``pooling="mean"`` is this curriculum's variant, chosen in
    this topic's notebook on validation pairs: it averages the scores of the non-padding positions; with right padding
    and a causal trunk the score at position t is the last-token reward of the prefix that ends at t, so the mean
    is the average reward of the prefixes.

    Inputs: token ids (B, T). Outputs: rewards (B,). Parameter names are GPT-2's (``transformer.*``,
    ``score.weight``; ``gpt.to_hf_state_dict`` converts), plus the tied ``lm_head`` that the head ignores.
    """

    def __init__(self, config: gpt.GPTConfig, pad_token_id: int | None = None, pooling: str = "last") -> None:
        super().__init__(config)
        if pooling not in ("last", "mean"):
            raise ValueError(f"pooling must be 'last' or 'mean', got {pooling!r}")
        self.score = nn.Linear(config.n_embd, 1, bias=False)
        nn.init.normal_(self.score.weight, 0.0, 0.02)
        self.pad_token_id, self.pooling = pad_token_id, pooling

    def forward(self, idx: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        scores = self.score(self.features(idx)).squeeze(-1)  # (B, T): a score after every prefix
        real = torch.ones_like(idx, dtype=torch.bool) if self.pad_token_id is None else idx != self.pad_token_id
        if self.pooling == "mean":
            return (scores * real).sum(-1) / real.sum(-1).clamp(min=1)  # (B, T) -> (B,)
        # the rightmost token that is not padding, as GPT2ForSequenceClassification picks it
        last = (torch.arange(idx.shape[1], device=idx.device) * real).argmax(-1)
        return scores[torch.arange(idx.shape[0], device=idx.device), last]


class PolicyWithValue(nn.Module):
    """A GPT policy with a value head on its features, as trl's ``AutoModelForCausalLMWithValueHead``.

    Inputs: token ids (B, T). Outputs: next-token logits (B, T, vocab) and values V(s_t) (B, T), where
    s_t is the prefix ending at token t.
    """

    def __init__(self, policy: gpt.GPT) -> None:
        super().__init__()
        self.policy = policy
        self.value_head = nn.Linear(policy.config.n_embd, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.policy.features(idx)  # (B, T, n_embd)
        return self.policy.lm_head(h), self.value_head(h).squeeze(-1)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log pi(token | prefix) for next-token ``logits`` (B, T, V) and the ``tokens`` (B, T) that followed."""
    return logits.log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def gae(rewards: torch.Tensor, values: torch.Tensor, gamma: float = 1.0, lam: float = 0.95,
        dones: torch.Tensor | None = None, last_value: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns (Schulman et al. 2016, eq. 16) along the last axis.

    ``rewards``, ``values`` (..., T); ``dones[..., t]`` is 1 where the episode ended at step t (no
    bootstrap past it); ``last_value`` (...) is V of the state after step T - 1 (0 if omitted).
    Returns ``advantages`` and ``returns = advantages + values``, the value targets. lambda = 1 gives
    Monte-Carlo returns minus V; lambda = 0 gives the TD(0) error.
    """
    if rewards.shape != values.shape:
        raise ValueError(f"rewards and values must have one entry per step, got {tuple(rewards.shape)} "
                         f"and {tuple(values.shape)}")
    dones = torch.zeros_like(rewards) if dones is None else dones.to(rewards.dtype)
    next_value = torch.zeros_like(rewards[..., 0]) if last_value is None else last_value
    advantage = torch.zeros_like(rewards[..., 0])
    advantages = torch.empty_like(rewards)
    for t in reversed(range(rewards.shape[-1])):
        live = 1.0 - dones[..., t]
        delta = rewards[..., t] + gamma * next_value * live - values[..., t]
        advantage = delta + gamma * lam * live * advantage
        advantages[..., t] = advantage
        next_value = values[..., t]
    return advantages, advantages + values


def ppo_clip_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                  clip: float = 0.2) -> torch.Tensor:
    """-E[min(rho A, clip(rho, 1 - eps, 1 + eps) A)] with rho = exp(logp - old_logp) (PPO eq. 7)."""
    ratio = (logp - old_logp).exp()
    return -torch.min(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages).mean()


def kl_estimates(logp: torch.Tensor, ref_logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample estimators of KL(pi || ref) from samples of pi: k1 = log pi - log ref (unbiased, can be
    negative) and k3 = (r - 1) - log r with r = ref / pi (unbiased, never negative; Schulman 2020)."""
    log_ratio = ref_logp - logp
    return -log_ratio, log_ratio.exp() - 1 - log_ratio


def best_of_n_kl(n: int) -> float:
    """KL(best-of-n || base) = log n - (n - 1)/n, for a reward without ties (Stiennon et al. 2020)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return math.log(n) - (n - 1) / n


class AdaptiveKLController:
    """Ziegler et al.'s eq. 3: e = clip((KL - target) / target, -0.2, 0.2), beta <- beta (1 + K_beta e n / horizon),
    so beta grows while the policy's KL runs above ``target`` and shrinks below it."""

    def __init__(self, beta: float, target: float, horizon: float = 10_000, k_beta: float = 0.1) -> None:
        self.beta, self.target, self.horizon, self.k_beta = beta, target, horizon, k_beta

    def update(self, kl: float, n_samples: int) -> float:
        error = min(max((kl - self.target) / self.target, -0.2), 0.2)
        self.beta *= 1 + self.k_beta * error * n_samples / self.horizon
        return self.beta


def ppo_language_step(model: PolicyWithValue, reference: gpt.GPT, reward: Callable[[torch.Tensor], torch.Tensor],
                      prompts: torch.Tensor, optimizer: torch.optim.Optimizer, *, length: int, beta: float,
                      epochs: int = 4, minibatch: int = 32, clip: float = 0.2, lam: float = 0.95,
                      value_coef: float = 0.1, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """One PPO iteration on language (Ziegler et al. 2019, Section 2.2): sample a continuation of
    ``length`` tokens for every prompt (B, P) from the policy, score prompt + continuation with
    ``reward`` (B, T) -> (B,), give each token the reward -beta (log pi - log rho) against the frozen
    ``reference`` rho and add the score at the last token, then ``epochs`` passes of clipped-surrogate
    minibatch steps with GAE (gamma = 1) advantages, whitened over the batch.

    Returns the sequences (B, P + length), their scores (B,) and summed per-token KL estimates k1 (B,)."""
    p = prompts.shape[1]
    model.eval()  # sampling and scoring in the same mode: dropout would make the first ratio differ from 1
    sequences = model.policy.generate(prompts, length, generator=generator)  # (B, P + length)
    responses = sequences[:, p:]
    with torch.no_grad():
        logits, values = model(sequences)
        old_logp = token_logprobs(logits[:, p - 1:-1], responses)  # (B, length): the logits before each token
        values = values[:, p - 1:-1]
        ref_logp = token_logprobs(reference(sequences)[0][:, p - 1:-1], responses)
        scores = reward(sequences)
        kl = old_logp - ref_logp
        rewards = -beta * kl
        rewards[:, -1] += scores
        advantages, returns = gae(rewards, values, gamma=1.0, lam=lam)
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(sequences), generator=generator).split(minibatch):
            logits, v = model(sequences[idx])
            logp = token_logprobs(logits[:, p - 1:-1], responses[idx])
            loss = ppo_clip_loss(logp, old_logp[idx], advantages[idx], clip)
            loss = loss + value_coef * (v[:, p - 1:-1] - returns[idx]).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
    return {"sequences": sequences, "scores": scores, "kl": kl.sum(1)}


class ActorCritic(nn.Module):
    """The small policy and value networks PPO used for control (two tanh layers of 64 units, separate
    weights). Inputs: observations (B, obs_dim). Outputs: action logits (B, n_actions), values (B,)."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: int = 64) -> None:
        super().__init__()
        def mlp(out: int) -> nn.Sequential:
            return nn.Sequential(nn.Linear(obs_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, out))
        self.actor, self.critic = mlp(n_actions), mlp(1)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.actor(obs), self.critic(obs).squeeze(-1)


def ppo_control(env, model: ActorCritic, total_steps: int, *, rollout: int = 1024, epochs: int = 10,
                minibatch: int = 64, lr: float = 3e-4, gamma: float = 0.99, lam: float = 0.95, clip: float = 0.2,
                value_coef: float = 0.5, seed: int = 0,
                progress: Callable[[int, list[float]], None] | None = None) -> list[float]:
    """Train ``model`` on a ``gymnasium`` environment with discrete actions by PPO; returns the return of
    every finished episode. Each iteration collects ``rollout`` steps with the current policy, then takes
    ``epochs`` passes of minibatch gradient steps on the clipped surrogate plus ``value_coef`` times the
    squared error of the value, with advantages from ``gae`` normalised per minibatch. ``progress``, if
    given, is called after every rollout with the number of steps taken so far and the returns."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    obs, _ = env.reset(seed=seed)
    episode_return, returns = 0.0, []
    for iteration in range(total_steps // rollout):
        observations, actions, logps, rewards, dones, values = [], [], [], [], [], []
        with torch.no_grad():
            for _ in range(rollout):
                o = torch.as_tensor(obs, dtype=torch.float32)
                logits, value = model(o[None])
                action = torch.multinomial(logits.softmax(-1), 1, generator=generator)[0, 0]
                obs, reward, terminated, truncated, _ = env.step(int(action))
                episode_return += reward
                observations.append(o), actions.append(action), values.append(value[0])
                logps.append(logits.log_softmax(-1)[0, action]), rewards.append(float(reward))
                # a time limit is not a failure: bootstrap from the state it cut off
                if truncated and not terminated:
                    rewards[-1] += gamma * float(model(torch.as_tensor(obs, dtype=torch.float32)[None])[1][0])
                dones.append(float(terminated or truncated))
                if terminated or truncated:
                    returns.append(episode_return)
                    episode_return = 0.0
                    obs, _ = env.reset()
            last_value = model(torch.as_tensor(obs, dtype=torch.float32)[None])[1][0]
        obs_t, act_t = torch.stack(observations), torch.stack(actions)
        old_logp, old_values = torch.stack(logps), torch.stack(values)
        advantages, targets = gae(torch.tensor(rewards), old_values, gamma, lam, torch.tensor(dones), last_value)
        for _ in range(epochs):
            for idx in torch.randperm(rollout, generator=generator).split(minibatch):
                logits, value = model(obs_t[idx])
                logp = logits.log_softmax(-1).gather(1, act_t[idx, None])[:, 0]
                adv = advantages[idx]
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                loss = ppo_clip_loss(logp, old_logp[idx], adv, clip) + value_coef * (value - targets[idx]).pow(2).mean()
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 0.5)
                optimizer.step()
        if progress is not None:
            progress((iteration + 1) * rollout, returns)
    return returns
