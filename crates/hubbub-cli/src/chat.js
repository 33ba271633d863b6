"use strict";
// Everything the server sends is inserted with textContent, never as HTML.
(function () {
  const room = location.pathname.replace(/^\/+|\/+$/g, "") || "lobby";
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const base = `${scheme}://${location.host}/${encodeURIComponent(room)}?format=json`;
  // Where this page is in the room (a cluster's events carry an offset and
  // an epoch): a reconnect asks for what it missed from there.
  let position = null;
  const log = document.getElementById("log");
  const state = document.getElementById("state");
  const who = document.getElementById("who");
  const form = document.getElementById("form");
  const input = document.getElementById("input");
  const send = document.getElementById("send");
  document.getElementById("room").textContent = "#" + room;
  document.title = `#${room} · hubbub`;

  let ws = null;
  let myId = null;
  let attempt = 0;

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function time(ts) {
    const d = ts ? new Date(ts) : new Date();
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }
  function scroll(node) {
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 60;
    log.appendChild(node);
    if (atBottom) log.scrollTop = log.scrollHeight;
  }
  function system(text, cls) { scroll(el("div", "sys" + (cls ? " " + cls : ""), text)); }
  function message(ev) {
    const box = el("div", "msg" + (ev.id === myId ? " mine" : ""));
    const meta = el("div", "meta");
    meta.appendChild(el("span", "from", ev.from));
    meta.appendChild(el("span", "time", time(ev.ts)));
    box.appendChild(meta);
    box.appendChild(el("div", "text", ev.text));
    scroll(box);
  }
  function setState(kind, text) {
    state.className = "pill " + kind;
    state.textContent = text;
    send.disabled = kind !== "online";
  }
  function setCount(n) {
    if (typeof n === "number") who.textContent = `${n} here`;
  }

  function connect() {
    setState("connecting", attempt ? "reconnecting…" : "connecting…");
    const resume = position
      ? `&since=${position.offset}&epoch=${encodeURIComponent(position.epoch)}`
      : "";
    ws = new WebSocket(base + resume);
    ws.onopen = () => {
      attempt = 0;
      document.documentElement.dataset.extensions = ws.extensions;
      setState("online", "online");
      input.focus();
    };
    ws.onmessage = (e) => {
      let ev;
      try { ev = JSON.parse(e.data); } catch (_) { system(String(e.data)); return; }
      if (typeof ev.offset === "number" && ev.offset > 0 && typeof ev.epoch === "string") {
        position = { offset: ev.offset, epoch: ev.epoch };
        document.documentElement.dataset.offset = String(ev.offset);
      }
      switch (ev.type) {
        case "welcome": myId = ev.id; setCount(ev.count); system(`${ev.text} You are ${ev.name}.`); break;
        case "join": case "leave": setCount(ev.count); system(ev.text); break;
        case "nick": system(ev.text); break;
        case "message": message(ev); break;
        case "error": system(ev.text, "error"); break;
        case "presence": setCount(ev.count); break;
        case "gap": case "epoch": case "unavailable": system(ev.text, "error"); break;
        case "offset": break; // only moves the position (above)
        default: system(ev.text || String(e.data));
      }
    };
    ws.onclose = () => {
      const delay = Math.min(10000, 500 * 2 ** attempt) * (0.75 + Math.random() / 2);
      attempt += 1;
      setState("offline", `offline · retry in ${Math.ceil(delay / 1000)}s`);
      setTimeout(connect, delay);
    };
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = input.value;
    if (!text.trim() || !ws || ws.readyState !== WebSocket.OPEN) return;
    ws.send(text);
    input.value = "";
  });
  connect();
})();
