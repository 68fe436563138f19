"""Numba kernels of the MARL environment, and the plain-Python reference they are tested against.

The step kernel advances every environment by one 5-minute bar in one compiled loop: joint actions ->
target position -> PnL from close ``t`` to close ``t+1`` with costs and slippage on turnover ->
equity, drawdown, entry price, holding time -> blended per-agent rewards -> auto-reset -> the account
vector of the next observation (the very :func:`sage.agents.observation.account_state_into` the live
strategy calls). The gather kernel copies observation windows out of the precomputed matrix rows.

:class:`ReferenceMarketEnv` is the same specification written as a readable single-environment Python
class (lists, floats, no numba). The tests step both side by side and require equal results; the
benchmark reports the kernel's speed as a ratio to it. Mathematical definitions: ``docs/marl_env.md``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from sage.agents import observation as _observation
from sage.agents.observation import (
    ACCOUNT_DIM,
    ACTION_DIRECTIONS,
    N_AGENTS,
    STRATEGIC_SHAPE,
    TACTICAL_SHAPE,
    account_state_into,
)
from sage.features._numba_cache import guard_numba_cache

# Agent columns (fixed by the contract; see sage.agents.observation.AGENTS).
A_FVG, A_MOMENTUM, A_ENTRY, A_TREND, A_MEAN_REVERSION = range(5)
# Tactical / strategic row columns read by the shaping terms (TACTICAL_COLUMNS / STRATEGIC_COLUMNS).
T_BULL, T_BEAR, T_LEVEL, T_MITIGATION, T_MOM = 0, 1, 2, 4, 5
S_MACD, S_TREND, S_RSI, S_BB = 0, 1, 3, 4

ATR_FLOOR_REL: float = 1e-6
"""Relative ATR (ATR / close) below this is treated as this when scaling rewards (flat market)."""

# Joint (centralised-critic) vector: account, last tactical row, last strategic row, previous agent
# directions / 2, episode progress.
JOINT_DIM: int = ACCOUNT_DIM + TACTICAL_SHAPE[1] + STRATEGIC_SHAPE[1] + N_AGENTS + 1

# Layout of the float64 parameter vector handed to the kernel.
(
    P_MAX_POSITION,
    P_UNIT_COST,
    P_SLIPPAGE_ATR,
    P_DRAWDOWN_PENALTY,
    P_W_INDIVIDUAL,
    P_W_SHARED,
    P_SHAPING,
    P_REWARD_CLIP,
    P_STOP_DRAWDOWN,
    P_NEXT_OPEN,
    P_EPISODE_LEN,
) = range(11)
P_SIZE = 11


@njit(cache=True)
def _target_position(actions_row: np.ndarray, weights: np.ndarray) -> float:
    """Weighted mean direction / 2, clipped to [-1, 1] (the joint-action -> position mapping)."""
    num = 0.0
    den = 0.0
    for a in range(actions_row.shape[0]):
        num += weights[a] * (actions_row[a] - 2)
        den += weights[a]
    if den <= 0.0:
        return 0.0
    return min(1.0, max(-1.0, num / (2.0 * den)))


@njit(cache=True)
def _reset_env(i, start, t_idx, k_step, pos, entry, held, equity, peak, prev_dir, ep_pnl, ep_reward):
    t_idx[i] = start
    k_step[i] = 0
    pos[i] = 0.0
    entry[i] = 0.0
    held[i] = 0
    equity[i] = 1.0
    peak[i] = 1.0
    ep_pnl[i] = 0.0
    for a in range(prev_dir.shape[1]):
        prev_dir[i, a] = 0
        ep_reward[i, a] = 0.0


@njit(cache=True)
def _write_obs(
    i,
    t,
    k,
    params,
    close,
    atr,
    tac_rows,
    strat_rows,
    strat_idx,
    pos,
    entry,
    held,
    equity,
    peak,
    prev_dir,
    s_index,
    account,
    joint,
    acc_buf,
):
    """Account vector and joint vector of env ``i`` observing bar ``t``."""
    dd = (peak[i] - equity[i]) / peak[i]
    account_state_into(acc_buf, pos[i], entry[i], close[t], atr[t], dd, held[i])
    s = strat_idx[t]
    s_index[i] = s
    for j in range(ACCOUNT_DIM):
        account[i, j] = acc_buf[j]
        joint[i, j] = acc_buf[j]
    o = ACCOUNT_DIM
    for j in range(tac_rows.shape[1]):
        joint[i, o + j] = tac_rows[t, j]
    o += tac_rows.shape[1]
    for j in range(strat_rows.shape[1]):
        joint[i, o + j] = strat_rows[s, j]
    o += strat_rows.shape[1]
    for a in range(prev_dir.shape[1]):
        joint[i, o + a] = prev_dir[i, a] * 0.5
    o += prev_dir.shape[1]
    joint[i, o] = k / params[P_EPISODE_LEN]


@njit(cache=True)
def reset_kernel(
    starts,
    params,
    close,
    atr,
    tac_rows,
    strat_rows,
    strat_idx,
    t_idx,
    k_step,
    pos,
    entry,
    held,
    equity,
    peak,
    prev_dir,
    ep_pnl,
    ep_reward,
    s_index,
    account,
    joint,
):
    """Start every env at ``starts[i]`` and write its first account/joint observation."""
    acc_buf = np.empty(ACCOUNT_DIM, dtype=np.float64)
    for i in range(starts.shape[0]):
        _reset_env(i, starts[i], t_idx, k_step, pos, entry, held, equity, peak, prev_dir, ep_pnl, ep_reward)
        _write_obs(
            i,
            t_idx[i],
            0,
            params,
            close,
            atr,
            tac_rows,
            strat_rows,
            strat_idx,
            pos,
            entry,
            held,
            equity,
            peak,
            prev_dir,
            s_index,
            account,
            joint,
            acc_buf,
        )


@njit(cache=True)
def step_kernel(
    actions,
    weights,
    params,
    open_,
    close,
    atr,
    tac_rows,
    strat_rows,
    strat_idx,
    pool,
    pool_ptr,
    t_idx,
    k_step,
    pos,
    entry,
    held,
    equity,
    peak,
    prev_dir,
    ep_pnl,
    ep_reward,
    rewards,
    terminated,
    truncated,
    pnl_out,
    cost_out,
    turnover_out,
    equity_out,
    position_out,
    final_t,
    final_account,
    final_pnl,
    final_reward,
    final_len,
    s_index,
    account,
    joint,
):
    """Advance every env one bar (see module docstring); auto-resets finished envs from ``pool``."""
    n_agents = actions.shape[1]
    mp = params[P_MAX_POSITION]
    unit_cost = params[P_UNIT_COST]
    slip_atr = params[P_SLIPPAGE_ATR]
    lam = params[P_DRAWDOWN_PENALTY]
    w_ind = params[P_W_INDIVIDUAL]
    w_sh = params[P_W_SHARED]
    shaping = params[P_SHAPING]
    clip = params[P_REWARD_CLIP]
    stop_dd = params[P_STOP_DRAWDOWN]
    next_open = params[P_NEXT_OPEN] > 0.5
    episode_len = int(params[P_EPISODE_LEN])
    acc_buf = np.empty(ACCOUNT_DIM, dtype=np.float64)
    for i in range(actions.shape[0]):
        t = t_idx[i]
        c = close[t]
        c1 = close[t + 1]
        o1 = open_[t + 1] if next_open else c
        atr_rel = max(atr[t] / c, ATR_FLOOR_REL)
        cost_rate = unit_cost + slip_atr * atr_rel  # cost per unit of exposure traded

        # Joint action -> target position; PnL of the old position until the fill, the new one after.
        p0 = pos[i]
        p1 = _target_position(actions[i], weights)
        turnover = abs(p1 - p0) * mp
        gross = mp * (p0 * (o1 - c) + p1 * (c1 - o1)) / c
        cost = turnover * cost_rate
        pnl = gross - cost

        under0 = peak[i] - equity[i]
        eq1 = equity[i] + pnl
        pk1 = max(peak[i], eq1)
        under1 = pk1 - eq1
        dd_increase = max(0.0, under1 - under0)
        scale = mp * atr_rel
        shared = (pnl - lam * dd_increase) / scale

        # Entry price (average in when adding; a new side or a fresh open starts at the fill) and age.
        if p1 == 0.0:
            entry[i] = 0.0
            held[i] = 0
        elif p0 == 0.0 or (p0 > 0.0) != (p1 > 0.0):
            entry[i] = o1
            held[i] = 0
        elif abs(p1) > abs(p0):
            entry[i] = (abs(p0) * entry[i] + (abs(p1) - abs(p0)) * o1) / abs(p1)
        if p1 != 0.0:
            held[i] += 1
        pos[i] = p1
        equity[i] = eq1
        peak[i] = pk1

        # Per-agent rewards: own-signal PnL (individual), team PnL (shared), small shaping.
        move = (c1 - c) / c / atr_rel
        move = min(1.0, max(-1.0, move))
        srow = strat_idx[t]
        for a in range(n_agents):
            d = actions[i, a] - 2
            q = 0.5 * d
            q0 = 0.5 * prev_dir[i, a]
            own = mp * (q0 * (o1 - c) + q * (c1 - o1)) / c - abs(q - q0) * mp * cost_rate
            individual = own / scale
            if a == A_FVG:
                net = tac_rows[t, T_BULL] - tac_rows[t, T_BEAR]
                prox = 1.0 - abs(tac_rows[t, T_LEVEL])
                sh = q * net * max(prox, tac_rows[t, T_MITIGATION])
            elif a == A_MOMENTUM:
                sh = q * tac_rows[t, T_MOM]
            elif a == A_ENTRY:
                sh = 0.25 * (d - prev_dir[i, a]) * move
            elif a == A_TREND:
                sh = q * 0.5 * (strat_rows[srow, S_MACD] + strat_rows[srow, S_TREND])
            elif a == A_MEAN_REVERSION:
                sh = -q * 0.5 * (strat_rows[srow, S_RSI] + strat_rows[srow, S_BB])
            else:
                sh = 0.0
            r = w_ind * individual + w_sh * shared + shaping * sh
            r = min(clip, max(-clip, r))
            rewards[i, a] = r
            ep_reward[i, a] += r
            prev_dir[i, a] = d

        ep_pnl[i] += pnl
        k_step[i] += 1
        t_idx[i] = t + 1
        pnl_out[i] = pnl
        cost_out[i] = cost
        turnover_out[i] = turnover
        equity_out[i] = eq1
        position_out[i] = p1
        term = under1 / pk1 >= stop_dd
        trunc = (not term) and k_step[i] >= episode_len
        terminated[i] = term
        truncated[i] = trunc
        if term or trunc:
            # The final observation's account (bar t+1) and the episode totals, then a fresh episode.
            final_t[i] = t + 1
            account_state_into(acc_buf, pos[i], entry[i], close[t + 1], atr[t + 1], under1 / pk1, held[i])
            for j in range(ACCOUNT_DIM):
                final_account[i, j] = acc_buf[j]
            final_pnl[i] = ep_pnl[i]
            final_len[i] = k_step[i]
            for a in range(n_agents):
                final_reward[i, a] = ep_reward[i, a]
            start = pool[pool_ptr[0]]
            pool_ptr[0] += 1
            _reset_env(i, start, t_idx, k_step, pos, entry, held, equity, peak, prev_dir, ep_pnl, ep_reward)
        _write_obs(
            i,
            t_idx[i],
            k_step[i],
            params,
            close,
            atr,
            tac_rows,
            strat_rows,
            strat_idx,
            pos,
            entry,
            held,
            equity,
            peak,
            prev_dir,
            s_index,
            account,
            joint,
            acc_buf,
        )


@njit(cache=True)
def gather_kernel(t_index, s_index, tac_rows, strat_rows, out_tac, out_strat):
    """Copy each env's (60, 7) tactical and (48, 13) strategic window (rows oldest first)."""
    lt = out_tac.shape[1]
    ls = out_strat.shape[1]
    for i in range(t_index.shape[0]):
        t0 = t_index[i] - lt + 1
        for r in range(lt):
            for j in range(out_tac.shape[2]):
                out_tac[i, r, j] = tac_rows[t0 + r, j]
        s0 = s_index[i] - ls + 1
        for r in range(ls):
            for j in range(out_strat.shape[2]):
                out_strat[i, r, j] = strat_rows[s0 + r, j]


