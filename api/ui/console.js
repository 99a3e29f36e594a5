/*
 * kvd console: the cluster view, a key browser with live updates through
 * /watch, and two small charts from /metrics. Plain JavaScript, no build
 * step, nothing fetched from outside the node (API.md §14).
 *
 * The page talks to the node that served it; the cluster view also asks each
 * member listed in /cluster/info for its own /cluster/info (those answers
 * carry Access-Control-Allow-Origin). Writes go to this node: on a follower
 * they are redirected to the leader, which the browser does not follow
 * across origins, so the page says so and links the leader's console.
 */
"use strict";

const $ = (id) => document.getElementById(id);
const PAGE = 50;          /* keys per page */
const REFRESH_MS = 1000;  /* cluster view and charts */
const MEMBER_TIMEOUT_MS = 900;

const state = {
	self: null,          /* this node's /cluster/info */
	leader: null,        /* leader id as this node knows it */
	prefix: "",
	pages: [""],         /* "after" of each page shown so far */
	more: false,
	rows: new Map(),     /* key -> {value, revision} on the page */
	selected: null,      /* key in the editor, or null for a new key */
	selectedRev: 0,
	dirty: false,
	watch: null,
	metrics: null,
	rate: [], lat: [],
};

/* ---- errors: shown on the page, never dropped ---- */

function showError(msg) {
	const box = $("errors");
	const p = document.createElement("p");
	const t = new Date().toLocaleTimeString();
	p.textContent = t + " " + msg;
	const b = document.createElement("button");
	b.type = "button";
	b.textContent = "dismiss";
	b.setAttribute("aria-label", "dismiss error");
	b.onclick = () => p.remove();
	p.appendChild(b);
	box.prepend(p);
	while (box.children.length > 5)
		box.lastChild.remove();
}

async function fetchTimeout(url, opts = {}, ms = 5000) {
	const ctl = new AbortController();
	const timer = setTimeout(() => ctl.abort(), ms);
	try {
		return await fetch(url, Object.assign({ signal: ctl.signal, cache: "no-store" }, opts));
	} finally {
		clearTimeout(timer);
	}
}

async function errorText(res) {
	const body = (await res.text()).trim();
	return res.status + " " + (body || res.statusText);
}

/* ---- the cluster view ---- */

/* "host:port" (host may be empty) -> the member's base URL. */
function memberBase(id) {
	const i = id.lastIndexOf(":");
	let host = id.slice(0, i);
	if (host === "" || host === "0.0.0.0")
		host = location.hostname;
	if (host.includes(":") && !host.startsWith("["))
		host = "[" + host + "]";
	return location.protocol + "//" + host + ":" + id.slice(i + 1);
}

async function memberInfo(id) {
	const url = id === state.self.id ? "/cluster/info" : memberBase(id) + "/cluster/info";
	try {
		const res = await fetchTimeout(url, {}, MEMBER_TIMEOUT_MS);
		if (!res.ok)
			return { id, error: await errorText(res) };
		return Object.assign({ id }, await res.json());
	} catch (e) {
		return { id, error: e.name === "AbortError" ? "no answer" : "unreachable" };
	}
}

function cell(tr, text, cls) {
	const td = document.createElement("td");
	td.textContent = text;
	if (cls)
		td.className = cls;
	tr.appendChild(td);
	return td;
}

async function refreshCluster() {
	let self;
	try {
		const res = await fetchTimeout("/cluster/info", {}, MEMBER_TIMEOUT_MS * 2);
		if (!res.ok)
			throw new Error(await errorText(res));
		self = await res.json();
	} catch (e) {
		$("node").textContent = "node unreachable";
		$("node").className = "status-bad";
		if (state.self !== null)
			showError("this node does not answer /cluster/info: " + (e.message || e));
		state.self = null;
		return;
	}
	state.self = self;
	state.leader = self.leader;
	$("node").textContent = self.id + " · " + self.role + " · term " + self.term;
	$("node").className = "";
	const ids = new Set([self.id, ...(self.peers || []), ...(self.learners || [])]);
	const learners = new Set(self.learners || []);
	const infos = await Promise.all([...ids].sort().map(memberInfo));
	const commit = Math.max(0, ...infos.filter((m) => !m.error).map((m) => m["commit-index"]));
	const body = $("members").tBodies[0];
	const rows = [];
	for (const m of infos) {
		const tr = document.createElement("tr");
		tr.dataset.id = m.id;
		cell(tr, m.id + (m.id === self.id ? " (this node)" : "") + (learners.has(m.id) ? " (learner)" : ""));
		if (m.error) {
			for (let i = 0; i < 6; i++)
				cell(tr, "–");
			cell(tr, m.error, "health-bad");
		} else {
			if (m.role === "leader")
				tr.classList.add("leader");
			cell(tr, m.role, "role-" + m.role);
			cell(tr, String(m.term), "num");
			cell(tr, m.leader === null ? "none" : m.leader);
			cell(tr, String(m["commit-index"]), "num");
			cell(tr, String(m["last-applied"]), "num");
			cell(tr, String(Math.max(0, commit - m["last-applied"])), "num");
			cell(tr, "ok", "health-ok");
		}
		rows.push(tr);
	}
	body.replaceChildren(...rows);
	const leaders = infos.filter((m) => m.role === "leader");
	$("cluster-note").textContent = leaders.length === 0 ? "No leader right now: writes wait for an election." :
		"Leader: " + leaders.map((m) => m.id).join(", ") + ". Refreshed every second.";
}

