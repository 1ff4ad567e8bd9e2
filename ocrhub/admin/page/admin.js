// The admin page: plain DOM, no framework, no CDN. Text is set with textContent only, never HTML.
"use strict";

const TEXT = {
  en: {
    "nav.bots": "Bots", "nav.changes": "Changes", "signout": "Sign out",
    "signin.title": "Sign in", "signin.password": "Admin password", "signin.submit": "Sign in",
    "bots.title": "Feishu bots", "bots.add": "Add a bot", "bots.edit": "Edit bot", "bots.none": "No bots yet.",
    "bot.id": "Bot id", "bot.secrets": "Secrets are write-only: leave a field empty to keep what is stored.",
    "bot.domain": "Domain", "bot.mode": "Events arrive by", "bot.policy": "In groups, read",
    "bot.openid": "Bot open_id (for @ mentions)", "bot.thread": "Reply in a thread", "bot.enabled": "Enabled", "bot.language": "Replies in",
    "mode.webhook": "webhook", "mode.long": "long connection",
    "policy.all": "every picture", "policy.mention": "only messages that @ the bot",
    "save": "Save", "cancel": "Cancel", "edit": "Edit", "remove": "Remove", "test": "Test", "enable": "Enable", "disable": "Disable",
    "webhook": "Webhook URL to paste into Feishu", "longconn": "Run `ocrhub feishu-connect {id}` beside the hub.",
    "scopes": "Scopes to grant", "events": "Events to subscribe", "set": "set", "unset": "not set",
    "disabled": "(disabled)", "from.settings": "from the settings", "from.admin": "added here",
    "saved": "Saved: served from now on, no restart needed.", "removed": "Removed.",
    "confirm.remove": "Remove bot {id}?", "signedout": "Signed out.",
    "changes.title": "Changes", "changes.when": "When", "changes.who": "Who", "changes.what": "What",
    "wrong": "Wrong password.", "expired": "Your session ended: sign in again.",
    "nav.operations": "Operations", "nav.knowledge": "Knowledge base", "refresh": "Refresh",
    "ops.title": "Operations", "ops.failed": "Failed jobs", "ops.recent": "Recent results", "ops.chat": "Chat",
    "ops.engine": "Engine", "ops.seconds": "Seconds", "ops.text": "Text", "ops.none": "None.", "requeue": "Requeue",
    "ops.workers": "Workers alive: {alive} ({busy} busy)", "ops.queue": "{queue}: {queued} queued, {started} running, {scheduled} waiting to retry, {failed} failed",
    "ops.limit": "{url}: limit {limit} ({reason})", "requeued": "Handed back to its queue.",
    "kb.title": "Knowledge base", "kb.query": "Search the text of every picture", "kb.search": "Search", "kb.none": "Nothing found.",
    "nav.routing": "Routes", "routing.title": "Routes and sinks", "routing.sinks": "Sinks", "routing.routes": "Routes",
    "sink.name": "Sink name", "sink.url": "Sink URL", "sink.save": "Save sink", "route.key": "Chat, bot or platform",
    "route.sinks": "Sinks (comma-separated)", "route.save": "Save route", "route.task": "OCR task (vLLM engine; empty: the default)", "uploads": "Uploads go to: {sinks}.",
    "builtin": "Built-in sinks: {names}. Without a route: {defaults}.",
  },
  zh: {
    "nav.bots": "机器人", "nav.changes": "变更记录", "signout": "退出",
    "signin.title": "登录", "signin.password": "管理员密码", "signin.submit": "登录",
    "bots.title": "飞书机器人", "bots.add": "添加机器人", "bots.edit": "编辑机器人", "bots.none": "还没有机器人。",
    "bot.id": "机器人 ID", "bot.secrets": "密钥只写不读：留空即保留已保存的值。",
    "bot.domain": "域名", "bot.mode": "事件接收方式", "bot.policy": "群聊中读取",
    "bot.openid": "机器人 open_id（用于 @ 识别）", "bot.thread": "在话题中回复", "bot.enabled": "启用", "bot.language": "回复语言",
    "mode.webhook": "Webhook", "mode.long": "长连接",
    "policy.all": "所有图片", "policy.mention": "仅 @ 机器人的消息",
    "save": "保存", "cancel": "取消", "edit": "编辑", "remove": "删除", "test": "测试", "enable": "启用", "disable": "停用",
    "webhook": "填入飞书后台的请求地址", "longconn": "在 hub 旁运行 `ocrhub feishu-connect {id}`。",
    "scopes": "需开通的权限", "events": "需订阅的事件", "set": "已设置", "unset": "未设置",
    "disabled": "（已停用）", "from.settings": "来自配置", "from.admin": "在此添加",
    "saved": "已保存：立即生效，无需重启。", "removed": "已删除。",
    "confirm.remove": "删除机器人 {id}？", "signedout": "已退出。",
    "changes.title": "变更记录", "changes.when": "时间", "changes.who": "操作人", "changes.what": "内容",
    "wrong": "密码错误。", "expired": "会话已结束，请重新登录。",
    "nav.operations": "运行状态", "nav.knowledge": "知识库", "refresh": "刷新",
    "ops.title": "运行状态", "ops.failed": "失败的任务", "ops.recent": "最近的结果", "ops.chat": "群聊",
    "ops.engine": "引擎", "ops.seconds": "耗时（秒）", "ops.text": "文字", "ops.none": "无。", "requeue": "重新排队",
    "ops.workers": "存活的 worker：{alive}（忙碌 {busy}）", "ops.queue": "{queue}：排队 {queued}，运行中 {started}，等待重试 {scheduled}，失败 {failed}",
    "ops.limit": "{url}：并发上限 {limit}（{reason}）", "requeued": "已放回队列。",
    "kb.title": "知识库", "kb.query": "搜索所有图片中的文字", "kb.search": "搜索", "kb.none": "没有找到。",
    "nav.routing": "路由", "routing.title": "路由与输出", "routing.sinks": "输出（sink）", "routing.routes": "路由",
    "sink.name": "名称", "sink.url": "URL", "sink.save": "保存输出", "route.key": "群聊、机器人或平台",
    "route.sinks": "输出（逗号分隔）", "route.save": "保存路由", "route.task": "OCR 任务（vLLM 引擎；留空为默认）", "uploads": "上传的图片发往：{sinks}。",
    "builtin": "内置输出：{names}。没有路由时：{defaults}。",
  },
};

