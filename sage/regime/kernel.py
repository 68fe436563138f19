"""The detector's per-bar step, compiled: health, rule detectors, conformal, fallback chain in one numba call.

Why one compiled step: ``RegimeDetector.batch`` (precompute) and ``DetectorStream.update`` (the
``RegimeActor``) must publish the same numbers, and precompute must be fast. Both therefore call
the *same* compiled per-bar function, :func:`detector_step`; the batch form is only the loop
:func:`detector_run` over it, so equality of the two is by construction (same compiled code, same
inputs, same float operations; no fast-math anywhere).

Everything stateful after features and model outputs lives in plain numpy arrays (:class:`KernelState`):

* input validation (``InputValidator`` rules, :data:`~sage.regime.health.InputIssue` bits),
* feature drift of the model-input row (the PSI/KS kernel of ``DriftMonitor``; the reference is the
  training distribution shipped with the model, or a causal self-reference collected here),
* prediction drift of the model's predicted labels (PSI, like ``PredictionDriftMonitor``),
* the level-3 and level-4 rule detectors (:func:`rules_update`, also what ``RuleDetector`` and
  ``VolatilityDetector`` run),
* adaptive conformal calibration of the forecast band (``AdaptiveConformal``'s arithmetic),
* the five-level fallback chain specialised to the detector's levels (:func:`chain_step`; same
  state machine as :class:`~sage.regime.fallback.FallbackChain`, held to it by a differential test),
* the published health bits.

Logging is not done here (numba cannot log): the step writes events (level changes, levels becoming
unhealthy or recovering, health flags) into its output row; the Python callers log them -- per event in
streaming, from the arrays after the run in batch (:mod:`sage.regime.detector`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from sage.regime.health import _drift_step

# -- codes shared with the Python side ----------------------------------------------------------------

#: Reason codes; index into ``sage.regime.fallback.Reason`` order (see ``detector.REASONS``).
R_OK, R_EXCEPTION, R_LATENCY, R_INVALID_INPUT, R_HEALTH, R_INVALID_OUTPUT, R_MISSING, R_RECOVERED = range(8)
NO_SKIP = -1

# HealthFlag bits (sage.regime.health.HealthFlag)
_STALE_INPUT, _MISSING_FEATURES, _DRIFT_WARNING, _DRIFT_ALARM = 1, 2, 4, 8
_LATENCY, _UNCALIBRATED, _FALLBACK = 16, 32, 64
# InputIssue bits
_NON_FINITE, _NON_POSITIVE, _NEG_VOLUME, _BAD_OHLC, _GAP, _DUP_TS, _UNSORTED = 1, 2, 4, 8, 16, 32, 64
_BAD_BAR = _NON_FINITE | _NON_POSITIVE | _NEG_VOLUME | _BAD_OHLC

# rules config vector (``rules_config``)
RC_MIN_PERIODS, RC_RATIO, RC_SLOPE, RC_USE_DRIFT, RC_LAM, RC_THRESHOLD, RC_TREND_SLOPE = range(7)
RC_W = 7  # 5 weights from here: drift, momentum, macd, rsi, bollinger
RC_IS_RULE = 12
RC_SIZE = 13
# rules state vector
RS_NUM, RS_DEN, RS_DEN2, RS_RATIO, RS_TREND, RS_SIZE = 0, 1, 2, 3, 4, 5

# float config (cfg_f)
CF_ALPHA, CF_GAMMA, CF_MAX_GAP, CF_D_EPS, CF_D_WARN, CF_D_ALARM = range(6)
CF_P_EPS, CF_P_WARN, CF_P_ALARM, CF_HALF_LIFE = 6, 7, 8, 9
CF_PRIOR = 10  # 4 values
CF_R3 = 14  # RC_SIZE values
CF_R4 = CF_R3 + RC_SIZE
CF_SIZE = CF_R4 + RC_SIZE
# int config (cfg_i)
CI_HAS_MODEL, CI_HORIZON, CI_INTERVAL, CI_N_REF, CI_D_METHOD, CI_D_AGG, CI_D_MIN = range(7)
CI_P_MIN, CI_REENTRY, CI_PROBE_EVERY, CI_TIE, CI_SIGMA, CI_PRED_ON = 7, 8, 9, 10, 11, 12
CI_R3 = 13  # 7 feature indices: vol, ret, mom_slow, macd, atr, rsi, bb_pctb
CI_R4 = 20  # 2 feature indices: vol, ret
CI_SIZE = 22
# int state (st_i)
SI_HAS_TS, SI_LAST_TS, SI_CLOSE_N, SI_CLOSE_POS, SI_Q_HEAD, SI_Q_N = range(6)
SI_DRIFT_ON, SI_REF_N, SI_NEED_FIT, SI_D_POS, SI_P_POS = 6, 7, 8, 9, 10
SI_SW3, SI_SW4, SI_SWA = 11, 13, 15  # (head, count) of the three sorted windows
SI_N_RES, SI_N_COV = 17, 18
SI_SIZE = 19
# float state (st_f)
SF_ALPHA_T, SF_DRIFT, SF_PRED = 0, 1, 2
SF_R3 = 3
SF_R4 = SF_R3 + RS_SIZE
SF_SIZE = SF_R4 + RS_SIZE
# chain state (chain_i) and level state (lvl rows)
CH_BAR, CH_LEVEL, CH_PUB_ONCE, CH_HAS_LAST, CH_LAST_BAR, CH_SIZE = range(6)
LV_HEALTHY, LV_REASON, LV_STREAK, LV_NEXT_PROBE, LV_BREACH, LV_FAILURES, LV_SIZE = range(7)
# a level's candidate / published value: probabilities, vector, uncertainty, confidence
V_P, V_VEC, V_UNC, V_CONF, V_SIZE = 0, 4, 12, 13, 14
# output rows
OF_P, OF_VEC, OF_UNC, OF_CONF, OF_DRIFT, OF_SIZE = 0, 4, 12, 13, 14, 15
OI_LABEL, OI_LEVEL, OI_FLAGS, OI_HEALTH, OI_SKIP = 0, 1, 2, 3, 4  # OI_SKIP: 4 codes
OI_RECOVERED, OI_UNHEALTHY, OI_WAS, OI_ISSUES = 8, 9, 10, 14  # OI_WAS: 4 reasons before a recovery
OI_SIZE = 15
# scratch workspace (ws): no allocation per bar
WS_CAND = 0  # (4, V_SIZE) candidates
WS_VALUE = WS_CAND + 4 * V_SIZE
WS_TMP = WS_VALUE + V_SIZE
WS_CLIP = WS_TMP + V_SIZE  # 4
WS_PART = WS_CLIP + 4  # 8 fsum partials
WS_R3 = WS_PART + 8  # 7
WS_R4 = WS_R3 + 7  # 2
WS_SIZE = WS_R4 + 2
# external per-bar inputs (ext)
EX_MODEL_SLOW, EX_LATENCY_FLAG, EX_SIZE = 0, 1, 2


# -- small exact helpers --------------------------------------------------------------------------------


@njit(cache=True)
def fsum(x: np.ndarray, n: int, partials: np.ndarray) -> float:  # pragma: no cover - numba
    """Correctly rounded sum of ``x[:n]`` (finite values): CPython's ``math.fsum`` algorithm (Shewchuk),
    so the compiled chain normalises probabilities bit-for-bit like the Python ``FallbackChain``.
    ``partials``: scratch of at least ``n + 1`` values."""
    m = 0
    for i in range(n):
        v = x[i]
        j = 0
        for k in range(m):
            y = partials[k]
            if abs(v) < abs(y):
                v, y = y, v
            hi = v + y
            lo = y - (hi - v)
            if lo != 0.0:
                partials[j] = lo
                j += 1
            v = hi
        partials[j] = v
        m = j + 1
    if m == 0:
        return 0.0
    m -= 1
    hi = partials[m]
    lo = 0.0
    while m > 0:
        xx = hi
        m -= 1
        y = partials[m]
        hi = xx + y
        yr = hi - xx
        lo = y - yr
        if lo != 0.0:
            break
    if m > 0 and ((lo < 0.0 and partials[m - 1] < 0.0) or (lo > 0.0 and partials[m - 1] > 0.0)):
        y = lo * 2.0
        xx = hi + y
        yr = xx - hi
        if y == yr:
            hi = xx
    return hi


@njit(cache=True)
def argmax_label(p: np.ndarray, tie: int) -> int:  # pragma: no cover - numba
    """Index of the largest of 4 probabilities; ``tie`` wins a tie it is part of, else the first."""
    top = max(max(p[0], p[1]), max(p[2], p[3]))
    first = -1
    n_win = 0
    tie_wins = False
    for i in range(4):
        if p[i] >= top:
            n_win += 1
            if first < 0:
                first = i
            if i == tie:
                tie_wins = True
    if n_win > 1 and tie_wins:
        return tie
    return first


# -- sorted rolling window (SortedWindow's arithmetic on arrays) -------------------------------------------


@njit(cache=True)
def sw_push(fifo: np.ndarray, srt: np.ndarray, meta: np.ndarray, m: int, x: float) -> None:  # pragma: no cover
    """Push ``x`` into the window (``fifo`` ring, ``srt`` sorted copy, head/count at ``meta[m:m+2]``).

    Same result as ``SortedWindow.push`` (drop the oldest value's leftmost copy, insort ``x`` to the
    right of equal values), but a full window moves only the values between the two positions once.
    """
    cap = fifo.shape[0]
    head = meta[m]
    count = meta[m + 1]
    lo, hi = 0, count  # bisect_right(x)
    while lo < hi:
        mid = (lo + hi) // 2
        if x < srt[mid]:
            hi = mid
        else:
            lo = mid + 1
    j = lo
    if count == cap:
        old = fifo[head]
        lo, hi = 0, count  # bisect_left(old)
        while lo < hi:
            mid = (lo + hi) // 2
            if srt[mid] < old:
                lo = mid + 1
            else:
                hi = mid
        i_old = lo
        if j > i_old:
            for t in range(i_old, j - 1):
                srt[t] = srt[t + 1]
            srt[j - 1] = x
        else:
            for t in range(i_old, j, -1):
                srt[t] = srt[t - 1]
            srt[j] = x
        fifo[head] = x
        meta[m] = (head + 1) % cap
        return
    fifo[(head + count) % cap] = x
    for t in range(count, j, -1):
        srt[t] = srt[t - 1]
    srt[j] = x
    meta[m + 1] = count + 1


@njit(cache=True)
def sw_median(srt: np.ndarray, count: int) -> float:  # pragma: no cover - numba
    if count == 0:
        return np.nan
    m = count // 2
    if count % 2:
        return srt[m]
    return 0.5 * (srt[m - 1] + srt[m])


# -- rule detectors (levels 3 and 4) ---------------------------------------------------------------------------


@njit(cache=True)
def _sigmoid(x: float) -> float:  # pragma: no cover - numba
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@njit(cache=True)
def _clip10(x: float) -> float:  # pragma: no cover - numba
    return max(-10.0, min(10.0, x))


@njit(cache=True)
def rules_update(
    cfg: np.ndarray, st: np.ndarray, fifo: np.ndarray, srt: np.ndarray, meta: np.ndarray, m: int,
    vals: np.ndarray, out: np.ndarray,
) -> None:  # pragma: no cover - numba
    """One row of a rule detector (``VolatilityDetector`` / ``RuleDetector``; see ``sage.regime.rules``).

    ``vals``: vol, ret (level 4) or vol, ret, mom_slow, macd, atr, rsi, bb_pctb (level 3). Writes the
    four probabilities to ``out`` (all NaN when the detector cannot decide) and the evidence
    (``ratio``, ``trend``) to ``st``.
    """
    is_rule = cfg[RC_IS_RULE] > 0.0
    k = 7 if is_rule else 2
    ok = vals[0] >= 0.0
    for j in range(k):
        if not np.isfinite(vals[j]):
            ok = False
    if not ok:
        st[RS_RATIO] = np.nan
        st[RS_TREND] = np.nan
        out[:] = np.nan
        return
    vol = vals[0]
    r = vals[1]
    sw_push(fifo, srt, meta, m, vol)
    lam = cfg[RC_LAM]
    st[RS_NUM] = lam * st[RS_NUM] + r
    st[RS_DEN] = lam * st[RS_DEN] + 1.0
    st[RS_DEN2] = lam * lam * st[RS_DEN2] + 1.0
    count = meta[m + 1]
    if count < cfg[RC_MIN_PERIODS]:
        st[RS_RATIO] = np.nan
        st[RS_TREND] = np.nan
        out[:] = np.nan
        return
    # volatility axis
    med = sw_median(srt, count)
    if med > 0.0:
        ratio = vol / med
    else:  # a flat history: any movement is extraordinary, none is not
        ratio = math.inf if vol > 0.0 else 1.0
    st[RS_RATIO] = ratio
    if ratio == 0.0:
        pv = 0.0
    elif math.isinf(ratio):
        pv = 1.0
    else:
        pv = _sigmoid(cfg[RC_SLOPE] * math.log(ratio / cfg[RC_RATIO]))
    # drift t-statistic of the EW mean return
    t_drift = np.nan
    if cfg[RC_USE_DRIFT] > 0.0 and st[RS_DEN] > 0.0:
        mean = st[RS_NUM] / st[RS_DEN]
        se = vol * math.sqrt(st[RS_DEN2]) / st[RS_DEN]
        if se > 0.0:
            t_drift = mean / se
        elif mean == 0.0:
            t_drift = 0.0
        else:
            t_drift = math.copysign(math.inf, mean)
    if not is_rule:
        trend = _clip10(t_drift) if not math.isnan(t_drift) else np.nan
    else:
        mom, macd, atr, rsi, pctb = vals[2], vals[3], vals[4], vals[5], vals[6]
        t_mom = mom / (vol * math.sqrt(20.0)) if vol > 0 else 0.0
        t_macd = macd / atr if atr > 0 else 0.0
        num = 0.0
        den2 = 0.0
        for i in range(5):
            w = cfg[RC_W + i]
            if i == 0:
                x = t_drift
            elif i == 1:
                x = t_mom
            elif i == 2:
                x = t_macd
            elif i == 3:
                x = (rsi - 50.0) / 10.0
            else:
                x = 2.0 * (pctb - 0.5)
            if w > 0 and not math.isnan(x):
                num += w * _clip10(x)
                den2 += w * w
        trend = num / math.sqrt(den2) if den2 > 0 else np.nan
    st[RS_TREND] = trend
    if math.isnan(trend):
        out[0] = 0.0
        out[1] = 0.0
        out[2] = 1.0 - pv
        out[3] = pv
        return
    kk, c = cfg[RC_TREND_SLOPE], cfg[RC_THRESHOLD]
    a = kk * (trend - c)
    b = kk * (-trend - c)
    mx = max(a, b, 0.0)
    ea, eb, es = math.exp(a - mx), math.exp(b - mx), math.exp(-mx)
    z = ea + eb + es
    rest = 1.0 - pv
    out[0] = rest * (ea / z)
    out[1] = rest * (eb / z)
    out[2] = rest * (es / z)
    out[3] = pv


# -- the fallback chain, specialised ----------------------------------------------------------------------------


@njit(cache=True)
def _validate(cand: np.ndarray, requires_unc: bool, tie: int, out: np.ndarray, ws: np.ndarray) -> int:  # pragma: no cover
    """Check and complete a level's candidate (``FallbackChain._validate``); returns the label or -1."""
    for j in range(4):
        if not np.isfinite(cand[V_P + j]):
            return -1
    p = cand[V_P : V_P + 4]
    partials = ws[WS_PART : WS_PART + 8]
    total = fsum(p, 4, partials)
    if min(min(p[0], p[1]), min(p[2], p[3])) < -1e-9 or abs(total - 1.0) > 1e-6:
        return -1
    clipped = ws[WS_CLIP : WS_CLIP + 4]
    for j in range(4):
        clipped[j] = max(p[j], 0.0)
    total = fsum(clipped, 4, partials)
    for j in range(4):
        out[V_P + j] = clipped[j] / total
    for j in range(8):
        x = cand[V_VEC + j]
        if not np.isfinite(x):
            return -1
        out[V_VEC + j] = x
    unc = cand[V_UNC]
    if math.isinf(unc) or unc < 0:
        unc = np.nan
    if requires_unc and math.isnan(unc):
        return -1
    out[V_UNC] = unc
    probs = out[V_P : V_P + 4]
    out[V_CONF] = max(max(probs[0], probs[1]), max(probs[2], probs[3]))
    return argmax_label(probs, tie)