/* ---- charts from /metrics ---- */

/* Sums a metric's samples over its labels, leaving out Raft traffic between
 * nodes (route="raft"): the charts show what clients asked. */
function sumMetric(text, name) {
	let sum = 0, seen = false;
	for (const line of text.split("\n")) {
		if (!line.startsWith(name) || line.includes('route="raft"'))
			continue;
		const rest = line.slice(name.length);
		if (rest[0] !== " " && rest[0] !== "{")
			continue;
		const v = parseFloat(line.slice(line.lastIndexOf(" ") + 1));
		if (!Number.isNaN(v)) {
			sum += v;
			seen = true;
		}
	}
	return seen ? sum : null;
}

function draw(canvas, points, unit) {
	const ctx = canvas.getContext("2d");
	const w = canvas.width, h = canvas.height;
	ctx.clearRect(0, 0, w, h);
	const max = Math.max(1e-9, ...points);
	ctx.strokeStyle = "#d7dbe3";
	ctx.beginPath();
	ctx.moveTo(0, h - 0.5);
	ctx.lineTo(w, h - 0.5);
	ctx.stroke();
	ctx.fillStyle = "#5b6475";
	ctx.font = "10px sans-serif";
	ctx.fillText("max " + max.toFixed(max < 10 ? 2 : 0) + unit, 4, 11);
	if (points.length < 2)
		return;
	ctx.strokeStyle = "#2456c7";
	ctx.lineWidth = 2;
	ctx.beginPath();
	/* The newest point at the right edge, one per second, a minute wide. */
	points.forEach((p, i) => {
		const x = w - 1 - (points.length - 1 - i) * ((w - 2) / 59), y = h - 2 - (p / max) * (h - 16);
		i === 0 ? ctx.moveTo(x, y) : ctx.lineTo(x, y);
	});
	ctx.stroke();
}

async function refreshMetrics() {
	let text;
	try {
		const res = await fetchTimeout("/metrics", {}, MEMBER_TIMEOUT_MS * 2);
		if (!res.ok)
			throw new Error(await errorText(res));
		text = await res.text();
	} catch (e) {
		showError("/metrics: " + (e.message || e));
		return;
	}
	const now = performance.now();
	const m = {
		t: now,
		count: sumMetric(text, "kvd_http_requests_total"),
		durSum: sumMetric(text, "kvd_http_request_duration_seconds_sum"),
		durCount: sumMetric(text, "kvd_http_request_duration_seconds_count"),
	};
	const prev = state.metrics;
	state.metrics = m;
	if (!prev || m.count === null)
		return;
	const dt = (m.t - prev.t) / 1000;
	const rate = Math.max(0, (m.count - prev.count) / dt);
	const dc = m.durCount - prev.durCount;
	const lat = dc > 0 ? ((m.durSum - prev.durSum) / dc) * 1000 : 0;
	state.rate.push(rate);
	state.lat.push(lat);
	if (state.rate.length > 60) {
		state.rate.shift();
		state.lat.shift();
	}
	$("rate-now").textContent = "now " + rate.toFixed(0);
	$("lat-now").textContent = "now " + lat.toFixed(3);
	draw($("rate-chart"), state.rate, "/s");
	draw($("lat-chart"), state.lat, " ms");
}

/* ---- the key browser ---- */

function keyUrl(key) {
	return "/kv/" + encodeURIComponent(key);
}

function renderRow(key, item) {
	const tr = document.createElement("tr");
	tr.dataset.key = key;
	tr.tabIndex = 0;
	cell(tr, key);
	cell(tr, String(item.revision), "num");
	cell(tr, item.value === undefined ? "" : item.value, "val");
	if (key === state.selected)
		tr.classList.add("selected");
	tr.onclick = () => select(key);
	tr.onkeydown = (ev) => {
		if (ev.key === "Enter" || ev.key === " ") {
			ev.preventDefault();
			select(key);
		}
	};
	return tr;
}

function rowOf(key) {
	return $("key-table").tBodies[0].querySelector('tr[data-key="' + CSS.escape(key) + '"]');
}

