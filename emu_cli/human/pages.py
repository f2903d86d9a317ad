"""The review app's pages: one HTML document per stage, keyboard first, no build step.

- generalist: a grid; arrows move, A accepts, R rejects, U undoes, N / P change page. Tuned
  for throughput and recall: one key a decision, the cursor moves on by itself.
- specialist: one large image and the paper's checklist (keys 1-5 toggle an item), K keeps,
  D drops, U undoes, arrows move. Tuned for precision.
- caption: the image and its caption in a text box; Ctrl+Enter saves and moves on.
- compare: two images, sides randomised per annotator; first visual appeal with the caption
  hidden (1 left, 2 right, 3 tie), then text faithfulness with it shown (1 left, 2 right,
  3 both, 4 neither).
"""

from __future__ import annotations

import html
import json

STYLE = """
body{font-family:system-ui,sans-serif;margin:0;background:#1d1f21;color:#eee}
header{padding:8px 16px;background:#333;display:flex;gap:24px;align-items:center}
main{padding:16px}.grid{display:grid;grid-template-columns:repeat(6,160px);gap:10px}
.cell{border:3px solid transparent;padding:2px;background:#2a2c2e}
.cell img{width:150px;height:150px;object-fit:contain;image-rendering:pixelated}
.cell.cursor{border-color:#f0c040}.cell.keep{background:#1f5f2f}.cell.drop{background:#6a1f1f}
.big img{width:480px;height:480px;object-fit:contain;image-rendering:pixelated}
.pair{display:flex;gap:24px}.pair img{width:400px;height:400px;image-rendering:pixelated}
.keys{color:#aaa;font-size:13px}label{display:block;margin:6px 0}
textarea{width:480px;height:80px;font-size:16px}.status{font-weight:bold}
"""

SCRIPT = (
    """
const TOKEN = %(token)s, STAGE = %(stage)s;
const api = (path, body) => fetch(path, {
  method: body ? 'POST' : 'GET',
  headers: {'Authorization': 'Bearer ' + TOKEN, 'Content-Type': 'application/json'},
  body: body ? JSON.stringify(body) : undefined,
}).then(r => r.ok ? r.json() : r.json().then(e => Promise.reject(e.error)));
const image = (key, side) => '/image/' + encodeURIComponent(key) + '?token=' + TOKEN +
  (side ? '&side=' + side : '');
let items = [], cursor = 0, history = [], checklist = [];
const $ = id => document.getElementById(id);
const esc = text => String(text).replace(/[&<>"']/g, c =>
  ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'})[c]);
function status(text) { $('status').textContent = text; }
async function progress() {
  const p = await api('/api/progress');
  const parts = [p.items + ' items'];
  if (p.votes !== undefined) parts.push(p.votes + ' votes');
  if (p.captions !== undefined) parts.push(p.captions + ' captions');
  if (p.by) parts.push(Object.entries(p.by).map(([k, v]) => k + ' ' + v).join(', '));
  if (p.agreement && p.agreement.kappa !== null) parts.push('kappa ' + p.agreement.kappa);
  $('progress').textContent = parts.join(' · ');
}
async function load() {
  const data = await api('/api/items');
  items = data.items; checklist = data.checklist;
  const done = i => i.decision || i.written || (i.votes && i.votes.faithfulness);
  const first = items.findIndex(i => !done(i));
  cursor = first < 0 ? 0 : first;
  render(); progress();
}
"""
    + """
const PER_PAGE = 24;
function decided(item) { return item.decision ? (item.decision.keep ? 'keep' : 'drop') : ''; }
// Writes go out one after another, in the order keys were pressed, so an undo never
// overtakes the decision it undoes; the cursor moves at once, so fast typing stays on track.
let queue = Promise.resolve();
function send(path, body) {
  const sent = queue.then(() => api(path, body));
  queue = sent.catch(() => {});
  return sent;
}
function decide(keep, extra) {
  const index = cursor, item = items[index];
  const body = {item: item.key, keep: keep};
  if (extra) body.checklist = extra;
  item.decision = {keep: keep, checklist: extra || null};
  history.push(index);
  if (cursor < items.length - 1) cursor++;
  render();
  send('/api/decide', body).then(
    () => { status((keep ? 'kept ' : 'rejected ') + item.key); progress(); },
    error => { item.decision = null; render(); status('NOT SAVED ' + item.key + ': ' + error); });
}
function undo() {
  if (!history.length) return;
  const index = history.pop(), item = items[index], before = item.decision;
  cursor = index; item.decision = null;
  render();
  send('/api/undo', {item: item.key}).then(
    () => { status('undid ' + item.key); progress(); },
    error => { item.decision = before; render(); status('NOT SAVED ' + item.key + ': ' + error); });
}
"""
)