@njit(cache=True)
def chain_step(
    chain: np.ndarray, lvl: np.ndarray, last: np.ndarray, cand: np.ndarray, present: np.ndarray,
    health_ok: np.ndarray, input_ok: bool, reentry: int, probe_every: int, tie: int, half_life: float,
    prior: np.ndarray, value: np.ndarray, out_i: np.ndarray, ws: np.ndarray,
) -> None:  # pragma: no cover - numba
    """One bar of the fallback chain over levels 1..4 plus level 5 (``FallbackChain.step``'s state machine).

    ``cand`` (4, V_SIZE): each level's candidate for this bar (level 1 requires an uncertainty);
    ``health_ok`` (4): its health check; ``present`` (4): whether it exists. Writes the published value to
    ``value`` and label, level, skip reasons and events to ``out_i`` (``OI_*`` layout); ``ws``: scratch
    (``WS_SIZE``). Per-level latency
    budgets are not modelled (the detector's levels have none; the whole-bar budget is applied by the
    streaming caller, which is the one that measures time).
    """
    bar = chain[CH_BAR]
    published = -1
    label = -1
    recovered = 0
    unhealthy = 0
    for i in range(4):
        out_i[OI_SKIP + i] = NO_SKIP
        out_i[OI_WAS + i] = R_OK
    tmp = ws[WS_TMP : WS_TMP + V_SIZE]
    for i in range(4):
        if not present[i]:
            if published < 0:
                out_i[OI_SKIP + i] = R_MISSING
            continue
        if not input_ok:
            if published < 0:
                out_i[OI_SKIP + i] = R_INVALID_INPUT
            continue
        st = lvl[i]
        if st[LV_HEALTHY]:
            if published >= 0:
                continue
            reason = R_HEALTH
            lab = -1
            if health_ok[i]:
                lab = _validate(cand[i], i == 0, tie, tmp, ws)
                reason = R_INVALID_OUTPUT
            if lab >= 0:
                published = i
                label = lab
                value[:] = tmp
                st[LV_BREACH] = 0
            else:  # mark unhealthy
                st[LV_HEALTHY] = 0
                st[LV_REASON] = reason
                st[LV_STREAK] = 0
                st[LV_BREACH] = 0
                st[LV_FAILURES] += 1
                st[LV_NEXT_PROBE] = bar + probe_every
                unhealthy |= 1 << i
                out_i[OI_SKIP + i] = reason
            continue
        if bar >= st[LV_NEXT_PROBE]:
            st[LV_NEXT_PROBE] = bar + probe_every
            lab = _validate(cand[i], i == 0, tie, tmp, ws) if health_ok[i] else -1
            if lab >= 0:
                st[LV_STREAK] += 1
                if st[LV_STREAK] >= reentry:
                    recovered |= 1 << i
                    out_i[OI_WAS + i] = st[LV_REASON]
                    st[LV_HEALTHY] = 1
                    st[LV_REASON] = R_OK
                    st[LV_STREAK] = 0
                    st[LV_BREACH] = 0
                    if published < 0:
                        published = i
                        label = lab
                        value[:] = tmp
                        continue
            else:
                st[LV_STREAK] = 0
        if published < 0:
            out_i[OI_SKIP + i] = st[LV_REASON]

    if published >= 0:
        number = published + 1
        last[:] = value
        chain[CH_HAS_LAST] = 1
        chain[CH_LAST_BAR] = bar
    else:  # level 5: last published estimate decaying towards the prior
        number = 5
        mixed = ws[WS_CLIP : WS_CLIP + 4]
        if chain[CH_HAS_LAST] == 0:
            for j in range(4):
                value[V_P + j] = prior[j]
            for j in range(8):
                value[V_VEC + j] = 0.0
        else:
            age = bar - chain[CH_LAST_BAR]
            w = 0.5 ** (age / half_life)
            for j in range(4):
                mixed[j] = w * last[V_P + j] + (1.0 - w) * prior[j]
            total = fsum(mixed, 4, ws[WS_PART : WS_PART + 8])
            for j in range(4):
                value[V_P + j] = mixed[j] / total
            for j in range(8):
                value[V_VEC + j] = last[V_VEC + j]
        value[V_UNC] = np.nan
        probs = value[V_P : V_P + 4]
        value[V_CONF] = max(max(probs[0], probs[1]), max(probs[2], probs[3]))
        label = argmax_label(probs, tie)
    chain[CH_LEVEL] = number
    chain[CH_PUB_ONCE] = 1
    chain[CH_BAR] = bar + 1
    out_i[OI_LABEL] = label
    out_i[OI_LEVEL] = number
    out_i[OI_RECOVERED] = recovered
    out_i[OI_UNHEALTHY] = unhealthy