async function listPage(after) {
	const q = new URLSearchParams({ prefix: state.prefix, limit: String(PAGE) });
	if (after)
		q.set("after", after);
	/* A follower redirects linearizable reads to the leader, which the
	 * browser does not follow across origins: it lists its own applied
	 * state instead (stale, and said so on the page). */
	const stale = state.self !== null && state.self.role !== "leader";
	if (stale)
		q.set("consistency", "stale");
	let page;
	try {
		const res = await fetchTimeout("/kv?" + q.toString(), { redirect: "manual" });
		if (res.type === "opaqueredirect")
			throw new Error("this node redirected the listing to the leader; reload the page");
		if (!res.ok)
			throw new Error(await errorText(res));
		page = await res.json();
	} catch (e) {
		showError("listing keys: " + (e.message || e));
		return;
	}
	state.rows = new Map(page.items.map((it) => [it.key, it]));
	state.more = page.more;
	$("key-table").tBodies[0].replaceChildren(...page.items.map((it) => renderRow(it.key, it)));
	$("next-page").disabled = !page.more;
	$("first-page").disabled = state.pages.length <= 1;
	$("page-info").textContent = page.items.length === 0 ? "no keys" :
		"page " + state.pages.length + ", " + page.items.length + " keys, store revision " + page.revision +
		(stale ? " (this follower's applied state)" : "");
	startWatch(page.revision + 1);
}

function startWatch(from) {
	if (state.watch)
		state.watch.close();
	if (typeof EventSource === "undefined") {
		$("watch-state").textContent = "live updates need EventSource";
		return;
	}
	const q = new URLSearchParams({ prefix: state.prefix, from: String(from) });
	const es = new EventSource("/watch?" + q.toString());
	state.watch = es;
	$("watch-state").textContent = "live: connecting";
	es.onopen = () => { $("watch-state").textContent = "live"; };
	es.onerror = () => {
		if (state.watch !== es)
			return;
		$("watch-state").textContent = "live updates interrupted, retrying";
		if (es.readyState === EventSource.CLOSED) {
			showError("watch closed by the node; list again to resume");
			state.watch = null;
		}
	};
	es.addEventListener("put", (ev) => onChange("put", ev));
	es.addEventListener("delete", (ev) => onChange("delete", ev));
	es.addEventListener("clear", (ev) => onChange("clear", ev));
}

/* True when key belongs on the page shown (its range of keys). */
function onPage(key) {
	const after = state.pages[state.pages.length - 1];
	if (after && key <= after)
		return false;
	if (!state.more)
		return true;
	const keys = [...state.rows.keys()];
	return keys.length > 0 && key <= keys[keys.length - 1];
}

function onChange(kind, ev) {
	let d;
	try {
		d = JSON.parse(ev.data);
	} catch (e) {
		showError("watch: bad event data: " + ev.data);
		return;
	}
	const body = $("key-table").tBodies[0];
	if (kind === "clear") {
		state.rows.clear();
		body.replaceChildren();
		$("page-info").textContent = "every key cleared at revision " + ev.lastEventId;
		if (state.selected !== null)
			noteChanged("was cleared");
		return;
	}
	const key = d.key;
	if (kind === "delete") {
		state.rows.delete(key);
		const tr = rowOf(key);
		if (tr)
			tr.remove();
		if (key === state.selected)
			noteChanged("was deleted at revision " + ev.lastEventId);
		return;
	}
	const item = { key, value: d.value, revision: d.revision };
	const old = rowOf(key);
	if (old) {
		state.rows.set(key, item);
		const tr = renderRow(key, item);
		tr.classList.add("flash");
		old.replaceWith(tr);
	} else if (onPage(key)) {
		state.rows.set(key, item);
		const tr = renderRow(key, item);
		tr.classList.add("flash");
		const next = [...body.rows].find((r) => r.dataset.key > key);
		body.insertBefore(tr, next || null);
	}
	if (key === state.selected && item.revision !== state.selectedRev) {
		if (state.dirty)
			noteChanged("changed at revision " + item.revision + " (your edit would conflict)");
		else
			fillEditor(key, item.value, item.revision);
	}
}

function noteChanged(what) {
	const s = $("ed-status");
	s.textContent = "This key " + what + ".";
	s.className = "note status-bad";
}

function fillEditor(key, value, revision) {
	state.selected = key;
	state.selectedRev = revision;
	state.dirty = false;
	$("ed-key").value = key;
	$("ed-key").readOnly = key !== null;
	$("ed-value").value = value;
	$("ed-rev").textContent = key === null ? "new" : String(revision);
	$("delete-btn").disabled = key === null;
	$("reload-btn").disabled = key === null;
	$("editor-h").textContent = key === null ? "New key" : "Key " + key;
	for (const tr of $("key-table").tBodies[0].rows)
		tr.classList.toggle("selected", tr.dataset.key === key);
}

