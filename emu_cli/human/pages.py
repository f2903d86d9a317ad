"""The review app's pages: one HTML document per stage, keyboard first (every key has a button
or a click too), no build step; a guide page for annotators, linked from each.

- generalist: a grid; arrows move, A accepts, R rejects, U undoes, N / P change page. Tuned
  for throughput and recall: one key a decision, the cursor moves on by itself.
- specialist: one large image and the paper's guidelines, each with what passes and what fails
  (keys 1-5 tick one), K keeps, D drops, U undoes, arrows move. Tuned for precision.
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
.cell{border:3px solid transparent;padding:2px;background:#2a2c2e;position:relative;cursor:pointer}
.cell img{width:150px;height:150px;object-fit:contain;image-rendering:pixelated}
.cell .cap{font-size:11px;color:#bbb;height:28px;overflow:hidden;width:150px}
.cell.cursor{border-color:#f0c040}.cell.keep{background:#1f5f2f}.cell.drop{background:#6a1f1f}
.badge{position:absolute;top:6px;left:6px;padding:1px 6px;font-size:12px;font-weight:bold;
border-radius:3px}.keep .badge{background:#3c3;color:#000}.drop .badge{background:#e44;color:#fff}
.verdict{font-size:20px;font-weight:bold}.verdict.keep{color:#5e5}.verdict.drop{color:#f66}
.big img{width:480px;height:480px;object-fit:contain;image-rendering:pixelated}
.pair{display:flex;gap:24px}.pair img{width:400px;height:400px;image-rendering:pixelated;
cursor:pointer}.keys{color:#aaa;font-size:13px}label{display:block;margin:6px 0}
.rule{color:#aaa;font-size:13px;margin-left:24px}button{font-size:15px;margin:8px 8px 0 0}
textarea{width:480px;height:80px;font-size:16px}.status{font-weight:bold}a{color:#8cf}
#counts{font-weight:bold;color:#f0c040}
"""

# The paper's guideline categories for specialists: what passes and what fails each.
GUIDELINES = {
    "composition": (
        "balanced framing (rule of thirds), depth, the subject whole and easy to find",
        "clutter, a subject cut off or hidden, a flat or tilted frame",
    ),
    "lighting": (
        "dynamic, balanced light that shapes the subject",
        "flat, too dark, or blown-out highlights",
    ),
    "color_contrast": (
        "vivid colour and strong contrast",
        "washed out, monochrome, or one colour filling the frame",
    ),
    "subject_background": (
        "the subject stands clear of an uncluttered background",
        "the subject merges with or is crowded by its background",
    ),
    "subjective": (
        "tells a story; hard to imagine a much better shot of it",
        "ordinary: a better photo of the same scene is easy to imagine",
    ),
}
TICK = (
    "Tick a guideline when the image passes it. Keep an image only when it passes every "
    "one: this stage keeps the very best."
)

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
const done = i => Boolean(i.decision || i.written || (i.votes && i.votes.faithfulness));
function counts() {
  const decided = items.filter(done).length;
  $('counts').textContent = decided + ' decided · ' + (items.length - decided) + ' left';
}
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
  const first = items.findIndex(i => !done(i));
  cursor = first < 0 ? 0 : first;
  show(); progress();
}
"""
    + """
