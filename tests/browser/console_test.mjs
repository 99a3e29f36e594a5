// Drives the kvd web console (/ui/) in Debian's chromium with puppeteer-core
// against a live 3-node cluster that tests/integration/test_console.py
// started. Each step saves a screenshot into --out and checks what the page
// shows; the result is one JSON line on stdout ({"ok": true, "steps": [...]})
// and exit 0, or the failed step's reason and exit 1.
//
//   node console_test.mjs --nodes ID=URL,... --pids ID=PID,... --out DIR
import fs from "node:fs";
import path from "node:path";
import puppeteer from "puppeteer-core";

function args() {
	const a = {};
	for (let i = 2; i < process.argv.length; i += 2)
		a[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
	const map = (s) => Object.fromEntries(s.split(",").map((kv) => kv.split("=")));
	return { nodes: map(a.nodes), pids: map(a.pids), out: a.out,
		chromium: a.chromium || "/usr/bin/chromium" };
}

const opt = args();
const steps = [];
const consoleErrors = [];
let expectedNetworkErrors = 0;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what, fn, ms = 10000) {
	const end = Date.now() + ms;
	let last;
	while (Date.now() < end) {
		try {
			last = await fn();
			if (last)
				return last;
		} catch (e) {
			last = e.message;
		}
		await sleep(50);
	}
	throw new Error("timed out waiting for " + what + " (last: " + JSON.stringify(last) + ")");
}

async function shot(page, name, selectors) {
	const file = path.join(opt.out, name);
	await page.screenshot({ path: file, fullPage: true });
	const size = fs.statSync(file).size;
	if (size < 5000)
		throw new Error(name + " is only " + size + " bytes");
	for (const sel of selectors) {
		const visible = await page.$eval(sel, (el) => {
			const r = el.getBoundingClientRect();
			const st = getComputedStyle(el);
			return r.width > 0 && r.height > 0 && st.visibility !== "hidden" && st.display !== "none";
		});
		if (!visible)
			throw new Error(name + ": " + sel + " not visible");
	}
	return { screenshot: name, bytes: size };
}

async function step(name, fn) {
	const t0 = Date.now();
	const detail = await fn();
	steps.push(Object.assign({ step: name, ms: Date.now() - t0 }, detail));
}

function watchConsole(page, label) {
	page.on("console", (m) => {
		if (m.type() !== "error")
			return;
		const text = m.text();
		// The browser logs every 4xx/5xx and refused connection as a console
		// error; the ones the steps provoke on purpose (the 412 of the
		// conflict, the killed leader) are counted, not failed.
		if (text.startsWith("Failed to load resource") && expectedNetworkErrors > 0)
			return;
		consoleErrors.push(label + ": " + text);
	});
	page.on("pageerror", (e) => consoleErrors.push(label + ": " + e.message));
}

async function membersTable(page) {
	return page.$$eval("#members tbody tr", (rows) => rows.map((r) => ({
		id: r.dataset.id, leader: r.classList.contains("leader"),
		cells: [...r.cells].map((c) => c.textContent) })));
}

async function leaderOf(page) {
	const rows = await membersTable(page);
	const l = rows.filter((r) => r.leader && r.cells[7] === "ok");
	return rows.length === 3 && l.length === 1 ? l[0].id : null;
}

/* Clicks a button of the editor and waits for the status line it sets
 * (cleared first, so an earlier step's status is not taken for this one). */
async function clickAndStatus(page, button, what, pred) {
	await page.$eval("#ed-status", (e) => { e.textContent = ""; });
	await page.click(button);
	return waitFor(what, () => page.$eval("#ed-status", (e) => e.textContent).then(
		(t) => (t !== "" && pred(t) ? t : null)));
}

async function http(url, opts) {
	const res = await fetch(url, opts);
	return { status: res.status, body: await res.text(), etag: res.headers.get("etag") };
}

