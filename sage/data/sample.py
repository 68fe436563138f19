"""Build the bundled sample ``ParquetDataCatalog`` from the raw files in ``catalogs/raw``.

The raw files are real market data (see ``catalogs/raw/SOURCES.md``). Each is converted with explicit,
documented timestamp conventions, because a wrong bar timestamp is a silent look-ahead bug:

* Nautilus stamps a bar at its **close** (``ts_event`` = end of the interval). Files that stamp bars at
  their open (the EUR/USD hourly file, the daily files) are shifted to the close.
* Daily bars close at 16:00 America/New_York (the cash session close), converted to UTC per date so
  daylight-saving changes are right.
* ES trade timestamps are exchange-local (US/Central) milliseconds; they are converted to UTC. Many
  trades share a millisecond; they keep their file order and get sequential trade ids.
* ES 1-minute bars are aggregated from the trades over ``[t, t+1min)`` and stamped at ``t+1min``;
  minutes without trades produce no bar (no invented prices).
* Prices are rounded to the instrument's tick: the SPX file carries float noise (1229.22998 for
  1229.23). Rounding is monotone, so high >= max(open, close) >= ... still holds afterwards.

The whole catalog is written into a temporary sibling directory and renamed into place, so an
interrupted build never leaves a half-written catalog behind. A stamp file records the hashes of the
inputs; ``build_sample_catalog`` is a no-op when the stamp matches (``force=True`` rebuilds).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from nautilus_trader.model.data import Bar, BarType, TradeTick
from nautilus_trader.model.instruments import Instrument
from nautilus_trader.persistence.catalog import ParquetDataCatalog
from nautilus_trader.persistence.wranglers import BarDataWrangler, TradeTickDataWrangler

from sage.data import instruments as inst
from sage.data.ingest import round_to_tick

#: Repository-relative locations. ``catalogs/`` ships with the repo, so these resolve on a user's
#: machine too (the raw files are small enough to bundle).
REPO_ROOT = Path(__file__).resolve().parents[2]
RAW_DIR = REPO_ROOT / "catalogs" / "raw"
DEFAULT_CATALOG = REPO_ROOT / "catalogs" / "sample"
STAMP_NAME = ".sage-catalog.json"
BUILD_VERSION = 1

ES_BAR_TYPE = "ESU3.XCME-1-MINUTE-LAST-EXTERNAL"
EURUSD_BAR_TYPE = "EUR/USD.SIM-1-HOUR-MID-EXTERNAL"
SPX_BAR_TYPE = "SPX.SIM-1-DAY-LAST-EXTERNAL"
GOOG_BAR_TYPE = "GOOG.XNAS-1-DAY-LAST-EXTERNAL"
SAMPLE_BAR_TYPES: tuple[str, ...] = (ES_BAR_TYPE, EURUSD_BAR_TYPE, SPX_BAR_TYPE, GOOG_BAR_TYPE)

RAW_FILES = {
    "es": "es_trades_2013-09.csv.gz",
    "eurusd": "eurusd_h1_2017-2018.csv.gz",
    "spx": "spx_d1_1999-2018.csv.gz",
    "goog": "goog_d1_2004-2013.csv.gz",
}


@dataclass(frozen=True)
class SampleBuildResult:
    """What a build produced (or found already built)."""

    catalog_path: Path
    built: bool
    counts: dict[str, int]
    seconds: float

    def summary(self) -> str:
        verb = "built" if self.built else "up to date"
        lines = [f"sample catalog {verb}: {self.catalog_path}"]
        lines += [f"  {name:<40} {n:>9,d}" for name, n in self.counts.items()]
        if self.built:
            lines.append(f"  ({self.seconds:.1f} s)")
        return "\n".join(lines)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _input_fingerprint(raw_dir: Path) -> dict[str, str]:
    return {name: _sha256(raw_dir / fname) for name, fname in RAW_FILES.items()}


def _round_to_tick(values: np.ndarray, instrument: Instrument) -> np.ndarray:
    return round_to_tick(values, float(instrument.price_increment), instrument.price_precision)


def _ohlcv_to_bars(df: pd.DataFrame, bar_type: str, instrument: Instrument) -> list[Bar]:
    frame = df[["open", "high", "low", "close", "volume"]].astype("float64").copy()
    for col in ("open", "high", "low", "close"):
        frame[col] = _round_to_tick(frame[col].to_numpy(), instrument)
    frame["volume"] = np.round(frame["volume"].to_numpy(), instrument.size_precision)
    wrangler = BarDataWrangler(bar_type=BarType.from_str(bar_type), instrument=instrument)
    return wrangler.process(frame)


def _daily_close_index(dates: pd.Series) -> pd.DatetimeIndex:
    """Session close (16:00 New York) of each date, in UTC."""
    local = pd.DatetimeIndex(pd.to_datetime(dates)).normalize() + pd.Timedelta(hours=16)
    return local.tz_localize("America/New_York").tz_convert("UTC")


def load_es_trades(raw_dir: Path = RAW_DIR) -> pd.DataFrame:
    """ES trades indexed by UTC event time, file order kept within equal timestamps."""
    df = pd.read_csv(raw_dir / RAW_FILES["es"])
    ts = pd.to_datetime(df["DateTime"], format="%Y-%m-%d %H:%M:%S.%f")
    index = pd.DatetimeIndex(ts).tz_localize("US/Central").tz_convert("UTC")
    out = pd.DataFrame(
        {
            "price": df["Price"].to_numpy(dtype="float64"),
            "quantity": df["Volume"].to_numpy(dtype="float64"),
            "trade_id": np.arange(1, len(df) + 1).astype(str),
        },
        index=index,
    )
    out.index.name = "timestamp"
    return out


def es_minute_bars(trades: pd.DataFrame) -> pd.DataFrame:
    """1-minute OHLCV over ``[t, t+1min)`` stamped at the close ``t+1min``; empty minutes skipped."""
    grouped = trades["price"].resample("1min", label="right", closed="left")
    bars = grouped.ohlc()
    bars["volume"] = trades["quantity"].resample("1min", label="right", closed="left").sum()
    return bars.dropna(subset=["open"])


def load_eurusd(raw_dir: Path = RAW_DIR) -> pd.DataFrame:
    df = pd.read_csv(raw_dir / RAW_FILES["eurusd"], index_col=0)
    df.columns = [c.lower() for c in df.columns]
    # The file stamps each hourly bar at its open; Nautilus stamps at the close.
    index = pd.DatetimeIndex(pd.to_datetime(df.index)).tz_localize("UTC") + pd.Timedelta(hours=1)
    return df.set_index(index)


def load_spx(raw_dir: Path = RAW_DIR) -> pd.DataFrame:
    df = pd.read_csv(raw_dir / RAW_FILES["spx"])
    index = _daily_close_index(pd.to_datetime(df["Date"], format="%m/%d/%Y"))
    out = df[["Open", "High", "Low", "Close", "Volume"]].copy()
    out.columns = ["open", "high", "low", "close", "volume"]
    return out.set_index(index)


def load_goog(raw_dir: Path = RAW_DIR) -> pd.DataFrame:
    df = pd.read_csv(raw_dir / RAW_FILES["goog"], index_col=0)
    df.columns = [c.lower() for c in df.columns]
    return df.set_index(_daily_close_index(pd.Series(df.index)))


def is_up_to_date(catalog_path: Path, raw_dir: Path = RAW_DIR) -> bool:
    stamp = catalog_path / STAMP_NAME
    if not stamp.exists():
        return False
    try:
        recorded = json.loads(stamp.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return recorded.get("version") == BUILD_VERSION and recorded.get("inputs") == _input_fingerprint(raw_dir)


def build_sample_catalog(
    catalog_path: Path | str = DEFAULT_CATALOG,
    raw_dir: Path | str = RAW_DIR,
    force: bool = False,
) -> SampleBuildResult:
    """Build the sample catalog at ``catalog_path`` (atomically; skipped when already up to date)."""
    catalog_path = Path(catalog_path).resolve()
    raw_dir = Path(raw_dir)
    missing = [f for f in RAW_FILES.values() if not (raw_dir / f).exists()]
    if missing:
        raise FileNotFoundError(f"raw sample files missing from {raw_dir}: {', '.join(missing)}")
    if not force and is_up_to_date(catalog_path, raw_dir):
        counts = json.loads((catalog_path / STAMP_NAME).read_text())["counts"]
        return SampleBuildResult(catalog_path, built=False, counts=counts, seconds=0.0)

    started = time.perf_counter()
    catalog_path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{catalog_path.name}-building-", dir=catalog_path.parent))
    try:
        counts = _write_catalog(ParquetDataCatalog(str(staging)), raw_dir)
        stamp = {"version": BUILD_VERSION, "inputs": _input_fingerprint(raw_dir), "counts": counts}
        (staging / STAMP_NAME).write_text(json.dumps(stamp, indent=2))
        _swap_into_place(staging, catalog_path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return SampleBuildResult(catalog_path, built=True, counts=counts, seconds=time.perf_counter() - started)


def _swap_into_place(staging: Path, target: Path) -> None:
    """Replace ``target`` by ``staging`` with renames only (the old catalog is removed last)."""
    if target.exists():
        retired = target.with_name(f".{target.name}-retired-{os.getpid()}")
        os.replace(target, retired)
        os.replace(staging, target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, target)


def _write_catalog(catalog: ParquetDataCatalog, raw_dir: Path) -> dict[str, int]:
    es, eurusd, spx, goog = inst.es_future(), inst.eurusd_fx(), inst.spx_cfd(), inst.goog_equity()
    catalog.write_data([es, eurusd, spx, goog])
    counts: dict[str, int] = {}

    trades = load_es_trades(raw_dir)
    trades["price"] = _round_to_tick(trades["price"].to_numpy(), es)
    ticks: list[TradeTick] = TradeTickDataWrangler(es).process(trades)
    catalog.write_data(ticks)
    counts[f"{es.id} trade ticks"] = len(ticks)

    for bar_type, frame, instrument in (
        (ES_BAR_TYPE, es_minute_bars(trades), es),
        (EURUSD_BAR_TYPE, load_eurusd(raw_dir), eurusd),
        (SPX_BAR_TYPE, load_spx(raw_dir), spx),
        (GOOG_BAR_TYPE, load_goog(raw_dir), goog),
    ):
        bars = _ohlcv_to_bars(frame, bar_type, instrument)
        catalog.write_data(bars)
        counts[bar_type] = len(bars)
    return counts
