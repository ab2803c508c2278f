"""The HTML of the review page: Jinja2 templates with autoescaping on.

Everything shown comes from model output or from the escalating application, so
nothing is marked safe: autoescaping covers every ``{{ }}``, and the page sends no
script at all (its Content-Security-Policy forbids scripts).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from jinja2 import DictLoader, Environment, StrictUndefined

_BASE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{% block title %}Review queue{% endblock %} · semgrad-guard</title>
<style>
  :root { --ink:#1d2430; --muted:#5f6b7a; --line:#dfe3ea; --bg:#f5f7fa; --card:#fff;
          --pending:#b26a00; --approved:#1a7f37; --edited:#0b62c4; --rejected:#c62828; }
  * { box-sizing: border-box; }
  body { margin:0; font:15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
         color:var(--ink); background:var(--bg); }
  header { background:#1d2430; color:#fff; padding:10px 24px; display:flex; gap:24px;
           align-items:center; }
  header .brand { font-weight:600; letter-spacing:.2px; }
  header nav a { color:#cfd6e0; text-decoration:none; margin-right:14px; }
  header nav a.on { color:#fff; border-bottom:2px solid #fff; }
  header .who { margin-left:auto; color:#cfd6e0; display:flex; gap:10px; align-items:center; }
  header .who button { background:none; border:1px solid #6b7687; color:#cfd6e0; }
  main { max-width:980px; margin:24px auto; padding:0 16px; }
  h1 { font-size:22px; margin:0 0 6px; }
  h2 { font-size:13px; text-transform:uppercase; letter-spacing:.6px; color:var(--muted);
       margin:22px 0 8px; }
  .card { background:var(--card); border:1px solid var(--line); border-radius:8px;
          padding:16px 18px; }
  .text { white-space:pre-wrap; word-wrap:break-word; margin:0; font:inherit; }
  .answer { border-left:4px solid var(--pending); }
  .meta { color:var(--muted); font-size:13px; display:flex; flex-wrap:wrap; gap:6px 18px; }
  .pill { display:inline-block; padding:1px 9px; border-radius:10px; font-size:12px;
          font-weight:600; color:#fff; vertical-align:middle; }
  .pill.pending { background:var(--pending); } .pill.approved { background:var(--approved); }
  .pill.edited { background:var(--edited); } .pill.rejected { background:var(--rejected); }
  table { width:100%; border-collapse:collapse; background:var(--card);
          border:1px solid var(--line); border-radius:8px; overflow:hidden; }
  th, td { text-align:left; padding:9px 12px; border-bottom:1px solid var(--line);
           vertical-align:top; }
  th { background:#eef1f5; font-size:12px; text-transform:uppercase; color:var(--muted); }
  td.nowrap { white-space:nowrap; }
  td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
  ol.context { margin:0; padding-left:22px; } ol.context li { margin-bottom:10px; }
  ol.context .text { max-height:220px; overflow:auto; background:#f8fafc; padding:8px;
                     border-radius:6px; border:1px solid var(--line); }
  .decide { display:grid; grid-template-columns:1fr 2fr 1.4fr; gap:14px; }
  .decide form { background:var(--card); border:1px solid var(--line); border-radius:8px;
                 padding:14px; display:flex; flex-direction:column; gap:8px; }
  .decide form button { margin-top:auto; }
  pre.mono { font:13px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
  label { font-size:13px; color:var(--muted); }
  textarea, input[type=text], input[type=password] { width:100%; font:inherit;
          padding:7px 9px; border:1px solid #c5ccd6; border-radius:6px; }
  textarea { min-height:110px; resize:vertical; }
  button { font:inherit; padding:7px 14px; border-radius:6px; border:0; cursor:pointer;
           color:#fff; font-weight:600; }
  .approve { background:var(--approved); } .edit { background:var(--edited); }
  .reject { background:var(--rejected); } .plain { background:#3b4656; }
  .notice { padding:10px 14px; border-radius:8px; margin-bottom:16px; }
  .notice.error { background:#fdecea; border:1px solid #f5c2c0; }
  .notice.done { background:#e8f5ec; border:1px solid #b7e0c2; }
  .empty { color:var(--muted); padding:28px; text-align:center; }
  a { color:#0b62c4; }
  .login { max-width:380px; margin:80px auto; }
  .login form { display:flex; flex-direction:column; gap:10px; }
  @media (max-width:760px) { .decide { grid-template-columns:1fr; } }
</style>
</head>
<body>
<header>
  <span class="brand">semgrad-guard · review</span>
  {% if reviewer %}
  <nav>
    {% for name in ["pending", "approved", "edited", "rejected", "all"] %}
    <a href="/?status={{ name }}" class="{{ 'on' if name == current_status else '' }}">
      {{ name|capitalize }}{% if name in counts %} ({{ counts[name] }}){% endif %}</a>
    {% endfor %}
  </nav>
  <form class="who" method="post" action="/logout">
    <span>Signed in as <strong>{{ reviewer }}</strong></span>
    <input type="hidden" name="csrf" value="{{ csrf }}">
    <button type="submit">Log out</button>
  </form>
  {% endif %}
</header>
<main>
{% if error %}<div class="notice error" role="alert">{{ error }}</div>{% endif %}
{% block body %}{% endblock %}
</main>
</body>
</html>
"""

