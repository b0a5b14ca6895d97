"""``bolt view``: one self-contained HTML page to look at latents, E-step weights and EM runs.

Input: a latents file (``bolt.latents/1``: teacher output, or E-step output with its scores,
and with ``--keep-candidates`` the K candidates), several of them, or a run directory of
``bolt em`` / ``bolt demo`` (every ``latents/*.jsonl`` in it, or in each ``seed-N/``). The page
opens from disk: no server, no network, the data inside it.

One row per chunk that has a latent (the first file's chunks; with several files, or a run
directory, the same chunk's latent in each file, e.g. per EM iteration): the prefix it was
conditioned on, its text, the chosen latent, log p(Z,X), log q, log w, ESS, the K candidates
with their normalised weights, whether the latent was cut at the token budget, and the embedded
world's verdict on its derivation where the world knows the chunk. Rows can be sorted (ESS,
weight entropy, log w, latent length) and filtered (cut, wrong, ESS range, text search); the
page shows 50 at a time, so 100,000 chunks stay fast. Plots: ESS histogram, latent lengths.

The data travels as columns (one JSON array per field) inside a ``<script type="application/json">``
element; the page's own script renders only the visible page.
"""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path
from typing import Any

from bolt.apps.world.world import latent_is_correct
from bolt.core.records import atomic_path, iter_documents
from bolt.core.rundir import RunDir, check_parent_directories
from bolt.errors import BoltError

PREFIX_CHARS = 400
"""The end of each prefix kept in the page (the part next to the chunk)."""


def latents_files(paths: list[Path]) -> list[Path]:
    """The latents files named, or found in run directories (``latents/*.jsonl``, also under ``seed-N/``)."""
    found: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            inside = sorted(path.glob("latents/*.jsonl")) + sorted(path.glob("seed-*/latents/*.jsonl"))
            inside = [p for p in inside if not p.name.endswith(".train.jsonl")]
            if not inside:
                raise BoltError(
                    f"{path}: no latents/*.jsonl here (a run directory of `bolt em` or `bolt demo` has them); "
                    "name a latents file instead."
                )
            found.extend(inside)
        else:
            raise BoltError(
                f"{path}: no such file or directory; give latents files (bolt.latents/1) or a run directory."
            )
    return found


def _weights(log_ws: list[float]) -> list[float]:
    top = max(log_ws)
    exp = [math.exp(w - top) for w in log_ws]
    total = sum(exp)
    return [e / total for e in exp]


def _entropy(weights: list[float]) -> float:
    return -sum(w * math.log(w) for w in weights if w > 0)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def collect(files: list[Path]) -> dict[str, Any]:
    """Columns of the page's table: one entry per chunk with a latent in the first file."""
    columns: dict[str, list[Any]] = {
        name: []
        for name in (
            "doc",
            "chunk",
            "prefix",
            "text",
            "latent",
            "log_p",
            "log_q",
            "log_w",
            "ess",
            "k",
            "cut",
            "correct",
            "entropy",
            "length",
            "candidates",
            "others",
        )
    }
    where: dict[tuple[str, int], int] = {}
    for file_index, path in enumerate(files):
        for document in iter_documents(path):
            for index, chunk in enumerate(document.chunks):
                if not chunk.latent and not chunk.extra.get("candidates"):
                    continue
                key = (document.id, index)
                if file_index:
                    row = where.get(key)
                    if row is not None:
                        columns["others"][row][file_index - 1] = chunk.latent or ""
                    continue
                extra = chunk.extra
                candidates = extra.get("candidates") or []
                weights = _weights([c["log_w"] for c in candidates]) if candidates else []
                where[key] = len(columns["doc"])
                columns["doc"].append(document.id)
                columns["chunk"].append(index)
                columns["prefix"].append(chunk.prefix[-PREFIX_CHARS:])
                columns["text"].append(chunk.text)
                columns["latent"].append(chunk.latent or "")
                for name, field in (("log_p", "log_p_joint"), ("log_q", "log_q"), ("log_w", "log_w"), ("ess", "ess")):
                    columns[name].append(_number(extra.get(field)))
                columns["k"].append(extra.get("k"))
                columns["cut"].append(extra.get("latent_finished") is False)
                columns["correct"].append(latent_is_correct(chunk.prefix, chunk.text, chunk.latent or ""))
                columns["entropy"].append(_entropy(weights) if weights else None)
                columns["length"].append(len(chunk.latent or ""))
                columns["candidates"].append(
                    [
                        [
                            c.get("latent", ""),
                            _number(c.get("log_p_joint")),
                            _number(c.get("log_q")),
                            _number(c.get("log_w")),
                            round(w, 6),
                            c.get("finished") is not False,
                        ]
                        for c, w in zip(candidates, weights)
                    ]
                )
                columns["others"].append([None] * (len(files) - 1))
    if not columns["doc"]:
        raise BoltError(
            f"{files[0]}: no chunk has a latent to show (a chunks file before `bolt synthesize` / `bolt estep`?)."
        )
    return {"files": _labels(files), "columns": columns}