# -- the whole per-bar step ----------------------------------------------------------------------------------


@njit(cache=True)
def _drift_flags(score: float, warn: float, alarm: float) -> int:  # pragma: no cover - numba
    if not score >= warn:
        return 0
    if score >= alarm:
        return _DRIFT_WARNING | _DRIFT_ALARM
    return _DRIFT_WARNING


@njit(cache=True)
def _input_issues(cfg_f, cfg_i, st_i, ts, o, h, lo, c, v) -> int:  # pragma: no cover - numba
    """``InputValidator.check``: bar sanity and time-stamp sanity as InputIssue bits."""
    issues = 0
    if not (np.isfinite(o) and np.isfinite(h) and np.isfinite(lo) and np.isfinite(c) and np.isfinite(v)):
        issues |= _NON_FINITE
    else:
        if min(min(o, h), min(lo, c)) <= 0.0:
            issues |= _NON_POSITIVE
        if v < 0.0:
            issues |= _NEG_VOLUME
        if lo > min(o, c) or max(o, c) > h:
            issues |= _BAD_OHLC
    if st_i[SI_HAS_TS]:
        last = st_i[SI_LAST_TS]
        if ts == last:
            issues |= _DUP_TS
        elif ts < last:
            issues |= _UNSORTED
        elif cfg_i[CI_INTERVAL] > 0 and ts - last > cfg_f[CF_MAX_GAP] * cfg_i[CI_INTERVAL]:
            issues |= _GAP
    if st_i[SI_HAS_TS] == 0 or ts > st_i[SI_LAST_TS]:
        st_i[SI_LAST_TS] = ts
        st_i[SI_HAS_TS] = 1
    return issues


