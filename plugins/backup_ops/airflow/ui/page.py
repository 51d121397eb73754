"""The backup-ops page: one section per destination, rendered as one self-contained HTML document.

Each section shows the monitor's verdict (a badge per check, with its sentence), used storage
against ``monitor.max_storage_mb``, the latest restore drill, two inline-SVG charts (archive size
and drill RTO over time), and the backups, newest first, one page at a time, each with its
receipt state and a link to drill it. Every string from a destination, a receipt, a drill report
or the config is escaped. Styles and the one small script are inline: no request leaves the page.

Inside Airflow's UI the page is shown in a sandboxed iframe, which may not navigate the window
around it; the script opens Airflow links (the DAGs, the drill's trigger form) through the
parent document instead, so they replace the UI rather than nest it in the frame.

"Run a restore drill of this backup": Airflow 3.3's UI cannot pre-fill a trigger form from a link
(the feature, apache/airflow#59231, was reverted; #54800 is open), so the link opens the
restore_drill DAG, whose Trigger button opens the form, and copies the backup's name to the
clipboard; the link's tooltip says which ``destination`` and ``backup`` to set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from urllib.parse import urlencode

from backup_ops.airflow.ui.charts import rto_chart, size_chart
from backup_ops.core.catalog import BackupRow, PageWindow, newest_first_drills, storage_share
from backup_ops.core.drill_report import DrillReport
from backup_ops.core.health import HealthReport, Status, format_date
from backup_ops.core.models import human_bytes

DRILL_DAG = "restore_drill"
DAGS = ("backup_daily", "backup_cleanup", "backup_monitor", DRILL_DAG)
PAGE_PARAM = "page_"  # ?page_<destination>=N: each section keeps its own page
PREFILL_NOTE = ("Airflow 3.3 cannot pre-fill a trigger form from a link (apache/airflow#54800): this opens "
                "the restore_drill DAG; press Trigger and set")


@dataclass(frozen=True)
class Section:
    """One destination on the page: the monitor's report and the page of backups shown."""

    report: HealthReport
    rows: Sequence[BackupRow]
    window: PageWindow


@dataclass(frozen=True)
class PageModel:
    """Everything the page shows, and where Airflow and this app are served (for links)."""

    backup_name: str
    checked_at: datetime
    age_seconds: float
    cache_seconds: int
    sections: Sequence[Section]
    pages: Mapping[str, int]
    airflow_base: str = ""   # where Airflow's UI is served ('' at the root of the host)
    app_base: str = "/backup-ops"  # where this app is mounted

    @property
    def healthy(self) -> bool:
        return bool(self.sections) and all(section.report.healthy for section in self.sections)


def page_param(destination: str) -> str:
    return PAGE_PARAM + destination


def render_page(model: PageModel) -> str:
    """The whole HTML document."""
    overall = "healthy" if model.healthy else "unhealthy"
    dag_links = " ".join(_airflow_link(model, f"/dags/{dag}", dag) for dag in DAGS)
    refreshed = f"refreshed every {model.cache_seconds} s" if model.cache_seconds else "read on every request"
    body = "".join(_section(model, section) for section in model.sections) or (
        '<p class="empty">No destination is configured (backup.destination.destinations is empty).</p>')
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Backups of {_e(model.backup_name)}</title><style>{STYLE}</style></head>
<body>
<header>
<h1>Backups of {_e(model.backup_name)} <span class="badge {overall}" id="overall">{overall}</span></h1>
<p class="meta">Read from the destinations at {_e(format_date(model.checked_at))} ({model.age_seconds:.0f} s ago;
{refreshed}) with backup_monitor's checks. <a href="{_e(model.app_base)}/api/backups">JSON</a> ·
<a href="{_e(model.app_base)}/health">health</a></p>
<nav class="dags">DAGs: {dag_links}</nav>
</header>
<main>{body}</main>
<script>{SCRIPT}</script>
</body></html>
"""


def _section(model: PageModel, section: Section) -> str:
    report, snapshot = section.report, section.report.snapshot
    name = snapshot.destination
    health = "healthy" if report.healthy else "unhealthy"
    reach = "reachable" if snapshot.reachable else "unreachable"
    drills = newest_first_drills(snapshot.drill_reports)
    return f"""<section class="destination" id="destination-{_e(name)}" data-destination="{_e(name)}">