def _labels(files: list[Path]) -> list[str]:
    """The files' paths below their common folder (``seed-0/latents/em_2.jsonl``), or their names for one file."""
    if len(files) == 1:
        return [files[0].name]
    common = Path(os.path.commonpath([str(Path(f).resolve().parent) for f in files]))
    return [str(Path(f).resolve().relative_to(common)) for f in files]


def view(paths: list[Path], output: Path) -> dict[str, Any]:
    """``bolt view``: ``OUT/view.html`` (with the run record ``OUT/manifest.json``); returns a summary."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise BoltError(f"{output}: is a file; -o names the output directory of `bolt view` (view.html goes inside).")
    check_parent_directories(output)
    files = latents_files(paths)
    run = RunDir(output)
    run.start("view", {"inputs": [str(f) for f in files]}, inputs={str(i): f for i, f in enumerate(files)})
    data = collect(files)
    page = TEMPLATE.replace("__TITLE__", html.escape(", ".join(data["files"][:3]) + (" ..." if len(files) > 3 else "")))
    page = page.replace("__DATA__", json.dumps(data, separators=(",", ":")).replace("</", "<\\/"))
    output.mkdir(parents=True, exist_ok=True)
    with atomic_path(output / "view.html") as temporary:
        temporary.write_text(page, encoding="utf-8")
    summary = {
        "chunks": len(data["columns"]["doc"]),
        "files": [str(f) for f in files],
        "page": str(output / "view.html"),
    }
    run.finish(**summary)
    return summary


TEMPLATE = r"""<!doctype html><!-- bolt view -->
<html lang="en"><head><meta charset="utf-8"><title>bolt view: __TITLE__</title>
<style>
body{font:14px system-ui,sans-serif;margin:16px;color:#222}
h1{font-size:18px;margin:0 0 8px}
#summary span{margin-right:18px}
#controls{margin:10px 0;display:flex;flex-wrap:wrap;gap:10px;align-items:center}
#plots svg{border:1px solid #ddd;margin-right:12px;background:#fafafa}
table{border-collapse:collapse;width:100%;margin-top:8px}
th,td{border-bottom:1px solid #e4e4e4;padding:4px 6px;vertical-align:top;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.prefix{color:#888}.latent{color:#0b5394;font-family:monospace;white-space:pre-wrap}
.cut{color:#b45f06}.wrong{color:#c00}.right{color:#080}
tr.row{cursor:pointer}tr.row:hover{background:#f5f8ff}
.detail td{background:#f8f8f8}
.cand.chosen{font-weight:bold}
</style></head><body>
<h1>bolt view</h1>
<div id="summary"></div>
<div id="plots"></div>
<div id="controls">
 <label>sort <select id="sort">
  <option value="order">input order</option>
  <option value="ess-asc">ESS, lowest first</option><option value="ess-desc">ESS, highest first</option>
  <option value="entropy-desc">weight entropy, highest first</option>
  <option value="logw-asc">log w, lowest first</option><option value="length-desc">latent length, longest first</option>
 </select></label>
 <label><input type="checkbox" id="only-cut"> cut at the budget</label>
 <label><input type="checkbox" id="only-wrong"> wrong derivation</label>
 <label>ESS from <input id="ess-min" type="number" step="0.1" style="width:5em"> to
  <input id="ess-max" type="number" step="0.1" style="width:5em"></label>
 <label>search <input id="search" type="search" placeholder="text, latent or document id"></label>
 <span id="count"></span>
 <button id="prev">&larr; previous</button><span id="page"></span><button id="next">next &rarr;</button>
</div>
<table><thead><tr><th>document / chunk</th><th>prefix and text</th><th>chosen latent</th><th>log p</th><th>log q</th>
<th>log w</th><th>ESS</th><th>entropy</th><th>verdict</th></tr></thead>
<tbody id="rows"></tbody></table>
<script type="application/json" id="data">__DATA__</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const C = DATA.columns, N = C.doc.length, PAGE = 50;
const $ = id => document.getElementById(id);
const esc = s => String(s).replace(/[&<>"]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));
const fmt = (v, d = 3) => v === null || v === undefined ? "" : Number(v).toFixed(d);
let view = Int32Array.from({length: N}, (_, i) => i), page = 0, open = new Set();

function summary() {
  let ess = 0, essN = 0, cut = 0, judged = 0, right = 0;
  for (let i = 0; i < N; i++) {
    if (C.ess[i] !== null) { ess += C.ess[i]; essN++; }
    if (C.cut[i]) cut++;
    if (C.correct[i] !== null) { judged++; if (C.correct[i]) right++; }
  }
  const parts = [`<span>files: ${DATA.files.map(esc).join(", ")}</span>`, `<span>chunks: ${N.toLocaleString()}</span>`];
  if (essN) parts.push(`<span>mean ESS: ${(ess / essN).toFixed(2)}</span>`);
  parts.push(`<span>cut at the budget: ${(100 * cut / N).toFixed(1)}%</span>`);
  if (judged) {
    parts.push(`<span>correct derivations: ${(100 * right / judged).toFixed(1)}% of ${judged.toLocaleString()}</span>`);
  }
  $("summary").innerHTML = parts.join("");
}

function histogram(values, title, bins = 20) {
  const xs = values.filter(v => v !== null && Number.isFinite(v));
  if (!xs.length) return "";
  let lo = Infinity, hi = -Infinity;
  for (const x of xs) { if (x < lo) lo = x; if (x > hi) hi = x; }
  const counts = new Array(bins).fill(0), width = (hi - lo) || 1;
  for (const x of xs) counts[Math.min(bins - 1, Math.floor((x - lo) / width * bins))]++;
  const top = Math.max(...counts), W = 300, H = 120;
  const bars = counts.map((c, b) =>
    `<rect x="${b * W / bins + 1}" y="${H - 20 - c / top * (H - 40)}" width="${W / bins - 2}" ` +
    `height="${c / top * (H - 40)}" fill="#6d9eeb"><title>${c}</title></rect>`).join("");
  return `<svg width="${W}" height="${H}" role="img" aria-label="${esc(title)}">` +
    `<text x="6" y="14" font-size="12">${esc(title)}</text>${bars}` +
    `<text x="2" y="${H - 4}" font-size="10">${lo.toFixed(2)}</text>` +
    `<text x="${W - 40}" y="${H - 4}" font-size="10">${hi.toFixed(2)}</text></svg>`;
}

function filtered() {
  const cutOnly = $("only-cut").checked, wrongOnly = $("only-wrong").checked;
  const lo = $("ess-min").value === "" ? -Infinity : Number($("ess-min").value);
  const hi = $("ess-max").value === "" ? Infinity : Number($("ess-max").value);
  const q = $("search").value.trim().toLowerCase();
  const keep = [];
  for (let i = 0; i < N; i++) {
    if (cutOnly && !C.cut[i]) continue;
    if (wrongOnly && C.correct[i] !== false) continue;
    if ((lo > -Infinity || hi < Infinity) && (C.ess[i] === null || C.ess[i] < lo || C.ess[i] > hi)) continue;
    if (q && !(C.text[i].toLowerCase().includes(q) || C.latent[i].toLowerCase().includes(q) ||
               C.doc[i].toLowerCase().includes(q))) continue;
    keep.push(i);
  }
  return Int32Array.from(keep);
}

function sorted(rows) {
  const how = $("sort").value;
  if (how === "order") return rows;
  const [field, dir] = {
    "ess-asc": ["ess", 1], "ess-desc": ["ess", -1], "entropy-desc": ["entropy", -1],
    "logw-asc": ["log_w", 1], "length-desc": ["length", -1],
  }[how];
  const key = new Float64Array(N), col = C[field];
  for (const i of rows) key[i] = col[i] === null ? (dir > 0 ? Infinity : -Infinity) : col[i];
  return rows.sort((a, b) => dir * (key[a] - key[b]) || a - b);
}

function update() { view = sorted(filtered()); page = 0; render(); }

function detail(i) {
  const cands = C.candidates[i].map((c, j) =>
    `<tr class="cand${c[0] === C.latent[i] ? " chosen" : ""}"><td>candidate ${j + 1}</td>` +
    `<td class="latent">${esc(c[0])}${c[5] ? "" : ' <span class="cut">(cut)</span>'}</td>` +
    `<td class="num">${fmt(c[1])}</td><td class="num">${fmt(c[2])}</td><td class="num">${fmt(c[3])}</td>` +
    `<td class="num">weight ${fmt(c[4])}</td></tr>`).join("");
  const others = C.others[i].map((latent, j) => latent === null ? "" :
    `<tr><td>${esc(DATA.files[j + 1])}</td><td class="latent" colspan="5">${esc(latent)}</td></tr>`).join("");
  const body = cands || others ? `<table>${cands}${others}</table>`
    : "no candidates kept (bolt estep --keep-candidates keeps them)";
  return `<tr class="detail"><td colspan="9">${body}</td></tr>`;
}

function render() {
  const pages = Math.max(1, Math.ceil(view.length / PAGE));
  page = Math.min(page, pages - 1);
  const out = [];
  for (const i of view.subarray(page * PAGE, (page + 1) * PAGE)) {
    const verdict = C.correct[i] === null ? "" :
      C.correct[i] ? '<span class="right">right</span>' : '<span class="wrong">wrong</span>';
    out.push(`<tr class="row" data-i="${i}"><td>${esc(C.doc[i])}<br>#${C.chunk[i]}</td>` +
      `<td><span class="prefix">${esc(C.prefix[i])}</span> ${esc(C.text[i])}</td>` +
      `<td class="latent">${esc(C.latent[i])}${C.cut[i] ? ' <span class="cut">(cut)</span>' : ""}</td>` +
      `<td class="num">${fmt(C.log_p[i])}</td><td class="num">${fmt(C.log_q[i])}</td>` +
      `<td class="num">${fmt(C.log_w[i])}</td><td class="num">${fmt(C.ess[i], 2)}</td>` +
      `<td class="num">${fmt(C.entropy[i])}</td><td>${verdict}</td></tr>`);
    if (open.has(i)) out.push(detail(i));
  }
  $("rows").innerHTML = out.join("");
  $("count").textContent = `${view.length.toLocaleString()} of ${N.toLocaleString()} chunks`;
  $("page").textContent = ` page ${page + 1} of ${pages} `;
}

$("rows").addEventListener("click", e => {
  const row = e.target.closest("tr.row");
  if (!row) return;
  const i = Number(row.dataset.i);
  open.has(i) ? open.delete(i) : open.add(i);
  render();
});
for (const id of ["sort", "only-cut", "only-wrong", "ess-min", "ess-max"]) $(id).addEventListener("change", update);
$("search").addEventListener("input", update);
$("prev").addEventListener("click", () => { if (page > 0) { page--; render(); } });
$("next").addEventListener("click", () => { if ((page + 1) * PAGE < view.length) { page++; render(); } });
summary();
$("plots").innerHTML = histogram(C.ess, "ESS per chunk") + histogram(C.length, "latent length (characters)");
render();
document.body.dataset.ready = "1";
</script></body></html>
"""