_LOGIN = """{% extends "base.html" %}
{% block title %}Log in{% endblock %}
{% block body %}
<div class="login card">
  <h1>Review queue</h1>
  <p class="meta">Escalated answers wait here for a human decision.</p>
  <form method="post" action="/login">
    <label for="name">Your name (recorded with each decision)</label>
    <input type="text" id="name" name="name" required maxlength="64" autocomplete="username">
    <label for="token">Review token</label>
    <input type="password" id="token" name="token" required autocomplete="current-password">
    <input type="hidden" name="next" value="{{ next }}">
    <button class="plain" type="submit">Log in</button>
  </form>
</div>
{% endblock %}
"""

_LIST = """{% extends "base.html" %}
{% block title %}{{ current_status|capitalize }} cases{% endblock %}
{% block body %}
<h1>{{ current_status|capitalize }} cases{% if chain %} · chain {{ chain }}{% endif %}</h1>
<p class="meta">{{ cases|length }} shown, oldest first{% if chain %} ·
  <a href="/?status={{ current_status }}">all chains</a>{% endif %}</p>
{% if cases %}
<table>
  <thead><tr><th>Escalated</th><th>Chain</th><th>Question</th><th>Answer</th>
    <th class="num">Score</th><th>Status</th></tr></thead>
  <tbody>
  {% for case in cases %}
  <tr>
    <td class="nowrap"><a href="/cases/{{ case.id }}">{{ case.created_at|when }}</a></td>
    <td class="nowrap"><a href="/?status={{ current_status }}&amp;chain={{ case.chain|urlencode }}">{{ case.chain }}</a></td>
    <td>{{ case.question|truncate(90) }}</td>
    <td>{{ case.answer|truncate(90) }}</td>
    <td class="num">{{ case.score|score }}</td>
    <td><span class="pill {{ case.status }}">{{ case.status }}</span></td>
  </tr>
  {% endfor %}
  </tbody>
</table>
{% else %}
<div class="card empty">No {{ '' if current_status == 'all' else current_status }} cases.</div>
{% endif %}
{% endblock %}
"""