function setStatus(text, ok) {
	const s = $("ed-status");
	s.textContent = text;
	s.className = "note " + (ok ? "status-ok" : "status-bad");
}

function select(key) {
	const it = state.rows.get(key);
	fillEditor(key, it ? it.value : "", it ? it.revision : 0);
	setStatus("", true);
	$("ed-value").focus();
}

/* A write answered 307: the browser does not follow it across origins. */
function redirected(res) {
	if (res.type !== "opaqueredirect")
		return false;
	const leader = state.leader;
	let msg = "This node is not the leader, and the browser does not follow its redirect to another node.";
	if (leader)
		msg += " Open the leader's console: " + memberBase(leader) + "/ui/";
	setStatus(msg, false);
	showError(msg);
	return true;
}

async function write(method, key, headers, body) {
	try {
		return await fetchTimeout(keyUrl(key), { method, headers, body, redirect: "manual" }, 11000);
	} catch (e) {
		const msg = method + " " + key + ": " + (e.name === "AbortError" ? "no answer" : e.message || e);
		setStatus(msg, false);
		showError(msg);
		return null;
	}
}

async function save(ev) {
	ev.preventDefault();
	const key = $("ed-key").value;
	const value = $("ed-value").value;
	const isNew = state.selected === null;
	const headers = isNew ? { "If-None-Match": "*" } : { "If-Match": '"' + state.selectedRev + '"' };
	const res = await write("PUT", key, headers, value);
	if (res === null || redirected(res))
		return;
	if (res.status === 412) {
		setStatus(isNew ? "412 precondition failed: the key already exists. Select it to edit it." :
			"412 precondition failed: the key changed since revision " + state.selectedRev +
			". Reload to see the current value.", false);
		return;
	}
	if (!res.ok) {
		const msg = "saving " + key + ": " + (await errorText(res));
		setStatus(msg, false);
		showError(msg);
		return;
	}
	const rev = parseInt((res.headers.get("ETag") || "").replace(/"/g, ""), 10);
	fillEditor(key, value, Number.isNaN(rev) ? 0 : rev);
	setStatus("Saved at revision " + (Number.isNaN(rev) ? "?" : rev) + ".", true);
}

async function remove() {
	const key = state.selected;
	if (key === null)
		return;
	const res = await write("DELETE", key, { "If-Match": '"' + state.selectedRev + '"' });
	if (res === null || redirected(res))
		return;
	if (res.status === 412) {
		setStatus("412 precondition failed: the key changed since revision " + state.selectedRev +
			"; not deleted. Reload to see it.", false);
		return;
	}
	if (!res.ok) {
		const msg = "deleting " + key + ": " + (await errorText(res));
		setStatus(msg, false);
		showError(msg);
		return;
	}
	fillEditor(null, "", 0);
	setStatus("Deleted " + key + ".", true);
}

async function reload() {
	const key = state.selected;
	if (key === null)
		return;
	try {
		const res = await fetchTimeout(keyUrl(key));
		if (res.status === 404) {
			setStatus("The key no longer exists.", false);
			return;
		}
		if (!res.ok)
			throw new Error(await errorText(res));
		const rev = parseInt((res.headers.get("ETag") || "").replace(/"/g, ""), 10);
		fillEditor(key, await res.text(), rev);
		setStatus("Reloaded at revision " + rev + ".", true);
	} catch (e) {
		showError("reading " + key + ": " + (e.message || e));
	}
}

function init() {
	$("list-form").onsubmit = (ev) => {
		ev.preventDefault();
		state.prefix = $("prefix").value;
		state.pages = [""];
		listPage("");
	};
	$("next-page").onclick = () => {
		const keys = [...state.rows.keys()];
		if (keys.length === 0)
			return;
		state.pages.push(keys[keys.length - 1]);
		listPage(keys[keys.length - 1]);
	};
	$("first-page").onclick = () => {
		state.pages = [""];
		listPage("");
	};
	$("new-btn").onclick = () => {
		fillEditor(null, "", 0);
		setStatus("", true);
		$("ed-key").focus();
	};
	$("editor").onsubmit = save;
	$("delete-btn").onclick = remove;
	$("reload-btn").onclick = reload;
	$("ed-value").oninput = () => { state.dirty = true; };
	window.addEventListener("unhandledrejection", (ev) => showError(String(ev.reason)));
	fillEditor(null, "", 0);
	const tick = () => Promise.all([refreshCluster(), refreshMetrics()]).finally(() =>
		setTimeout(tick, REFRESH_MS));
	/* The first listing waits for this node's role (stale on a follower). */
	refreshCluster().finally(() => {
		listPage("");
		tick();
	});
}

init();