GENERALIST = """
function render() {
  const page = Math.floor(cursor / PER_PAGE), start = page * PER_PAGE;
  $('main').innerHTML = '<div class="grid">' + items.slice(start, start + PER_PAGE).map((item, i) =>
    `<div class="cell ${decided(item)} ${start + i === cursor ? 'cursor' : ''}"
      data-key="${esc(item.key)}"><img src="${image(item.key)}" title="${esc(item.caption)}"></div>`
  ).join('') + '</div>';
  $('where').textContent = `page ${page + 1} of ${Math.ceil(items.length / PER_PAGE)}`;
}
document.addEventListener('keydown', e => {
  const k = e.key.toLowerCase();
  if (k === 'a') decide(true);
  else if (k === 'r') decide(false);
  else if (k === 'u') undo();
  else if (e.key === 'ArrowRight') { cursor = Math.min(items.length - 1, cursor + 1); render(); }
  else if (e.key === 'ArrowLeft') { cursor = Math.max(0, cursor - 1); render(); }
  else if (e.key === 'ArrowDown') { cursor = Math.min(items.length - 1, cursor + 6); render(); }
  else if (e.key === 'ArrowUp') { cursor = Math.max(0, cursor - 6); render(); }
  else if (k === 'n' || k === 'p') {
    const page = Math.floor(cursor / PER_PAGE) + (k === 'n' ? 1 : -1);
    cursor = Math.max(0, Math.min(items.length - 1, page * PER_PAGE)); render();
  }
});
"""

SPECIALIST = """
let ticks = {};
function render() {
  const item = items[cursor];
  ticks = Object.assign(Object.fromEntries(checklist.map(c => [c, false])),
                        (item.decision && item.decision.checklist) || {});
  $('main').innerHTML = `<div class="big"><img src="${image(item.key)}"></div>
    <p>${esc(item.caption)}</p>` + checklist.map((c, i) =>
    `<label><input type="checkbox" id="c${i}" ${ticks[c] ? 'checked' : ''}>
     ${i + 1}. ${c.replace('_', ' ')}</label>`
  ).join('') + `<p>decision: <b>${decided(item) || 'none'}</b></p>`;
  checklist.forEach((c, i) => $('c' + i).onchange = ev => { ticks[c] = ev.target.checked; });
  $('where').textContent = `image ${cursor + 1} of ${items.length}`;
}
document.addEventListener('keydown', e => {
  const k = e.key.toLowerCase();
  const n = parseInt(e.key, 10);
  if (n >= 1 && n <= checklist.length) { const c = checklist[n - 1]; ticks[c] = !ticks[c];
    $('c' + (n - 1)).checked = ticks[c]; }
  else if (k === 'k') decide(true, {...ticks});
  else if (k === 'd') decide(false, {...ticks});
  else if (k === 'u') undo();
  else if (e.key === 'ArrowRight') { cursor = Math.min(items.length - 1, cursor + 1); render(); }
  else if (e.key === 'ArrowLeft') { cursor = Math.max(0, cursor - 1); render(); }
});
"""