_CASE = """{% extends "base.html" %}
{% block title %}Case {{ case.id[:8] }}{% endblock %}
{% block body %}
{% if done %}<div class="notice done" role="status">Decision recorded: {{ case.status }}.
  {% if next_case %}<a href="/cases/{{ next_case.id }}">Next pending case</a>{% else %}
  <a href="/">Back to the queue</a>{% endif %}</div>{% endif %}
<h1>Case {{ case.id[:8] }} <span class="pill {{ case.status }}">{{ case.status }}</span></h1>
<div class="meta">
  <span>Chain <strong>{{ case.chain }}</strong></span>
  {% if case.rule %}<span>Rule <strong>{{ case.rule }}</strong></span>{% endif %}
  <span>Escalated {{ case.created_at|when }}</span>
  <span>Id <code>{{ case.id }}</code></span>
</div>

<h2>Question</h2>
<div class="card"><pre class="text" id="question">{{ case.question }}</pre></div>

<h2>Retrieved context ({{ case.context|length }})</h2>
<div class="card">
{% if case.context %}
  <ol class="context">{% for doc in case.context %}<li><pre class="text">{{ doc }}</pre></li>{% endfor %}</ol>
{% else %}<span class="meta">No documents were retrieved.</span>{% endif %}
</div>

<h2>Model answer</h2>
<div class="card answer"><pre class="text" id="answer">{{ case.answer }}</pre></div>

<h2>Uncertainty (higher = more uncertain)</h2>
<table>
  <tr><th>Score</th><th class="num">Value</th></tr>
  <tr><td><strong>score</strong></td><td class="num" id="score">{{ case.score|score }}</td></tr>
  {% for name, value in case.components|dictsort %}
  <tr><td>{{ name }}</td><td class="num">{{ value|score }}</td></tr>
  {% endfor %}
</table>

{% if case.metadata %}
<h2>Metadata</h2>
<div class="card"><pre class="text mono">{{ case.metadata|pretty }}</pre></div>
{% endif %}

<h2>Decision</h2>
{% if case.status == "pending" %}
<div class="decide">
  <form method="post" action="/cases/{{ case.id }}/approve">
    <input type="hidden" name="csrf" value="{{ csrf }}">
    <p class="meta">Send the answer as it is.</p>
    <button class="approve" type="submit">Approve</button>
  </form>
  <form method="post" action="/cases/{{ case.id }}/edit">
    <input type="hidden" name="csrf" value="{{ csrf }}">
    <label for="edit-answer">Corrected answer</label>
    <textarea id="edit-answer" name="answer" required>{{ case.answer }}</textarea>
    <label for="edit-reason">Note (optional)</label>
    <input type="text" id="edit-reason" name="reason">
    <button class="edit" type="submit">Save edit and approve</button>
  </form>
  <form method="post" action="/cases/{{ case.id }}/reject">
    <input type="hidden" name="csrf" value="{{ csrf }}">
    <label for="reject-reason">Reason</label>
    <input type="text" id="reject-reason" name="reason">
    <button class="reject" type="submit">Reject</button>
  </form>
</div>
{% else %}
<div class="card">
  <p class="meta">{{ case.status|capitalize }} by <strong>{{ case.reviewer }}</strong>
    on {{ case.decided_at|when }}</p>
  {% if case.final_answer is not none %}<pre class="text" id="final-answer">{{ case.final_answer }}</pre>{% endif %}
  {% if case.reason %}<p>Reason: {{ case.reason }}</p>{% endif %}
</div>
{% endif %}
{% endblock %}
"""

_MESSAGE = """{% extends "base.html" %}
{% block title %}{{ heading }}{% endblock %}
{% block body %}
<h1>{{ heading }}</h1>
<div class="card"><p>{{ message }}</p><p><a href="{{ link }}">{{ link_text }}</a></p></div>
{% endblock %}
"""


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _score(value: float | None) -> str:
    if value is None:
        return "not computed"
    return f"{value:.4g}" if 1e-3 <= abs(value) < 1e4 or value == 0 else f"{value:.3e}"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def page_templates() -> Environment:
    """The template environment; ``autoescape=True`` is what keeps model output inert."""
    env = Environment(
        loader=DictLoader({"base.html": _BASE, "login.html": _LOGIN, "list.html": _LIST,
                           "case.html": _CASE, "message.html": _MESSAGE}),
        autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=_when, score=_score, pretty=_pretty)
    return env
