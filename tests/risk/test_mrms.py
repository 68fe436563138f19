"""M-RMS: inputs, brackets, the shipped model (numba == torch), the rule fallback, deterministic training."""

from __future__ import annotations

import shutil

import msgspec
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sage.data.types import RiskProposal
from sage.models.mrms import ensemble_torch
from sage.models.registry import IntegrityError, ModelSchemaMismatchError
from sage.risk import (
    INPUT_DIM,
    INPUT_NAMES,
    MRMS,
    AccountContext,
    RiskInputError,
    RuleRiskModel,
    TradeContext,
    bracket_prices,
    risk_input_matrix,
    risk_input_vector,
)
from sage.risk.context import raw_values
from sage.training.risk import RiskTrainConfig, build_training_data, train

torch.set_num_threads(1)

ES_TRADE = TradeContext(
    side=1, entry_price=4000.0, atr=6.0, tick_size=0.25, point_value=50.0,
    agent_directions=(1, 2, 1, 2, -1), agent_strengths=(0.4, 0.8, 0.3, 0.9, -0.5), combined_signal=0.55,
    combined_uncertainty=0.4, regime_probabilities=(0.7, 0.05, 0.15, 0.1), regime_level=1, regime_uncertainty=0.3,
    volatility=0.001, fvg_state=(2.0, 0.0, -0.001, 1.0), rsi=63.0, bb_pctb=0.8, momentum=1.2, volume_ratio=1.3,
)  # fmt: skip
ACCOUNT = AccountContext(equity=100_000.0, drawdown=0.02, daily_pnl=-300.0, recent_win_rate=0.45)


@pytest.fixture(scope="module")
def model() -> MRMS:
    return MRMS.load("default")


def test_input_names_and_vector_matrix_agree():
    assert len(INPUT_NAMES) == INPUT_DIM == 40 and len(set(INPUT_NAMES)) == 40
    x = risk_input_vector(ES_TRADE, ACCOUNT)
    assert x.dtype == np.float32 and x.shape == (40,)
    m = risk_input_matrix(raw_values(ES_TRADE, ACCOUNT)[None, :])
    np.testing.assert_array_equal(m[0], x)
    assert x[INPUT_NAMES.index("side")] == 1.0
    assert x[INPUT_NAMES.index("combined_signal_x_side")] == pytest.approx(0.55)
    # one unit at one ATR risks 50 * 6 / 100000 = 0.3 % -> log10(0.003) + 3
    assert x[INPUT_NAMES.index("acct_log_unit_risk")] == pytest.approx(np.log10(0.003) + 3, abs=1e-6)
    assert x[INPUT_NAMES.index("agreement")] == pytest.approx(3 / 5)


def test_bad_inputs_fail_closed(model):
    with pytest.raises(RiskInputError, match="side"):
        msgspec.structs.replace(ES_TRADE, side=0)
    with pytest.raises(RiskInputError, match="atr"):
        msgspec.structs.replace(ES_TRADE, atr=float("nan"))
    with pytest.raises(RiskInputError, match="non-finite"):
        model.propose(msgspec.structs.replace(ES_TRADE, rsi=float("nan")), ACCOUNT)
    with pytest.raises(RiskInputError, match="equity"):
        AccountContext(equity=0.0)


@settings(max_examples=200, deadline=None)
@given(
    side=st.sampled_from([-1, 1]),
    entry=st.floats(1.0, 10_000.0),
    atr_ticks=st.floats(0.2, 500.0),
    tick=st.sampled_from([0.25, 0.01, 0.00001, 0.5]),
    stop=st.floats(0.5, 3.0),
    rr=st.floats(1.0, 5.0),
)
def test_bracket_prices_on_grid_and_correct_side(side, entry, atr_ticks, tick, stop, rr):
    e, s, t = bracket_prices(side, entry, atr_ticks * tick, tick, stop, rr)
    for p in (e, s, t):
        assert abs(p / tick - round(p / tick)) < 1e-6
    if side > 0:
        assert s <= e - tick * 0.999 and t >= e + tick * 0.999
        assert e - s >= stop * atr_ticks * tick - 1e-9 * max(1.0, e)  # stop never tighter than asked
    else:
        assert s >= e + tick * 0.999 and t <= e - tick * 0.999
        assert s - e >= stop * atr_ticks * tick - 1e-9 * max(1.0, e)