@njit(cache=True)
def _calibrate(cfg_f, cfg_i, st_i, st_f, closes, queue, a_fifo, a_srt, close, sigma, q_lo, q_hi) -> float:  # pragma: no cover
    """Resolve the forecast made ``h`` bars ago (``AdaptiveConformal.update``), then calibrate this bar's
    band (``AdaptiveConformal.interval``, scaled scores); returns the interval width or NaN."""
    h = cfg_i[CI_HORIZON]
    cap = h + 1
    pos = st_i[SI_CLOSE_POS]
    closes[pos] = close
    st_i[SI_CLOSE_POS] = (pos + 1) % cap
    if st_i[SI_CLOSE_N] < cap:
        st_i[SI_CLOSE_N] += 1
    if st_i[SI_CLOSE_N] == cap:
        past = closes[st_i[SI_CLOSE_POS]]  # the oldest of the h + 1 closes
        if close > 0.0 and past > 0.0 and np.isfinite(close + past):
            y = math.log(close / past)
        else:
            y = np.nan
        # resolve the oldest queued prediction
        head = st_i[SI_Q_HEAD]
        b_lo, b_hi, c_lo, c_hi, empty = queue[head, 0], queue[head, 1], queue[head, 2], queue[head, 3], queue[head, 4]
        st_i[SI_Q_HEAD] = (head + 1) % queue.shape[0]
        st_i[SI_Q_N] -= 1
        s = np.nan
        if np.isfinite(y) and np.isfinite(b_lo) and np.isfinite(b_hi) and b_hi >= b_lo:
            width = b_hi - b_lo
            if width > 0:
                s = max(b_lo - y, y - b_hi) / width
        if not (math.isnan(s) or math.isnan(c_lo)):
            covered = empty == 0.0 and c_lo <= y <= c_hi
            err = 0.0 if covered else 1.0
            st_f[SF_ALPHA_T] += cfg_f[CF_GAMMA] * (cfg_f[CF_ALPHA] - err)
            sw_push(a_fifo, a_srt, st_i, SI_SWA, s)
            st_i[SI_N_RES] += 1
            st_i[SI_N_COV] += 1 if covered else 0
    # calibrate this bar's band
    scale = sigma * math.sqrt(h)
    lo = q_lo * scale
    hi = q_hi * scale
    n = st_i[SI_SWA + 1]
    k = math.ceil((n + 1) * (1.0 - st_f[SF_ALPHA_T]) - 1e-9)
    if k > n:
        q = math.inf
    elif k < 1:
        q = -math.inf
    else:
        q = a_srt[k - 1]
    if not (np.isfinite(lo) and np.isfinite(hi)) or not hi > lo:
        n_lo, n_hi = np.nan, np.nan
    elif q == math.inf:
        n_lo, n_hi = -math.inf, math.inf
    else:
        mid = 0.5 * (lo + hi)
        if q == -math.inf:
            n_lo, n_hi = mid, mid
        else:
            pad = q * (hi - lo)
            n_lo, n_hi = lo - pad, hi + pad
            if n_lo > n_hi:
                n_lo, n_hi = mid, mid
    tail = (st_i[SI_Q_HEAD] + st_i[SI_Q_N]) % queue.shape[0]
    queue[tail, 0] = lo
    queue[tail, 1] = hi
    queue[tail, 2] = n_lo
    queue[tail, 3] = n_hi
    queue[tail, 4] = 1.0 if (math.isinf(q) and q < 0) else 0.0
    st_i[SI_Q_N] += 1
    width = n_hi - n_lo
    return width if np.isfinite(width) else np.nan


