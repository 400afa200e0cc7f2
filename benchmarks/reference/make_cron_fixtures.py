"""Fire times of cron expressions, found by brute force, for the crontab table test.

Every minute from the start (in UTC) is read in the expression's time zone and matched as
crontab(5) defines it: minute, hour and month must match; when both day-of-month and day-of-week
are restricted (neither starts with '*') a day matches if either does, otherwise both must. A local
time that a daylight-saving change repeats fires once (its first occurrence), as cron does. The
Rust test (`crates/nomaly-pipeline/src/compile/trigger.rs`) checks croner's fires against these.

    python3 benchmarks/reference/make_cron_fixtures.py   # writes fixtures/cron_fires.json
"""
import json
import os
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

HERE = os.path.dirname(os.path.abspath(__file__))
NAMES = {
    "JAN": 1, "FEB": 2, "MAR": 3, "APR": 4, "MAY": 5, "JUN": 6, "JUL": 7, "AUG": 8, "SEP": 9,
    "OCT": 10, "NOV": 11, "DEC": 12,
    "SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6,
}

# (expression, time zone, start in UTC, fires wanted, why it is here)
CASES = [
    ("30 4 1,15 * 5", "UTC", "2026-12-06T00:00", 8, "day-of-month OR day-of-week"),
    ("0 9 1 * MON", "UTC", "2026-12-06T00:00", 8, "names; the 1st or Mondays"),
    ("0 0 * * 1-5", "America/New_York", "2027-03-10T12:00", 6, "US DST starts 2027-03-14"),
    ("0 0 * * 1-5", "Europe/Berlin", "2027-10-27T12:00", 6, "EU DST ends 2027-10-31"),
    ("30 2 * * *", "Europe/Berlin", "2027-10-29T00:00", 4, "02:30 happens twice on 10-31"),
    ("*/20 9-10 * * MON", "UTC", "2026-12-06T00:00", 7, "steps within a range"),
    ("0 9 */10 * *", "UTC", "2026-12-06T00:00", 5, "a step over days: 1, 11, 21, 31"),
    ("0 12 29 2 *", "UTC", "2026-01-01T00:00", 1, "the next 29 February"),
    ("0 8 * JAN,JUL 0", "UTC", "2026-12-06T00:00", 6, "Sunday as 0, months by name"),
    ("0 8 * * 7", "Asia/Tokyo", "2026-12-06T00:00", 3, "Sunday as 7, a zone ahead of UTC"),
    ("5 4 * * *", "Australia/Sydney", "2027-04-02T00:00", 4, "DST ends 2027-04-04 (south)"),
]


def values(field, low, high):
    """The set of numbers a crontab field names."""
    out = set()
    for part in field.split(","):
        rng, _, step = part.partition("/")
        step = int(step) if step else 1
        if rng == "*":
            a, b = low, high
        elif "-" in rng:
            a, b = (NAMES.get(x.upper(), None) if not x.isdigit() else int(x) for x in rng.split("-"))
        else:
            a = NAMES.get(rng.upper()) if not rng.isdigit() else int(rng)
            b = high if step != 1 else a
        out.update(range(a, b + 1, step))
    return out


def matcher(expr):
    minute, hour, dom, month, dow = expr.split()
    m, h = values(minute, 0, 59), values(hour, 0, 23)
    d, mo = values(dom, 1, 31), values(month, 1, 12)
    w = {x % 7 for x in values(dow, 0, 7)}
    dom_star, dow_star = dom.startswith("*"), dow.startswith("*")

    def day_matches(t):
        in_dom, in_dow = t.day in d, (t.isoweekday() % 7) in w
        if not dom_star and not dow_star:
            return in_dom or in_dow
        return in_dom and in_dow

    return lambda t: t.minute in m and t.hour in h and t.month in mo and day_matches(t)


def fires(expr, tz, start, n):
    zone = ZoneInfo(tz)
    match = matcher(expr)
    t = datetime.fromisoformat(start).replace(tzinfo=timezone.utc)
    out, seen = [], set()
    while len(out) < n:
        t += timedelta(minutes=1)
        local = t.astimezone(zone)
        wall = local.replace(tzinfo=None)
        if match(local) and wall not in seen:
            seen.add(wall)
            out.append(int(t.timestamp() * 1000))
    return out


def main():
    table = [
        {"expression": e, "timezone": tz, "start_ms": int(datetime.fromisoformat(s)
         .replace(tzinfo=timezone.utc).timestamp() * 1000), "why": why,
         "fires_ms": fires(e, tz, s, n)}
        for e, tz, s, n, why in CASES
    ]
    path = os.path.join(HERE, "fixtures", "cron_fires.json")
    with open(path, "w") as f:
        json.dump(table, f, indent=1)
        f.write("\n")
    print(f"{len(table)} expressions -> {path}")


if __name__ == "__main__":
    main()