let lang = localStorage.getItem("ocrhub.lang") || ((navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en");
let csrf = "";
let editing = null;
const $ = (id) => document.getElementById(id);
const t = (key, vars = {}) => (TEXT[lang][key] || key).replace(/\{(\w+)\}/g, (_, name) => vars[name] ?? "");

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function translate() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  $("lang").textContent = lang === "zh" ? "English" : "中文";
}

function say(text, error = false) {
  const box = $("message");
  box.textContent = text;
  box.className = error ? "error" : "";
  box.hidden = !text;
}

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") headers["X-CSRF-Token"] = csrf;
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin" });
  const data = await response.json().catch(() => ({}));
  if (response.status === 401 && path !== "/admin/api/session") {
    show("sign-in");
    throw new Error(t("expired"));
  }
  if (!response.ok) {
    const detail = Array.isArray(data.detail) ? data.detail.map((d) => `${(d.loc || []).slice(-1)[0]}: ${d.msg}`).join("; ") : data.detail;
    throw new Error(detail || `HTTP ${response.status}`);
  }
  return data;
}

function show(view) {
  const signedIn = view !== "sign-in";
  $("sign-in").hidden = signedIn;
  $("nav").hidden = !signedIn;
  $("sign-out").hidden = !signedIn;
  for (const id of ["bots", "routing", "operations", "knowledge", "changes"]) $(id).hidden = !signedIn || (view !== id && view !== "all");
}

function botCard(bot) {
  const card = el("article", { class: "bot", id: `bot-${bot.id}` });
  card.append(el("h3", {}, el("span", { text: bot.id }), " ", el("span", { class: "off", text: bot.enabled ? "" : t("disabled") })));
  card.append(el("div", { class: "muted", text: `App ID ${bot.app_id} · ${t(bot.source === "settings" ? "from.settings" : "from.admin")}` }));
  const secrets = Object.entries(bot.secrets).map(([name, set]) => `${name}: ${t(set ? "set" : "unset")}`).join(" · ");
  card.append(el("div", { class: "muted secrets", text: secrets }));
  if (bot.webhook_url) {
    card.append(el("div", { text: t("webhook") }), el("code", { class: "webhook", text: bot.webhook_url }));
  } else {
    card.append(el("div", { text: t("longconn", { id: bot.id }) }));
  }
  card.append(el("div", { class: "muted", text: `${t("scopes")}: ${bot.scopes.join(", ")}` }));
  card.append(el("div", { class: "muted", text: `${t("events")}: ${bot.events.join(", ")}` }));
  const result = el("div", { class: "muted test-result" });
  const buttons = el("div", { class: "buttons" },
    el("button", { type: "button", class: "small", text: t("edit"), onclick: () => openForm(bot) }),
    el("button", { type: "button", class: "small", text: t("test"), onclick: async () => {
      result.textContent = "…";
      try { const answer = await api("POST", `/admin/api/feishu/bots/${bot.id}/test`); result.textContent = `${answer.ok ? "✓" : "✗"} ${answer.answer}`; }
      catch (error) { result.textContent = error.message; }
    } }),
    el("button", { type: "button", class: "small", text: t(bot.enabled ? "disable" : "enable"), onclick: () => saveBot(bot.id, { ...formOf(bot), enabled: !bot.enabled }) }),
    el("button", { type: "button", class: "small danger", text: t("remove"), onclick: async () => {
      if (!confirm(t("confirm.remove", { id: bot.id }))) return;
      try { await api("DELETE", `/admin/api/feishu/bots/${bot.id}`); say(t("removed")); await loadBots(); } catch (error) { say(error.message, true); }
    } }),
  );
  card.append(buttons, result);
  return card;
}

