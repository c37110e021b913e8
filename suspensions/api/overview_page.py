"""What the console's overview of a space shows: its figures as charts, tables and links (issue 26).

Every figure links to the list behind it: the customers suspended (by reason), with schedules, the dead
letters, or the suspensions that started, were lifted or were in force on a day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import quote, urlencode

from suspensions import overview
from suspensions.api import charts

REASON_LABELS = {"signup": "signup", "plan": "plan", "crm_stage": "CRM stage", "manual": "manual"}
KIND_LABELS = {"dropped": "dropped", "billed": "billed back", "waived": "waived"}


def reason_label(reason: str) -> str:
    return REASON_LABELS.get(reason, reason.replace("_", " "))


@dataclass(frozen=True)
class Links:
    space: str

    @property
    def base(self) -> str:
        return f"/console/spaces/{quote(self.space, safe='')}"

    def customers(self, **query: str) -> str:
        return f"{self.base}/customers" + (f"?{urlencode(query)}" if query else "")

    def suspensions(self, first: date, last: date, mode: str = "started", reason: str | None = None) -> str:
        query = {"from": first.isoformat(), "to": last.isoformat(), "mode": mode} | ({"reason": reason} if reason else {})
        return f"{self.base}/suspensions?{urlencode(query)}"


def hours(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 3600, 1)


def duration(seconds: float | None) -> str:
    """A duration as people read it: minutes under an hour, hours under two days, days beyond."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return "under a minute"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def context(found: overview.Figures, space: str, days: int) -> dict[str, Any]:
    links = Links(space)
    day_range = found.range
    days_list = day_range.days
    labels = [day.strftime("%d %b") for day in days_list]
    reasons = found.reasons
    stacked = charts.bar_chart(
        "suspended", "Customers suspended at the end of each day, by reason", labels,
        [charts.Series(reason_label(reason), [found.suspended_by_reason[day].get(reason, 0) for day in days_list],
                       [links.suspensions(day, day, "in_force", reason) for day in days_list])
         for reason in reasons])
    flows = charts.bar_chart(
        "flows", "Suspensions and lifts per day", labels,
        [charts.Series("suspensions", [found.suspensions.get(day, 0) for day in days_list],
                       [links.suspensions(day, day, "started") for day in days_list]),
         charts.Series("lifts", [found.lifts.get(day, 0) for day in days_list],
                       [links.suspensions(day, day, "lifted") for day in days_list])], stacked=False)
    quantiles = {day: found.lift_quantiles(day) for day in days_list}
    durations = charts.line_chart(
        "durations", "Time from suspension to lift, of the suspensions lifted each day (hours)", labels,
        [charts.Series("median", [hours(quantiles[day][0]) for day in days_list]),
         charts.Series("90th percentile", [hours(quantiles[day][1]) for day in days_list])], unit=" h")
    money_charts = []
    for currency in found.currencies:
        series = [charts.Series(KIND_LABELS[kind], [float(found.invoices[kind].get(day, {}).get(
            currency, overview.Money()).amount) for day in days_list], [f"{links.base}/invoices"] * len(days_list))
            for kind in overview.INVOICE_KINDS]
        rows = [(day, *(found.invoices[kind].get(day, {}).get(currency) for kind in overview.INVOICE_KINDS))
                for day in days_list]
        money_charts.append({
            "currency": currency,
            "chart": charts.bar_chart(f"money-{currency}", f"Invoice amounts per day in {currency}", labels, series,
                                      stacked=False, unit=f" {currency}"),
            "rows": [row for row in rows if any(row[1:])],
            "totals": {kind: found.invoice_totals(kind).get(currency) for kind in overview.INVOICE_KINDS},
        })
    median, p90 = found.lift_quantiles()
    return {
        "days": days, "ranges": overview.RANGES, "figures": found, "reasons": reasons, "reason_label": reason_label,
        "links": links, "day_list": list(reversed(days_list)), "charts": {
            "suspended": stacked, "flows": flows, "durations": durations},
        "quantiles": quantiles, "hours": hours, "money": money_charts, "kinds": overview.INVOICE_KINDS,
        "kind_labels": KIND_LABELS, "total_median": median, "total_p90": p90, "duration": duration,
        "totals": {"suspensions": sum(found.suspensions.values()), "lifts": sum(found.lifts.values())},
        "first": day_range.first, "last": day_range.last,
    }