async function main() {
	fs.mkdirSync(opt.out, { recursive: true });
	const browser = await puppeteer.launch({
		executablePath: opt.chromium, headless: true,
		args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
			"--disable-background-networking", "--disable-component-update", "--disable-sync"],
	});
	try {
		const ids = Object.keys(opt.nodes);
		// Find the leader through the API, open its console.
		let leaderId = await waitFor("a leader", async () => {
			for (const id of ids) {
				const r = await http(opt.nodes[id] + "/cluster/info");
				const j = JSON.parse(r.body);
				if (j.role === "leader")
					return id;
			}
			return null;
		});
		const leaderUrl = opt.nodes[leaderId];
		const page = await browser.newPage();
		watchConsole(page, "leader page");
		await page.setViewport({ width: 1280, height: 800 });

		await step("cluster view on the leader", async () => {
			await page.goto(leaderUrl + "/ui/", { waitUntil: "domcontentloaded" });
			const shown = await waitFor("the members table with the leader marked", () => leaderOf(page));
			if (shown !== leaderId)
				throw new Error("page marks " + shown + ", API says " + leaderId);
			const rows = await membersTable(page);
			const roles = rows.map((r) => r.cells[1]).sort().join(",");
			if (roles !== "follower,follower,leader")
				throw new Error("roles shown: " + roles);
			return await shot(page, "01-cluster.png", ["#members", "#key-table", "#rate-chart"]);
		});

		const key = "ui-test-key";
		await step("create a key through the page", async () => {
			await page.click("#new-btn");
			await page.type("#ed-key", key);
			await page.type("#ed-value", "first value");
			await clickAndStatus(page, "#save-btn", "Saved", (t) => t.startsWith("Saved at"));
			const r = await http(leaderUrl + "/kv/" + key);
			if (r.status !== 200 || r.body !== "first value")
				throw new Error("GET after create: " + r.status + " " + r.body);
			return await shot(page, "02-created.png", ["#ed-status"]);
		});

		await step("edit, and a conflicting edit shows the 412", async () => {
			await page.$eval("#ed-value", (e) => { e.value = ""; });
			await page.type("#ed-value", "second value");
			await clickAndStatus(page, "#save-btn", "Saved", (t) => t.startsWith("Saved at"));
			let r = await http(leaderUrl + "/kv/" + key);
			if (r.body !== "second value")
				throw new Error("GET after edit: " + r.body);
			// Start an edit, then another client writes the key first.
			await page.type("#ed-value", " (edited in the page)");
			r = await http(leaderUrl + "/kv/" + key, { method: "PUT", body: "written by another client" });
			if (r.status !== 200)
				throw new Error("outside PUT: " + r.status);
			expectedNetworkErrors++;
			const status = await clickAndStatus(page, "#save-btn", "the 412", (t) => t.includes("412"));
			r = await http(leaderUrl + "/kv/" + key);
			if (r.body !== "written by another client")
				throw new Error("the conflicting save overwrote the key: " + r.body);
			return Object.assign({ shown: status }, await shot(page, "03-conflict.png", ["#ed-status"]));
		});

		await step("delete through the page", async () => {
			await clickAndStatus(page, "#reload-btn", "Reloaded", (t) => t.startsWith("Reloaded"));
			await clickAndStatus(page, "#delete-btn", "Deleted", (t) => t.startsWith("Deleted"));
			const r = await http(leaderUrl + "/kv/" + key);
			if (r.status !== 404)
				throw new Error("GET after delete: " + r.status);
			return await shot(page, "04-deleted.png", ["#ed-status"]);
		});

		await step("a key written with curl appears through the watch", async () => {
			await waitFor("the watch to be live", () => page.$eval("#watch-state", (e) => e.textContent === "live"));
			const t0 = Date.now();
			const r = await http(leaderUrl + "/kv/from-curl", { method: "PUT", body: "hello from curl" });
			if (r.status !== 200)
				throw new Error("PUT: " + r.status);
			await waitFor("the row", () => page.$('#key-table tr[data-key="from-curl"]'), 1000);
			const ms = Date.now() - t0;
			const text = await page.$eval('#key-table tr[data-key="from-curl"]', (e) => e.textContent);
			if (!text.includes("hello from curl"))
				throw new Error("row shows " + text);
			return Object.assign({ appeared_ms: ms }, await shot(page, "05-watch.png", ['#key-table tr[data-key="from-curl"]']));
		});

		const followerId = ids.find((id) => id !== leaderId);
		const fpage = await browser.newPage();
		watchConsole(fpage, "follower page");
		await fpage.setViewport({ width: 1280, height: 800 });
		await step("a follower's page shows the cluster and its keys", async () => {
			await fpage.goto(opt.nodes[followerId] + "/ui/", { waitUntil: "domcontentloaded" });
			const shown = await waitFor("the leader on the follower's page", () => leaderOf(fpage));
			if (shown !== leaderId)
				throw new Error("follower page marks " + shown);
			await waitFor("the key list", () => fpage.$('#key-table tr[data-key="from-curl"]'));
			return await shot(fpage, "06-follower.png", ["#members", '#key-table tr[data-key="from-curl"]']);
		});

		await step("kill the leader: the page marks the new one", async () => {
			await page.close();
			expectedNetworkErrors++;
			process.kill(Number(opt.pids[leaderId]), "SIGKILL");
			const t0 = Date.now();
			const next = await waitFor("a new leader on the page", async () => {
				const rows = await membersTable(fpage);
				const dead = rows.find((r) => r.id === leaderId);
				const l = rows.filter((r) => r.leader);
				return dead && dead.cells[7] !== "ok" && l.length === 1 && l[0].id !== leaderId ? l[0].id : null;
			}, 15000);
			return Object.assign({ new_leader: next, marked_after_ms: Date.now() - t0 },
				await shot(fpage, "07-new-leader.png", ["#members tr.leader"]));
		});

		await step("phone-width screen and keyboard", async () => {
			await fpage.setViewport({ width: 390, height: 844, isMobile: true });
			await sleep(300);
			const over = await fpage.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
			if (over > 1)
				throw new Error("page is " + over + " px wider than a 390 px screen");
			await fpage.focus("#prefix");
			await fpage.keyboard.press("Tab");
			const f1 = await fpage.evaluate(() => document.activeElement.id);
			if (f1 !== "list-btn")
				throw new Error("Tab from the prefix went to " + f1);
			await fpage.focus('#key-table tr[data-key="from-curl"]');
			await fpage.keyboard.press("Enter");
			const edKey = await fpage.$eval("#ed-key", (e) => e.value);
			if (edKey !== "from-curl")
				throw new Error("Enter on a row opened " + edKey);
			return await shot(fpage, "08-phone.png", ["#members", "#ed-key"]);
		});
		if (consoleErrors.length > 0)
			throw new Error("console errors: " + consoleErrors.join(" | "));
		console.log(JSON.stringify({ ok: true, steps }));
	} finally {
		await browser.close();
	}
}

main().catch((e) => {
	console.log(JSON.stringify({ ok: false, error: String(e && e.message || e), steps, consoleErrors }));
	process.exit(1);
});