def test_shipped_model_proposal(model):
    d = model.propose(ES_TRADE, ACCOUNT)
    assert d.source == "mrms" and d.model_version.startswith("mrms-default@")
    assert 0 <= d.units <= 5 and d.quantity == d.units * ES_TRADE.contract_size
    assert sum(d.size_probabilities) == pytest.approx(1.0, abs=1e-5)
    assert d.units == int(np.argmax(d.size_probabilities))
    assert 0.5 <= d.stop_atr_multiple <= 3.0 and 1.0 <= d.reward_risk <= 5.0 and 0.0 <= d.confidence <= 1.0
    assert d.stop_price < d.entry_price < d.target_price
    assert d.risk_amount == pytest.approx(d.quantity * 50.0 * (d.entry_price - d.stop_price))
    short = model.propose(msgspec.structs.replace(ES_TRADE, side=-1), ACCOUNT)
    assert short.target_price < short.entry_price < short.stop_price
    assert model.propose(ES_TRADE, ACCOUNT) == d  # deterministic
    p = d.to_proposal("ESU3.XCME", ts_event=1, ts_init=2)
    assert isinstance(p, RiskProposal) and p.quantity == d.quantity and p.source == "mrms"
    half = d.scaled(0.5, point_value=50.0)
    assert half.units == d.units // 2 and half.stop_price == d.stop_price


def test_sizing_responds_to_account_size(model):
    """The learned sizer must size down when one unit risks more of the account (the core of its job)."""
    units = [
        model.propose(ES_TRADE, msgspec.structs.replace(ACCOUNT, equity=e)).units
        for e in (2_000.0, 10_000.0, 30_000.0, 100_000.0, 1_000_000.0)
    ]
    assert units == sorted(units) and units[0] == 0 and units[-1] == 5


def test_numba_engine_equals_torch(model):
    rng = np.random.default_rng(0)
    raw = np.repeat(raw_values(ES_TRADE, ACCOUNT)[None, :], 500, axis=0)
    raw[:, 0] = rng.choice([-1.0, 1.0], 500)
    raw[:, 6:11] = rng.integers(-2, 3, (500, 5))
    raw[:, 11:17] = rng.uniform(-1, 1, (500, 6))
    raw[:, 33] = 10 ** rng.uniform(3.5, 6.5, 500)
    x = risk_input_matrix(raw)
    eng = model.engine.infer_batch(x)
    ref = ensemble_torch(model.net, torch.from_numpy(x))
    np.testing.assert_allclose(eng.size_probabilities, ref.size_probabilities, atol=1e-5)
    np.testing.assert_allclose(eng.stop_atr_multiple, ref.stop_atr_multiple, atol=1e-5)
    np.testing.assert_allclose(eng.reward_risk, ref.reward_risk, atol=1e-5)
    np.testing.assert_allclose(eng.confidence, ref.confidence, atol=1e-5)
    agree = (eng.units == ref.units).mean()
    assert agree > 0.99  # argmax may differ only on near-ties
    one = model.engine.infer(x[7])
    np.testing.assert_array_equal(one[0], eng.size_probabilities[7])  # streaming == batch, bitwise


def test_rule_model_is_deterministic_and_regime_aware():
    rule = RuleRiskModel()
    calm = rule.propose(ES_TRADE, ACCOUNT)
    wild = rule.propose(msgspec.structs.replace(ES_TRADE, regime_probabilities=(0.0, 0.0, 0.0, 1.0)), ACCOUNT)
    assert wild.stop_atr_multiple > calm.stop_atr_multiple
    assert calm.reward_risk > wild.reward_risk  # trending with the trade -> wider target
    assert calm.source == "rule" and rule.propose(ES_TRADE, ACCOUNT) == calm
    assert calm.risk_amount <= 0.01 * ACCOUNT.equity + 1e-9


def test_tampered_or_foreign_checkpoint_is_refused(tmp_path):
    from sage.models.registry import resolve

    src = resolve("mrms-default")
    dst = tmp_path / "m"
    shutil.copytree(src, dst)
    data = bytearray((dst / "weights.pt").read_bytes())
    data[-100] ^= 0xFF
    (dst / "weights.pt").write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        MRMS.load(dst)
    from sage.models.mrms import load_mrms

    with pytest.raises(ModelSchemaMismatchError):
        load_mrms(src, input_names=INPUT_NAMES[:-1] + ("other",))


def test_training_is_deterministic():
    cfg = RiskTrainConfig(train_seeds=(7,), bars_per_seed=20_000, steps=30, batch=256, accounts_per_candidate=1)
    _, data1, _ = build_training_data(cfg)
    _, data2, _ = build_training_data(cfg)
    np.testing.assert_array_equal(data1.x, data2.x)
    net1, _ = train(cfg, data1)
    net2, _ = train(cfg, data2)
    for (k1, v1), (k2, v2) in zip(net1.state_dict().items(), net2.state_dict().items(), strict=True):
        assert k1 == k2 and torch.equal(v1, v2)