@njit(cache=True)
def detector_step(
    cfg_f, cfg_i, st_i, st_f, chain, lvl, last, present,
    sw3_fifo, sw3_srt, sw4_fifo, sw4_srt, aci_fifo, aci_srt, queue, closes,
    d_edges, d_scorable, d_ring, d_counts, d_n, d_ref_p, d_ref_cdf, d_log_ref, d_log_table, d_work, d_scores, ref_buf,
    p_ring, p_counts, p_ref, health_ok, ws,
    ts, o, h, lo, c, v, feat, vec, probs, quant, model_in, ext, out_f, out_i,
):  # pragma: no cover - numba  # fmt: skip
    """One bar: validate, drift, rules, calibrate, health bits, chain, prediction drift; writes ``out_f``
    (``OF_*``) and ``out_i`` (``OI_*``). The single implementation behind both batch and streaming."""
    has_model = cfg_i[CI_HAS_MODEL] == 1
    issues = _input_issues(cfg_f, cfg_i, st_i, ts, o, h, lo, c, v)

    # feature drift of the model-input row
    missing = False
    if has_model:
        k = model_in.shape[0]
        finite = True
        for j in range(k):
            if not np.isfinite(model_in[j]):
                finite = False
        if st_i[SI_DRIFT_ON]:
            missing = not finite
            st_f[SF_DRIFT] = _drift_step(
                model_in, d_edges, d_scorable, d_ring, st_i[SI_D_POS], d_counts, d_n, d_ref_p, d_ref_cdf,
                d_log_ref, d_log_table, d_work, cfg_i[CI_D_METHOD], cfg_i[CI_D_AGG], cfg_f[CF_D_EPS], cfg_i[CI_D_MIN], d_scores,
            )  # fmt: skip
            st_i[SI_D_POS] = (st_i[SI_D_POS] + 1) % d_ring.shape[0]
        elif cfg_i[CI_N_REF] > 0 and finite and st_i[SI_NEED_FIT] == 0:
            # causal self-reference: collect the first n_ref valid rows; the caller fits on them
            r = st_i[SI_REF_N]
            for j in range(k):
                ref_buf[r, j] = model_in[j]
            st_i[SI_REF_N] = r + 1
            if r + 1 == cfg_i[CI_N_REF]:
                st_i[SI_NEED_FIT] = 1

    # rule detectors read the feature row every bar, used or not
    cand = ws[WS_CAND : WS_CAND + 4 * V_SIZE].reshape((4, V_SIZE))
    r3 = ws[WS_R3 : WS_R3 + 7]
    for j in range(7):
        r3[j] = feat[cfg_i[CI_R3 + j]]
    r4 = ws[WS_R4 : WS_R4 + 2]
    for j in range(2):
        r4[j] = feat[cfg_i[CI_R4 + j]]
    rules_update(cfg_f[CF_R3 : CF_R3 + RC_SIZE], st_f[SF_R3 : SF_R3 + RS_SIZE], sw3_fifo, sw3_srt, st_i, SI_SW3, r3, cand[2, V_P : V_P + 4])  # fmt: skip
    rules_update(cfg_f[CF_R4 : CF_R4 + RC_SIZE], st_f[SF_R4 : SF_R4 + RS_SIZE], sw4_fifo, sw4_srt, st_i, SI_SW4, r4, cand[3, V_P : V_P + 4])  # fmt: skip
    for i in range(2, 4):
        cand[i, V_VEC : V_VEC + 8] = 0.0
        cand[i, V_UNC] = np.nan

    width = np.nan
    if has_model:
        width = _calibrate(
            cfg_f, cfg_i, st_i, st_f, closes, queue, aci_fifo, aci_srt, c, feat[cfg_i[CI_SIGMA]],
            np.float64(quant[0]), np.float64(quant[quant.shape[0] - 1]),
        )  # fmt: skip

    # health bits the monitors report this bar
    hflags = 0
    if missing:
        hflags |= _MISSING_FEATURES
    if ext[EX_LATENCY_FLAG]:
        hflags |= _LATENCY
    if issues & _BAD_BAR:
        hflags |= _MISSING_FEATURES
    if issues & (_GAP | _DUP_TS | _UNSORTED):
        hflags |= _STALE_INPUT
    if st_i[SI_DRIFT_ON]:
        hflags |= _drift_flags(st_f[SF_DRIFT], cfg_f[CF_D_WARN], cfg_f[CF_D_ALARM])
    if cfg_i[CI_PRED_ON]:
        hflags |= _drift_flags(st_f[SF_PRED], cfg_f[CF_P_WARN], cfg_f[CF_P_ALARM])

    # the chain
    model_ok = (hflags & _DRIFT_ALARM) == 0 and ext[EX_MODEL_SLOW] == 0
    health_ok[2] = True
    health_ok[3] = True
    health_ok[0] = model_ok
    health_ok[1] = model_ok
    for j in range(4):
        p = np.float64(probs[j])
        cand[0, V_P + j] = p
        cand[1, V_P + j] = p
    for j in range(8):
        x = np.float64(vec[j])
        cand[0, V_VEC + j] = x
        cand[1, V_VEC + j] = x
    cand[0, V_UNC] = width
    cand[1, V_UNC] = np.nan
    value = ws[WS_VALUE : WS_VALUE + V_SIZE]
    chain_step(
        chain, lvl, last, cand, present, health_ok, issues == 0, cfg_i[CI_REENTRY], cfg_i[CI_PROBE_EVERY],
        cfg_i[CI_TIE], cfg_f[CF_HALF_LIFE], cfg_f[CF_PRIOR : CF_PRIOR + 4], value, out_i, ws,
    )  # fmt: skip
    flags = hflags
    if out_i[OI_LEVEL] > 1:
        flags |= _FALLBACK
    if math.isnan(value[V_UNC]):
        flags |= _UNCALIBRATED

    # prediction drift of the model's own labels (not the published ones: a fallback must not feed back)
    if cfg_i[CI_PRED_ON]:
        ok = True
        for j in range(4):
            if not np.isfinite(probs[j]):
                ok = False
        label = argmax_label(cand[0, V_P : V_P + 4], -1) if ok else -1
        pos = st_i[SI_P_POS]
        old = p_ring[pos]
        if old >= 0:
            p_counts[old] -= 1
        if label >= 0:
            p_counts[label] += 1
        p_ring[pos] = label
        st_i[SI_P_POS] = (pos + 1) % p_ring.shape[0]
        n = 0
        for j in range(4):
            n += p_counts[j]
        if n >= cfg_i[CI_P_MIN]:
            eps = cfg_f[CF_P_EPS]
            acc = 0.0
            for j in range(4):
                pp = max(p_counts[j] / n, eps)
                qq = max(p_ref[j], eps)
                acc += (pp - qq) * math.log(pp / qq)
            st_f[SF_PRED] = acc
        else:
            st_f[SF_PRED] = np.nan

    for j in range(V_SIZE):
        out_f[j] = value[j]
    out_f[OF_DRIFT] = st_f[SF_DRIFT] if st_i[SI_DRIFT_ON] else np.nan
    out_i[OI_FLAGS] = flags
    out_i[OI_HEALTH] = hflags
    out_i[OI_ISSUES] = issues


