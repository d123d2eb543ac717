// egovlp search page: plain JS, no build step. Results come from /api/search; text is set with textContent only.
"use strict";

const $ = (id) => document.getElementById(id);
let info = { attention: false, rerank: false };
let playing = null; // { result, chunk, offset }: the moment being played, and which chunk of a chunked video
let stopAt = null; // seconds in the media where the playing moment ends

function seconds(t) {
  const m = Math.floor(t / 60);
  const s = (t - 60 * m).toFixed(1).padStart(4, "0");
  return `${m}:${s}`;
}

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.className = isError ? "error" : "";
}

async function getJSON(url) {
  const response = await fetch(url);
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function play(result, card, query) {
  document.querySelectorAll(".result.active").forEach((c) => c.classList.remove("active"));
  card.classList.add("active");
  $("player-panel").hidden = false;
  const player = $("player");
  const from = result.start - result.media_offset;
  stopAt = result.end - result.media_offset;
  playing = { result, offset: result.media_offset };
  const seek = () => { player.currentTime = from; player.play().catch(() => {}); };
  if (player.getAttribute("src") !== result.media) {
    player.setAttribute("src", result.media);
    player.addEventListener("loadedmetadata", seek, { once: true });
    player.addEventListener("error", () => setStatus(`cannot play ${result.video}: the video is missing or unreadable`, true), { once: true });
  } else {
    seek();
  }
  $("now-playing").textContent = `${result.video}  ${seconds(result.start)} - ${seconds(result.end)}`;
  $("attention").hidden = true;
  if (info.attention) showAttention(result, query);
}

function showAttention(result, query) {
  const img = $("attention");
  img.onerror = () => { img.hidden = true; setStatus(`no attention map for ${result.video}`, true); };
  img.onload = () => { img.hidden = false; };
  img.src = `${result.attention}?q=${encodeURIComponent(query)}`;
}

function card(result, query) {
  const li = document.createElement("li");
  li.className = "result";
  li.dataset.rank = result.rank;
  const img = document.createElement("img");
  img.src = result.thumb;
  img.alt = `${result.video} at ${seconds(result.start)}`;
  img.loading = "lazy";
  const when = document.createElement("div");
  when.className = "when";
  when.textContent = `${result.rank}. ${seconds(result.start)} - ${seconds(result.end)}`;
  const meta = document.createElement("div");
  meta.className = "meta";
  const vtm = result.vtm === null ? "" : `  VTM ${result.vtm.toFixed(2)}`;
  meta.textContent = `${result.video}  score ${result.score.toFixed(3)}${vtm}`;
  li.append(img, when, meta);
  li.addEventListener("click", () => play(result, li, query));
  return li;
}

async function search(event) {
  event.preventDefault();
  const query = $("query").value.trim();
  if (!query) { setStatus("type what you are looking for", true); return; }
  const params = new URLSearchParams({ q: query, k: $("top-k").value || "10" });
  if (info.rerank) params.set("rerank", $("rerank").value || "0");
  setStatus("searching...");
  try {
    const body = await getJSON(`/api/search?${params}`);
    const list = $("results");
    list.replaceChildren(...body.results.map((r) => card(r, query)));
    setStatus(`${body.results.length} moment(s) for "${body.query}" in ${body.milliseconds.toFixed(0)} ms`);
  } catch (error) {
    setStatus(error.message, true);
  }
}

$("player").addEventListener("timeupdate", () => {
  const player = $("player");
  if (stopAt !== null && player.currentTime >= stopAt) { player.pause(); stopAt = null; }
});
$("player").addEventListener("ended", () => {
  // a chunked video: the moment goes on in the next chunk (/api/media/<video>/<chunk + 1>)
  if (!playing || playing.result.chunk_seconds === null) return;
  const next = playing.offset + playing.result.chunk_seconds;
  if (next >= playing.result.end) return;
  const player = $("player");
  const base = playing.result.media.replace(/\/\d+$/, "");
  playing.offset = next;
  stopAt = playing.result.end - next;
  player.setAttribute("src", `${base}/${Math.round(next / playing.result.chunk_seconds)}`);
  player.play().catch(() => {});
});
$("search-form").addEventListener("submit", search);

getJSON("/api/info").then((body) => {
  info = body;
  $("info").textContent = `${body.num_videos} video(s), ${body.num_windows} windows, ${body.model}`;
  $("rerank-label").hidden = !body.rerank;
}).catch((error) => setStatus(error.message, true));
