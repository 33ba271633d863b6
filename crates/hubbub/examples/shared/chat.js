// The seed's chat in the browser: one WebSocket to /chat on this page's
// own host; every message shows as text (never as HTML).
(() => {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/chat`);
  const log = document.getElementById("log");
  const status = document.getElementById("status");
  const input = document.getElementById("input");
  const show = (text) => {
    const item = document.createElement("li");
    item.textContent = text;
    log.appendChild(item);
  };
  ws.onopen = () => { status.textContent = "connected"; };
  ws.onclose = (e) => { status.textContent = `disconnected (${e.code})`; };
  ws.onmessage = (e) => show(e.data);
  document.getElementById("form").addEventListener("submit", (e) => {
    e.preventDefault();
    if (input.value && ws.readyState === WebSocket.OPEN) {
      ws.send(input.value);
      input.value = "";
    }
  });
})();