@njit(cache=True)
def detector_run(
    cfg_f, cfg_i, st_i, st_f, chain, lvl, last, present,
    sw3_fifo, sw3_srt, sw4_fifo, sw4_srt, aci_fifo, aci_srt, queue, closes,
    d_edges, d_scorable, d_ring, d_counts, d_n, d_ref_p, d_ref_cdf, d_log_ref, d_log_table, d_work, d_scores, ref_buf,
    p_ring, p_counts, p_ref, health_ok, ws,
    ts, o, h, lo, c, v, feat, vec, probs, quant, model_in, ext, out_f, out_i, start,
):  # pragma: no cover - numba  # fmt: skip
    """:func:`detector_step` for bars ``start..n-1``; returns the next bar to run. Stops early (after the
    bar that completed it) when the self-reference for drift is full, so the caller can fit it."""
    n = ts.shape[0]
    for i in range(start, n):
        detector_step(
            cfg_f, cfg_i, st_i, st_f, chain, lvl, last, present,
            sw3_fifo, sw3_srt, sw4_fifo, sw4_srt, aci_fifo, aci_srt, queue, closes,
            d_edges, d_scorable, d_ring, d_counts, d_n, d_ref_p, d_ref_cdf, d_log_ref, d_log_table, d_work, d_scores, ref_buf,
            p_ring, p_counts, p_ref, health_ok, ws,
            ts[i], o[i], h[i], lo[i], c[i], v[i], feat[i], vec[i], probs[i], quant[i], model_in[i], ext[i],
            out_f[i], out_i[i],
        )  # fmt: skip
        if st_i[SI_NEED_FIT]:
            return i + 1
    return n


def _guard_cache() -> None:
    """Flush this module's numba cache when a module it calls into changes (numba keys a cache by the
    function's own file only; see ``sage.features._numba_cache``, not imported here to keep this package
    free of Nautilus)."""
    import hashlib
    from pathlib import Path

    from numba.core.registry import CPUDispatcher

    from sage.regime import health

    dispatchers = [o for o in globals().values() if isinstance(o, CPUDispatcher) and o.py_func.__module__ == __name__]
    caches = [d._cache for d in dispatchers if getattr(d, "_cache", None) is not None]
    digest = hashlib.sha256(Path(health.__file__ or "").read_bytes()).hexdigest()
    for path in {getattr(c, "cache_path", None) for c in caches} - {None}:
        stamp = Path(path) / "kernel.deps.sha256"
        try:
            if stamp.is_file() and stamp.read_text() == digest:
                continue
            for cache in caches:
                if cache.cache_path == path:
                    cache.flush()
            stamp.write_text(digest)
        except OSError:
            continue


_guard_cache()
