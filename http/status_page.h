// http/status_page.h: the status page served at / : one self-contained
// HTML page (no build step, no external resources) that shows the
// replica and its peers from GET /v1/status (every 2 s) and a live feed
// of one keyspace from GET /v1/watch/{keyspace} (server-sent events).
// A token, if the server needs one, is typed in (kept in the tab's
// sessionStorage) or given as #token=...; ?keyspace=KS starts the feed.
#ifndef PEERKV_HTTP_STATUS_PAGE_H_
#define PEERKV_HTTP_STATUS_PAGE_H_

#include <string_view>

namespace peerkv::http {

inline constexpr std::string_view kStatusPage = R"PKVPAGE(<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>peerkv status</title>
<style>
body{font:15px/1.4 system-ui,sans-serif;margin:1.5em;color:#1b1f23;background:#fafbfc}
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.1em;margin:1.2em 0 .4em}
table{border-collapse:collapse;background:#fff}td,th{border:1px solid #d1d5da;padding:.25em .6em;text-align:left}
th{background:#f1f3f5}.ok{color:#22863a;font-weight:600}.bad{color:#cb2431;font-weight:600}
#feed{list-style:none;padding:0;margin:0;max-height:28em;overflow:auto;background:#fff;border:1px solid #d1d5da}
#feed li{padding:.2em .6em;border-bottom:1px solid #eee;font-family:ui-monospace,monospace}
#feed li.deleted{color:#6a737d;text-decoration:line-through}
.muted{color:#6a737d}input{font:inherit;padding:.15em .4em}button{font:inherit}
#error{color:#cb2431}
</style></head><body>
<h1>peerkv <span id="name" class="muted"></span></h1>
<div id="error"></div>
<table id="replica"><tbody></tbody></table>
<h2>Peers</h2>
<table id="peers"><thead><tr><th>peer</th><th>address</th><th>reachable</th><th>behind</th><th>last exchange</th><th>clock offset</th></tr></thead><tbody></tbody></table>
<h2>Live changes</h2>
<form id="watchform">keyspace <input id="keyspace" size="20" required>
 <button type="submit">watch</button>
 <span class="muted">token</span> <input id="token" size="24" type="password" placeholder="(if required)">
 <span id="watchstate" class="muted"></span></form>
<ul id="feed"></ul>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const hash = new URLSearchParams(location.hash.slice(1));
if (hash.get("token")) sessionStorage.setItem("peerkv-token", hash.get("token"));
$("token").value = sessionStorage.getItem("peerkv-token") || "";
function token() { return $("token").value.trim(); }
function headers() { return token() ? {Authorization: "Bearer " + token()} : {}; }
function b64text(s) { try { return "0x" + Array.from(atob(s), c => c.charCodeAt(0).toString(16).padStart(2, "0")).join(""); } catch (e) { return s; } }
function field(r, name) { return name in r ? r[name] : (name + "_b64" in r ? b64text(r[name + "_b64"]) : ""); }
function ago(ms) { if (ms === null || ms === undefined) return "never"; return ms < 1000 ? ms + " ms ago" : (ms / 1000).toFixed(1) + " s ago"; }
function row(tbody, cells) { const tr = document.createElement("tr"); for (const c of cells) { const td = document.createElement("td"); if (c instanceof Node) td.appendChild(c); else td.textContent = c; tr.appendChild(td); } tbody.appendChild(tr); }
function mark(ok) { const s = document.createElement("span"); s.className = ok ? "ok" : "bad"; s.textContent = ok ? "yes" : "no"; return s; }
async function refresh() {
  try {
    const res = await fetch("/v1/status", {headers: headers()});
    const body = await res.json();
    if (!res.ok) throw new Error(body.error ? body.error.code + ": " + body.error.message : res.status);
    $("error").textContent = "";
    const r = body.replica;
    $("name").textContent = r.name || r.replica_id;
    const tb = $("replica").tBodies[0]; tb.replaceChildren();
    row(tb, ["replica id", r.replica_id]); row(tb, ["records", r.live_records]);
    row(tb, ["tombstones", r.tombstones]); row(tb, ["max seq", r.max_seq]);
    row(tb, ["disk bytes", r.disk_bytes]); row(tb, ["uptime", (r.uptime_ms / 1000).toFixed(0) + " s"]);
    const pb = $("peers").tBodies[0]; pb.replaceChildren();
    if (body.peers.length === 0) row(pb, ["(no peers)", "", "", "", "", ""]);
    for (const p of body.peers) row(pb, [p.name || p.replica_id, p.address || "(dialled in)", mark(p.reachable), p.behind, ago(p.last_exchange_ms_ago), "clock_offset_ms" in p ? p.clock_offset_ms + " ms" : "?"]);
  } catch (e) { $("error").textContent = "status: " + e.message; }
}
let source = null;
function watch(ks) {
  if (source) source.close();
  $("feed").replaceChildren();
  const q = new URLSearchParams({from_seq: "0"});
  if (token()) q.set("access_token", token());
  source = new EventSource("/v1/watch/" + encodeURIComponent(ks) + "?" + q);
  $("watchstate").textContent = "connecting to " + ks + "...";
  source.onopen = () => { $("watchstate").textContent = "watching " + ks; document.body.dataset.watching = ks; };
  source.onerror = () => { $("watchstate").textContent = "reconnecting..."; };
  source.onmessage = (ev) => {
    const r = JSON.parse(ev.data);
    const li = document.createElement("li");
    li.className = r.deleted ? "change deleted" : "change";
    li.dataset.key = field(r, "key");
    li.textContent = "#" + r.seq + " " + field(r, "key") + (r.deleted ? " (deleted)" : " = " + field(r, "value"));
    $("feed").prepend(li);
    while ($("feed").children.length > 500) $("feed").lastChild.remove();
  };
}
$("watchform").onsubmit = (e) => { e.preventDefault(); sessionStorage.setItem("peerkv-token", token()); watch($("keyspace").value); };
if (params.get("keyspace")) { $("keyspace").value = params.get("keyspace"); watch(params.get("keyspace")); }
refresh(); setInterval(refresh, 2000);
</script></body></html>
)PKVPAGE";

}  // namespace peerkv::http

#endif  // PEERKV_HTTP_STATUS_PAGE_H_