guard_numba_cache(globals(), [_observation])


# -- plain-Python reference -------------------------------------------------------------------------


class ReferenceMarketEnv:
    """One environment, written plainly: the executable specification the numba kernel must match.

    ``config`` is an :class:`sage.training.env.EnvConfig`; ``data`` an :class:`EnvData`. ``reset(start)``
    starts at 5-minute bar ``start``; ``step(actions)`` takes 5 action indices and returns
    ``(account, joint, rewards, terminated, truncated, info)`` as Python lists/floats.
    """

    def __init__(self, data, config) -> None:
        self.data = data
        self.config = config
        w = list(config.agent_weights)
        self.weights = w
        self.reset(int(np.flatnonzero(data.valid)[0]))

    def reset(self, start: int) -> tuple[list[float], list[float]]:
        self.t = start
        self.k = 0
        self.position = 0.0
        self.entry_price = 0.0
        self.bars_held = 0
        self.equity = 1.0
        self.peak = 1.0
        self.prev_dirs = [0] * len(self.weights)
        self.episode_pnl = 0.0
        self.episode_reward = [0.0] * len(self.weights)
        return self.account(), self.joint()

    def account(self) -> list[float]:
        d = self.data
        out = np.empty(ACCOUNT_DIM, dtype=np.float64)
        drawdown = (self.peak - self.equity) / self.peak
        _observation.account_state_into.py_func(
            out,
            self.position,
            self.entry_price,
            float(d.close[self.t]),
            float(d.atr[self.t]),
            drawdown,
            self.bars_held,
        )
        return [float(x) for x in out]

    def joint(self) -> list[float]:
        d = self.data
        s = int(d.strategic_index[self.t])
        return (
            self.account()
            + [float(x) for x in d.tactical_rows[self.t]]
            + [float(x) for x in d.strategic_rows[s]]
            + [0.5 * p for p in self.prev_dirs]
            + [self.k / self.config.episode_len]
        )

    def step(self, actions):
        cfg, d, t = self.config, self.data, self.t
        directions = [ACTION_DIRECTIONS[int(a)] for a in actions]
        c = float(d.close[t])
        c_next = float(d.close[t + 1])
        fill = float(d.open[t + 1]) if cfg.fill_at_next_open else c
        atr_rel = max(float(d.atr[t]) / c, ATR_FLOOR_REL)
        cost_rate = (cfg.cost_bps + cfg.slippage_bps) * 1e-4 + cfg.slippage_atr * atr_rel
        mp = cfg.max_position

        weighted = sum(w * dirn for w, dirn in zip(self.weights, directions, strict=True))
        target = max(-1.0, min(1.0, weighted / (2.0 * sum(self.weights))))
        old = self.position
        turnover = abs(target - old) * mp
        gross = mp * (old * (fill - c) + target * (c_next - fill)) / c
        cost = turnover * cost_rate
        pnl = gross - cost

        under_before = self.peak - self.equity
        self.equity += pnl
        self.peak = max(self.peak, self.equity)
        under_after = self.peak - self.equity
        shared = (pnl - cfg.drawdown_penalty * max(0.0, under_after - under_before)) / (mp * atr_rel)

        if target == 0.0:
            self.entry_price, self.bars_held = 0.0, 0
        elif old == 0.0 or (old > 0) != (target > 0):
            self.entry_price, self.bars_held = fill, 0
        elif abs(target) > abs(old):
            added = abs(target) - abs(old)
            self.entry_price = (abs(old) * self.entry_price + added * fill) / abs(target)
        if target != 0.0:
            self.bars_held += 1
        self.position = target

        tac = d.tactical_rows[t]
        strat = d.strategic_rows[int(d.strategic_index[t])]
        move = max(-1.0, min(1.0, (c_next - c) / c / atr_rel))
        shaping = [
            directions[0] / 2 * (tac[T_BULL] - tac[T_BEAR]) * max(1.0 - abs(tac[T_LEVEL]), tac[T_MITIGATION]),
            directions[1] / 2 * tac[T_MOM],
            (directions[2] - self.prev_dirs[2]) / 4 * move,
            directions[3] / 2 * 0.5 * (strat[S_MACD] + strat[S_TREND]),
            -directions[4] / 2 * 0.5 * (strat[S_RSI] + strat[S_BB]),
        ]
        rewards = []
        for a, dirn in enumerate(directions):
            q, q_prev = dirn / 2, self.prev_dirs[a] / 2
            own = mp * (q_prev * (fill - c) + q * (c_next - fill)) / c - abs(q - q_prev) * mp * cost_rate
            r = (
                cfg.individual_weight * own / (mp * atr_rel)
                + cfg.shared_weight * shared
                + cfg.shaping_scale * float(shaping[a])
            )
            rewards.append(max(-cfg.reward_clip, min(cfg.reward_clip, r)))
            self.episode_reward[a] += rewards[-1]
        self.prev_dirs = directions
        self.episode_pnl += pnl
        self.k += 1
        self.t = t + 1
        drawdown = under_after / self.peak
        terminated = drawdown >= cfg.stop_drawdown
        truncated = not terminated and self.k >= cfg.episode_len
        info = {"pnl": pnl, "cost": cost, "turnover": turnover, "equity": self.equity, "position": target}
        return self.account(), self.joint(), rewards, terminated, truncated, info