<h2>{_e(name)} <span class="badge {health}">{health}</span> <span class="badge {reach}">{reach}</span></h2>
<p class="location"><code>{_e(snapshot.location)}</code> · {len(snapshot.backups)} backups</p>
<div class="cards">{_storage(report)}{_latest_drill(drills)}</div>
{_checks(report)}
<div class="charts"><figure>{size_chart(snapshot.backups)}<figcaption>Archive size over time</figcaption></figure>
<figure>{rto_chart(drills)}<figcaption>Restore-drill RTO over time</figcaption></figure></div>
{_table(model, section)}
{_notes(snapshot.notes)}
</section>
"""


def _storage(report: HealthReport) -> str:
    snapshot = report.snapshot
    if not snapshot.reachable:
        return ('<div class="card storage"><h3>Storage</h3><p>Not known: the destination cannot be read.</p>'
                "</div>")
    used, limit = snapshot.used_storage, report.storage_limit
    share = storage_share(used, limit)
    if share is None:
        return (f'<div class="card storage"><h3>Storage</h3><p><b>{_e(human_bytes(used))}</b> used; no limit '
                "(monitor.max_storage_mb is null)</p></div>")
    over = " over" if limit is not None and used > limit else ""
    return (f'<div class="card storage"><h3>Storage</h3><p><b>{_e(human_bytes(used))}</b> of '
            f"{_e(human_bytes(limit or 0))} ({share:.2f} %)</p>"
            f'<div class="bar{over}" role="meter" aria-valuemin="0" aria-valuemax="100" aria-valuenow="{share}">'
            f'<span style="width:{min(100.0, share):.2f}%"></span></div></div>')


def _latest_drill(drills: Sequence[DrillReport]) -> str:
    if not drills:
        return '<div class="card drill"><h3>Latest restore drill</h3><p>No restore drill yet.</p></div>'
    latest = drills[0]
    rto = f", RTO {latest.rto_seconds:.0f} s" if latest.rto_seconds is not None else ""
    error = f'<p class="error">{_e(latest.error)}</p>' if latest.error else ""
    return (f'<div class="card drill"><h3>Latest restore drill</h3><p><span class="badge {_e(latest.outcome)}">'
            f"{_e(latest.outcome)}</span> {_e(format_date(latest.finished_at))}{_e(rto)}</p>"
            f"<p><code>{_e(latest.archive)}</code></p>{error}</div>")


def _checks(report: HealthReport) -> str:
    items = []
    for check in report.checks:
        state = {Status.PASS: "pass", Status.FAIL: "fail", Status.SKIPPED: "skipped"}[check.status]
        items.append(f'<li class="check {state}"><span class="badge {state}">{state}</span> '
                     f"<b>{_e(check.name)}</b> {_e(check.sentence)}</li>")
    return f'<ul class="checks">{"".join(items)}</ul>'


def _table(model: PageModel, section: Section) -> str:
    snapshot = section.report.snapshot
    if not snapshot.reachable:
        return f'<p class="error">The destination cannot be read: {_e(snapshot.unreachable_reason or "")}</p>'
    if not section.rows:
        return '<p class="empty">No backups on this destination yet.</p>'
    rows = []
    for row in section.rows:
        copy = row.name
        hint = f"{PREFILL_NOTE} destination = {snapshot.destination}, backup = {row.name} (copied to the clipboard)."
        drill = _airflow_link(model, f"/dags/{DRILL_DAG}", "Run a restore drill of this backup", title=hint, copy=copy,
                              css="drill")
        rows.append(f'<tr data-state="{_e(row.state)}"><td>{_e(format_date(row.date))}</td>'
                    f"<td><code>{_e(row.name)}</code></td><td class=\"size\">{_e(human_bytes(row.size))}</td>"
                    f'<td><span class="badge {_e(row.state)}" title="{_e(row.detail)}">{_e(row.state)}</span></td>'
                    f"<td>{drill}</td></tr>")
    return (f'<table class="backups"><thead><tr><th>Date</th><th>Archive</th><th>Size</th><th>Receipt</th>'
            f"<th></th></tr></thead><tbody>{''.join(rows)}</tbody></table>{_pager(model, section)}")


def _pager(model: PageModel, section: Section) -> str:
    window, name = section.window, section.report.snapshot.destination
    first, last = window.start + 1, window.end

    def link(number: int, text: str, rel: str) -> str:
        query = {page_param(k): str(v) for k, v in model.pages.items() if v != 1}
        query[page_param(name)] = str(number)
        return f'<a rel="{rel}" href="?{_e(urlencode(query))}#destination-{_e(name)}">{text}</a>'

    newer = link(window.number - 1, "« newer", "prev") if window.number > 1 else '<span>« newer</span>'
    older = link(window.number + 1, "older »", "next") if window.number < window.pages else '<span>older »</span>'
    return (f'<nav class="pager">{newer} <span class="position">backups {first}–{last} of {window.total} · page '
            f"{window.number} of {window.pages}</span> {older}</nav>")


def _notes(notes: Sequence[str]) -> str:
    if not notes:
        return ""
    return '<ul class="notes">' + "".join(f"<li>{_e(note)}</li>" for note in notes) + "</ul>"


def _airflow_link(model: PageModel, path: str, text: str, *, title: str = "", copy: str = "", css: str = "") -> str:
    """A link into Airflow's UI (opened in the window around the page's frame, see the module docstring)."""
    attributes = [f'href="{_e(model.airflow_base + path)}"', 'target="_top"', "data-airflow-link"]
    if title:
        attributes.append(f'title="{_e(title)}"')
    if copy:
        attributes.append(f'data-copy="{_e(copy)}"')
    if css:
        attributes.append(f'class="{_e(css)}"')
    return f"<a {' '.join(attributes)}>{_e(text)}</a>"


def _e(text: object) -> str:
    return escape(str(text), quote=True)


STYLE = """
:root{--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--muted:#57606a;--line:#d0d7de;--bg:#f6f8fa}
*{box-sizing:border-box}body{margin:0;padding:16px 20px;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,
sans-serif;color:#1f2328;background:#fff}h1{font-size:20px;margin:0 0 4px}h2{font-size:17px;margin:0 0 4px}
h3{font-size:13px;margin:0 0 4px;color:var(--muted);font-weight:600;text-transform:uppercase;letter-spacing:.03em}
a{color:#0969da}.meta,.location{color:var(--muted);margin:2px 0 8px}nav.dags a{margin-right:10px}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;vertical-align:middle;
background:var(--bg);border:1px solid var(--line);color:var(--muted)}
.badge.healthy,.badge.reachable,.badge.pass,.badge.intact,.badge.succeeded{background:#dafbe1;border-color:#aceebb;
color:var(--ok)}.badge.unhealthy,.badge.unreachable,.badge.fail,.badge.damaged,.badge.failed{background:#ffebe9;
border-color:#ffcecb;color:var(--bad)}.badge.unverified,.badge.unknown{background:#fff8c5;border-color:#f5e0a0;
color:var(--warn)}
section.destination{border:1px solid var(--line);border-radius:8px;padding:14px 16px;margin:14px 0}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:8px 0}.card{flex:1 1 260px;background:var(--bg);
border:1px solid var(--line);border-radius:6px;padding:8px 12px}.card p{margin:2px 0}
.bar{height:8px;border-radius:4px;background:#e6e9ed;overflow:hidden;margin-top:6px}.bar span{display:block;
height:100%;background:var(--ok)}.bar.over span{background:var(--bad)}
ul.checks{list-style:none;padding:0;margin:8px 0}ul.checks li{margin:3px 0}.check.fail{color:var(--bad)}
.charts{display:flex;flex-wrap:wrap;gap:16px;margin:10px 0}figure{margin:0}figcaption{color:var(--muted);
font-size:12px;text-align:center}
svg.chart{background:#fff;border:1px solid var(--line);border-radius:6px;max-width:100%;height:auto}
svg .grid{stroke:#eaeef2}svg .axis{stroke:#8c959f}svg .tick{font-size:10px;fill:var(--muted)}
svg .series{fill:none;stroke:#0969da;stroke-width:1.6}svg .point{fill:#0969da}svg .point.failed{fill:var(--bad)}
svg.chart-rto .series{stroke:#8250df}svg.chart-rto .point{fill:#8250df}svg.chart-rto .point.failed{fill:var(--bad)}
svg .empty{font-size:13px;fill:var(--muted)}
table.backups{border-collapse:collapse;width:100%;margin-top:8px}table.backups th,table.backups td{text-align:left;
padding:5px 8px;border-bottom:1px solid var(--line)}table.backups th{background:var(--bg);font-size:12px;
color:var(--muted)}td.size{text-align:right;white-space:nowrap}a.drill{font-size:12px}
nav.pager{margin:8px 0;color:var(--muted)}nav.pager a,nav.pager span{margin-right:8px}
.error{color:var(--bad)}.empty{color:var(--muted)}ul.notes{color:var(--muted);font-size:12px}
"""

SCRIPT = """
(function () {
  "use strict";
  function navigate(link) {
    if (window.top !== window) {
      try {  // a link of the parent document may navigate the window this sandboxed frame may not
        var doc = window.top.document, a = doc.createElement("a");
        a.href = link.href; doc.body.appendChild(a); a.click(); a.remove(); return;
      } catch (e) { /* not the same origin: fall through */ }
    }
    window.location.assign(link.href);
  }
  document.addEventListener("click", function (event) {
    var link = event.target.closest ? event.target.closest("a[data-airflow-link]") : null;
    if (!link || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey) return;
    event.preventDefault();
    var text = link.getAttribute("data-copy");
    if (text && navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(text).then(function () { navigate(link); }, function () { navigate(link); });
    } else {
      navigate(link);
    }
  });
})();
"""