CAPTION = """
function render() {
  const item = items[cursor];
  $('main').innerHTML = `<div class="big"><img src="${image(item.key)}"></div>
    <p><textarea id="text">${esc(item.caption)}</textarea></p>
    <p>${item.written ? 'written' : 'not written yet'}</p>`;
  $('text').focus();
  $('where').textContent = `image ${cursor + 1} of ${items.length}`;
}
document.addEventListener('keydown', async e => {
  if (e.key === 'Enter' && e.ctrlKey) {
    e.preventDefault();
    const item = items[cursor], text = $('text').value;
    try { await send('/api/caption', {item: item.key, text: text}); }
    catch (error) { status('NOT SAVED ' + item.key + ': ' + error); return; }
    item.caption = text; item.written = true; status('saved ' + item.key);
    if (cursor < items.length - 1) cursor++;
    render(); progress();
  } else if (e.key === 'PageDown') { cursor = Math.min(items.length - 1, cursor + 1); render(); }
  else if (e.key === 'PageUp') { cursor = Math.max(0, cursor - 1); render(); }
});
"""

COMPARE = """
const CHOICES = {
  appeal: ['left', 'right', 'tie'], faithfulness: ['left', 'right', 'both', 'neither'],
};
function protocol(item) { return item.votes.appeal ? 'faithfulness' : 'appeal'; }
function render() {
  const item = items[cursor], p = protocol(item), right = item.left === 'a' ? 'b' : 'a';
  $('main').innerHTML = `<h2>${p === 'appeal' ? 'Which picture is more appealing?'
      : 'Which picture shows the caption better? (ignore appeal)'}</h2>
    ${p === 'faithfulness' ? '<p class="caption">' + esc(item.prompt) + '</p>' : ''}
    <div class="pair"><img id="left" src="${image(item.key, item.left)}">
    <img id="right" src="${image(item.key, right)}"></div>
    <p class="keys">${CHOICES[p].map((c, i) => (i + 1) + ' ' + c).join(' &middot; ')}</p>`;
  $('where').textContent = `pair ${cursor + 1} of ${items.length}`;
}
document.addEventListener('keydown', e => {
  const item = items[cursor], p = protocol(item), n = parseInt(e.key, 10);
  if (n >= 1 && n <= CHOICES[p].length) {
    const choice = CHOICES[p][n - 1];
    item.votes[p] = choice;
    if (p === 'faithfulness' && cursor < items.length - 1) cursor++;
    render();
    send('/api/vote', {item: item.key, protocol: p, choice: choice}).then(
      () => { status(p + ': ' + choice + ' ' + item.key); progress(); },
      error => { delete item.votes[p]; render(); status('NOT SAVED ' + item.key + ': ' + error); });
  } else if (e.key === 'ArrowRight') { cursor = Math.min(items.length - 1, cursor + 1); render(); }
  else if (e.key === 'ArrowLeft') { cursor = Math.max(0, cursor - 1); render(); }
});
"""

HELP = {
    "generalist": "A accept · R reject · U undo · arrows move · N/P next/previous page",
    "specialist": "1-5 checklist · K keep · D drop · U undo · arrows move",
    "caption": "edit the caption · Ctrl+Enter save and next · PageUp/PageDown move",
    "compare": "1/2/3(/4) choose · arrows move",
}
STAGE_SCRIPTS = {
    "generalist": GENERALIST,
    "specialist": SPECIALIST,
    "caption": CAPTION,
    "compare": COMPARE,
}


def page(stage: str, annotator: str, token: str) -> str:
    script = SCRIPT % {"token": json.dumps(token), "stage": json.dumps(stage)}
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>emu review: {html.escape(stage)}</title><style>{STYLE}</style></head><body>
<header><b>emu review: {html.escape(stage)}</b><span>{html.escape(annotator)}</span>
<span id="where"></span><span id="progress"></span><span class="status" id="status"></span>
</header><main id="main">loading</main>
<p class="keys" style="padding:0 16px">{html.escape(HELP[stage])}</p>
<script>{script}{STAGE_SCRIPTS[stage]}load();</script></body></html>"""