const PER_PAGE = 24;
function decided(item) { return item.decision ? (item.decision.keep ? 'keep' : 'drop') : ''; }
const VERDICT = {keep: 'KEPT', drop: 'REJECTED', '': ''};
// every render also recounts: the counts follow each decision as it is made
function show() { render(); counts(); }
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
  show();
  send('/api/decide', body).then(
    () => { status((keep ? 'kept ' : 'rejected ') + item.key); progress(); },
    error => { item.decision = null; show(); status('NOT SAVED ' + item.key + ': ' + error); });
}
function undo() {
  if (!history.length) return;
  const index = history.pop(), item = items[index], before = item.decision;
  cursor = index; item.decision = null;
  show();
  send('/api/undo', {item: item.key}).then(
    () => { status('undid ' + item.key); progress(); },
    error => { item.decision = before; show(); status('NOT SAVED ' + item.key + ': ' + error); });
}
"""
)

GENERALIST = """
function render() {
  const page = Math.floor(cursor / PER_PAGE), start = page * PER_PAGE;
  $('main').innerHTML = `<p><button id="accept">Accept (A)</button>
    <button id="reject">Reject (R)</button><button id="undo">Undo (U)</button>
    <button id="previous">Previous page (P)</button><button id="next">Next page (N)</button></p>
    <div class="grid">` + items.slice(start, start + PER_PAGE).map((item, i) =>
    `<div class="cell ${decided(item)} ${start + i === cursor ? 'cursor' : ''}"
      data-index="${start + i}"><span class="badge">${VERDICT[decided(item)]}</span>
      <img src="${image(item.key)}" title="${esc(item.caption)}">
      <div class="cap">${esc(item.caption)}</div></div>`
  ).join('') + '</div>';
  document.querySelectorAll('.cell').forEach(cell => cell.onclick = () => {
    cursor = Number(cell.dataset.index); render(); });
  $('accept').onclick = () => decide(true);
  $('reject').onclick = () => decide(false);
  $('undo').onclick = undo;
  $('previous').onclick = () => turn(-1);
  $('next').onclick = () => turn(1);
  $('where').textContent = `page ${page + 1} of ${Math.ceil(items.length / PER_PAGE)}`;
}
function turn(by) {
  const page = Math.floor(cursor / PER_PAGE) + by;
  cursor = Math.max(0, Math.min(items.length - 1, page * PER_PAGE)); render();
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
  else if (k === 'n' || k === 'p') turn(k === 'n' ? 1 : -1);
});
"""

SPECIALIST = """
let ticks = {};
function render() {
  const item = items[cursor];
  ticks = Object.assign(Object.fromEntries(checklist.map(c => [c, false])),
                        (item.decision && item.decision.checklist) || {});
  $('main').innerHTML = `<div class="big"><img src="${image(item.key)}"></div>
    <p>${esc(item.caption)}</p><p class="keys">${esc(TICK)}</p>` + checklist.map((c, i) =>
    `<label><input type="checkbox" id="c${i}" ${ticks[c] ? 'checked' : ''}>
     ${i + 1}. <b>${c.replace('_', ' and ')}</b></label>
     <div class="rule">passes: ${esc(GUIDELINES[c][0])}; fails: ${esc(GUIDELINES[c][1])}</div>`
  ).join('') + `<p><button id="keep">Keep (K)</button><button id="drop">Drop (D)</button>
    <button id="undo">Undo (U)</button></p>
    <p>decision: <span class="verdict ${decided(item)}">${
      VERDICT[decided(item)] || 'none yet'}</span></p>`;
  checklist.forEach((c, i) => $('c' + i).onchange = ev => { ticks[c] = ev.target.checked; });
  $('keep').onclick = () => decide(true, {...ticks});
  $('drop').onclick = () => decide(false, {...ticks});
  $('undo').onclick = undo;
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
    <p><button id="save">Save and next (Ctrl+Enter)</button></p>
    <p class="verdict ${item.written ? 'keep' : ''}">${item.written ? 'WRITTEN'
      : 'not written yet'}</p>`;
  $('text').focus();
  $('save').onclick = save;
  $('where').textContent = `image ${cursor + 1} of ${items.length}`;
}
async function save() {
  const item = items[cursor], text = $('text').value;
  try { await send('/api/caption', {item: item.key, text: text}); }
  catch (error) { status('NOT SAVED ' + item.key + ': ' + error); return; }
  item.caption = text; item.written = true; status('saved ' + item.key);
  if (cursor < items.length - 1) cursor++;
  show(); progress();
}
document.addEventListener('keydown', async e => {
  if (e.key === 'Enter' && e.ctrlKey) {
    e.preventDefault();
    await save();
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
    <p>${CHOICES[p].map((c, i) => `<button data-choice="${i + 1}">${i + 1} ${c}</button>`)
      .join('')}</p>`;
  $('left').onclick = () => vote(1);
  $('right').onclick = () => vote(2);
  document.querySelectorAll('button[data-choice]').forEach(b =>
    b.onclick = () => vote(Number(b.dataset.choice)));
  $('where').textContent = `pair ${cursor + 1} of ${items.length}`;
}
function vote(n) {
  const item = items[cursor], p = protocol(item), choice = CHOICES[p][n - 1];
  item.votes[p] = choice;
  if (p === 'faithfulness' && cursor < items.length - 1) cursor++;
  show();
  send('/api/vote', {item: item.key, protocol: p, choice: choice}).then(
    () => { status(p + ': ' + choice + ' ' + item.key); progress(); },
    error => { delete item.votes[p]; show(); status('NOT SAVED ' + item.key + ': ' + error); });
}
document.addEventListener('keydown', e => {
  const item = items[cursor], p = protocol(item), n = parseInt(e.key, 10);
  if (n >= 1 && n <= CHOICES[p].length) vote(n);
  else if (e.key === 'ArrowRight') { cursor = Math.min(items.length - 1, cursor + 1); render(); }
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
    script += f"const GUIDELINES = {json.dumps(GUIDELINES)}, TICK = {json.dumps(TICK)};"
    guide = f"/guide?token={html.escape(token)}"
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>emu review: {html.escape(stage)}</title><style>{STYLE}</style></head><body>
<header><b>emu review: {html.escape(stage)}</b><span>{html.escape(annotator)}</span>
<span id="counts"></span><span id="where"></span><span id="progress"></span>
<span class="status" id="status"></span><a href="{guide}" target="_blank">annotator's guide</a>
</header><main id="main">loading</main>
<p class="keys" style="padding:0 16px">{html.escape(HELP[stage])}</p>
<script>{script}{STAGE_SCRIPTS[stage]}load();</script></body></html>"""


STAGE_GUIDE = {
    "generalist": "Remove every medium or low quality image: keep only those that might be "
    "great. Recall matters here; the specialists choose the best later.",
    "specialist": "Keep only the very best: an image that passes every guideline below. "
    "Precision matters here: a few thousand images teach the model what good looks like.",
    "caption": "Write what the image shows, plainly and completely: the subject, its colour, "
    "where it is. The model learns to draw what captions say.",
    "compare": "First choose the more appealing picture with the caption hidden; then, with "
    "the caption shown, the one that shows it better, ignoring appeal (both or neither when "
    "they are alike). Sides are shuffled: nothing about A or B is shown.",
}


def guide(stage: str, token: str) -> str:
    """The annotator's guide: what each stage asks, its keys, and the guidelines in full."""
    rows = "".join(
        f"<tr><td><b>{html.escape(name.replace('_', ' and '))}</b></td>"
        f"<td>{html.escape(passes)}</td><td>{html.escape(fails)}</td></tr>"
        for name, (passes, fails) in GUIDELINES.items()
    )
    stages = "".join(
        f"<h3>{html.escape(name)}{' (this stage)' if name == stage else ''}</h3>"
        f"<p>{html.escape(text)}</p><p class='keys'>keys: {html.escape(HELP[name])}</p>"
        for name, text in STAGE_GUIDE.items()
    )
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>emu review: annotator's guide</title><style>{STYLE}
td,th{{border:1px solid #555;padding:6px 10px;text-align:left}}table{{border-collapse:collapse}}
</style></head><body><header><b>Annotator's guide</b>
<a href="/?token={html.escape(token)}">back to the {html.escape(stage)} stage</a></header>
<main><h2>The stages</h2>{stages}<h2>The guidelines</h2><p>{html.escape(TICK)}</p>
<table><tr><th>guideline</th><th>passes</th><th>fails</th></tr>{rows}</table>
<p class="keys">Every decision is saved at once; U undoes the last one. The counts at the top
are yours: how many items you decided and how many are left.</p></main></body></html>"""
