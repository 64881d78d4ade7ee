"""Budget period ids in UTC: days since the epoch, and ``YYYYMM`` for calendar months.

The Redis scripts compute the same ids from the server clock (see admit.lua).
"""

from __future__ import annotations

import datetime as dt
import functools

DAY_TTL_S = 3 * 86400
MONTH_TTL_S = 40 * 86400


def day_id(now_s: float) -> int:
    return int(now_s // 86400)


def month_id(now_s: float) -> int:
    return _month_of_day(day_id(now_s))


@functools.lru_cache(maxsize=64)
def _month_of_day(day: int) -> int:
    d = dt.date(1970, 1, 1) + dt.timedelta(days=day)
    return d.year * 100 + d.month


def period_id(period: str, now_s: float) -> int:
    return day_id(now_s) if period == "day" else month_id(now_s)