function formOf(bot) {
  return { app_id: bot.app_id, domain: bot.domain, group_policy: bot.group_policy, bot_open_id: bot.bot_open_id,
           reply_in_thread: bot.reply_in_thread, mode: bot.mode, allow_unverified: bot.allow_unverified, enabled: bot.enabled, language: bot.language || "en" };
}

async function loadBots() {
  const { bots } = await api("GET", "/admin/api/feishu/bots");
  const list = $("bot-list");
  list.replaceChildren(...(bots.length ? bots.map(botCard) : [el("p", { class: "muted", text: t("bots.none") })]));
}

async function loadChanges() {
  const { changes } = await api("GET", "/admin/api/changes");
  $("change-list").replaceChildren(...changes.map((c) => el("tr", {},
    el("td", { text: new Date(c.at * 1000).toLocaleString(lang === "zh" ? "zh-CN" : "en") }),
    el("td", { text: c.who }),
    el("td", { text: `${c.action} ${c.kind} ${c.id}${c.fields.length ? ` (${c.fields.join(", ")})` : ""}` }))));
}

function openForm(bot) {
  editing = bot ? bot.id : null;
  const form = $("bot-form");
  form.reset();
  $("bot-form-title").textContent = t(bot ? "bots.edit" : "bots.add");
  $("bot-id").value = bot ? bot.id : "";
  $("bot-id").readOnly = Boolean(bot);
  if (bot) {
    $("bot-app-id").value = bot.app_id;
    $("bot-domain").value = bot.domain;
    $("bot-mode").value = bot.mode;
    $("bot-policy").value = bot.group_policy;
    $("bot-language").value = bot.language || "en";
    $("bot-open-id").value = bot.bot_open_id;
    $("bot-thread").checked = bot.reply_in_thread;
    $("bot-enabled").checked = bot.enabled;
  }
  form.hidden = false;
  $("bot-id").focus();
}

async function saveBot(id, body) {
  try {
    await api("PUT", `/admin/api/feishu/bots/${encodeURIComponent(id)}`, body);
    $("bot-form").hidden = true;
    say(t("saved"));
    await loadBots();
  } catch (error) {
    say(error.message, true);
  }
}

async function loadOperations() {
  const ops = await api("GET", "/admin/api/operations");
  const lines = [t("ops.workers", ops.workers), `${t("ops.engine")}: ${ops.engine.engine}`];
  for (const [queue, counts] of Object.entries(ops.queues)) lines.push(t("ops.queue", { queue, ...counts }));
  for (const server of (ops.engine.vllm || {}).servers || []) lines.push(t("ops.limit", { url: server.url, limit: server.limit ?? "?", reason: [server.state, server.reason].filter(Boolean).join(": ") }));
  $("ops-summary").replaceChildren(...lines.map((line) => el("div", { class: "muted", text: line })));
  $("failed-list").replaceChildren(...(ops.failed.length ? ops.failed.map((job) => el("div", { class: "failed", id: `failed-${job.id}` },
    el("code", { text: job.id }), " ", el("span", { class: "muted", text: `${job.queue}: ${job.reason}` }), " ",
    el("button", { type: "button", class: "small", text: t("requeue"), onclick: async () => {
      try { await api("POST", `/admin/api/failed/${encodeURIComponent(job.id)}/requeue`); say(t("requeued")); await loadOperations(); }
      catch (error) { say(error.message, true); }
    } }))) : [el("p", { class: "muted", text: t("ops.none") })]));
  $("recent-list").replaceChildren(...ops.recent.map((row) => el("tr", {},
    el("td", { text: row.chat_id }), el("td", { text: row.engine }), el("td", { text: row.seconds ?? "" }),
    el("td", { text: row.error || row.text }))));
}

