// The memcollab memory browser (served at /browse; see server/routes_browse.py).
//
// Safety rule of this file: record data (model-written text) is only ever put into the page
// with textContent, through el() below; nothing here parses data as HTML (no innerHTML,
// outerHTML, insertAdjacentHTML or document.write; a test greps for them).
"use strict";

(() => {
  const STORAGE_KEY = "memcollab.browse.key";
  const PAGE = 500;
  const MAX_RECORDS = 5000; // what one page load shows at most; the rest is counted
  const $ = (id) => document.getElementById(id);
  const searchText = new Map(); // record card -> its lower-cased text, for the filter

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function add(parent, ...children) {
    for (const child of children) {
      if (child === null || child === undefined) continue;
      parent.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return parent;
  }

  function when(seconds) {
    if (seconds === null || seconds === undefined) return "unknown time";
    return new Date(seconds * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  function fixed(value, digits) {
    return value === null || value === undefined ? "n/a" : Number(value).toFixed(digits);
  }

  function signed(value) {
    if (value === null || value === undefined) return "n/a";
    return (value >= 0 ? "+" : "") + Number(value).toFixed(2);
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, key) {
    let response;
    try {
      response = await fetch(path, {
        headers: { Authorization: "Bearer " + key, Accept: "application/json" },
        cache: "no-store",
        credentials: "omit",
      });
    } catch (err) {
      throw new ApiError(0, "the service did not answer (" + err.message + ")");
    }
    let body = null;
    try {
      body = await response.json();
    } catch (err) {
      body = null;
    }
    if (!response.ok) {
      const message = body && body.error ? body.error.message : response.statusText;
      throw new ApiError(response.status, message);
    }
    return body;
  }

  async function loadAll(key) {
    const records = [];
    let first = null;
    let offset = 0;
    for (;;) {
      const page = await api("v1/browse?limit=" + PAGE + "&offset=" + offset, key);
      first = first || page;
      records.push(...page.records);
      if (page.next_offset === null || records.length >= MAX_RECORDS) break;
      offset = page.next_offset;
    }
    return { page: first, records };
  }

  function status(text, kind) {
    const node = $("status");
    node.textContent = text;
    node.className = kind || "";
  }

  // ------------------------------------------------------------------ statistics

  function stat(label, value, detail) {
    const card = el("div", "stat");
    add(card, el("div", "value", value), el("div", "label", label));
    if (detail) card.append(el("div", "detail", detail));
    return card;
  }

  function renderStats(page, records, stats) {
    const box = $("stats");
    box.replaceChildren();
    const constraints = records.reduce((n, r) => n + r.constraints.length, 0);
    const buckets = new Set(records.map((r) => [r.domain, r.category, r.subcategory].join("\u0000")));
    const categories = new Set(records.map((r) => r.domain + "\u0000" + r.category));
    const models = new Set();
    let retrieved = 0;
    let helped = 0;
    let harmed = 0;
    for (const r of records) {
      if (r.provenance.model_pos) models.add(r.provenance.model_pos);
      if (r.provenance.model_neg) models.add(r.provenance.model_neg);
      retrieved += r.usage.retrieved;
      for (const [model, counts] of Object.entries(r.usage.models)) {
        models.add(model);
        helped += counts.helped;
        harmed += counts.harmed;
      }
    }
    const flagged = records.filter((r) => r.flagged).length;
    const attempts = stats ? stats.attempts : null;
    const verdicts = attempts
      ? Object.entries(attempts.by_verdict)
          .filter(([, n]) => n > 0)
          .map(([v, n]) => v + " " + n)
          .join(" · ")
      : "";
    add(
      box,
      stat("namespace", page.namespace, "key " + page.key_id + " (" + page.scope + ")"),
      stat("records", page.total, page.total > records.length ? "first " + records.length + " shown" : null),
      stat("constraints", constraints),
      stat("categories", categories.size, buckets.size + " buckets"),
      stat("flagged", flagged, "withheld from retrieval"),
      stat("models", models.size),
      stat("retrieved", retrieved, "times served"),
      stat("outcomes", helped + harmed, "helped " + helped + " · harmed " + harmed),
      stat("attempts", attempts ? attempts.total : "n/a", verdicts || null),
    );
    box.hidden = false;
  }

  // ------------------------------------------------------------------ records

  function constraintItem(c) {
    const li = el("li", "constraint");
    add(
      li,
      el("span", "kw", "When "),
      el("span", "when", c.when),
      el("span", "kw", ", enforce "),
      el("span", "enforce", c.enforce),
      el("span", "kw", "; avoid "),
      el("span", "avoid", c.avoid),
      ".",
    );
    if (c.support > 1) li.append(el("span", "support", "support " + c.support));
    return li;
  }

  function provenanceLine(r) {
    const p = r.provenance;
    const box = el("div", "provenance");
    add(
      box,
      el("span", "pos", "l+ " + (p.model_pos || "none")),
      " vs ",
      el("span", "neg", "l− " + (p.model_neg || "none")),
      " · distiller ",
      el("span", "name", p.distiller),
      " · " + r.pair_type + " pair · created " + when(p.created_at) + " · ",
    );
    if (p.key_id) {
      add(box, (p.via === "import" ? "imported" : "added") + " by key ", el("code", null, p.key_id), " at " + when(p.added_at));
    } else {
      box.append("built or imported offline (no key)");
    }
    return box;
  }

  function usageTable(r) {
    const box = el("div", "usage");
    box.append(el("span", "retrieved", "retrieved " + r.usage.retrieved + "×"));
    const models = Object.keys(r.usage.models).sort();
    if (!models.length) {
      box.append(el("span", "muted", " · no outcomes yet"));
      return box;
    }
    const table = el("table", "per-model");
    const head = el("tr");
    for (const h of ["model", "helped", "harmed", "utility", "P(harm)", "verdict"]) head.append(el("th", null, h));
    table.append(head);
    for (const model of models) {
      const counts = r.usage.models[model];
      const u = r.utility[model];
      const row = el("tr");
      add(
        row,
        el("td", "model", model),
        el("td", "num helped", counts.helped),
        el("td", "num harmed", counts.harmed),
        el("td", "num", u ? signed(u.utility) : "n/a"),
        el("td", "num", u ? fixed(u.p_harm, 3) : "n/a"),
        el("td", "verdict " + (u ? u.verdict : ""), u ? u.verdict : "n/a"),
      );
      table.append(row);
    }
    box.append(table);
    return box;
  }

  function historyList(r) {
    if (!r.history.length) return null;
    const details = el("details", "history");
    details.append(el("summary", null, "flag history (" + r.history.length + ")"));
    const list = el("ol");
    for (const e of r.history) {
      const li = el("li");
      add(li, el("span", "action " + e.action, e.action), " “", el("span", "reason", e.reason), "” by ", el("code", null, e.actor || "unknown"), " at " + when(e.at));
      list.append(li);
    }
    details.append(list);
    if (r.flagged) details.open = true;
    return details;
  }

  function recordCard(r) {
    const card = el("article", "record" + (r.flagged ? " flagged" : ""));
    card.dataset.record = r.id;
    const head = el("div", "record-head");
    add(head, el("code", "rid", r.id), el("span", "domain", r.domain));
    if (r.flagged) {
      const badge = el("span", "flag-badge", "flagged");
      head.append(badge);
      head.append(el("span", "flag-reason", r.flag_reason || ""));
    }
    if (r.status && r.status !== "active") head.append(el("span", "flag-badge", r.status));
    card.append(head);
    const list = el("ol", "constraints");
    for (const c of r.constraints) list.append(constraintItem(c));
    card.append(list);
    const task = el("details", "task");
    add(task, el("summary", null, "source task " + r.source_task_id), el("pre", null, r.task_text));
    add(card, provenanceLine(r), usageTable(r), historyList(r), task);
    const text = [
      r.id,
      r.domain,
      r.category,
      r.subcategory,
      r.pair_type,
      r.flag_reason || "",
      r.flagged ? "flagged" : "",
      r.status || "",
      r.provenance.model_pos || "",
      r.provenance.model_neg || "",
      r.provenance.distiller,
      r.provenance.key_id || "",
      ...Object.keys(r.usage.models),
      ...r.constraints.map((c) => c.text),
      ...r.history.map((e) => e.reason),
    ];
    searchText.set(card, text.join("\n").toLowerCase());
    return card;
  }

  function renderRecords(records) {
    const main = $("records");
    main.replaceChildren();
    searchText.clear();
    if (!records.length) {
      main.append(el("p", "muted", "This namespace holds no records yet."));
      return;
    }
    const groups = new Map();
    for (const r of records) {
      const key = [r.domain, r.category, r.subcategory];
      const id = key.join("\u0000");
      if (!groups.has(id)) groups.set(id, { key, records: [] });
      groups.get(id).records.push(r);
    }
    const ordered = [...groups.values()].sort((a, b) => {
      for (let i = 0; i < 3; i++) {
        const d = a.key[i].localeCompare(b.key[i]);
        if (d) return d;
      }
      return 0;
    });
    let category = null;
    for (const g of ordered) {
      const [domain, cat, sub] = g.key;
      if (category !== domain + "\u0000" + cat) {
        category = domain + "\u0000" + cat;
        const h = el("h2", "category");
        add(h, el("span", "domain", domain), " ", el("span", "name", cat));
        main.append(h);
      }
      const section = el("section", "bucket");
      const h3 = el("h3", "subcategory");
      add(h3, el("span", "name", sub), el("span", "count", g.records.length + (g.records.length === 1 ? " record" : " records")));
      section.append(h3);
      for (const r of g.records) section.append(recordCard(r));
      main.append(section);
    }
    applyFilter();
  }

  function applyFilter() {
    const words = $("filter").value.toLowerCase().split(/\s+/).filter(Boolean);
    const showFlagged = $("show-flagged").checked;
    let shown = 0;
    for (const [card, text] of searchText) {
      const visible =
        (showFlagged || !card.classList.contains("flagged")) && words.every((w) => text.includes(w));
      card.hidden = !visible;
      if (visible) shown++;
    }
    for (const section of document.querySelectorAll("#records section.bucket")) {
      section.hidden = !section.querySelector("article.record:not([hidden])");
    }
    for (const h of document.querySelectorAll("#records h2.category")) {
      let next = h.nextElementSibling;
      let any = false;
      while (next && next.tagName === "SECTION") {
        any = any || !next.hidden;
        next = next.nextElementSibling;
      }
      h.hidden = !any;
    }
    $("shown").textContent = shown + " of " + searchText.size + " records shown";
  }

  // ------------------------------------------------------------------ key and loading

  async function open(key) {
    status("Loading…", "busy");
    $("connect").disabled = true;
    try {
      const [{ page, records }, stats] = await Promise.all([loadAll(key), api("v1/stats", key)]);
      sessionStorage.setItem(STORAGE_KEY, key);
      $("forget").hidden = false;
      $("key").value = "";
      renderStats(page, records, stats);
      renderRecords(records);
      $("toolbar").hidden = false;
      status("Namespace " + page.namespace + ": " + page.total + " records.", "ok");
    } catch (err) {
      if (err.status === 401) sessionStorage.removeItem(STORAGE_KEY);
      clear();
      const code = err.status ? " (" + err.status + ")" : "";
      status("Could not load the memory" + code + ": " + err.message, "error");
    } finally {
      $("connect").disabled = false;
    }
  }

  function clear() {
    $("stats").replaceChildren();
    $("stats").hidden = true;
    $("records").replaceChildren();
    $("toolbar").hidden = true;
    searchText.clear();
  }

  function start() {
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = $("key").value.trim();
      if (!key) {
        status("Enter an API key first.", "error");
        return;
      }
      open(key);
    });
    $("forget").addEventListener("click", () => {
      sessionStorage.removeItem(STORAGE_KEY);
      $("forget").hidden = true;
      clear();
      status("Key forgotten. Enter an API key to see its namespace.", "");
    });
    $("filter").addEventListener("input", applyFilter);
    $("show-flagged").addEventListener("change", applyFilter);
    const saved = sessionStorage.getItem(STORAGE_KEY);
    if (saved) open(saved);
  }

  start();
})();