async function loadRouting() {
  const routing = await api("GET", "/admin/api/routing");
  const defaults = Object.entries(routing.defaults).map(([platform, sinks]) => `${platform} → ${sinks.join(", ")}`).join("; ");
  $("uploads-go-to").textContent = `${t("uploads", { sinks: routing.uploads_go_to.join(", ") })} ${t("builtin", { names: routing.builtin_sinks.join(", "), defaults })}`;
  const remove = (path, reload) => async () => {
    try { await api("DELETE", path); say(t("removed")); await reload(); } catch (error) { say(error.message, true); }
  };
  $("sink-list").replaceChildren(...routing.sinks.map((sink) => el("div", { class: "row", id: `sink-${sink.name}` },
    el("strong", { text: sink.name }), " ", el("code", { text: sink.url }), " ", el("span", { class: "muted", text: t(sink.source === "settings" ? "from.settings" : "from.admin") }), " ",
    el("button", { type: "button", class: "small danger", text: t("remove"), onclick: remove(`/admin/api/sinks/${encodeURIComponent(sink.name)}`, loadRouting) }))));
  $("route-list").replaceChildren(...routing.routes.map((route) => el("div", { class: "row" },
    el("code", { text: route.key }), ` → ${route.sinks.join(", ")}${route.task ? ` [${route.task}]` : ""} `, el("span", { class: "muted", text: t(route.source === "settings" ? "from.settings" : "from.admin") }), " ",
    el("button", { type: "button", class: "small danger", text: t("remove"), onclick: remove(`/admin/api/routes?key=${encodeURIComponent(route.key)}`, loadRouting) }))));
}

async function search(query) {
  const { results } = await api("GET", `/admin/api/search?q=${encodeURIComponent(query)}&limit=50`);
  $("search-results").replaceChildren(...(results.length ? results.map((hit) => el("article", { class: "hit" },
    el("img", { src: hit.thumbnail, alt: "", loading: "lazy", class: "thumb" }),
    el("div", {},
      el("div", { class: "muted", text: `${hit.sender} · ${hit.chat_id} · ${hit.sent_at}` }),
      el("pre", { text: hit.text }),
      /^https?:\/\//.test(hit.source_url) ? el("a", { href: hit.source_url, rel: "noreferrer", target: "_blank", text: hit.source_url }) : null,
      ...hit.links.map((link) => el("a", { href: link.url, rel: "noreferrer", target: "_blank", class: "link-out", text: `${link.sink} ↗` }))))) : [el("p", { class: "muted", text: t("kb.none") })]));
}

async function enter() {
  show("all");
  await Promise.all([loadBots(), loadRouting(), loadChanges(), loadOperations()]);
}

document.addEventListener("DOMContentLoaded", async () => {
  translate();
  $("lang").addEventListener("click", () => { lang = lang === "zh" ? "en" : "zh"; localStorage.setItem("ocrhub.lang", lang); translate(); if (csrf) enter().catch(() => {}); });
  $("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      ({ csrf } = await api("POST", "/admin/api/session", { password: $("password").value }));
      $("password").value = "";
      say("");
      await enter();
    } catch (error) {
      say(error.message === "wrong password" ? t("wrong") : error.message, true);
      $("password").select();
    }
  });
  $("sign-out").addEventListener("click", async () => {
    await api("DELETE", "/admin/api/session").catch(() => {});
    csrf = "";
    show("sign-in");
    say(t("signedout"));
  });
  $("add-bot").addEventListener("click", () => openForm(null));
  $("sink-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const saved = await api("PUT", `/admin/api/sinks/${encodeURIComponent($("sink-name").value)}`, { url: $("sink-url").value });
      say(saved.warning || t("saved"), Boolean(saved.warning));
      event.target.reset();
      await Promise.all([loadRouting(), loadChanges()]);
    } catch (error) { say(error.message, true); }
  });
  $("route-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const sinks = $("route-sinks").value.split(",").map((name) => name.trim()).filter(Boolean);
    try {
      await api("PUT", "/admin/api/routes", { key: $("route-key").value.trim(), sinks, task: $("route-task").value.trim() });
      say(t("saved"));
      event.target.reset();
      await Promise.all([loadRouting(), loadChanges()]);
    } catch (error) { say(error.message, true); }
  });
  $("refresh-ops").addEventListener("click", () => loadOperations().catch((error) => say(error.message, true)));
  $("search-form").addEventListener("submit", (event) => { event.preventDefault(); search($("search-query").value).catch((error) => say(error.message, true)); });
  $("cancel-bot").addEventListener("click", () => { $("bot-form").hidden = true; });
  $("bot-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(event.target);
    const body = { app_id: data.get("app_id"), domain: data.get("domain"), mode: data.get("mode"), group_policy: data.get("group_policy"),
                   bot_open_id: data.get("bot_open_id"), reply_in_thread: data.get("reply_in_thread") === "on", enabled: data.get("enabled") === "on",
                   language: data.get("language") };
    for (const name of ["app_secret", "encrypt_key", "verification_token"]) body[name] = data.get(name) || "";
    saveBot(editing || data.get("id"), body).then(loadChanges).catch(() => {});
  });
  try {
    ({ csrf } = await api("GET", "/admin/api/session"));
    await enter();
  } catch {
    show("sign-in");
    say("");
  }
});
